"""Build tests/golden/pairs.jsonl: (prediction, reference) pairs made from real Kvasir-VQA-x1 answers.

    python tests/golden/make_golden_inputs.py [--parquet ../shared/data/kvasir-vqa-x1/train-subset.parquet]

Each line is also a valid predictions file row (img_id, question, question_class, complexity, setting, prediction,
reference) plus `kind`, the edit that made the prediction. The kinds cover what moves the metrics: identical,
lower-cased without the final period, empty, punctuation changes, upper case, a long two-answer prediction, a
prediction split over two lines (rougeLsum), another answer of the same question class, and word drops.
Deterministic (seeded); the lead runs the original `evaluate` scripts on this file for evaluate_reference.json.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_PARQUET = HERE.parents[2] / 'shared' / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet'
N_PAIRS = 320
KINDS = ('identical', 'lower_no_period', 'empty', 'punctuation', 'upper', 'long', 'two_lines', 'same_class',
         'same_class', 'same_class', 'drop_words')


def make_prediction(kind: str, answer: str, rng: random.Random, same_class: list[str]) -> str:
    if kind == 'identical':
        return answer
    if kind == 'lower_no_period':
        return answer.lower().rstrip('.')
    if kind == 'empty':
        return ''
    if kind == 'punctuation':  # drop commas, swap the final period for '!', hyphenate a space
        text = answer.replace(',', '').rstrip('.') + ' !'
        return re.sub(r' (?=\w)', '-', text, count=1)
    if kind == 'upper':
        return answer.upper()
    if kind == 'long':
        return f'{answer} {rng.choice(same_class)} {rng.choice(same_class)}'
    if kind == 'two_lines':
        words = answer.split()
        cut = max(1, len(words) // 2)
        return ' '.join(words[:cut]) + '\n' + ' '.join(words[cut:])
    if kind == 'same_class':
        return rng.choice(same_class)
    if kind == 'drop_words':
        words = answer.split()
        kept = [w for w in words if rng.random() > 0.3]
        return ' '.join(kept or words[:1])
    raise ValueError(kind)


def build(parquet: Path, n: int = N_PAIRS, seed: int = 0) -> list[dict]:
    df = pd.read_parquet(parquet, columns=['img_id', 'complexity', 'question', 'answer', 'question_class'])
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = {}
    for answer, classes in zip(df['answer'], df['question_class']):
        by_class.setdefault(classes[0], []).append(answer)
    rows = []
    for i, idx in enumerate(rng.sample(range(len(df)), n)):
        r = df.iloc[idx]
        kind = KINDS[i % len(KINDS)]
        classes = [str(c) for c in r['question_class']]
        rows.append({'id': i, 'kind': kind, 'img_id': r['img_id'], 'question': r['question'],
                     'question_class': classes, 'complexity': int(r['complexity']),
                     'setting': 'original' if i % 2 == 0 else 'augmented',
                     'prediction': make_prediction(kind, r['answer'], rng, by_class[classes[0]]),
                     'reference': r['answer']})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--parquet', type=Path, default=DEFAULT_PARQUET)
    ap.add_argument('--out', type=Path, default=HERE / 'pairs.jsonl')
    args = ap.parse_args()
    rows = build(args.parquet)
    with open(args.out, 'w', encoding='utf-8') as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + '\n')
    print(f'{len(rows)} pairs -> {args.out}')


if __name__ == '__main__':
    main()
