"""Benchmark: the Subtask 2 build before (row by row, commit 88f43d9) vs after (stage by stage over all rows), on the
same rows, predictions and settings, in the same run.

    python -m bench.task2_bench [--work build/bench-task2] [--before 88f43d9] [--images 32]
        [--out bench/results/task2.md]
    python -m bench.task2_bench --extract-before      # build/before-88f43d9 for the GPU benchmark (bench/gpu/run.sh T2)

The CPU demo's data and settings: the tiny Qwen2.5-VL (training.tiny_model), a synthetic copy with --images images
(data_prep.synthetic, 32 as in `make demo`), prepared with one variant; Task 1 and calibration predictions made once
with the current `make infer --logprobs` path (both sides read the same files); then `python -m submission.task2`
with the demo's TASK2_ARGS (grid 4, 8 probe tokens, 16 grounding tokens, 8 answer tokens, MAX_PIXELS 50176; the
after side also with the demo's `--rewrite --rewrite-tokens 16`, a stage the per-row path does not have), once from a
`git archive` of --before (the per-row path: it re-answers every val and calibration row) and once from this tree,
each into a fresh build folder. Reports wall time of each build, the after side's stage times (WORK/timings.jsonl,
its first model stage includes the model load), and whether the content whose method is unchanged is the same
(`compare`). The GPU benchmark (bench/gpu/task2_bench.py) reuses these helpers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common.io import atomic_open, write_json

REPO = Path(__file__).resolve().parents[1]
BEFORE = '88f43d9'   # the last commit with the per-row Subtask 2 path
OFFLINE = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MODELSCOPE_OFFLINE': '1'}
DEMO_ARGS = ['--grid', '4', '--probe-tokens', '8', '--grounding-tokens', '16', '--answer-tokens', '8']
DEMO_MAX_PIXELS = 50176
DEMO_AFTER_ARGS = ['--rewrite', '--rewrite-tokens', '16']   # make demo's stage the per-row path does not have


def extract_tree(ref: str, dest: Path) -> Path:
    """The repository at `ref` (git archive) in dest, for running the before side with the same venv."""
    if (dest / 'submission' / 'task2.py').is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', ref], capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', str(dest)], input=archive, check=True)
    return dest


def py(module: str, *args, cwd: Path = REPO, env: dict | None = None, quiet: bool = True,
       timeout: float | None = None, check: bool = True) -> tuple[float, bool]:
    """Run `python -m module args` from `cwd` (its modules first on the path) in a process group of its own;
    returns (wall seconds, finished). Past `timeout` the group gets SIGTERM (stages record their time and stop their
    workers; a rerun resumes), then SIGKILL a minute later."""
    path = os.pathsep.join([str(cwd)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    env = {**os.environ, **OFFLINE, 'PYTHONPATH': path, **(env or {})}
    pipe = subprocess.PIPE if quiet else None
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, '-m', module, *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=pipe, stderr=pipe, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        return time.perf_counter() - start, False
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f'{module} failed in {cwd}:\n{(err or "")[-4000:]}')
    return seconds, proc.returncode == 0


def stage_times(work: Path) -> dict[str, float]:
    """The parent's wall time per stage (summed over runs) from WORK/timings.jsonl."""
    out: dict[str, float] = {}
    path = work / 'timings.jsonl'
    for line in path.read_text().splitlines() if path.is_file() else []:
        t = json.loads(line)
        if t['rank'] is None:
            out[t['stage']] = out.get(t['stage'], 0.0) + t['seconds']
    return out


def before_records(work: Path) -> list[dict]:
    """The per-row path's records in val_id order, from its cache (WORK/rows/<val_id>.json, one per finished row):
    they hold the answer, probes, grounding output, boxes, raw confidence and heatmap cells, and are there even when
    that path then refused the build (more than 5 % of the answers not its own greedy output)."""
    folder = work / 'rows'
    paths = sorted(folder.glob('*.json'), key=lambda p: int(p.stem)) if folder.is_dir() else []
    return [json.loads(p.read_text(encoding='utf-8')) for p in paths]


def compare(before: list[dict], after: Path) -> dict:
    """Does the staged build (submission folder `after`) give the per-row path's content (`before_records`) where
    the method is the same? Its first rows, in order, against the per-row path's rows: answers, the probes' questions
    and answers, the grounding output and the boxes mapped from it (exact), raw confidences before calibration and
    occlusion heatmap cells (float noise of other batch shapes: the largest difference is reported).
    Not compared: the texts and visual descriptions (issue 18 rewrote them by design: they name the hot regions in
    the dataset's position words and read for a clinician), the heatmap PNGs (issue 18: one scale with a colour bar,
    the frame left untouched below the effect threshold) and calibrated confidences (issue 17: the staged path
    calibrates on a capped stratified sample of predictions, the per-row path on the rows it re-answers)."""
    def jsonl(path):
        return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]
    lines = jsonl(after / 'submission_task2.jsonl')[:len(before)]
    audit = jsonl(after / 'report' / 'explanations_audit.jsonl')[:len(before)]

    def boxes(visuals):
        return [v['data'] for v in visuals if v['type'] == 'bounding_box']
    ident = [(r['val_id'], r['img_id'], r['question']) for r in before]
    same_shape = [np.shape(b['heatmap_cells']) == np.shape(a['heatmap_cells']) for b, a in zip(before, audit)]
    pairs = list(zip(before, lines, audit))
    return {
        'rows': len(before), 'same_rows_and_order': ident == [(x['val_id'], x['img_id'], x['question']) for x in lines]
        and [x['val_id'] for x in audit] == [r['val_id'] for r in before],
        'same_answer': sum(b['answer'] == x['answer'] == a['answer'] for b, x, a in pairs),
        'same_probes': sum(b['probes'] == [{k: p[k] for k in ('key', 'question', 'answer')} for p in a['probes']]
                           for b, _, a in pairs),
        'same_grounding_output': sum(b['grounding_output'] == a['grounding_output'] for b, _, a in pairs),
        'same_boxes': sum(boxes(b['visual_explanation']) == boxes(x['visual_explanation']) for b, x, _ in pairs),
        'same_heatmap_grid': sum(same_shape),
        'max_raw_confidence_diff': max((abs(b['raw_confidence'] - a['raw_confidence']) for b, _, a in pairs),
                                       default=0.0),
        'max_heatmap_cell_diff_nats': max((float(np.abs(np.subtract(b['heatmap_cells'], a['heatmap_cells'])).max())
                                           for (b, _, a), same in zip(pairs, same_shape) if same), default=0.0)}


def demo_data(work: Path, images: int) -> dict:
    """Tiny model, synthetic copy, prepared splits and the two prediction files (made once, reused)."""
    env = {'CUDA_VISIBLE_DEVICES': '', 'MAX_PIXELS': str(DEMO_MAX_PIXELS)}
    d = {'model': work / 'tiny-model', 'dataset': work / 'synthetic', 'prepared': work / 'prepared',
         'task1': work / 'preds' / 'task2_val-original.jsonl', 'calibration': work / 'preds' / 'val-original.jsonl'}
    if not (d['model'] / 'config.json').is_file():
        py('training.tiny_model', '--out', d['model'], env=env)
    if not (d['dataset'] / 'geometry.jsonl').is_file():
        py('data_prep.synthetic', '--out', d['dataset'], '--images', images, '--seed', 0, env=env)
    if not (d['prepared'] / 'manifest.json').is_file():
        py('data_prep.prepare', '--dataset', d['dataset'], '--out', d['prepared'], '--aug-k', 1, env=env)
    for split, key in (('task2_val-original', 'task1'), ('val-original', 'calibration')):
        if not d[key].is_file():
            py('inference.predict', '--model', d['model'], '--data', d['prepared'] / 'swift' / f'{split}.jsonl',
               '--out', d[key], '--backend', 'transformers', '--max-new-tokens', 8, '--logprobs', env=env)
    return d


def build_args(d: dict, root: Path, name: str) -> list:
    return ['--model', d['model'], '--dataset', d['dataset'], '--dry-run', '--name', name, '--build-root', root,
            '--team', REPO / 'submission' / 'team.demo.json', '--task1-predictions', d['task1'],
            '--calibration-data', d['calibration'], '--max-pixels', DEMO_MAX_PIXELS, *DEMO_ARGS]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--work', type=Path, default=REPO / 'build' / 'bench-task2')
    ap.add_argument('--before', default=BEFORE, help='git ref of the per-row path')
    ap.add_argument('--images', type=int, default=32, help='synthetic images (make demo: 32)')
    ap.add_argument('--out', type=Path, default=REPO / 'bench' / 'results' / 'task2.md')
    ap.add_argument('--extract-before', action='store_true',
                    help=f'only write the --before tree to build/before-<ref> (what the GPU benchmark runs) and stop')
    a = ap.parse_args(argv)
    if a.extract_before:
        print(extract_tree(a.before, REPO / 'build' / f'before-{a.before}'))
        return
    work = a.work.resolve()
    d = demo_data(work, a.images)
    old = extract_tree(a.before, work / f'before-{a.before}')
    env = {'CUDA_VISIBLE_DEVICES': '', 'MAX_PIXELS': str(DEMO_MAX_PIXELS)}
    import shutil
    results = {}
    load = [os.getloadavg()[0]]   # 1-minute load average around the timed builds: were other jobs sharing the cores?
    for side, cwd in (('before', old), ('after', REPO)):
        root = work / f'build-{side}'
        shutil.rmtree(root, ignore_errors=True)   # a fresh build: no cached rows or stages
        extra = DEMO_AFTER_ARGS if side == 'after' else []
        results[side] = py('submission.task2', *build_args(d, root, 'demo'), *extra, cwd=cwd, env=env)[0]
    load.append(os.getloadavg()[0])
    stages = stage_times(work / 'build-after' / '.work-demo')
    rows = sum(1 for _ in open(d['task1']))
    cal_rows = sum(1 for _ in open(d['calibration']))
    diff = compare(before_records(work / 'build-before' / '.work-demo'), work / 'build-after' / 'demo')
    report = {'rows': rows, 'calibration_rows': cal_rows, 'before_ref': a.before, 'before_s': results['before'],
              'after_s': results['after'], 'speedup': results['before'] / results['after'], 'after_stages_s': stages,
              'content': diff, 'machine': f'{os.cpu_count()} CPU cores', 'load_average_before_after': load,
              'date': time.strftime('%Y-%m-%d'), 'settings': DEMO_ARGS, 'after_settings': DEMO_AFTER_ARGS,
              'max_pixels': DEMO_MAX_PIXELS}
    lines = [f'# Subtask 2 build on CPU: per-row path ({a.before}) vs stage by stage, {rows} val rows + '
             f'{cal_rows} calibration rows', '',
             f'Measured {time.strftime("%Y-%m-%d")} on {os.cpu_count()} CPU cores, 1-minute load average '
             f'{load[0]:.1f} before the builds and {load[1]:.1f} after'
             f'{" (above the core count: other jobs were running)" if max(load) > os.cpu_count() else ""}. '
             'The `make demo` data and settings (tiny Qwen2.5-VL, synthetic '
             f'copy of {a.images} images, {" ".join(DEMO_ARGS)}, MAX_PIXELS {DEMO_MAX_PIXELS}; the after side also '
             f'{" ".join(DEMO_AFTER_ARGS)}, a stage the per-row path does not have); both sides read '
             'the same Task 1 and calibration predictions; each build is a fresh `python -m submission.task2 '
             '--dry-run` (process start, model load and validation included).', '',
             '| path | wall s | s per val row |', '|---|---|---|',
             f'| before: row by row ({a.before}) | {results["before"]:.1f} | {results["before"] / rows:.2f} |',
             f'| after: stage by stage | {results["after"]:.1f} | {results["after"] / rows:.2f} |',
             f'| speed-up | {results["before"] / results["after"]:.2f}x | |', '',
             '| after: stage | s |', '|---|---|']
    lines += [f'| {k} | {v:.1f} |' for k, v in stages.items()]
    n = diff['rows']
    lines += ['', f'Same content where the method is the same (`compare`): rows and order '
                  f'{"the same" if diff["same_rows_and_order"] else "DIFFER"}; {diff["same_answer"]}/{n} answers, '
                  f'{diff["same_probes"]}/{n} probe answers, {diff["same_grounding_output"]}/{n} grounding outputs, '
                  f'{diff["same_boxes"]}/{n} box lists identical; largest differences: raw confidence '
                  f'{diff["max_raw_confidence_diff"]:.1e}, heatmap cell {diff["max_heatmap_cell_diff_nats"]:.1e} nats '
                  f'({diff["same_heatmap_grid"]}/{n} grids of the same size; float noise of other batch shapes). '
                  'Not compared: texts, visual descriptions and heatmap PNGs (issue 18 rewrote them by design) and '
                  'calibrated confidences (issue 17 changed the calibration sample).']
    text = '\n'.join(lines) + '\n'
    print(text)
    with atomic_open(a.out, 'w') as f:
        f.write(text)
    write_json(a.out.with_suffix('.json'), report)


if __name__ == '__main__':
    main()
