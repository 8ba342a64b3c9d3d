"""Language-prior baselines that never look at the image, scored like a model: how much the text alone gives.

    python -m eval.baseline --train TRAIN(.meta).jsonl --eval EVAL.meta.jsonl --out DIR [--seed 42]

- nearest_question: the answer of the most similar training question (TF-IDF cosine over lower-cased word
  tokens; a training question seen with several answers gives its most frequent one).
- class_prior: the most frequent training answer of the row's question classes (the exact class combination,
  else its first class, else the most frequent answer overall).
--train takes a sidecar (.meta.jsonl: question, reference, question_class) or an ms-swift JSONL (messages; no
classes, so class_prior falls back to the overall answer). Writes DIR/<baseline>.jsonl in the predictions format,
DIR/scores.json and a side-by-side report in DIR/report/, and prints {baseline: scores} as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from common.errors import InputError, cli_main
from common.io import read_jsonl, write_json, write_jsonl

BASELINES = ('nearest_question', 'class_prior')
IMAGE_TAG = re.compile(r'<image>')
WORD = re.compile(r'[a-z0-9]+')


def _text(row: dict, field: str, path: str, line: int) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise InputError('missing' if value is None else f'must be a string, got {type(value).__name__}',
                         file=path, row=line, field=field)
    return value


def _classes(row: dict) -> tuple[str, ...]:
    value = row.get('question_class')
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else (str(value),)


def load_train(path: str | Path) -> list[dict]:
    """[{question, answer, question_class}] from a sidecar or an ms-swift JSONL."""
    path = str(path)
    out = []
    for line, row in enumerate(read_jsonl(path), 1):
        if 'messages' in row:
            msgs = row['messages'] if isinstance(row['messages'], list) else []
            user = [m.get('content') for m in msgs if isinstance(m, dict) and m.get('role') == 'user']
            answer = [m.get('content') for m in msgs if isinstance(m, dict) and m.get('role') == 'assistant']
            if not user or not answer or not all(isinstance(x, str) for x in (user[-1], answer[-1])):
                raise InputError('needs a user and an assistant message with string content', file=path,
                                 row=line, field='messages')
            out.append({'question': IMAGE_TAG.sub('', user[-1]).strip(), 'answer': answer[-1],
                        'question_class': ()})
        else:
            out.append({'question': _text(row, 'question', path, line),
                        'answer': _text(row, 'reference', path, line), 'question_class': _classes(row)})
    if not out:
        raise InputError('no training rows (empty file)', file=path)
    return out


def load_eval(path: str | Path) -> list[dict]:
    path = str(path)
    rows = read_jsonl(path)
    if not rows:
        raise InputError('no rows (empty file)', file=path)
    for line, row in enumerate(rows, 1):
        _text(row, 'question', path, line)
        _text(row, 'reference', path, line)
    return rows


def _most_common(counter: Counter) -> str:
    return counter.most_common(1)[0][0]  # ties: the answer seen first


class TfidfIndex:
    """Cosine nearest neighbour over TF-IDF vectors (smooth idf, l2-normalised), sparse via scipy."""

    def __init__(self, docs: list[str]):
        from scipy import sparse
        self._sparse = sparse
        tokens = [WORD.findall(d.lower()) for d in docs]
        self.vocab: dict[str, int] = {}
        for toks in tokens:
            for t in toks:
                self.vocab.setdefault(t, len(self.vocab))
        df = Counter(t for toks in tokens for t in set(toks))
        n = len(docs)
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1 for t in self.vocab], dtype=np.float32)
        self.matrix = self._vectors(tokens)

    def _vectors(self, tokens: list[list[str]]):
        rows, cols, vals = [], [], []
        for i, toks in enumerate(tokens):
            counts = Counter(self.vocab[t] for t in toks if t in self.vocab)
            for j, c in counts.items():
                rows.append(i)
                cols.append(j)
                vals.append(c * self.idf[j])
        m = self._sparse.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                                    shape=(len(tokens), len(self.vocab)))
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1
        return self._sparse.diags(1 / norms) @ m

    def nearest(self, queries: list[str], chunk: int = 512) -> np.ndarray:
        """Index of the most similar doc per query (first on ties); -1 where no query word is known."""
        q = self._vectors([WORD.findall(x.lower()) for x in queries])
        out = np.full(len(queries), -1, dtype=np.int64)
        for start in range(0, len(queries), chunk):
            sims = (q[start:start + chunk] @ self.matrix.T).toarray()
            best = sims.argmax(axis=1)
            has = sims[np.arange(len(best)), best] > 0
            out[start:start + chunk] = np.where(has, best, -1)
        return out


def nearest_question(train: list[dict], eval_rows: list[dict]) -> list[str]:
    answers: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        answers[r['question']][r['answer']] += 1
    questions = list(answers)
    fallback = _most_common(Counter(r['answer'] for r in train))
    unique = list(dict.fromkeys(r['question'] for r in eval_rows))
    hits = dict(zip(unique, TfidfIndex(questions).nearest(unique)))
    return [fallback if hits[r['question']] < 0 else _most_common(answers[questions[hits[r['question']]]])
            for r in eval_rows]


def class_prior(train: list[dict], eval_rows: list[dict]) -> list[str]:
    by_combo: dict[tuple, Counter] = defaultdict(Counter)
    by_class: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        by_combo[r['question_class']][r['answer']] += 1
        for c in r['question_class']:
            by_class[c][r['answer']] += 1
    fallback = _most_common(Counter(r['answer'] for r in train))
    out = []
    for r in eval_rows:
        combo = _classes(r)
        if combo and combo in by_combo:
            out.append(_most_common(by_combo[combo]))
        elif combo and combo[0] in by_class:
            out.append(_most_common(by_class[combo[0]]))
        else:
            out.append(fallback)
    return out


def run_baselines(train_path: str | Path, eval_path: str | Path, out_dir: str | Path, seed: int = 42) -> dict:
    """Write DIR/<baseline>.jsonl, DIR/scores.json, DIR/report/; returns {baseline: leaderboard scores + n}."""
    from eval import report
    from eval.score import leaderboard
    train, eval_rows = load_train(train_path), load_eval(eval_path)
    out_dir = Path(out_dir)
    runs = {}
    for name, predict in (('nearest_question', nearest_question), ('class_prior', class_prior)):
        rows = [{**r, 'prediction': p} for r, p in zip(eval_rows, predict(train, eval_rows))]
        path = str(out_dir / f'{name}.jsonl')
        write_jsonl(path, rows)
        runs[path] = rows
    rep = report.write_report(runs, out_dir / 'report', seed=seed)
    scores = {Path(p).stem: {**leaderboard(rep['runs'][p]['overall']), 'n': len(eval_rows)} for p in runs}
    write_json(out_dir / 'scores.json', {'train': str(train_path), 'eval': str(eval_path), 'seed': seed,
                                         'scores': scores})
    return scores


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--train', required=True, help='training sidecar (.meta.jsonl) or ms-swift JSONL')
    ap.add_argument('--eval', required=True, help='evaluation sidecar (.meta.jsonl) with references')
    ap.add_argument('--out', required=True, help='output folder')
    ap.add_argument('--seed', type=int, default=42, help='numpy seed for the ROUGE bootstrap')
    args = ap.parse_args(argv)
    print(json.dumps(run_baselines(args.train, args.eval, args.out, args.seed)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
