"""The work folder: one output file per stage, written row by row so that a killed run resumes where it stopped.

A stage's rows are appended (and flushed) to `WORK/<stage>.jsonl.partial` (one process) or `.partial.<rank>` (one
file per data-parallel worker) as they finish; each row carries its input line (`_line`) and a key (`_key`) that
hashes the stage's settings with the row's inputs. When every line is done, `WORK/<stage>.jsonl` is written in input
order (atomically) and the partial files are removed. A rerun keeps every row whose key still matches, from the
merged file and from partial files, and redoes only the others (changed settings or answers redo just what they
touch). The partial-file plumbing (contiguous shards, append + fsync, cut last lines dropped) is inference/shards.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from common.io import read_jsonl, write_jsonl
from inference import shards

LINE, KEY = shards.LINE, '_key'


def key_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageFile:
    def __init__(self, work: str | os.PathLike, name: str):
        self.name = name
        self.path = Path(work) / f'{name}.jsonl'

    def partial(self, rank: int | None) -> Path:
        return shards.worker_partial(self.path, rank)

    def finished(self, keys: list[str]) -> dict[int, dict]:
        """Rows (by input line) whose key matches `keys[line]`: from the merged file, then the partial files."""
        found: dict[int, dict] = {}
        sources = ([self.path] if self.path.is_file() else []) + shards.partial_paths(self.path)
        for path in sources:
            for row in shards.read_partial(path):
                line = row[LINE]
                if line < len(keys) and row.get(KEY) == keys[line]:
                    found.setdefault(line, row)
        return found

    def compact(self, finished: dict[int, dict]) -> None:
        """The rows worth keeping, in one clean partial file (nothing cut to append after); stale files removed."""
        single = self.partial(None)
        old = shards.partial_paths(self.path)
        if finished or single in old:
            write_jsonl(single, (finished[i] for i in sorted(finished)))
        for path in old:
            if path != single:
                path.unlink()

    def append(self, rank: int | None, rows: list[dict]) -> None:
        shards.append_rows(self.partial(rank), rows)

    def merge(self, finished: dict[int, dict], n: int) -> None:
        missing = [i for i in range(n) if i not in finished]
        if missing:
            raise RuntimeError(f'{self.name}: {len(missing)} of {n} rows not done (first: line {missing[0]}); rerun to '
                               'finish them')
        write_jsonl(self.path, (finished[i] for i in range(n)))
        for path in shards.partial_paths(self.path):
            path.unlink()

    def rows(self) -> list[dict]:
        """The merged output, in input order."""
        return read_jsonl(self.path)


def record_time(work: str | os.PathLike, stage: str, seconds: float, rows: int, rank: int | None = None) -> None:
    """One line per stage run in WORK/timings.jsonl: the parent's wall time (rank None; a group of model stages run
    by workers is one line, e.g. "probes+grounding") or one worker's time per stage (its first stage includes the
    model load). A resumed run adds lines; benchmarks sum the parent's lines."""
    with open(Path(work) / 'timings.jsonl', 'a', encoding='utf-8') as f:
        f.write(json.dumps({'stage': stage, 'seconds': round(seconds, 3), 'rows': rows, 'rank': rank}) + '\n')
