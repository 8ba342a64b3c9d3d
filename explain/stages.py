"""Subtask 2 stage by stage over all rows (docs/design.md), like inference/: each stage reads earlier stages' files in
the work folder and writes its own with a progress bar; a killed run resumes at the stage and row where it stopped
(explain.work); the model stages run data-parallel, one worker process per visible GPU on a contiguous shard.

    rows         WORK/rows.jsonl: the val rows with their Task 1 answers (+ log-probs), written by the caller
    probes       one batched generation over all rows x probes (inference.backends: the Task 1 engine and decoding)
    rewrite      optional (--rewrite): the same model rewrites each row's fact sentences as prose, text only; the
                 rewrite is checked at assembly (explain.narrative.check_rewrite) and used only when it passes
    grounding    one batched generation of the grounding prompt (none for answers that deny the finding)
    occlusion    teacher-forced scores of the fixed answer under the unoccluded and each occluded image
                 (explain.scoring: batched transformers forward, or vLLM prompt log-probs)
    confidence   raw confidence: the Task 1 answer's own log-probs, else the unoccluded pass's (same numbers)
    calibration  a stratified sample of a labelled predictions file -> calibrator, report, reliability data
    visuals      per row the untouched frame, the occlusion heatmap on one scale (nats) shared by every row (its
                 cells are all in occlusion.jsonl) and the grounding boxes drawn with their labels (explain.visuals)
The caller (submission.task2) then assembles the submission from these files (explain.assemble).

    python -m explain.stages --work WORK --stages probes,grounding --worker-rank R --worker-lines L
is how the parent starts a worker; it reads WORK/settings.json and WORK/rows.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import InputError, cli_main
from common.io import read_jsonl, write_json, write_jsonl
from common.model_family import DEFAULT_FAMILY, family_of_config, family_of_swift_name
from common.procs import die_with_parent, die_with_spawning_parent, mark_parent
from common.qwen_vision import use_image_budget
from explain import confidence, grounding, heatmap, narrative, pipeline, probing, visuals
from explain.work import KEY, LINE, StageFile, key_of, record_time
from inference import shards

if __name__ == '__mp_main__':   # a child spawned by a worker (vLLM's engine core): dies with it, no orphan
    die_with_spawning_parent()

GENERATION_STAGES = ('probes', 'rewrite', 'grounding')
MODEL_STAGES = GENERATION_STAGES + ('occlusion',)
STAGES = MODEL_STAGES + ('confidence', 'calibration', 'visuals')
SCORE_BATCH, SCORE_BATCH_GPU = 8, 32       # sequences per teacher-forced forward pass (CPU / one GPU)
TOP_LOGPROBS = 20                          # alternatives kept at the answer's first token (as inference.backends)


@dataclass
class Settings:
    """Everything the stages run with; saved as WORK/settings.json for the worker processes."""
    model: str
    adapters: list[str] = field(default_factory=list)
    backend: str = 'auto'                  # generation engine, as inference.predict: auto | vllm | transformers
    scorer: str = 'transformers'           # teacher-forced scoring: transformers | vllm
    max_pixels: int | None = None
    system: str | None = None
    attention: str = 'auto'
    answer_tokens: int = 64                # Task 1's max_new_tokens: an answer that long was cut (no <|im_end|>)
    probe_tokens: int = 48
    grounding_tokens: int = 128
    grid: int = heatmap.DEFAULT_GRID
    min_effect: float = heatmap.MIN_EFFECT_NATS  # nats: a smaller drop changed nothing (not drawn, not named)
    rewrite: bool = False                  # let the same model rewrite the fact sentences (checked at assembly)
    rewrite_tokens: int = 96
    occlusion_max_pixels: int | None = None  # score occlusion passes on images downscaled to this budget
    batch_size: int | None = None          # generation requests per step (inference.backends' default)
    score_batch: int | None = None         # sequences per teacher-forced pass (8 on CPU, 32 per GPU)
    gpus: int | None = None
    workers: int | None = None
    max_model_len: int = 4096
    calibration: str | None = None         # labelled predictions file with log-probs (make infer --logprobs)
    calibration_rows: int = confidence.CALIBRATION_ROWS
    calibration_method: str = 'temperature'
    visual_workers: int | None = None      # processes drawing heatmaps (default: the CPU count, at most 16)
    encode_workers: int | None = None      # DataLoader processes encoding scoring passes per model worker

    def save(self, work: Path) -> None:
        write_json(work / 'settings.json', asdict(self))

    @classmethod
    def load(cls, work: Path) -> 'Settings':
        return cls(**json.loads((work / 'settings.json').read_text(encoding='utf-8')))


# ---------------------------------------------------------------- rows and keys
def write_rows(work: Path, rows: list[dict]) -> None:
    """WORK/rows.jsonl: val_id, img_id, question, image (a file), width, height, answer (+ token_logprobs,
    first_top_logprobs when the Task 1 file has them)."""
    for i, r in enumerate(rows):
        for k in ('val_id', 'img_id', 'question', 'image', 'width', 'height', 'answer'):
            if k not in r:
                raise ValueError(f'row {i}: missing {k}')
    write_jsonl(work / 'rows.jsonl', rows)


def read_rows(work: Path) -> list[dict]:
    return read_jsonl(work / 'rows.jsonl')


def _model_key(s: Settings) -> list:
    model = os.path.abspath(s.model) if os.path.exists(s.model) else s.model
    return [model, [os.path.abspath(a) for a in s.adapters], s.max_pixels, s.system]


def _row_id(r: dict) -> list:
    return [r['val_id'], r['img_id'], r['question'], r['answer'], r['image']]


def model_family(s: Settings) -> str:
    """The model's family (common.model_family): its grounding prompt, box coordinates and turn-ending token."""
    from inference.backends import read_model_kind
    model_type, template = read_model_kind(s.model, s.adapters)
    known = family_of_swift_name(template) or family_of_swift_name(model_type) or family_of_config(s.model)
    return known.name if known else DEFAULT_FAMILY


def stage_keys(stage: str, s: Settings, rows: list[dict]) -> list[str]:
    """Per row: what decides this stage's output for it (settings, model, the row's inputs)."""
    model = _model_key(s)
    if stage == 'probes':
        return [key_of(stage, model, s.backend, s.probe_tokens, [probing.PROBES[k] for k in probing.probes_for(
            r['question'])], _row_id(r)) for r in rows]
    if stage == 'rewrite':   # the rewrite follows from the probe answers, which follow from the probes' key
        return [key_of(stage, model, s.backend, s.rewrite_tokens, narrative.REWRITE_PROMPT, probe_key)
                for probe_key in stage_keys('probes', s, rows)]
    if stage == 'grounding':
        fam = model_family(s)
        return [key_of(stage, model, s.backend, s.grounding_tokens, _grounding_prompt(r, fam), _row_id(r))
                for r in rows]
    if stage == 'occlusion':
        return [key_of(stage, model, s.scorer, s.grid, s.occlusion_max_pixels, _row_id(r)) for r in rows]
    raise ValueError(stage)


def _grounding_prompt(row: dict, family_name: str = DEFAULT_FAMILY) -> str | None:
    """The grounding question for a row (in the family's box convention), None when its answer denies the finding
    (no box is drawn then)."""
    if pipeline.denies(row['answer']):
        return None
    return grounding.grounding_prompt(pipeline.grounding_target(row['question']), family_name)


def _prompt(s: Settings, row: dict, question: str) -> dict:
    from explain.scoring import messages_for
    return {'messages': messages_for(question, s.system), 'images': [row['image']]}


# ---------------------------------------------------------------- engines (loaded once per process, lazily)
class Engines:
    def __init__(self, s: Settings):
        self.s, self._backend, self._scorer, self._sizes = s, None, None, {}

    def _load(self, name: str, batch_size: int | None):
        from inference.backends import load_backend
        s = self.s
        return load_backend(name, s.model, s.adapters, max_new_tokens=s.probe_tokens, logprobs=False,
                            batch_size=batch_size, max_model_len=s.max_model_len, limit_mm_per_prompt={'image': 1},
                            attention=s.attention)

    def generator(self):
        if self._backend is None:
            self._backend = self._load(self.s.backend, self.s.batch_size)
        return self._backend

    def scorer(self):
        if self._scorer is None:
            import torch
            from explain.scoring import TransformersScorer, VllmScorer
            s, gpu = self.s, torch.cuda.is_available()
            same = s.scorer == s.backend
            if s.scorer == 'vllm':
                engine = (self.generator() if same else self._load('vllm', s.score_batch)).engine
                self._scorer = VllmScorer(engine, s.system, batch_size=s.score_batch or 512)
            else:
                engine = (self.generator() if same else self._load('transformers', None)).engine
                self._scorer = TransformersScorer(engine, s.system, s.score_batch or (SCORE_BATCH_GPU if gpu
                                                                                     else SCORE_BATCH),
                                                  s.encode_workers or 0)
        return self._scorer

    def resized_size(self, path: str, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of the image as the model saw it: what Qwen2.5-VL grounding coordinates refer to. Qwen
        templates resize with qwen_vl_utils' fetch_image (patched by ms-swift from MAX_PIXELS) in every mode, at
        the processor's patch size (14 px Qwen2.5-VL, 16 px Qwen3-VL); Gemma 3 makes every image its fixed square."""
        if size not in self._sizes:
            # ms-swift patches qwen_vl_utils when it loads the processor
            processor = self.generator().engine.template.processor.image_processor
            if not hasattr(processor, 'merge_size'):
                self._sizes[size] = (int(processor.size['width']), int(processor.size['height']))
            else:
                from PIL import Image
                from qwen_vl_utils import fetch_image
                with Image.open(path) as im:
                    self._sizes[size] = fetch_image({'image': im.convert('RGB')},
                                                    image_patch_size=processor.patch_size).size
        return self._sizes[size]


# ---------------------------------------------------------------- model stages (run on a shard of lines)
def run_probes(engines: Engines, s: Settings, rows, lines, out: StageFile, keys, rank):
    backend = engines.generator()
    backend.max_new_tokens = s.probe_tokens
    asked = [(line, probing.probes_for(rows[line]['question'])) for line in lines]
    step = max(1, backend.chunk_size // probing.MAX_PROBES)
    with tqdm(total=len(lines), desc=f'probes[{rank or 0}]', unit='row', position=rank or 0) as bar:
        for start in range(0, len(asked), step):
            chunk = asked[start:start + step]
            prompts = [_prompt(s, rows[line], probing.PROBES[k]) for line, ks in chunk for k in ks]
            answers = iter(backend.answer(prompts) if prompts else [])
            out.append(rank, [{LINE: line, KEY: keys[line], 'val_id': rows[line]['val_id'],
                               'probes': [{'key': k, 'question': probing.PROBES[k],
                                           'answer': next(answers)['prediction']} for k in ks]}
                              for line, ks in chunk])
            bar.update(len(chunk))


def run_rewrite(engines: Engines, s: Settings, rows, lines, out: StageFile, keys, rank):
    """The same model rewrites each row's fact sentences (text only, no image: it can only reword them); rows with
    no fact sentence are not asked."""
    backend = engines.generator()
    backend.max_new_tokens = s.rewrite_tokens
    probes = StageFile(out.path.parent, 'probes').finished(stage_keys('probes', s, rows))
    with tqdm(total=len(lines), desc=f'rewrite[{rank or 0}]', unit='row', position=rank or 0) as bar:
        for start in range(0, len(lines), backend.chunk_size):
            chunk = lines[start:start + backend.chunk_size]
            notes = {line: [f['sentence'] for f in narrative.facts(probes[line]['probes'])] for line in chunk}
            asked = [line for line in chunk if notes[line]]
            prompts = [{'messages': ([{'role': 'system', 'content': s.system}] if s.system else []) +
                        [{'role': 'user', 'content': narrative.rewrite_prompt(notes[line])}], 'images': []}
                       for line in asked]
            outputs = dict(zip(asked, (o['prediction'] for o in backend.answer(prompts)))) if asked else {}
            out.append(rank, [{LINE: line, KEY: keys[line], 'val_id': rows[line]['val_id'], 'facts': notes[line],
                               'output': outputs.get(line)} for line in chunk])
            bar.update(len(chunk))


def grounding_record(row: dict, output: str | None, resized: tuple[int, int] | None,
                     family_name: str = DEFAULT_FAMILY) -> dict:
    """One row's grounding result: the model's output parsed, mapped from the family's coordinates (resized pixels or
    0..1000) back to the original size and clipped (no output: the answer denies the finding, nothing was asked)."""
    rec = {'val_id': row['val_id'], 'target': pipeline.grounding_target(row['question']), 'output': output,
           'resized': None, 'boxes': [], 'box_stats': grounding.BoxStats().as_dict()}
    if output is not None:
        boxes, stats = grounding.boxes_from_output(output, resized, (row['width'], row['height']), family_name)
        rec.update(resized=list(resized), boxes=boxes, box_stats=stats.as_dict())
    return rec


def run_grounding(engines: Engines, s: Settings, rows, lines, out: StageFile, keys, rank):
    backend = engines.generator()
    backend.max_new_tokens = s.grounding_tokens
    fam = model_family(s)
    with tqdm(total=len(lines), desc=f'grounding[{rank or 0}]', unit='row', position=rank or 0) as bar:
        for start in range(0, len(lines), backend.chunk_size):
            chunk = lines[start:start + backend.chunk_size]
            asked = [line for line in chunk if _grounding_prompt(rows[line], fam)]
            outputs = backend.answer([_prompt(s, rows[line], _grounding_prompt(rows[line], fam)) for line in asked]) \
                if asked else []
            text = {line: o['prediction'] for line, o in zip(asked, outputs)}
            done = []
            for line in chunk:
                r = rows[line]
                resized = engines.resized_size(r['image'], (r['width'], r['height'])) if line in text else None
                done.append({LINE: line, KEY: keys[line], **grounding_record(r, text.get(line), resized, fam)})
            out.append(rank, done)
            bar.update(len(chunk))


def occlusion_items(s: Settings, row: dict) -> list:
    """The unoccluded pass (with the first token's alternatives) then one pass per grid cell, row-major."""
    from explain.scoring import ScoreItem
    views = [heatmap.View(s.grid, None, s.occlusion_max_pixels)]
    views += [heatmap.View(s.grid, c, s.occlusion_max_pixels) for c in range(s.grid * s.grid)]
    return [ScoreItem(row['image'], row['question'], row['answer'], TOP_LOGPROBS if v.cell is None else 0, v)
            for v in views]


def occlusion_record(s: Settings, scored: list) -> dict:
    """One row's occlusion output from its G*G + 1 scored passes."""
    base, cells = scored[0], scored[1:]
    n = len(base.token_logprobs) - 1
    finished = n < s.answer_tokens            # a cut answer never had its <|im_end|>
    greedy = all(base.greedy[:n]) and (base.greedy[n] if finished else True)
    scores = [c.answer_logprob for c in cells]
    return {'grid': s.grid, 'base_logprob': base.answer_logprob, 'cell_logprobs': scores,
            'cells': heatmap.cells_from_scores(base.answer_logprob, scores, s.grid).tolist(),
            'token_logprobs': base.token_logprobs, 'first_top': base.first_top, 'answer_finished': finished,
            'greedy': bool(greedy)}


def run_occlusion(engines: Engines, s: Settings, rows, lines, out: StageFile, keys, rank):
    scorer = engines.scorer()
    passes = s.grid * s.grid + 1
    items = [item for line in lines for item in occlusion_items(s, rows[line])]
    scored: list = []
    with tqdm(total=len(lines), desc=f'occlusion[{rank or 0}]', unit='row', position=rank or 0) as bar:
        for index, result in scorer.score_iter(items):
            scored.append(result)
            if len(scored) == passes:
                line = lines[index // passes]
                out.append(rank, [{LINE: line, KEY: keys[line], 'val_id': rows[line]['val_id'],
                                   **occlusion_record(s, scored)}])
                scored = []
                bar.update(1)


RUNNERS = {'probes': run_probes, 'rewrite': run_rewrite, 'grounding': run_grounding, 'occlusion': run_occlusion}


def active_model_stages(s: Settings) -> tuple[str, ...]:
    return tuple(st for st in MODEL_STAGES if st != 'rewrite' or s.rewrite)


def engine_kind(stage: str, s: Settings) -> str:
    return s.scorer if stage == 'occlusion' else s.backend


def run_model_stages_here(s: Settings, work: Path, stages: list[str], lines: list[int], rank: int | None,
                          engines: Engines | None = None) -> None:
    """Run `stages` on `lines` in this process (lines already finished for a stage are skipped)."""
    rows = read_rows(work)
    engines = engines or Engines(s)
    for stage in stages:
        keys = stage_keys(stage, s, rows)
        out = StageFile(work, stage)
        done = out.finished(keys)
        todo = [line for line in lines if line not in done]
        if todo:
            start = time.perf_counter()
            try:
                RUNNERS[stage](engines, s, rows, todo, out, keys, rank)
            finally:   # an interrupted stage records its time too (benchmarks sum runs)
                record_time(work, stage, time.perf_counter() - start, len(todo), rank)
        if rank is None:   # the only process: the stage is complete, merge it now (workers leave that to the parent)
            out.merge(out.finished(keys), len(rows))


# ---------------------------------------------------------------- orchestration
def resolve(s: Settings) -> tuple[Settings, list[str], list[str]]:
    """Settings with the engines chosen (auto -> vllm or transformers), the visible GPU ids and the ones to use."""
    from inference.backends import choose_backend
    from inference.predict import visible_gpus
    seen, gpus = visible_gpus(s.gpus)
    s.backend = choose_backend(s.backend, len(gpus))
    if s.scorer not in ('transformers', 'vllm'):
        raise InputError(f'must be transformers or vllm, got {s.scorer!r}', field='--scorer')
    if (s.backend == 'vllm' or s.scorer == 'vllm') and not gpus:
        raise InputError('vLLM needs a GPU', field='--backend' if s.backend == 'vllm' else '--scorer')
    return s, seen, gpus


def _groups(s: Settings) -> list[list[str]]:
    """Consecutive model stages that share one engine run in one worker process (one model load)."""
    groups: list[list[str]] = []
    for stage in active_model_stages(s):
        if groups and engine_kind(groups[-1][-1], s) == engine_kind(stage, s):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def run_model_stages(s: Settings, work: Path, seen: list[str], gpus: list[str], engines: Engines | None) -> None:
    from inference.predict import plan_groups
    rows = read_rows(work)
    for group in _groups(s):
        todo: set[int] = set()
        for stage in group:
            out = StageFile(work, stage)
            done = out.finished(stage_keys(stage, s, rows))
            out.compact(done)
            todo |= set(range(len(rows))) - set(done)
        todo_lines = sorted(todo)
        workers = plan_groups(gpus, 1, s.workers)
        if todo_lines:
            print(f'{"/".join(group)}: {len(rows) - len(todo_lines)} of {len(rows)} rows done, '
                  f'{len(todo_lines)} to do, engine {engine_kind(group[0], s)}, {len(workers)} worker(s)',
                  file=sys.stderr)
            start = time.perf_counter()
            shard_lines = shards.split_contiguous(todo_lines, len(workers))
            # CPU, one process: no need to spawn (and the engine is kept); engines the caller loaded (explain.ask, one
            # row) are used here on a GPU too, rather than loading the model again in a worker
            if (not gpus or engines is not None) and len(shard_lines) == 1:
                run_model_stages_here(s, work, group, shard_lines[0], None, engines)
            else:
                try:
                    spawn_workers(work, group, workers, shard_lines)
                finally:
                    record_time(work, '+'.join(group), time.perf_counter() - start, len(todo_lines))
        for stage in group:
            out = StageFile(work, stage)
            out.merge(out.finished(stage_keys(stage, s, rows)), len(rows))


def spawn_workers(work: Path, stages: list[str], groups: list[list[str]], shard_lines: list[list[int]]) -> None:
    """One `python -m explain.stages` per shard, each seeing only its GPUs; fail if any failed."""
    procs = []
    for rank, (group, lines) in enumerate(zip(groups, shard_lines)):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=','.join(group))
        cmd = [sys.executable, '-m', 'explain.stages', '--work', str(work), '--stages', ','.join(stages),
               '--worker-rank', str(rank), '--worker-lines', shards.encode_lines(lines)]
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent))  # no orphans if we are killed
    try:
        failed = [rank for rank, p in enumerate(procs) if p.wait() != 0]
    finally:   # interrupted: stop the workers too (their finished rows are on disk)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    if failed:
        raise SystemExit(f'error: {"/".join(stages)} worker(s) {failed} failed; rerun the same command to resume '
                         f'(finished rows are kept in {work})')


# ---------------------------------------------------------------- CPU stages
def run_confidence(s: Settings, work: Path) -> list[dict]:
    """Raw confidence per row: the Task 1 answer's generation log-probs (what calibration rows use too), else the
    unoccluded teacher-forced pass (the same numbers for the model's own greedy answer)."""
    rows, occ = read_rows(work), StageFile(work, 'occlusion').rows()
    out = []
    for r, o in zip(tqdm(rows, desc='confidence', unit='row'), occ):
        if r.get('token_logprobs') is not None and r.get('first_top_logprobs') is not None:
            raw = confidence.raw_score(r['question'], r['answer'], r['token_logprobs'], r['first_top_logprobs'])
            source = 'task1 log-probs'
        else:
            n = len(o['token_logprobs']) - 1
            logprobs = o['token_logprobs'][:n] + (o['token_logprobs'][n:] if o['answer_finished'] else [])
            raw = confidence.raw_score(r['question'], r['answer'], logprobs, o['first_top'])
            source = 'teacher-forced'
        out.append({'val_id': r['val_id'], 'raw_confidence': raw, 'source': source})
    write_jsonl(work / 'confidence.jsonl', out)
    return out


def run_calibration(s: Settings, work: Path) -> dict | None:
    """Calibrator + report from a stratified sample of the labelled predictions (cached in calibration.json)."""
    if not s.calibration:
        return None
    path = Path(s.calibration)
    if not path.is_file():
        raise InputError('file not found', file=str(path), field='--calibration-data')
    stat = path.stat()
    key = key_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns, s.calibration_rows, s.calibration_method)
    cache = work / 'calibration.json'
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding='utf-8'))
        if saved.get('key') == key:
            return saved
    rows = confidence.calibration_inputs(path)
    strata = [confidence.question_stratum(r) for r in rows]
    picked = confidence.stratified_sample(strata, s.calibration_rows)
    raw, labels = [], []
    for i in tqdm(picked, desc='calibration', unit='row'):
        r = rows[i]
        raw.append(confidence.raw_score(r['question'], r['prediction'], r['token_logprobs'], r['first_top_logprobs']))
        labels.append(int(confidence.is_correct(r['question'], r['prediction'], r['reference'])))
    calibrator, report, after = confidence.calibration_report(raw, labels, s.calibration_method)
    counts: dict[str, int] = {}
    for i in picked:
        counts[strata[i]] = counts.get(strata[i], 0) + 1
    report['sample'] = {'rows': len(picked), 'of': len(rows), 'cap': s.calibration_rows,
                        'seed': confidence.SAMPLE_SEED, 'strata': dict(sorted(counts.items()))}
    saved = {'key': key, 'file': str(path), 'report': report, 'raw': raw, 'labels': labels,
             'after': [float(v) for v in after]}
    write_json(cache, saved)
    return saved


VISUALS_VERSION = 2   # bump when the pictures change: a rerun redraws every row


def run_visuals(s: Settings, work: Path) -> list[dict]:
    """WORK/visuals/: per row the untouched frame, the heatmap on one scale shared by every row (explain.heatmap.
    effect_scale over all rows' cells) and, when the model gave boxes, the boxes drawn with their labels; once, the
    colour bar. A row is redrawn when its occlusion or grounding output, its image or the shared scale changes."""
    rows, occ, ground = read_rows(work), StageFile(work, 'occlusion').rows(), StageFile(work, 'grounding').rows()
    scale = heatmap.effect_scale([o['cells'] for o in occ], s.min_effect)
    folder = work / 'visuals'
    folder.mkdir(exist_ok=True)
    out = StageFile(work, 'visuals')
    keys = [key_of('visuals', VISUALS_VERSION, o[KEY], g[KEY], r['image'], scale, s.min_effect)
            for r, o, g in zip(rows, occ, ground)]
    done = {i: d for i, d in out.finished(keys).items()
            if all((work / d[k]).is_file() for k in ('heatmap', 'frame', 'box_image') if d.get(k))}
    out.compact(done)
    todo = [i for i in range(len(rows)) if i not in done]
    if todo:
        start = time.perf_counter()
        jobs = [visuals.RowJob(rows[i]['image'], rows[i]['val_id'], occ[i]['cells'], ground[i]['boxes'],
                               ground[i]['target'], scale, s.min_effect, str(folder)) for i in todo]
        workers = s.visual_workers or min(16, os.cpu_count() or 1)
        with tqdm(total=len(todo), desc='visuals', unit='row') as bar:
            pool = ProcessPoolExecutor(workers) if workers > 1 and len(todo) >= 8 else None
            drawn = pool.map(visuals.draw_row, jobs, chunksize=4) if pool else map(visuals.draw_row, jobs)
            try:
                for i, rec in zip(todo, drawn):
                    out.append(None, [{LINE: i, KEY: keys[i], 'val_id': rows[i]['val_id'], **rec}])
                    bar.update(1)
            finally:
                if pool:
                    pool.shutdown()
        record_time(work, 'visuals', time.perf_counter() - start, len(todo))
    visuals.draw_colourbar(scale, s.min_effect, folder / visuals.SCALE_FILE)
    out.merge(out.finished(keys), len(rows))
    return out.rows()


def run(work: str | os.PathLike, s: Settings, engines: Engines | None = None) -> dict:
    """All stages over WORK/rows.jsonl; returns {'confidence', 'calibration', 'visuals'} (the CPU stages' outputs).
    `engines`: the caller's, already loaded in this process; the model stages run on them when one shard does."""
    work = Path(work)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a job's time limit, `timeout`) as an exception: workers are stopped and stage times recorded
        signal.signal(signal.SIGTERM, _terminated)
    s, seen, gpus = resolve(s)
    if s.encode_workers is None and gpus:   # the CPU cores shared by the GPU workers (prompts are encoded on CPU)
        from inference.predict import plan_groups
        s.encode_workers = min(8, max(0, (os.cpu_count() or 1) // len(plan_groups(gpus, 1, s.workers)) - 1))
    use_image_budget(s.max_pixels)  # read by ms-swift's Qwen-VL resizing, here and in every worker
    s.save(work)
    run_model_stages(s, work, seen, gpus, engines)
    start = time.perf_counter()
    conf = run_confidence(s, work)
    record_time(work, 'confidence', time.perf_counter() - start, len(conf))
    start = time.perf_counter()
    cal = run_calibration(s, work)
    record_time(work, 'calibration', time.perf_counter() - start, cal['report']['sample']['rows'] if cal else 0)
    visuals = run_visuals(s, work)
    return {'confidence': conf, 'calibration': cal, 'visuals': visuals}


# ---------------------------------------------------------------- assembly
def assemble(work: str | os.PathLike, calibration: dict | None) -> tuple[list[dict], list[dict], dict]:
    """(submission lines, audit lines, summary) from the stage files: each row's text, visuals and calibrated
    confidence; the audit keeps every probe, claim (with its source), rewrite verdict, grounding output, heatmap cell
    and region, and the pictures a report shows."""
    work = Path(work)
    rows = read_rows(work)
    s = Settings.load(work)
    parts = [StageFile(work, name).rows() for name in ('probes', 'grounding', 'occlusion', 'visuals')]
    rewrites = StageFile(work, 'rewrite').rows() if s.rewrite else [None] * len(rows)
    conf = read_jsonl(work / 'confidence.jsonl')
    calibrator = confidence.Calibrator.from_json(calibration['report']['calibrator']) if calibration \
        else confidence.Calibrator('identity')
    calibrated_on = calibration['report']['sample']['rows'] if calibration else None
    lines, audit = [], []
    box_stats = grounding.BoxStats()
    for r, p, g, o, v, c, w in zip(rows, *parts, conf, rewrites):
        if not all(x['val_id'] == r['val_id'] for x in (p, g, o, v, c, w or r)):
            raise RuntimeError(f'stage files out of step at val_id {r["val_id"]}: delete {work} and rerun')
        score = round(float(np.clip(calibrator(float(c['raw_confidence'])), 0.0, 1.0)), 6)
        certainty = {'sentence': narrative.certainty_sentence(score, calibrated_on), 'score': score,
                     'raw': c['raw_confidence'], 'calibrated_on': calibrated_on}
        entry = pipeline.describe(p['probes'], g, v, certainty, w['output'] if w else None, r['answer'])
        lines.append({'val_id': r['val_id'], 'img_id': r['img_id'], 'question': r['question'], 'answer': r['answer'],
                      'textual_explanation': entry['textual_explanation'],
                      'visual_explanation': entry['visual_explanation'], 'confidence_score': score})
        audit.append({'val_id': r['val_id'], 'question_class': pipeline.question_class(r['question']),
                      'answer': r['answer'], 'probes': p['probes'], 'claims': entry['claims'],
                      'rewrite': entry['rewrite'], 'grounding_target': g['target'], 'grounding_output': g['output'],
                      'box_stats': g['box_stats'], 'raw_confidence': c['raw_confidence'],
                      'confidence_source': c['source'], 'greedy_consistent': o['greedy'],
                      'certainty': narrative.certainty_level(score), 'frame': v['frame'],
                      'heatmap_image': v['heatmap'], 'box_image': v['box_image'], 'heatmap_changed': v['changed'],
                      'heatmap_peak_nats': round(v['peak_nats'], 6), 'heatmap_regions': v['regions'],
                      'box_mass_share': v['box_mass_share'], 'box_area_share': v['box_area_share'],
                      'heatmap_cells': np.round(np.asarray(o['cells']), 6).tolist(), 'confidence_score': score})
        box_stats.add(grounding.BoxStats(**g['box_stats']))
    summary = {'rows': len(lines), 'greedy_consistent': sum(a['greedy_consistent'] for a in audit),
               'confidence_sources': {src: sum(a['confidence_source'] == src for a in audit)
                                      for src in sorted({a['confidence_source'] for a in audit})},
               'boxes': box_stats.as_dict(), 'heatmap': heatmap_summary(parts[3], audit),
               'rewrite': rewrite_summary(audit) if s.rewrite else None}
    return lines, audit, summary


def heatmap_summary(visual_rows: list[dict], audit: list[dict]) -> dict:
    """The shared scale, how many rows have a region that changed the answer, and the heat-in-box agreement."""
    first = visual_rows[0] if visual_rows else {'scale_nats': None, 'min_nats': None}
    measured = [a for a in audit if a['box_mass_share'] is not None]
    changed = sum(a['heatmap_changed'] for a in audit)
    rule = (f'the {heatmap.SCALE_QUANTILE:g} quantile of the largest drop per row, over the rows with an effect, at '
            'least twice the threshold' if changed else 'no row has an effect: twice the threshold')
    return {'scale_nats': first['scale_nats'], 'min_nats': first['min_nats'], 'scale_rule': rule,
            'rows_changed': changed,
            'rows_with_box': sum(a['box_image'] is not None for a in audit), 'rows_with_box_and_effect': len(measured),
            'mean_box_mass_share': float(np.mean([a['box_mass_share'] for a in measured])) if measured else None,
            'mean_box_area_share': float(np.mean([a['box_area_share'] for a in measured])) if measured else None}


def rewrite_summary(audit: list[dict]) -> dict:
    """How often the rewrite check rejected the model's rewrite, and why (reasons by their first words)."""
    asked = [a['rewrite'] for a in audit if a['rewrite'] is not None]
    rejected = [v for v in asked if not v['accepted']]
    reasons: dict[str, int] = {}
    for v in rejected:
        kind = next(k for k in narrative.REJECTIONS if v['reason'].startswith(k))
        reasons[kind] = reasons.get(kind, 0) + 1
    return {'asked': len(asked), 'accepted': len(asked) - len(rejected), 'rejected': len(rejected),
            'rejection_rate': len(rejected) / len(asked) if asked else None, 'reasons': dict(sorted(reasons.items()))}


def visual_files(audit: list[dict]) -> list[str]:
    """Every picture of the submission, relative to the work folder (and to the submission folder)."""
    files = [f'visuals/{visuals.SCALE_FILE}']
    for a in audit:
        files += [f for f in (a['frame'], a['heatmap_image'], a['box_image']) if f]
    return files


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- worker entry point
@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m explain.stages', description='a data-parallel Subtask 2 worker')
    p.add_argument('--work', required=True)
    p.add_argument('--stages', required=True, help='comma-separated model stages, run in order')
    p.add_argument('--worker-rank', type=int, required=True)
    p.add_argument('--worker-lines', required=True)
    args = p.parse_args(argv)
    mark_parent()   # its engine's processes die with this worker (common.procs)
    work = Path(args.work)
    signal.signal(signal.SIGTERM, _terminated)
    s = Settings.load(work)
    use_image_budget(s.max_pixels)
    stages = args.stages.split(',')
    unknown = [st for st in stages if st not in MODEL_STAGES]
    if unknown:
        raise InputError(f'unknown stage(s) {unknown}; model stages are {", ".join(MODEL_STAGES)}', field='--stages')
    run_model_stages_here(s, work, stages, shards.decode_lines(args.worker_lines), args.worker_rank)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
