"""The organizers' evaluation subsets of the test split, built with `datasets` exactly as their scripts do.

    python -m data_prep.subsets --dataset D --out DIR

task1 (public leaderboard): ds["test"].shuffle(seed=42).select(range(1500))
task2 (explanations):       ds["test"].filter(lambda x: x["complexity"] == 1).shuffle(seed=42).select(range(1500))
                            + val_id 0..1499
shuffle(seed=42) is a permutation of positions that depends only on the length, so the result depends on the exact
row order and row count of the test split: never re-sort or de-duplicate it first. With fewer than 1500 rows every
row is taken (in shuffled order). Writes DIR/task1_public.jsonl and DIR/task2_val.jsonl and prints a sha256 of the
"img_id|question" lines of each, to compare with other copies.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.io import write_jsonl

SIZE = 1500
SEED = 42
FIELDS = ('img_id', 'question', 'complexity', 'question_class', 'answer')


def task1_subset(test_ds, size: int = SIZE):
    """The Task 1 public validation rows, in the organizers' order."""
    shuffled = test_ds.shuffle(seed=SEED)
    return shuffled.select(range(min(size, len(shuffled))))


def task2_subset(test_ds, size: int = SIZE):
    """The Task 2 validation rows (complexity 1 only) with `val_id` 0..n-1, in the organizers' order.

    Unlike the organizers we keep answer/complexity/question_class (they drop them to hide the answers).
    """
    # input_columns avoids decoding images (if the column is an Image feature); the kept rows are the same.
    simple = test_ds.filter(lambda c: c == 1, input_columns='complexity')
    shuffled = simple.shuffle(seed=SEED)
    n = min(size, len(shuffled))
    return shuffled.select(range(n)).add_column('val_id', list(range(n)))


def subset_sha256(rows) -> str:
    """sha256 of "\\n".join(f"{img_id}|{question}") over the rows, in order."""
    text = '\n'.join(f'{r["img_id"]}|{r["question"]}' for r in rows)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _rows(ds, key: str) -> list[dict]:
    cols = ds.select_columns([c for c in FIELDS + (('val_id',) if key == 'val_id' else ()) if c in ds.column_names])
    return [{key: (r.pop('val_id') if key == 'val_id' else i), **r} for i, r in enumerate(cols)]


def write_subsets(test_ds, out_dir: str | Path) -> dict[str, dict]:
    """Write both subsets as JSONL into out_dir; returns {name: {"rows", "sha256", "path"}}."""
    out = Path(out_dir)
    info = {}
    for name, fn, key in (('task1_public', task1_subset, 'index'), ('task2_val', task2_subset, 'val_id')):
        rows = _rows(fn(test_ds), key)
        path = out / f'{name}.jsonl'
        write_jsonl(path, rows)
        info[name] = {'rows': len(rows), 'sha256': subset_sha256(rows), 'path': str(path)}
    return info


@cli_main
def main(argv=None) -> int:
    from data_prep.sources import load_source, quiet_datasets
    quiet_datasets()
    p = argparse.ArgumentParser(prog='python -m data_prep.subsets', description=__doc__.split('\n')[0])
    p.add_argument('--dataset', required=True, help='hub id or local copy (see data_prep.sources)')
    p.add_argument('--out', required=True, help='output folder')
    args = p.parse_args(argv)
    dd = load_source(args.dataset)
    if 'test' not in dd:
        raise InputError(f'no "test" split (found: {", ".join(dd)}); the subsets are drawn from test',
                         file=args.dataset)
    info = write_subsets(dd['test'], args.out)
    for name, i in info.items():
        if i['rows'] < SIZE:
            print(f'note: {name}: only {i["rows"]} eligible rows (< {SIZE}), all taken', file=sys.stderr)
        print(f'{name}: {i["rows"]} rows sha256 {i["sha256"]} -> {i["path"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
