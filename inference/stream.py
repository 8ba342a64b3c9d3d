"""Stream prompts through an engine: encode ahead in worker processes, keep the engine full, save rows as they finish.

    prefetcher = Prefetcher(workers, kind, setup)     # encodes prompts ahead (in-process when workers == 0)
    stats = stream(lines, prompts, prefetcher, adapter, writer.write_answers, lookahead=..., data=DATA)

The engine adapter has four methods: `capacity()` (how many more requests it takes now), `submit(key, payload)`,
`ready(more_coming)` (whether `step()` can make progress) and `step()` (finished (key, answer) pairs, in any order).
`VllmAdapter` (inference.vllm_engine) hands each request to vLLM as soon as it is encoded and a place is free, and
returns answers as vLLM finishes them, so nothing drains between chunks; `BatchAdapter` (inference.backends) runs a
batch when it is full or when no more prompts are coming. Rows are appended to the partial file as they finish, with
their input line, in whatever order they finish; the merge writes input order. The stats say where the time went
(waiting for encodes, handing requests over, engine steps, writing) and how many rows finished in each interval.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from common.errors import InputError
from common.procs import die_with_parent, mark_parent

FSYNC_EVERY_S = 1.0   # rows are flushed at once (a killed process loses none); fsynced at most once a second
TIMELINE_BIN_S = 5.0

# ---------------------------------------------------------------- encoding ahead
_worker: dict = {}


def _init_worker(kind: str, setup: dict, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    mark_parent()
    _worker['prepare'] = make_prepare(kind, setup)


def _prepare_in_worker(prompt: dict):
    return _worker['prepare'](prompt)


def make_prepare(kind: str, setup: dict) -> Callable[[dict], object]:
    """The encode function of an engine kind: 'vllm' (ms-swift template encode, see inference.vllm_engine) or
    'identity' (the transformers engine encodes a batch itself)."""
    if kind == 'identity':
        return lambda prompt: prompt
    if kind == 'vllm':
        from common.qwen_vision import use_image_budget
        from inference.vllm_engine import build_template, encode_for_vllm
        use_image_budget(setup.get('max_pixels'))   # before ms-swift reads it (a no-op when None)
        template = setup.get('template')
        if template is None:
            from inference.backends import read_model_kind
            kinds = (setup.get('model_type'), setup.get('template_type'))
            if not any(kinds):
                kinds = read_model_kind(setup['model'], setup['adapters'])
            template = build_template(setup['model'], setup['adapters'], *kinds, setup.get('torch_dtype'))
        return lambda prompt: encode_for_vllm(template, prompt, setup.get('max_model_len'))
    raise ValueError(f'unknown encode kind {kind!r}')


class Prefetcher:
    """Encodes prompts ahead: `workers` spawned processes (each builds its own encoder once), or in this process."""

    def __init__(self, workers: int, kind: str, setup: dict):
        self.workers = workers
        if workers > 0:
            picklable = {k: v for k, v in setup.items() if k != 'template'}
            self.pool = ProcessPoolExecutor(workers, mp_context=get_context('spawn'), initializer=_init_worker,
                                            initargs=(kind, picklable, os.getpid()))
            self.prepare = None
        else:
            self.pool, self.prepare = None, make_prepare(kind, setup)

    def submit(self, prompt: dict) -> Future:
        if self.pool is not None:
            return self.pool.submit(_prepare_in_worker, prompt)
        future: Future = Future()
        try:
            future.set_result(self.prepare(prompt))
        except Exception as e:  # raised where the result is read, as from a worker
            future.set_exception(e)
        return future

    def warm_up(self) -> None:
        """Start the workers now (their imports and template then overlap the engine's start-up)."""
        if self.pool is not None:
            for _ in range(self.workers):
                self.pool.submit(int)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- saving rows
class PartialWriter:
    """Appends finished rows to a partial file: flushed at once, fsynced at most once a second and at close."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, 'a', encoding='utf-8')
        self.synced = time.monotonic()

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self.file.write(json.dumps(row, ensure_ascii=False) + '\n')
        self.file.flush()
        if time.monotonic() - self.synced >= FSYNC_EVERY_S:
            os.fsync(self.file.fileno())
            self.synced = time.monotonic()

    def close(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


# ---------------------------------------------------------------- the loop
@dataclass
class StreamStats:
    started: float = field(default_factory=time.monotonic)
    submitted: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    encode_wait_s: float = 0.0
    submit_s: float = 0.0
    first_handover_s: float | None = None   # the first adapter.submit alone: run 13's took 19.8 s of the 41.6 s
    step_s: float = 0.0
    write_s: float = 0.0
    steps: int = 0
    in_flight: list[tuple[float, int]] = field(default_factory=list)

    def summary(self, bin_s: float = TIMELINE_BIN_S) -> dict:
        """Seconds since the stream started; the generating window runs from the first hand-over to the last row."""
        if not self.finished:
            return {'rows': 0}
        first_submit = min(self.submitted.values()) - self.started
        last = max(self.finished.values()) - self.started
        window = max(last - first_submit, 1e-9)
        latency = sorted(self.finished[k] - self.submitted[k] for k in self.finished if k in self.submitted)
        bins = [0] * (int(last // bin_s) + 1)
        for t in self.finished.values():
            bins[int((t - self.started) // bin_s)] += 1
        peak = [0] * len(bins)
        for t, n in self.in_flight:
            i = min(int((t - self.started) // bin_s), len(peak) - 1)
            peak[i] = max(peak[i], n)
        return {'rows': len(self.finished), 'first_submit_s': round(first_submit, 2),
                'first_row_s': round(min(self.finished.values()) - self.started, 2), 'last_row_s': round(last, 2),
                'items_per_s': round(len(self.finished) / window, 2),
                'first_handover_s': None if self.first_handover_s is None else round(self.first_handover_s, 3),
                'parent_s': {'encode_wait': round(self.encode_wait_s, 2), 'submit': round(self.submit_s, 2),
                             'engine_step': round(self.step_s, 2), 'write': round(self.write_s, 2)},
                'steps': self.steps,
                'latency_s': {'p50': round(statistics.median(latency), 2) if latency else None,
                              'p90': round(latency[int(0.9 * (len(latency) - 1))], 2) if latency else None,
                              'max': round(latency[-1], 2) if latency else None},
                'timeline': {'bin_s': bin_s, 'finished': bins, 'peak_in_flight': peak}}


def _where(error: InputError, data: str | None, line: int) -> InputError:
    """An encode/submit error of input line `line` (0-based), located in the data file when it names no place."""
    if error.file or error.row is not None:
        return error
    return InputError(error.message, file=data, row=line + 1, field=error.field or 'messages')


def stream(lines: list[int], prompts: list[dict], prefetcher: Prefetcher, adapter,
           on_answers: Callable[[list[tuple[int, dict]]], None], *, lookahead: int, data: str | None = None,
           progress: Callable[[int], None] | None = None) -> StreamStats:
    """Answer prompts[i] for every i in `lines`: encode ahead (at most `lookahead` prompts encoded or in the engine),
    hand them to the adapter in input order as they are ready and it has room, and pass finished (line, answer)
    pairs to `on_answers` as they come."""
    stats = StreamStats()
    queue: deque[tuple[int, Future]] = deque()
    next_index = 0
    try:
        while True:
            while next_index < len(lines) and len(queue) + adapter.pending() < lookahead:
                line = lines[next_index]
                queue.append((line, prefetcher.submit(prompts[line])))
                next_index += 1
            while queue and adapter.capacity() > 0 and queue[0][1].done():
                line, future = queue.popleft()
                t0 = time.monotonic()
                try:
                    adapter.submit(line, future.result())
                except InputError as e:
                    raise _where(e, data, line) from None
                now = time.monotonic()
                stats.submit_s += now - t0
                if stats.first_handover_s is None:
                    stats.first_handover_s = now - t0
                stats.submitted[line] = now
            stats.in_flight.append((time.monotonic(), adapter.pending()))
            more_coming = bool(queue) or next_index < len(lines)
            if adapter.ready(more_coming):
                t0 = time.monotonic()
                answers = adapter.step()
                t1 = time.monotonic()
                stats.step_s += t1 - t0
                stats.steps += 1
                if answers:
                    on_answers(answers)
                    stats.write_s += time.monotonic() - t1
                    for line, _ in answers:
                        stats.finished[line] = t1
                    if progress:
                        progress(len(answers))
            elif queue:
                t0 = time.monotonic()
                wait([queue[0][1]])
                stats.encode_wait_s += time.monotonic() - t0
            else:
                break
    finally:
        for _, future in queue:
            future.cancel()
    return stats
