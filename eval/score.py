"""Score a predictions file exactly like the leaderboard: prints one JSON object {bleu, rouge1, rouge2, rougeL, meteor}.

    python -m eval.score PRED.jsonl [--report DIR] [--seed 42] [--compare OTHER.jsonl ...] [--no-pair]

PRED.jsonl lines need `prediction` and `reference` strings; the other sidecar fields (img_id, question,
question_class, complexity, setting) feed the report's breakdowns. `--report DIR` writes markdown + JSON + PNG plots
(eval.report); `--compare` adds other runs side by side (to the report, or as a table on stderr without --report).
The same split's file in the other image setting (`X-original.jsonl` <-> `X-augmented.jsonl`, the challenge's two
settings) is added automatically when it exists: the report then has an original-vs-augmented table and plot.
ROUGE uses evaluate's bootstrap under `--seed` (the leaderboard's own seed is unknown, so the 4th decimal of ROUGE
can differ from it by ~1e-4; the report also gives the seed-free plain means).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from common.errors import InputError, cli_main
from common.io import read_jsonl
from eval import metrics

ID_FIELDS = ('index', 'val_id')  # unique row ids of the organizer subsets (task1_public, task2_val)


def load_predictions(path: str | Path, *, strict_ids: bool = False) -> list[dict]:
    """Rows of a predictions file, checked: InputError names the file, line and field of the first problem.

    Duplicates of `index`/`val_id` (per setting) are errors. Repeated (img_id, question) pairs are only errors with
    strict_ids: the dataset itself repeats some (78 of the 17,505 train-subset rows), so a whole split has them."""
    path = str(path)
    rows = read_jsonl(path)
    if not rows:
        raise InputError('no predictions (empty file)', file=path)
    seen: dict[tuple, int] = {}
    for line, row in enumerate(rows, 1):
        for field in ('prediction', 'reference'):
            if field not in row:
                raise InputError('missing', file=path, row=line, field=field)
            if not isinstance(row[field], str):
                raise InputError(f'must be a string, got {type(row[field]).__name__}', file=path, row=line,
                                 field=field)
        keys = [(f, row.get('setting'), row[f]) for f in ID_FIELDS if row.get(f) is not None]
        if strict_ids and 'img_id' in row and 'question' in row:
            keys.append(('img_id+question', row.get('setting'), row['img_id'], row['question']))
        for key in keys:
            if key in seen:
                raise InputError(f'duplicate id {key[2:]!r} (first on line {seen[key]})', file=path, row=line,
                                 field=key[0])
            seen[key] = line
    return rows


def repeated_pairs(rows: list[dict]) -> int:
    """How many rows repeat an earlier (img_id, question, setting): worth a note, not an error."""
    counts = Counter((r.get('img_id'), r.get('question'), r.get('setting')) for r in rows if 'img_id' in r)
    return sum(c - 1 for c in counts.values())


def score_rows(rows: list[dict], seed: int | None = 42) -> dict:
    return metrics.score([r['prediction'] for r in rows], [r['reference'] for r in rows], rouge_seed=seed)


def score_file(path: str | Path, seed: int | None = 42, *, strict_ids: bool = False) -> dict:
    """metrics.score() of a predictions file: rounded leaderboard keys + 'unrounded', 'rouge_mean', ..."""
    return score_rows(load_predictions(path, strict_ids=strict_ids), seed)


def leaderboard(scores: dict) -> dict:
    return {k: scores[k] for k in metrics.REPORTED}


def run_labels(paths: list[str]) -> list[str]:
    """Short, unique labels: the file stem, or parent/stem when stems collide."""
    stems = [Path(p).stem for p in paths]
    return [f'{Path(p).parent.name}/{s}' if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def setting_sibling(path: str | Path) -> Path | None:
    """The same split's predictions in the other image setting (`...-original.jsonl` <-> `...-augmented.jsonl`)."""
    path = Path(path)
    for this, other in (('-original', '-augmented'), ('-augmented', '-original')):
        if this in path.stem:
            head, _, tail = path.stem.rpartition(this)
            return path.with_name(f'{head}{other}{tail}{path.suffix}')
    return None


def comparison_table(named_scores: dict[str, dict]) -> str:
    head = '| run | n | ' + ' | '.join(metrics.REPORTED) + ' |'
    lines = [head, '|' + '---|' * (len(metrics.REPORTED) + 2)]
    for name, s in named_scores.items():
        lines.append(f'| {name} | {s["n"]} | ' + ' | '.join(f'{s[k]:.4f}' for k in metrics.REPORTED) + ' |')
    return '\n'.join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('pred', help='predictions JSONL (prediction + reference per line)')
    ap.add_argument('--report', help='write a report folder (markdown, JSON, PNG) here')
    ap.add_argument('--seed', type=int, default=42, help='numpy seed for the ROUGE bootstrap (evaluate: seed=)')
    ap.add_argument('--compare', nargs='*', default=[], help='other predictions files to put side by side')
    ap.add_argument('--strict-ids', action='store_true', help='also reject repeated (img_id, question) pairs')
    ap.add_argument('--no-pair', action='store_true',
                    help='do not add the other image setting\'s file (X-original.jsonl <-> X-augmented.jsonl)')
    args = ap.parse_args(argv)

    rows = load_predictions(args.pred, strict_ids=args.strict_ids)
    sibling = None if args.no_pair else setting_sibling(args.pred)
    if sibling is not None and sibling.is_file() and str(sibling) not in args.compare:
        print(f'note: {sibling} holds the other image setting: scored side by side (--no-pair: not)', file=sys.stderr)
        args.compare.append(str(sibling))
    others = {p: load_predictions(p, strict_ids=args.strict_ids) for p in args.compare}
    if (n := repeated_pairs(rows)):
        print(f'note: {n} rows repeat an earlier (img_id, question, setting); scored as separate items',
              file=sys.stderr)
    if args.report:
        from eval import report
        result = report.write_report({args.pred: rows, **others}, args.report, seed=args.seed)
        scores = result['runs'][args.pred]['overall']
        print(f'report: {args.report}/report.md', file=sys.stderr)
    else:
        scores = score_rows(rows, args.seed)
        if others:
            paths = [args.pred, *others]
            table = dict(zip(run_labels(paths), [scores, *(score_rows(r, args.seed) for r in others.values())]))
            print(comparison_table(table), file=sys.stderr)
    print(json.dumps(leaderboard(scores)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
