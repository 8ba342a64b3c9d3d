"""The tables of docs/benchmarks.md "Two H200s" from bench/gpu/two_gpu.sh's results folder, with the 2-GPU/1-GPU
ratios against the issues' targets.

    python -m bench.gpu.two_gpu_summary RESULTS [--out RESULTS/two_gpu.json] [--md RESULTS/two_gpu.md]

Reads what the script leaves in RESULTS (every part is optional: a stage not run yet is left out):
- stage_times.tsv (bench/gpu/stages.sh's layout, bench.gpu.stage_times): one line per stage run, its seconds, exit
  code, invocation, start and end, fresh (1: the stage started from scratch, 0: it continued);
- infer/<stage>.timing.json (+ .timing.<rank>.json per data-parallel worker) and infer/compare_<stage>.json
  (issue 22). Items/s while generating: one process's `stream.items_per_s`; with workers, all rows over the window
  from the first hand-over to the last row of any worker (workers start together; each one's stream times are offset
  by its own start-up). End to end: rows / `end_to_end_s` (command start -> predictions written);
- task2/<stage>/: the Task 1 and calibration predictions' timing files (their modification time marks when each
  `make infer` of `make submit-task2` ended), WORK/timings.jsonl (the build's stages), report.json (issue 23).
  Seconds are counted inside the stage's invocations only (a run continued over several calls has gaps);
- sft/perf_<stage>.json (bench_perf, steady window) and sft/<stage>.logging.jsonl (issue 24), param_count.json (MFU);
- e2e_1gpu/stage_times.tsv, e2e_2gpu/stage_times.tsv (bench/gpu/e2e.sh, the same layout; issue 25);
- gpu.txt, versions.txt, smi/<stage>.csv (GPU utilisation each second).
Targets: data-parallel inference >= 1.9x one GPU, Subtask 2 >= 1.8x, ZeRO-2 scaling >= 90 %.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from bench.gpu.stage_times import read_stage_times
from bench.gpu.summarize import flops_per_sample
from bench.task2_bench import stage_times
from common.errors import InputError, cli_main
from common.io import atomic_open, write_json

TARGET_DP, TARGET_TASK2, TARGET_ZERO2 = 1.9, 1.8, 0.90
PEAK_FLOPS = 989e12   # dense bf16 of one H100/H200 SXM, as bench.gpu.summarize
INFER_RUNS = ('infer_1gpu', 'infer_dp2', 'infer_tp2', 'infer_1gpu_warm')
TASK2_RUNS = ('submit2_1gpu', 'submit2_2gpu')
SFT_RUNS = {'sft_1gpu': '—', 'sft_zero2': 'ZeRO-2', 'sft_ddp2': '— (DDP)', 'sft_1gpu_bf16': '— (bf16 adapters)'}
E2E_RUNS = ('e2e_1gpu', 'e2e_2gpu')
BUILD_STAGES = ('answers', 'probes', 'rewrite', 'grounding', 'occlusion', 'confidence', 'calibration', 'visuals')


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _num(x, digits: int = 2) -> str:
    return '—' if x is None else f'{x:,.{digits}f}'


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def verdict(value: float | None, target: float) -> str:
    return 'not measured' if value is None else ('met' if value >= target else 'NOT met')


def gpu_use(path: Path) -> dict | None:
    """Per GPU index: mean utilisation (%) and most memory used (MiB) over the stage's samples."""
    if not path.is_file():
        return None
    util: dict[str, list[float]] = {}
    memory: dict[str, float] = {}
    for row in csv.reader(path.read_text().splitlines()):
        try:
            index, u, m = row[0].strip(), float(row[1]), float(row[2])
        except (IndexError, ValueError):
            continue
        util.setdefault(index, []).append(u)
        memory[index] = max(memory.get(index, 0.0), m)
    return {i: {'util_mean': round(sum(u) / len(u), 1), 'memory_max_mib': memory[i]} for i, u in util.items()}


# ---------------------------------------------------------------- issue 22
def infer_run(folder: Path, name: str) -> dict | None:
    t = _json(folder / f'{name}.timing.json')
    if t is None or 'end_to_end_s' not in t:
        return None
    ranks = [json.loads(p.read_text()) for p in sorted(folder.glob(f'{name}.timing.[0-9]*.json'))]
    if ranks:
        streams = [(r['startup_s'], r.get('stream') or {}) for r in ranks]
        rows = sum(s.get('rows', 0) for _, s in streams)
        begin = min(up + s['first_submit_s'] for up, s in streams if s.get('rows'))
        end = max(up + s['last_row_s'] for up, s in streams if s.get('rows'))
        generating = rows / (end - begin) if end > begin else None
        startup = max(up for up, _ in streams)
        per_worker = [s.get('items_per_s') for _, s in streams]
    else:
        stream = t.get('stream') or {}
        rows, generating, startup, per_worker = stream.get('rows', 0), stream.get('items_per_s'), t.get('startup_s'), []
    kwargs = t.get('engine_kwargs') or (ranks[0].get('engine_kwargs') if ranks else None) or {}
    return {'rows': t.get('rows', rows), 'rows_streamed': rows, 'workers': t.get('worker_processes', 1),
            'tensor_parallel': kwargs.get('tensor_parallel_size', 1), 'backend': t.get('backend'),
            'startup_s': startup, 'items_per_s_generating': round(generating, 3) if generating else None,
            'per_worker_items_per_s': per_worker, 'end_to_end_s': t['end_to_end_s'],
            'items_per_s_end_to_end': round(t.get('rows', rows) / t['end_to_end_s'], 3)}


def issue22(results: Path) -> dict:
    folder = results / 'infer'
    runs = {name: r for name in INFER_RUNS if (r := infer_run(folder, name))}
    for name, r in runs.items():
        r['compare_with_infer_1gpu'] = _json(folder / f'compare_{name}.json')
        r['gpu_use'] = gpu_use(results / 'smi' / f'{name}.csv')
    base = runs.get('infer_1gpu')
    warm = runs.get('infer_1gpu_warm') or base   # the same compile-cache state as the 2-GPU runs after it
    out: dict = {'runs': runs, 'end_to_end_reference': 'infer_1gpu_warm' if 'infer_1gpu_warm' in runs else 'infer_1gpu'}
    for name in ('infer_dp2', 'infer_tp2'):
        r = runs.get(name)
        if r and base:
            r['x_generating'] = _ratio(r['items_per_s_generating'], base['items_per_s_generating'])
            r['x_end_to_end'] = _ratio(r['items_per_s_end_to_end'], warm['items_per_s_end_to_end'])
    dp = runs.get('infer_dp2', {})
    out['target'] = {'data_parallel_x': TARGET_DP, 'generating': verdict(dp.get('x_generating'), TARGET_DP),
                     'end_to_end': verdict(dp.get('x_end_to_end'), TARGET_DP)}
    return out


def issue22_md(d: dict) -> list[str]:
    if not d['runs']:
        return []
    backend = next(iter(d['runs'].values())).get('backend')
    lines = [f'### Issue 22: `make infer` ({backend} backend) on 1 vs 2 GPUs', '',
             '| run | GPUs | engines × TP | rows | start-up s | items/s generating | end to end s | '
             'items/s end to end | × 1 GPU generating | × 1 GPU end to end | same rows and order as 1 GPU | '
             'identical answers | GPU util % |',
             '|' + '---|' * 13]
    for name, r in d['runs'].items():
        c = r.get('compare_with_infer_1gpu') or {}
        same = '—' if not c else ('yes' if c.get('same_order') else 'NO')
        identical = f"{c['identical_answers']:,}/{c['rows']:,}" if c else '—'
        util = ', '.join(f'{i}: {g["util_mean"]:.0f}' for i, g in (r.get('gpu_use') or {}).items()) or '—'
        gpus = r['workers'] * r['tensor_parallel']
        lines.append(f"| {name} | {gpus} | {r['workers']} × {r['tensor_parallel']} | {r['rows']:,} | "
                     f"{_num(r['startup_s'], 1)} | {_num(r['items_per_s_generating'])} | {_num(r['end_to_end_s'], 1)} "
                     f"| {_num(r['items_per_s_end_to_end'])} | {_num(r.get('x_generating'))} | "
                     f"{_num(r.get('x_end_to_end'))} | {same} | {identical} | {util} |")
    t = d['target']
    lines += ['', f"Data-parallel ≥ {TARGET_DP}× one GPU: while generating **{t['generating']}**, end to end "
                  f"**{t['end_to_end']}** (end to end against {d['end_to_end_reference']}).", '']
    return lines


# ---------------------------------------------------------------- issue 23
def active_seconds(intervals: list[tuple[int, int]], until: float) -> float:
    """Seconds inside the invocations' [start, end] intervals up to `until` (gaps between calls left out)."""
    return sum(max(0.0, min(end, until) - start) for start, end in intervals)


def task2_run(results: Path, name: str, times: list[dict]) -> dict | None:
    runs = [t for t in times if t['stage'] == name]
    if not runs:
        return None
    last_fresh = max(i for i, t in enumerate(runs) if t['fresh']) if any(t['fresh'] for t in runs) else 0
    runs = runs[last_fresh:]   # the latest measurement: from its fresh start over the invocations that continued it
    intervals = [(t['start'], t['end']) for t in runs]
    folder = results / 'task2' / name
    out: dict = {'invocations': len(runs), 'done': runs[-1]['rc'] == 0,
                 'total_s': sum(end - start for start, end in intervals)}
    marks = {}
    for part, file in (('task1_answers', 'task2_val-original.timing.json'),
                       ('calibration_answers', 'val-original.timing.json')):
        path = folder / file
        if path.is_file():
            marks[part] = active_seconds(intervals, path.stat().st_mtime)
            out[f'{part}_rows'] = json.loads(path.read_text()).get('rows')
    if 'task1_answers' in marks:
        out['task1_answers_s'] = round(marks['task1_answers'], 1)
    if 'calibration_answers' in marks and 'task1_answers' in marks:
        out['calibration_answers_s'] = round(marks['calibration_answers'] - marks['task1_answers'], 1)
    out['stages_s'] = {k: round(v, 1) for k, v in stage_times(folder).items()}
    if out['done'] and 'calibration_answers' in marks:
        build = out['total_s'] - marks['calibration_answers']
        out['build_s'] = round(build, 1)
        out['rest_of_build_s'] = round(build - sum(out['stages_s'].values()), 1)
    report = _json(folder / 'report.json')
    out['rows'] = report.get('rows') if report else None
    return out


def same_stage_columns(runs: dict[str, dict]) -> None:
    """Model stages run by worker processes are timed as one group ("probes+grounding"); one process on a CPU times
    them apart. Where one run has a group, the other runs' members are summed into it, so the columns compare."""
    groups = {k for r in runs.values() for k in r['stages_s'] if '+' in k}
    for r in runs.values():
        for group in groups:
            members = group.split('+')
            if group not in r['stages_s'] and all(m in r['stages_s'] for m in members):
                r['stages_s'][group] = round(sum(r['stages_s'].pop(m) for m in members), 1)


def issue23(results: Path, times: list[dict]) -> dict:
    runs = {name: r for name in TASK2_RUNS if (r := task2_run(results, name, times))}
    same_stage_columns(runs)
    one, two = runs.get('submit2_1gpu'), runs.get('submit2_2gpu')
    x = _ratio(one['total_s'], two['total_s']) if one and two and one['done'] and two['done'] else None
    return {'runs': runs, 'x_total': x, 'target': {'x': TARGET_TASK2, 'total': verdict(x, TARGET_TASK2)},
            'task1_answers_compared': _json(results / 'task2' / 'compare_task1_answers.json')}


def stage_order(name: str) -> int:
    """Pipeline order of a stage or group (by its first member); unknown names last."""
    first = name.split('+')[0]
    return BUILD_STAGES.index(first) if first in BUILD_STAGES else len(BUILD_STAGES)


def issue23_md(d: dict) -> list[str]:
    if not d['runs']:
        return []
    stages = sorted(dict.fromkeys(k for r in d['runs'].values() for k in r['stages_s']), key=stage_order)
    parts = ['task1_answers_s', 'calibration_answers_s']
    header = (['Task 1 answers (make infer)', 'calibration answers (make infer)'] + stages
              + ['rest of the build', 'total'])
    lines = ['### Issue 23: `make submit-task2 DRY_RUN=1` on the task2_val set, 1 vs 2 GPUs, seconds', '',
             '| run | rows | calls | ' + ' | '.join(header) + ' |', '|' + '---|' * (len(header) + 3)]

    def cells(r: dict) -> list:
        return [r.get(p) for p in parts] + [r['stages_s'].get(s) for s in stages] + [r.get('rest_of_build_s'),
                                                                                        r['total_s']]
    for name, r in d['runs'].items():
        total = f"{r['total_s']:,}" + ('' if r['done'] else ' (not finished)')
        lines.append(f"| {name} | {r.get('rows') or '—'} | {r['invocations']} | "
                     + ' | '.join(_num(c, 1) for c in cells(r)[:-1]) + f' | {total} |')
    if len(d['runs']) == 2:
        one, two = (cells(d['runs'][n]) for n in TASK2_RUNS)
        lines.append('| **1 GPU / 2 GPUs** | | | ' + ' | '.join(_num(_ratio(a, b)) for a, b in zip(one, two)) + ' |')
    c = d.get('task1_answers_compared') or {}
    lines += ['', f"Subtask 2 on 2 GPUs ≥ {TARGET_TASK2}× one GPU: **{d['target']['total']}**"
                  + (f" ({_num(d['x_total'])}×)" if d['x_total'] else '') + '.'
              + (f" Task 1 answers identical between the two runs: {c['identical_answers']:,}/{c['rows']:,}"
                 f" (same rows and order: {'yes' if c.get('same_order') else 'NO'})." if c else ''), '']
    return lines


# ---------------------------------------------------------------- issue 24
def losses(path: Path) -> list[float]:
    found = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row.get('loss'), (int, float)):
            found.append(row['loss'])
    return found


def issue24(results: Path) -> dict:
    params = _json(results / 'param_count.json')
    runs = {}
    for name in SFT_RUNS:
        perf = _json(results / 'sft' / f'perf_{name}.json')
        if not perf or not perf.get('samples_per_s'):
            continue
        world = perf.get('world_size', 1)
        r = {k: perf.get(k) for k in ('world_size', 'batch_per_step', 'steady_steps', 's_per_step', 'samples_per_s',
                                      'tokens_per_sample', 'peak_allocated_GiB', 'peak_reserved_GiB')}
        r['tokens_per_s'] = perf['samples_per_s'] * perf['tokens_per_sample']
        r['mfu_per_gpu'] = (perf['samples_per_s'] * flops_per_sample(perf, params) / (PEAK_FLOPS * world)
                            if params else None)
        loss = losses(results / 'sft' / f'{name}.logging.jsonl')
        r['loss_first_last'] = [loss[0], loss[-1]] if loss else None
        r['gpu_use'] = gpu_use(results / 'smi' / f'{name}.csv')
        runs[name] = r
    base, bf16 = runs.get('sft_1gpu'), runs.get('sft_1gpu_bf16')
    for r in runs.values():
        if r['world_size'] > 1:   # against the recipe on 1 GPU, and against 1 GPU with ZeRO-2's bf16 adapters
            r['scaling_efficiency'] = r['tokens_per_s'] / (r['world_size'] * base['tokens_per_s']) if base else None
            r['scaling_vs_bf16_adapters'] = (r['tokens_per_s'] / (r['world_size'] * bf16['tokens_per_s'])
                                             if bf16 else None)
    zero2 = runs.get('sft_zero2', {}).get('scaling_efficiency')
    return {'runs': runs, 'target': {'zero2_efficiency': TARGET_ZERO2, 'zero2': verdict(zero2, TARGET_ZERO2)}}


def issue24_md(d: dict) -> list[str]:
    if not d['runs']:
        return []
    lines = ['### Issue 24: `make sft` (the default recipe, batch 32 per GPU) on 1 vs 2 GPUs', '',
             '| run | GPUs | DeepSpeed | samples per step | steady steps | s/step | samples/s | tokens/s | '
             'MFU per GPU |'
             ' peak alloc / reserved GiB | loss first → last | scaling efficiency | vs 1 GPU, bf16 adapters |',
             '|' + '---|' * 13]
    for name, r in d['runs'].items():
        loss = r['loss_first_last']
        eff = r.get('scaling_efficiency')
        lines.append(f"| {name} | {r['world_size']} | {SFT_RUNS[name]} | {r['batch_per_step']} | {r['steady_steps']} | "
                     f"{_num(r['s_per_step'], 3)} | {_num(r['samples_per_s'])} | {_num(r['tokens_per_s'], 0)} | "
                     + ('—' if r['mfu_per_gpu'] is None else f"{100 * r['mfu_per_gpu']:.1f} %") + ' | '
                     + f"{_num(r['peak_allocated_GiB'], 1)} / {_num(r['peak_reserved_GiB'], 1)} | "
                     + (f'{loss[0]:.3f} → {loss[1]:.3f}' if loss else '—') + ' | '
                     + ('—' if eff is None else f'{100 * eff:.1f} %') + ' | '
                     + ('—' if r.get('scaling_vs_bf16_adapters') is None
                        else f"{100 * r['scaling_vs_bf16_adapters']:.1f} %") + ' |')
    lines += ['', f"ZeRO-2 scaling ≥ {TARGET_ZERO2:.0%} (against sft_1gpu, the recipe on one GPU): "
                  f"**{d['target']['zero2']}**. Under ZeRO-2 DeepSpeed's bf16 mode holds the LoRA adapters in bf16 "
                  '(sft_1gpu and DDP keep them in fp32); the last column compares like with like.', '']
    return lines


# ---------------------------------------------------------------- issue 25
def e2e_times(path: Path) -> dict[str, dict]:
    """Per e2e.sh stage: the last successful run's seconds (else the last run's, marked failed) and the run count."""
    out: dict[str, dict] = {}
    for t in read_stage_times(path):
        entry = out.setdefault(t['stage'], {'runs': 0})
        entry['runs'] += 1
        if t['rc'] == 0 or entry.get('rc', 1) != 0:
            entry.update(seconds=t['seconds'], rc=t['rc'])
    return out


def issue25(results: Path) -> dict:
    runs = {name: e2e_times(results / name / 'stage_times.tsv') for name in E2E_RUNS}
    runs = {k: v for k, v in runs.items() if v}
    return {'runs': runs}


def issue25_md(d: dict) -> list[str]:
    if not d['runs']:
        return []
    one, two = (d['runs'].get(n, {}) for n in E2E_RUNS)
    lines = ['### Issue 25: bench/gpu/e2e.sh on 1 vs 2 GPUs, seconds per stage', '',
             '| e2e stage | 1 GPU | 2 GPUs | 1 GPU / 2 GPUs |', '|---|---|---|---|']

    def cell(e: dict | None) -> str:
        if not e:
            return '—'
        return f"{e['seconds']:,}" + ('' if e['rc'] == 0 else f" (exit {e['rc']})") + \
            (f" ({e['runs']} runs)" if e['runs'] > 1 else '')
    both = 0.0, 0.0
    for stage in dict.fromkeys([*one, *two]):
        a, b = one.get(stage), two.get(stage)
        ok = a and b and a['rc'] == 0 and b['rc'] == 0
        if ok:
            both = both[0] + a['seconds'], both[1] + b['seconds']
        ratio = _num(_ratio(a['seconds'], b['seconds'])) if ok else '—'
        lines.append(f'| {stage} | {cell(a)} | {cell(b)} | {ratio} |')
    lines += [f'| **stages done on both** | {both[0]:,.0f} | {both[1]:,.0f} | {_num(_ratio(*both))} |', '']
    return lines


# ---------------------------------------------------------------- the whole
def summarize(results: Path) -> tuple[dict, str]:
    times = read_stage_times(results / 'stage_times.tsv')
    card = (results / 'gpu.txt').read_text().strip() if (results / 'gpu.txt').is_file() else None
    versions = (results / 'versions.txt').read_text().strip() if (results / 'versions.txt').is_file() else None
    data = {'card': card, 'versions': versions, 'issue22': issue22(results), 'issue23': issue23(results, times),
            'issue24': issue24(results), 'issue25': issue25(results), 'stage_times': {}}
    for t in times:
        s = data['stage_times'].setdefault(t['stage'], {'seconds': 0, 'invocations': 0})
        s['seconds'] += t['seconds']
        s['invocations'] += 1
        s['last_rc'] = t['rc']
    md = ['## Two GPUs against one: results of bench/gpu/two_gpu.sh', '']
    if card:
        md += ['Machine: ' + '; '.join(card.splitlines()), '']
    if versions:
        md += ['Software: `' + versions + '`', '']
    md += issue22_md(data['issue22']) + issue23_md(data['issue23']) + issue24_md(data['issue24'])
    md += issue25_md(data['issue25'])
    if data['stage_times']:
        md += ['### Stage times of the script (s, all invocations)', '',
               '| stage | seconds | invocations | last exit |', '|---|---|---|---|']
        md += [f"| {k} | {v['seconds']:,} | {v['invocations']} | {v['last_rc']} |"
               for k, v in data['stage_times'].items()]
    return data, '\n'.join(md) + '\n'


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m bench.gpu.two_gpu_summary', description=__doc__.split('\n\n')[0])
    ap.add_argument('results', help="bench/gpu/two_gpu.sh's RESULTS folder")
    ap.add_argument('--out', help='JSON (default RESULTS/two_gpu.json)')
    ap.add_argument('--md', help='markdown tables (default RESULTS/two_gpu.md)')
    a = ap.parse_args(argv)
    results = Path(a.results)
    if not results.is_dir():
        raise InputError("not a folder (bench/gpu/two_gpu.sh's RESULTS)", file=str(results))
    data, md = summarize(results)
    write_json(a.out or results / 'two_gpu.json', data)
    with atomic_open(a.md or results / 'two_gpu.md', 'w', encoding='utf-8') as f:
        f.write(md)
    print(md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
