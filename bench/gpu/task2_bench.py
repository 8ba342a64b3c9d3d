"""Subtask 2 on the GPU machine with the Qwen2.5-VL-7B shape (random init): today's per-row path on a few rows vs the
stage-by-stage path on all rows, per stage; and how well cheaper occlusion settings agree with grid 6.

    python -m bench.gpu.task2_bench staged MODEL DATA --out R.json [--rows 1500] [--calibration-rows 2000]
        [--before-tree DIR] [--before-rows 5] [--answers model|reference] [--max-new-tokens 64] [--task2-args "..."]
        [--method-args "..."]
    python -m bench.gpu.task2_bench agreement MODEL --out R.json [--frames DIR] [--synthetic DATA] [--images 24]
        [--variants "4 3 6@200704 4@200704"]

MODEL: bench/gpu/build_model.py's folder; DATA: bench/gpu/make_data.py's (any N: rows are reused cyclically).

staged: writes WORK/dataset, a local Kvasir-VQA-x1 copy whose test split is `--rows` complexity-1 rows made from DATA
(so the organizers' task2 subset is those rows, shuffled), then
  1. Task 1 answers of the val rows through inference.predict --logprobs (`make infer`; timed, reported apart), or
     with --answers reference the make_data answers as given Task 1 answers (no log-probs: ~10 words, like a trained
     model's; a random model answers with --max-new-tokens tokens of noise);
  2. calibration predictions of `--calibration-rows` labelled rows through inference.predict --logprobs (timed apart);
  3. before (with --before-tree, a `git archive 88f43d9` of the repository): the same command from that tree on
     --before-rows rows, which re-answers each val row and each calibration row one by one; seconds per row from
     its per-row cache files' times, extrapolated to --rows val rows + --calibration-rows calibration rows (today's
     default calibrates on the whole val split: more rows still);
  4. after: `python -m submission.task2 --dry-run` on all rows; wall time and per-stage times (WORK/timings.jsonl);
     with a before side, whether its first rows have the per-row path's content where the method is the same
     (`content`: bench.task2_bench.compare). --method-args go to both sides (--grid, --probe-tokens,
     --grounding-tokens, --max-pixels: flags the per-row path also takes), --task2-args to the after side only.
Each call stops after --budget seconds (SIGTERM: workers stop, stage times are kept) and the same command continues
where it stopped, so a 1,500-row run fits in calls of a few minutes; times add up over calls (WORK/progress.json).
agreement: for frames (e.g. ../shared/data/gi-images/kvasir-seg/images) and synthetic images, the model's greedy
answer to "Is there a polyp in the image?" is scored under grid 6 at full resolution (the reference) and under each
variant (`G` = grid G, `G@P` = grid G on images downscaled to P pixels); per variant the Spearman rank correlation
with the reference map, whether the peaks fall in one cell, and the scoring time per image. Meaningful on a trained
model; on random weights it checks the plumbing.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.task2_bench import REPO, before_records, compare, py, stage_times

QUESTION = 'Is there a polyp in the image?'


def device() -> str:
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'


def data_lines(data: Path) -> list[dict]:
    rows = []
    for line in open(data / 'swift' / 'train-original.jsonl', encoding='utf-8'):
        r = json.loads(line)
        rows.append({'question': r['messages'][0]['content'].replace('<image>', ''),
                     'answer': r['messages'][1]['content'], 'image': r['images'][0]})
    return rows


def make_dataset(data: Path, out: Path, n: int) -> Path:
    """A local Kvasir-VQA-x1 copy: n complexity-1 test rows (images copied in), a few train rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from data_prep.schema import ARROW_SCHEMA
    if (out / 'data' / 'test-00000-of-00001.parquet').is_file():
        return out
    lines = data_lines(data)
    (out / 'data').mkdir(parents=True, exist_ok=True)
    (out / 'images').mkdir(exist_ok=True)
    table = {'test': [], 'train': []}
    for i in range(n + 8):
        src = lines[i % len(lines)]
        img_id = f'{Path(src["image"]).stem}_{i}'
        shutil.copyfile(src['image'], out / 'images' / f'{img_id}.jpg')
        table['test' if i < n else 'train'].append(
            {'img_id': img_id, 'complexity': 1, 'question': src['question'], 'answer': src['answer'],
             'original': '[]', 'question_class': ['polyp_count'], 'image': f'images/{img_id}.jpg'})
    for split, rows in table.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA),
                       out / 'data' / f'{split}-00000-of-00001.parquet')
    return out


def swift_files(rows: list[dict], path: Path, with_val_id: bool) -> Path:
    with open(path, 'w', encoding='utf-8') as f, open(path.with_name(path.stem + '.meta.jsonl'), 'w') as meta:
        for r in rows:
            f.write(json.dumps({'messages': [{'role': 'user', 'content': '<image>' + r['question']},
                                             {'role': 'assistant', 'content': r['answer']}],
                                'images': [str(r['image'])]}) + '\n')
            side = {'img_id': r['img_id'], 'question': r['question'], 'question_class': r.get('question_class'),
                    'reference': r['answer'], 'image': str(r['image'])}
            meta.write(json.dumps({'val_id': r['val_id'], **side} if with_val_id else side) + '\n')
    return path


def per_row_seconds(folder: Path) -> float | None:
    """Median gap between consecutive per-row cache files (the old path writes one per finished row)."""
    times = sorted(p.stat().st_mtime for p in folder.glob('*.json')) if folder.is_dir() else []
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if gaps else None


def staged(a) -> dict:
    """Resumable across calls: each step's result is kept in WORK/progress.json; a step cut by --budget continues
    (inference.predict and the stages resume their rows) when the same command runs again."""
    from data_prep.sources import load_source
    from data_prep.subsets import task2_subset
    from common.io import write_json
    deadline = time.monotonic() + a.budget
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    progress_file = work / 'progress.json'
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {}

    def step(name: str, module: str, *args, cwd: Path = REPO, check: bool = True) -> bool:
        """Run one step within the budget; its wall time adds up over calls. True when it has finished."""
        if progress.get(name, {}).get('done'):
            return True
        left = deadline - time.monotonic()
        if left < 30:
            return False
        seconds, done = py(module, *args, cwd=cwd, quiet=False, timeout=left, check=check)
        entry = progress.setdefault(name, {'seconds': 0.0, 'calls': 0})
        entry.update(seconds=entry['seconds'] + seconds, calls=entry['calls'] + 1, done=done or not check)
        write_json(progress_file, progress)
        return entry['done']

    dataset = make_dataset(Path(a.data), work / 'dataset', a.rows)
    val = task2_subset(load_source(str(dataset))['test'])
    val_rows = [{**val[i], 'image': str(dataset / val[i]['image'])} for i in range(len(val))]
    lines = data_lines(Path(a.data))
    cal_rows = [{'img_id': f'cal{i}', **lines[i % len(lines)]} for i in range(a.calibration_rows)]
    task1, cal = work / 'task1.pred.jsonl', work / 'calibration.pred.jsonl'
    common = ['--model', a.model, '--max-new-tokens', a.max_new_tokens, '--logprobs']
    finished = True
    if a.answers == 'model':
        data = swift_files(val_rows, work / 'task2_val.jsonl', with_val_id=True)
        finished = step('task1_inference', 'inference.predict', *common, '--data', data, '--out', task1)
    elif not task1.is_file():
        with open(task1, 'w', encoding='utf-8') as f:
            for r in val_rows:
                f.write(json.dumps({'val_id': r['val_id'], 'img_id': r['img_id'], 'question': r['question'],
                                    'prediction': r['answer'], 'reference': r['answer']}) + '\n')
    if finished and a.calibration_rows:
        data = swift_files(cal_rows, work / 'calibration.jsonl', with_val_id=False)
        finished = step('calibration_inference', 'inference.predict', *common, '--data', data, '--out', cal)
    build = ['--model', a.model, '--dataset', dataset, '--dry-run', '--team', REPO / 'submission' / 'team.demo.json',
             '--task1-predictions', task1, '--answer-tokens', a.max_new_tokens, '--name', 'bench',
             *shlex.split(a.method_args)]
    build += ['--calibration-data', cal] if a.calibration_rows else []
    if finished and a.before_tree:
        # the per-row path refuses a build when > 5 % of the answers are not its own greedy output: its per-row
        # times are read from its cache files either way
        extra = ['--calibration-limit', a.before_rows] if a.calibration_rows else []
        finished = step('before', 'submission.task2', *build, *extra, '--build-root', work / 'before', '--limit',
                        a.before_rows, cwd=Path(a.before_tree).resolve(), check=False)
    if finished:
        finished = step('after', 'submission.task2', *build, '--build-root', work / 'after', '--calibration-rows',
                        a.calibration_rows, *shlex.split(a.task2_args))
    result: dict = {'complete': finished, 'rows': len(val_rows), 'calibration_rows': a.calibration_rows,
                    'device': device(), 'max_new_tokens': a.max_new_tokens, 'answers': a.answers,
                    'task2_args': a.task2_args, 'method_args': a.method_args, 'steps': progress,
                    'after_stages_s': stage_times(work / 'after' / '.work-bench')}
    if progress.get('before'):
        row_s = per_row_seconds(work / 'before' / '.work-bench' / 'rows')
        cal_s = per_row_seconds(work / 'before' / '.work-bench' / 'calibration') or 0.0
        result['before'] = {'rows_timed': a.before_rows, 's_per_row': row_s, 's_per_calibration_row': cal_s}
        if row_s:
            result['before']['extrapolated_s'] = a.rows * row_s + a.calibration_rows * cal_s
            if finished:
                result['speedup_vs_before'] = result['before']['extrapolated_s'] / progress['after']['seconds']
        records = before_records(work / 'before' / '.work-bench')
        if finished and records:
            result['content'] = compare(records, work / 'after' / 'bench')
    if not finished:
        print('[bench] task2 not finished within --budget: run the same command again to continue', flush=True)
    return result


def agreement(a) -> dict:
    import numpy as np
    from PIL import Image
    from explain import heatmap, stages
    from explain.scoring import ScoreItem
    images: dict[str, list[str]] = {}
    if a.frames:
        images['frames'] = sorted(str(p) for p in Path(a.frames).glob('*.jpg'))[:a.images]
    if a.synthetic:
        images['synthetic'] = sorted(str(p) for p in (Path(a.synthetic) / 'images' / 'original').glob('*.jpg'))[
            :a.images]
    s = stages.Settings(model=a.model, backend='transformers', scorer='transformers', max_pixels=a.max_pixels)
    stages.use_image_budget(a.max_pixels)
    engines = stages.Engines(s)
    backend = engines.generator()
    backend.max_new_tokens = a.max_new_tokens
    scorer = engines.scorer()
    variants = [v.split('@') for v in a.variants.split()]
    result: dict = {'device': device(), 'max_new_tokens': a.max_new_tokens, 'reference': 'grid 6, full resolution',
                    'sources': {}}

    def cells(path: str, answer: str, grid: int, pixels: int | None) -> tuple[np.ndarray, float]:
        settings = stages.Settings(model=a.model, grid=grid, occlusion_max_pixels=pixels)
        row = {'image': path, 'question': QUESTION, 'answer': answer}
        start = time.perf_counter()
        scored = scorer.score(stages.occlusion_items(settings, row))
        return np.asarray(stages.occlusion_record(settings, scored)['cells']), time.perf_counter() - start

    for source, paths in images.items():
        answers = [o['prediction'] for o in backend.answer([{'messages': [{'role': 'user', 'content': '<image>' +
                                                                           QUESTION}], 'images': [p]} for p in paths])]
        refs, ref_s = zip(*(cells(p, ans, 6, None) for p, ans in zip(paths, answers)))
        per_variant = {'6': {'seconds_per_image': statistics.mean(ref_s)}}
        for v in variants:
            grid, pixels = int(v[0]), int(v[1]) if len(v) > 1 else None
            got = [cells(p, ans, grid, pixels) for p, ans in zip(paths, answers)]
            agree = [heatmap.rank_agreement(c, r) for (c, _), r in zip(got, refs)]
            rhos = [x['spearman'] for x in agree if x['spearman'] is not None]
            peaks = [x['same_peak_cell'] for x in agree if x['same_peak_cell'] is not None]
            per_variant['@'.join(v)] = {
                'grid': grid, 'max_pixels': pixels, 'seconds_per_image': statistics.mean(t for _, t in got),
                'spearman_mean': statistics.mean(rhos) if rhos else None,
                'spearman_median': statistics.median(rhos) if rhos else None, 'maps_compared': len(rhos),
                'same_peak_cell_rate': sum(peaks) / len(peaks) if peaks else None}
        sizes = [Image.open(p).size for p in paths]
        result['sources'][source] = {'images': len(paths), 'sizes': sorted(set(sizes))[:5], 'variants': per_variant}
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='mode', required=True)
    st = sub.add_parser('staged')
    st.add_argument('model')
    st.add_argument('data')
    st.add_argument('--rows', type=int, default=1500)
    st.add_argument('--calibration-rows', type=int, default=2000)
    st.add_argument('--before-tree', default=None, help='a checkout of the per-row path (git archive 88f43d9)')
    st.add_argument('--before-rows', type=int, default=5)
    st.add_argument('--answers', choices=('model', 'reference'), default='model')
    st.add_argument('--max-new-tokens', type=int, default=64)
    st.add_argument('--task2-args', default='',
                    help='extra submission.task2 flags of the after side, e.g. "--grid 4 --scorer vllm"')
    st.add_argument('--method-args', default='',
                    help='submission.task2 flags of both sides (the per-row path takes --grid, --probe-tokens, '
                         '--grounding-tokens, --max-pixels), e.g. "--grid 2 --probe-tokens 2"')
    st.add_argument('--work', default=str(REPO / 'build' / 'bench-task2-gpu'),
                    help='kept between calls (resumable); delete it for a fresh measurement')
    st.add_argument('--budget', type=float, default=540, help='seconds this call may run (steps resume)')
    ag = sub.add_parser('agreement')
    ag.add_argument('model')
    ag.add_argument('--frames', default=None, help='folder of real frames (*.jpg)')
    ag.add_argument('--synthetic', default=None, help='a make_data folder')
    ag.add_argument('--images', type=int, default=24)
    ag.add_argument('--variants', default='4 3 6@200704 4@200704')
    ag.add_argument('--max-new-tokens', type=int, default=16)
    ag.add_argument('--max-pixels', type=int, default=None)
    for p in (st, ag):
        p.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    result = staged(a) if a.mode == 'staged' else agreement(a)
    result['mode'] = a.mode
    print('[bench] task2', json.dumps(result), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    sys.exit(main())
