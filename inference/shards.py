"""Resumable partial files and the data-parallel plan.

Finished rows are appended to `PRED.partial` (one process) or `PRED.partial.<rank>` (one file per worker), each row
carrying its input line number (`_line`) and a fingerprint of the run (`_run`). A rerun reads every partial file,
keeps the finished rows, and only answers the rest; the merge writes PRED in input order and checks that every line
is there exactly once (ms-swift's own multi-process infer has been seen to keep only rank 0's rows).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.errors import InputError
from common.io import write_jsonl

LINE, RUN = '_line', '_run'  # private keys of partial rows, stripped by the merge


def split_contiguous(items: list[int], k: int) -> list[list[int]]:
    """`items` cut into at most k contiguous, nearly equal, non-empty chunks (the first ones one longer)."""
    k = max(1, min(k, len(items)))
    size, extra = divmod(len(items), k)
    chunks, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [c for c in chunks if c]


def encode_lines(lines: list[int]) -> str:
    """[0,1,2,5,6] -> '0-2,5-6': a short command-line form of a worker's line numbers."""
    runs: list[list[int]] = []
    for n in sorted(lines):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ','.join(f'{a}-{b}' for a, b in runs)


def decode_lines(spec: str) -> list[int]:
    lines = []
    for part in filter(None, spec.split(',')):
        a, _, b = part.partition('-')
        lines.extend(range(int(a), int(b or a) + 1))
    return lines


def partial_paths(out: str | os.PathLike) -> list[Path]:
    """Every partial file of `out` that exists: PRED.partial and PRED.partial.<rank>."""
    out = Path(out)
    found = [out.with_name(out.name + '.partial')]
    found += sorted(out.parent.glob(out.name + '.partial.*'), key=lambda p: p.name)
    return [p for p in found if p.is_file() and p.suffix != '.tmp']


def worker_partial(out: str | os.PathLike, rank: int | None) -> Path:
    out = Path(out)
    return out.with_name(f'{out.name}.partial' + ('' if rank is None else f'.{rank}'))


def read_partial(path: Path) -> list[dict]:
    """Rows of one partial file. A line that does not parse (the last one, cut by a crash anywhere, even inside a
    multi-byte character) is dropped: it is redone."""
    rows = []
    with open(path, 'rb') as f:
        for raw in f:
            try:
                row = json.loads(raw.decode('utf-8'))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(row, dict) and isinstance(row.get(LINE), int):
                rows.append(row)
    return rows


def load_finished(out: str | os.PathLike, metas: list[dict], run_id: str) -> dict[int, dict]:
    """Finished rows by input line from all partial files of `out`, checked against this run's inputs."""
    finished: dict[int, dict] = {}
    for path in partial_paths(out):
        for row in read_partial(path):
            line = row[LINE]
            if row.get(RUN) != run_id:
                raise InputError('written by a different run (model, data or options changed): delete it or '
                                 'choose another --out', file=str(path))
            if line >= len(metas):  # a smaller --limit than before: not needed now
                continue
            if any(row.get(k) != v for k, v in metas[line].items() if k != 'reference'):
                raise InputError(f'row for input line {line + 1} does not match the sidecar (data file changed?): '
                                 'delete it', file=str(path))
            finished.setdefault(line, row)
    return finished


def compact(out: str | os.PathLike, finished: dict[int, dict]) -> None:
    """Rewrite the finished rows into one clean PRED.partial (no cut last line to append after), drop the others."""
    single = worker_partial(out, None)
    old = partial_paths(out)
    if finished or single in old:
        write_jsonl(single, (finished[i] for i in sorted(finished)))
    for path in old:
        if path != single:
            path.unlink()


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append finished rows and flush them to disk, so a crash loses at most the chunk being answered."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a', encoding='utf-8') as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + '\n')
        f.flush()
        os.fsync(f.fileno())


def merge(out: str | os.PathLike, finished: dict[int, dict], n: int) -> int:
    """Write PRED in input order (atomically) once every line 0..n-1 is finished; remove the partial files."""
    missing = [i for i in range(n) if i not in finished]
    if missing:
        raise RuntimeError(f'{len(missing)} of {n} rows have no prediction (first: input line {missing[0] + 1}); '
                           'rerun the same command to finish them')
    rows = ({k: v for k, v in finished[i].items() if k not in (LINE, RUN)} for i in range(n))
    written = write_jsonl(out, rows)
    if written != n:
        raise RuntimeError(f'wrote {written} rows, expected {n}')
    for path in partial_paths(out):
        path.unlink()
    return written
