"""Benchmark: our offline scorer vs the organizers' `evaluate` metric scripts, on the same pairs in the same run.

    python -m bench.score_bench [--pairs 15955] [--evaluate-dir DIR] [--out bench/results/score.md]

Pairs: (prediction, reference) built from real Kvasir-VQA-x1 answers when ../shared is present (the edits of
tests/golden/make_golden_inputs.py: identical, lower-cased, empty, punctuation, long, other answers...), else from the
synthetic generator's answers. 15,955 = the size of the official test split.
The plain way: `evaluate.load("bleu"/"rouge"/"meteor")` as the organizers' script calls it (needs the hub once), or
local copies of huggingface/evaluate's metrics/{bleu,rouge,meteor} folders passed with --evaluate-dir (offline).
Both sides run in fresh processes (cold: imports, WordNet and tokenizer loading included), then once more warm.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.io import atomic_open

REPO = Path(__file__).resolve().parents[1]
SHARED_PARQUET = REPO.parent / 'shared' / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet'

OURS = """
import json, sys, time
t0 = time.perf_counter()
from eval.metrics import score
pairs = [json.loads(l) for l in open(sys.argv[1])]
p, r = [x['prediction'] for x in pairs], [x['reference'] for x in pairs]
s = score(p, r, rouge_seed=42)
t1 = time.perf_counter()
score(p, r, rouge_seed=42)
t2 = time.perf_counter()
print(json.dumps({'cold_s': t1 - t0, 'warm_s': t2 - t1, 'scores': s['unrounded']}))
"""

PLAIN = """
import json, sys, time
t0 = time.perf_counter()
import evaluate
src = sys.argv[2]
where = (lambda m: f'{src}/{m}') if src else (lambda m: m)
pairs = [json.loads(l) for l in open(sys.argv[1])]
p, r = [x['prediction'] for x in pairs], [[x['reference']] for x in pairs]
def run():
    bleu, rouge, meteor = evaluate.load(where('bleu')), evaluate.load(where('rouge'), seed=42), evaluate.load(where('meteor'))
    out = {'bleu': bleu.compute(predictions=p, references=r)['bleu']}
    out.update({k: float(v) for k, v in rouge.compute(predictions=p, references=r).items()})
    out['meteor'] = float(meteor.compute(predictions=p, references=r)['meteor'])
    return out
s = run()
t1 = time.perf_counter()
run()
t2 = time.perf_counter()
print(json.dumps({'cold_s': t1 - t0, 'warm_s': t2 - t1, 'scores': s}))
"""


def make_pairs(n: int, out: Path) -> str:
    sys.path.insert(0, str(REPO / 'tests' / 'golden'))
    if SHARED_PARQUET.is_file():
        from make_golden_inputs import build
        rows, source = build(SHARED_PARQUET, n=min(n, 17505), seed=1), 'real x1 train answers (../shared)'
        while len(rows) < n:  # more pairs than rows: repeat with another seed
            rows += build(SHARED_PARQUET, n=min(n - len(rows), 17505), seed=len(rows))
    else:
        import pandas as pd
        from data_prep.synthetic import generate
        from make_golden_inputs import build
        d = Path(tempfile.mkdtemp()) / 'synthetic'
        generate(d, n_images=max(24, n // 6), seed=0)
        parquet = next((d / 'data').glob('train-*.parquet'))
        rows, source = build(parquet, n=min(n, len(pd.read_parquet(parquet))), seed=1), 'synthetic answers'
    with open(out, 'w', encoding='utf-8') as f:
        for row in rows[:n]:
            f.write(json.dumps(row, ensure_ascii=False) + '\n')
    return source


def run(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), NLTK_DATA=os.environ.get('NLTK_DATA', str(REPO / '.nltk_data')))
    proc = subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'benchmark side failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--pairs', type=int, default=15955)
    ap.add_argument('--evaluate-dir', default='', help='local copies of evaluate metrics/{bleu,rouge,meteor}')
    ap.add_argument('--out', type=Path, default=REPO / 'bench' / 'results' / 'score.md')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / 'pairs.jsonl'
        source = make_pairs(args.pairs, pairs)
        ours, plain = run(OURS, str(pairs)), run(PLAIN, str(pairs), args.evaluate_dir)
    diffs = {k: abs(ours['scores'][k] - plain['scores'][k]) for k in ('bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor')}
    table = [f'# Scorer benchmark: {args.pairs} pairs ({source}), all five metrics', '',
             f'Machine: {os.cpu_count()} CPU cores; plain way = evaluate scripts from '
             f'{args.evaluate_dir or "the hub"}; ROUGE seed 42 on both sides.', '',
             '| way | cold (fresh process) s | warm (second call) s |', '|---|---|---|',
             f'| evaluate.load(bleu, rouge, meteor) | {plain["cold_s"]:.2f} | {plain["warm_s"]:.2f} |',
             f'| eval.metrics.score (ours) | {ours["cold_s"]:.2f} | {ours["warm_s"]:.2f} |',
             f'| speed-up | {plain["cold_s"] / ours["cold_s"]:.1f}x | {plain["warm_s"] / ours["warm_s"]:.1f}x |', '',
             '| metric | evaluate | ours | abs diff |', '|---|---|---|---|']
    table += [f'| {k} | {plain["scores"][k]:.12f} | {ours["scores"][k]:.12f} | {diffs[k]:.1e} |' for k in diffs]
    text = '\n'.join(table) + '\n'
    print(text)
    with atomic_open(args.out, 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
