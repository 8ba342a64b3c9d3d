"""The numbers of bench/gpu/learned.sh: what the model trained from scratch learned, measured from its work folder.

    python -m bench.gpu.learned_numbers --work W --out RESULTS

Reads W (the script's layout: preds/, submission/task2/learned/, run/, prepared/, base/) and writes
RESULTS/learned.json, RESULTS/learned.md and copies of the plots (loss curve, reliability diagram). Everything is
measured; nothing here decides that a model "learned" beyond the two thresholds of issue 21, stated with their
numbers:
- text: ROUGE-L of the learned model on the synthetic test subset (task1_public, original images) minus the best
  blind language-prior baseline's (eval.baseline: nearest_question, class_prior) >= 0.10;
- boxes: of every box the model emits (all boxes of a row; boxes on rows whose question's objects are not in the
  image count at IoU 0), >= 50 % have IoU >= 0.5 with the best-matching true object of their row
  (explain.pipeline.evaluate_geometry's emitted_box_iou_at_0_5, computed by make submit-task2 on the synthetic set;
  the per-row figures, best box of each row with the object, are reported beside it).
Per question class: which classes the learned model answers better than the best baseline (ROUGE-L margin). A part
that did not run is reported as missing, with the file it looked for.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench.gpu.stage_times import read_stage_times
from common.errors import InputError, cli_main
from common.io import atomic_open, read_jsonl, write_json

TEXT_MARGIN = 0.10      # ROUGE-L above the best blind baseline
BOX_SHARE = 0.5         # share of emitted boxes with IoU >= 0.5
METRICS = ('bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor')
NAME = 'learned'        # the script's NAME= (submission/task2/<NAME>)


def _read(path: Path):
    return read_jsonl(path) if path.suffix == '.jsonl' else json.loads(path.read_text(encoding='utf-8'))


def _scores(rows: list[dict], scorer) -> dict:
    """Overall and per question class scores of one predictions file (eval.report's own breakdown)."""
    from eval.report import breakdown
    b = breakdown(rows, scorer, fields=('question_class',))
    pick = lambda s: {'n': s['n'], **{m: s[m] for m in METRICS}}  # noqa: E731
    return {'overall': pick(b['overall']), 'by_class': {c: pick(s) for c, s in b.get('question_class', {}).items()}}


def text_scores(work: Path) -> dict:
    """Learned (both image settings), untrained and the two baselines on the synthetic test subset."""
    from eval import metrics
    preds = work / 'preds'
    files = {'learned': preds / 'learned' / 'task1_public-original.jsonl',
             'learned (augmented images)': preds / 'learned' / 'task1_public-augmented.jsonl',
             'untrained': preds / 'untrained' / 'task1_public-original.jsonl',
             'baseline nearest_question': preds / 'baseline' / 'nearest_question.jsonl',
             'baseline class_prior': preds / 'baseline' / 'class_prior.jsonl'}
    scorer = metrics.Scorer()
    runs, missing = {}, {}
    for name, path in files.items():
        if path.is_file():
            runs[name] = _scores(read_jsonl(path), scorer)
        else:
            missing[name] = str(path)
    out: dict = {'runs': runs, 'missing': missing}
    baselines = {k: v for k, v in runs.items() if k.startswith('baseline')}
    if 'learned' in runs and baselines:
        best = max(baselines, key=lambda k: baselines[k]['overall']['rougeL'])
        margin = runs['learned']['overall']['rougeL'] - baselines[best]['overall']['rougeL']
        out['text_criterion'] = {'best_baseline': best, 'rougeL_margin': round(margin, 4),
                                 'threshold': TEXT_MARGIN, 'met': margin >= TEXT_MARGIN}
        classes = {}
        for c, s in runs['learned']['by_class'].items():
            base = max((b['by_class'][c]['rougeL'] for b in baselines.values() if c in b['by_class']), default=None)
            untrained = runs.get('untrained', {}).get('by_class', {}).get(c)
            classes[c] = {'n': s['n'], 'learned': s['rougeL'], 'best_baseline': base,
                          'untrained': untrained['rougeL'] if untrained else None,
                          'margin': None if base is None else round(s['rougeL'] - base, 4)}
        out['classes'] = dict(sorted(classes.items(), key=lambda kv: -(kv[1]['margin'] or -9)))
        out['learned_classes'] = [c for c, v in out['classes'].items() if (v['margin'] or 0) >= TEXT_MARGIN]
    return out


def subtask2(work: Path, out: Path) -> dict:
    """Boxes, heatmaps and calibration from make submit-task2's report (the synthetic geometry check included)."""
    build = work / 'submission' / 'task2' / NAME
    report_path = build / 'report' / 'report.json'
    if not report_path.is_file():
        return {'missing': str(report_path)}
    report = _read(report_path)
    lines = read_jsonl(build / 'submission_task2.jsonl')
    with_box = sum(any(v['type'] == 'bounding_box' for v in r['visual_explanation']) for r in lines)
    geo = report.get('geometry') or {}
    result = {'rows': len(lines), 'rows_with_box': with_box, 'share_with_box': with_box / len(lines) if lines else None,
              'boxes': report.get('boxes'), 'geometry': geo, 'calibration': report.get('calibration')}
    share = geo.get('emitted_box_iou_at_0_5')
    if share is not None:
        result['box_criterion'] = {'emitted_box_iou_at_0_5': share, 'emitted_boxes': geo['emitted_boxes'],
                                   'threshold': BOX_SHARE, 'met': share >= BOX_SHARE}
    diagram = build / 'report' / 'reliability.png'
    if diagram.is_file():
        shutil.copyfile(diagram, out / 'reliability.png')
        result['reliability_diagram'] = 'reliability.png'
    return result


def training(work: Path, out: Path) -> dict:
    """Learning curve (train and eval loss per step), steps, time, samples per second, from ms-swift's logs."""
    from training.curves import CURVE_FILE, run_curves, version_dirs, write_curve
    run = work / 'run'
    try:
        curves, restarts = run_curves(run)
    except InputError as e:
        return {'missing': str(e)}
    write_curve(run, out / CURVE_FILE)
    finals = []
    for d in version_dirs(run):
        for line in (d / 'logging.jsonl').read_text(encoding='utf-8').splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if 'train_runtime' in record:
                finals.append(record)
    loss, evals = curves['loss'], curves['eval_loss']
    tail = [v for _, v in loss[-5:]]
    params = work / 'base' / 'param_count.json'
    return {'steps': max((s for points in curves.values() for s, _ in points), default=0),
            'invocations': len(version_dirs(run)), 'resumed_at': restarts,
            'train_loss_first': loss[0][1] if loss else None,
            'train_loss_last5_mean': sum(tail) / len(tail) if tail else None,
            'eval_loss': [[s, v] for s, v in evals],
            'train_runtime_s': round(sum(float(r['train_runtime']) for r in finals), 1) if finals else None,
            'train_samples_per_second': [r.get('train_samples_per_second') for r in finals],
            'params': _read(params) if params.is_file() else None, 'loss_curve': CURVE_FILE}


def data_sizes(work: Path) -> dict:
    swift = work / 'prepared' / 'swift'
    sizes = {}
    for name in ('train-original', 'val-original', 'test-original', 'task1_public-original', 'task2_val-original',
                 'grounding'):
        path = swift / f'{name}.jsonl'
        if path.is_file():
            with path.open('rb') as f:
                sizes[name] = sum(1 for _ in f)
    return sizes


def stage_times(out: Path) -> dict:
    rows = read_stage_times(out / 'stage_times.tsv')
    times: dict = {}
    for row in rows:
        t = times.setdefault(row['stage'], {'seconds': 0, 'runs': 0, 'last_exit': None})
        t['seconds'] += row['seconds']
        t['runs'] += 1
        t['last_exit'] = row['rc']
    return {'stages': times, 'total_seconds': sum(t['seconds'] for t in times.values()),
            'invocations': len({row['invocation'] for row in rows})}


def collect(work: Path, out: Path) -> dict:
    if not work.is_dir():
        raise InputError('work folder not found', file=str(work), field='--work')
    out.mkdir(parents=True, exist_ok=True)
    return {'data': data_sizes(work), 'training': training(work, out), 'text': text_scores(work),
            'subtask2': subtask2(work, out), 'stage_times': stage_times(out)}


# ---------------------------------------------------------------- markdown
def _f(v, nd=4):
    return '—' if v is None else (f'{v:.{nd}f}' if isinstance(v, float) else str(v))


def markdown(r: dict) -> str:
    md = ['# A model trained from scratch: what it learned (bench/gpu/learned.sh)', '']
    t = r['training']
    if 'missing' in t:
        md += [f'Training: not run ({t["missing"]}).', '']
    else:
        p = t['params'] or {}
        evals = ', '.join(f'{s}: {v:.3f}' for s, v in t['eval_loss'])
        total = f'{p["total"]:,}' if p.get('total') else '—'
        md += [f'Model: {total} parameters; {t["steps"]} optimizer steps in {t["invocations"]} '
               f'invocation(s) (resumed at steps {t["resumed_at"] or "—"}), training time '
               f'{_f(t["train_runtime_s"], 1)} s. Train loss {_f(t["train_loss_first"])} at the first logged step, '
               f'{_f(t["train_loss_last5_mean"])} over the last five logged steps; eval loss by step: {evals}.', '',
               f'![learning curve]({t["loss_curve"]})', '']
    md += ['Data (ms-swift rows): ' + ', '.join(f'{k} {v:,}' for k, v in r['data'].items()) + '.', '']
    x = r['text']
    md += ['## Answers: synthetic test subset (task1_public, 1,500 rows at full size)', '',
           '| run | n | ' + ' | '.join(METRICS) + ' |', '|---' * (len(METRICS) + 2) + '|']
    for name, s in x['runs'].items():
        o = s['overall']
        md.append(f'| {name} | {o["n"]} | ' + ' | '.join(_f(o[m]) for m in METRICS) + ' |')
    for name, path in x['missing'].items():
        md.append(f'| {name} | not run ({path}) |' + ' |' * len(METRICS))
    md += ['', 'The baselines never look at the image, so their scores are the same for either image setting.']
    if 'text_criterion' in x:
        c = x['text_criterion']
        md += ['', f'**Text threshold (ROUGE-L >= best blind baseline + {c["threshold"]}): '
                   f'{"met" if c["met"] else "not met"}** — margin {c["rougeL_margin"]:+.4f} over '
                   f'{c["best_baseline"]}.',
               '', '### Per question class (ROUGE-L)', '',
               '| class | n | learned | best baseline | untrained | learned - baseline |', '|---|---|---|---|---|---|']
        for cls, v in x['classes'].items():
            margin = '—' if v['margin'] is None else f'{v["margin"]:+.4f}'
            md.append(f'| {cls} | {v["n"]} | {_f(v["learned"])} | {_f(v["best_baseline"])} | {_f(v["untrained"])} | '
                      f'{margin} |')
        md += ['', f'Classes at least {TEXT_MARGIN} above the best baseline: '
                   f'{", ".join(x["learned_classes"]) or "none"}.']
    s2 = r['subtask2']
    md += ['', '## Subtask 2 on the learned model (make submit-task2 DRY_RUN=1)', '']
    if 'missing' in s2:
        md += [f'Not run ({s2["missing"]}).']
    else:
        g = s2['geometry']
        q = g.get('iou_quantiles') or {}
        md += [f'Rows with a box: {s2["rows_with_box"]} of {s2["rows"]} ({_f(s2["share_with_box"], 3)}); grounding '
               f'outputs {s2["boxes"]}.', '',
               '| rows whose objects are in the image | with a box | IoU >= 0.5 | mean IoU | IoU p10 / p25 / p50 / '
               'p75 / p90 | boxes on rows without the object |', '|---|---|---|---|---|---|',
               f'| {_f(g.get("rows_with_truth"))} | {_f(g.get("rows_with_box"))} | {_f(g.get("iou_at_0_5"))} | '
               f'{_f(g.get("mean_best_iou"))} | '
               + (' / '.join(_f(q[k], 2) for k in ('p10', 'p25', 'p50', 'p75', 'p90')) if q else '—')
               + f' | {_f(g.get("rows_without_truth_with_box"))} |', '',
               'Per row (the table): the best box-truth pair of each row whose objects are in the image. '
               f'IoU histogram of those rows (bins of 0.1 from 0 to 1): {g.get("iou_histogram")}.', '',
               f'Every emitted box (extra boxes of a row and boxes on rows without the object included, the latter at '
               f'IoU 0): {_f(g.get("emitted_boxes"))} boxes, {_f(g.get("emitted_box_iou_at_0_5"))} of them at IoU '
               f'>= 0.5 with the best-matching true object of their row, mean IoU {_f(g.get("emitted_box_mean_iou"))}.']
        if 'box_criterion' in s2:
            b = s2['box_criterion']
            md += ['', f'**Box threshold (>= {b["threshold"]:.0%} of emitted boxes at IoU >= 0.5): '
                       f'{"met" if b["met"] else "not met"}** — {_f(b["emitted_box_iou_at_0_5"])} of '
                       f'{b["emitted_boxes"]} emitted boxes.']
        md += ['', '| occlusion heatmap | rows | mass inside | area share | rows where mass > share |',
               '|---|---|---|---|---|',
               f'| true boxes | {_f(g.get("heatmap_rows"))} | {_f(g.get("mean_heatmap_mass_inside"))} | '
               f'{_f(g.get("mean_true_area_share"))} | {_f(g.get("heatmap_rows_above_share"))} |',
               f'| exact masks | {_f(g.get("mask_rows"))} | {_f(g.get("mean_heatmap_mass_inside_mask"))} | '
               f'{_f(g.get("mean_true_mask_share"))} | {_f(g.get("mask_rows_above_share"))} |', '']
        cal = s2.get('calibration') or {}
        md += [f'Confidence calibration ({cal.get("method")}, {cal.get("after_kind", "")}):', '',
               '| | n | accuracy | mean confidence | ECE | Brier | NLL |', '|---|---|---|---|---|---|---|']
        for key in ('before', 'after', 'after_in_sample'):
            m = cal.get(key)
            if m:
                md.append(f'| {key} | {m["n"]} | {_f(m["accuracy"])} | {_f(m["mean_confidence"])} | {_f(m["ece"])} | '
                          f'{_f(m["brier"])} | {_f(m["nll"])} |')
        if s2.get('reliability_diagram'):
            md += ['', f'![reliability diagram]({s2["reliability_diagram"]})']
    st = r['stage_times']
    md += ['', f'## Stage times ({st["invocations"]} invocation(s), {st["total_seconds"]} s in all)', '',
           '| stage | seconds | runs | last exit |', '|---|---|---|---|']
    md += [f'| {k} | {v["seconds"]} | {v["runs"]} | {v["last_exit"]} |' for k, v in st['stages'].items()]
    return '\n'.join(md) + '\n'


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m bench.gpu.learned_numbers', description=__doc__.split('\n\n')[0])
    ap.add_argument('--work', required=True, type=Path, help='bench/gpu/learned.sh work folder (W)')
    ap.add_argument('--out', required=True, type=Path, help='results folder (RESULTS): learned.json, learned.md')
    a = ap.parse_args(argv)
    results = collect(a.work, a.out)
    write_json(a.out / 'learned.json', results)
    with atomic_open(a.out / 'learned.md', 'w', encoding='utf-8') as f:
        f.write(markdown(results))
    print(markdown(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
