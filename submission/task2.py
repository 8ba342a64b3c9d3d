"""Build, validate and (with a token) upload the Subtask 2 submission: the Task 1 answer, a self-probing textual
explanation, grounding boxes + an occlusion heatmap, and a calibrated confidence per val row.

    python -m submission.task2 --model RUN/merged --hub-repo user/name [--name N] [--team submission/team.json]
        [--dataset D] [--task1-predictions P] [--calibration-data VAL_PRED] [--calibration-rows 2000] [--dry-run]
        [--limit N] [--submit] [--max-pixels N] [--system S] [--grid G] [--occlusion-max-pixels N]
        [--backend auto|vllm|transformers] [--scorer transformers|vllm] [--gpus N] [--min-effect NATS] [--rewrite]

Writes submission/build/task2/<name>/ (temp folder + rename): submission_task2.jsonl, visuals/ (heatmaps, drawn
boxes, untouched frames, the colour bar), submission_task2.py (SUBMISSION_INFO only), README.md (method, report
numbers and a gallery of about 20 rows), report/ (index.html with every row, reliability diagram, report.json,
explanations_audit.jsonl with every probe, claim and its source). The answers are the Task 1 predictions of the
task2_val split (--task1-predictions, as they are: equal by construction); without that file the val rows are answered
first through inference.predict, the `make infer` path. explain.stages then works stage by stage over all rows in
submission/build/task2/.work-<name>/ (probes, grounding, occlusion, confidence, calibration, visuals), resumable.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import InputError, cli_main, require_positive
from common.io import atomic_dir, atomic_open, atomic_path, exclusive_lock, read_jsonl, write_json, write_jsonl
from common.procs import die_with_parent
from common.run_env import image_budget
from explain.confidence import CALIBRATION_ROWS, calibration_inputs
from explain.heatmap import MIN_EFFECT_NATS
from inference.backends import choose_backend
from inference.predict import visible_gpus
from submission.team import DEFAULT_TEAM_FILE, load_team
from submission.validate_task2 import JSONL, REAL_VAL_SIZE, SCRIPT, read_task1_answers, validate_folder  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
BUILD_ROOT = REPO / 'submission' / 'build' / 'task2'
DEFAULT_DATASET = 'SimulaMet/Kvasir-VQA-x1'


# ---------------------------------------------------------------- data
def open_image(src, where: str = '') -> Image.Image:
    if isinstance(src, Image.Image):
        return src.convert('RGB')
    if isinstance(src, (bytes, bytearray)):
        return Image.open(io.BytesIO(src)).convert('RGB')
    if isinstance(src, (str, Path)) and not str(src).startswith(('http://', 'https://')) and Path(src).is_file():
        with Image.open(src) as im:
            return im.convert('RGB')
    raise InputError(f'image not available offline: {str(src)[:120]}', file=where or None, field='image')


def load_val_rows(dataset: str, images: str | None = None, limit: int | None = None) -> list[dict]:
    """The organizers' val set (first `limit` rows): val_id, img_id, question, image source, width, height, and the
    reference answer where the copy has it (used only for reporting)."""
    from data_prep.sources import load_source, resolve_image
    from data_prep.subsets import task2_subset
    ds = load_source(dataset, images=images)
    if 'test' not in ds:
        raise InputError('no test split (the val set is drawn from it)', file=dataset, field='--dataset')
    val = task2_subset(ds['test'])
    n = len(val) if limit is None else min(limit, len(val))
    rows = []
    for i in range(n):
        r = val[i]
        img = r['image'] if isinstance(r.get('image'), Image.Image) else \
            resolve_image(r, dataset=dataset, images=images)
        if img is None:
            raise InputError(f'no image for img_id {r["img_id"]}', file=dataset, row=i, field='image')
        im = open_image(img, dataset)
        rows.append({'val_id': int(r['val_id']), 'img_id': r['img_id'], 'question': r['question'],
                     'image': img, 'width': im.width, 'height': im.height, 'reference': r.get('answer')})
    return rows


def load_scenes(dataset: str) -> tuple[dict[str, dict], Path | None]:
    """geometry.jsonl of a synthetic copy (ground-truth boxes; masks/ beside it) and that folder; ({}, None) for real
    data."""
    from data_prep.sources import dataset_folder
    try:
        folder = dataset_folder(dataset)
    except Exception:
        return {}, None
    path = folder / 'geometry.jsonl'
    return ({r['img_id']: r for r in read_jsonl(path)}, folder) if path.is_file() else ({}, None)


def image_file(src, work: Path, val_id: int) -> str:
    """A file path for a val row's image: the dataset's own file, or (embedded bytes / a decoded image) the same
    pixels saved losslessly in WORK/images, so that every stage and worker reads one file."""
    if isinstance(src, (str, Path)) and not str(src).startswith(('http://', 'https://')) and Path(src).is_file():
        return str(Path(src).resolve())
    path = work / 'images' / f'{val_id}.png'
    if not path.is_file():
        with atomic_path(path) as tmp:
            open_image(src).save(tmp, format='PNG')
    return str(path.resolve())


def make_task1_predictions(args, rows: list[dict], work: Path) -> Path:
    """No Task 1 file given: answer the val rows now through inference.predict (the `make infer` path: same engine,
    decoding and log-probs as Task 1) into WORK/task1_predictions.jsonl."""
    from data_prep.to_swift import meta_line, swift_line
    from explain.work import key_of
    data, out, stamp = work / 'task2_val.jsonl', work / 'task1_predictions.jsonl', work / 'task1_predictions.key'
    key = key_of(str(Path(args.model).resolve()), args.max_pixels, args.system, args.backend, args.answer_tokens,
                 [(r['val_id'], r['img_id'], r['question'], r['image']) for r in rows])
    if out.is_file() and stamp.is_file() and stamp.read_text() == key:
        print(f'no --task1-predictions given: using the answers made earlier by inference.predict in {out}',
              file=sys.stderr)
        return out
    lines = [swift_line({'question': r['question'], 'answer': r.get('reference') or ''}, r['image'], system=args.system)
             for r in rows]
    metas = [meta_line({**r, 'answer': r.get('reference')}, r['image'], 'task2_val', 'original') for r in rows]
    write_jsonl(data, lines)
    write_jsonl(data.with_name('task2_val.meta.jsonl'), metas)
    print(f'no --task1-predictions given: answering the {len(rows)} val rows now with inference.predict (the '
          f'`make infer` path, backend {args.backend}) into {out}', file=sys.stderr)
    cmd = [sys.executable, '-m', 'inference.predict', '--model', args.model, '--data', str(data), '--out', str(out),
           '--backend', args.backend, '--max-new-tokens', str(args.answer_tokens), '--logprobs']
    cmd += ['--max-pixels', str(args.max_pixels)] if args.max_pixels else []
    cmd += ['--gpus', str(args.gpus)] if args.gpus is not None else []
    if subprocess.run(cmd, preexec_fn=die_with_parent).returncode != 0:   # no orphan if we are killed
        raise SystemExit('error: inference.predict failed (see above); rerun to resume')
    with atomic_open(stamp, 'w', encoding='utf-8') as f:
        f.write(key)
    return out


def task1_answers(path: Path, rows: list[dict]) -> dict[int, dict]:
    """val_id -> the Task 1 prediction row, checked against the val set."""
    t1 = read_task1_answers(path)
    for r in rows:
        p = t1.get(r['val_id'])
        if p is None:
            raise InputError(f'no prediction for val_id {r["val_id"]}', file=str(path), field='val_id')
        for k in ('img_id', 'question'):
            if k in p and p[k] != r[k]:
                raise InputError(f'{k} {p[k]!r} differs from the val set\'s {r[k]!r} (val_id {r["val_id"]}); '
                                 'predictions must be for the task2_val split', file=str(path), field=k)
    return t1


# ---------------------------------------------------------------- outputs
def submission_script(team: dict) -> str:
    return ('"""Medico 2026 Subtask 2 submission details (read by the organizers; nothing runs on import)."""\n'
            'SUBMISSION_INFO = ' + json.dumps(team, indent=4, ensure_ascii=False) + '\n')


def _fmt(v, nd=4):
    return '—' if v is None else (f'{v:.{nd}f}' if isinstance(v, float) else str(v))


def _fmt_pct(v) -> str:
    return '—' if v is None else f'{100 * v:.1f} %'


def rewrite_method(rw: dict | None) -> str:
    if not rw:
        return ''
    if not rw['asked']:
        return ' With --rewrite, the same model (text only) would reword the fact sentences; no row had one here.'
    return (' With --rewrite, the same model (text only) rewrites the fact sentences as prose; the rewrite is used '
            'only when it states no clinical term, number, negation or other content word that the facts do not and '
            f'keeps every fact term; here {rw["rejected"]} of {rw["asked"]} rewrites were rejected '
            f'({_fmt_pct(rw["rejection_rate"])}) and the fact sentences kept.')


def readme(name: str, args, report: dict) -> str:
    cal, geo, boxes = report['calibration'], report.get('geometry'), report['boxes']
    lines = [
        f'# {name}: Medico 2026 Subtask 2 (explanations)', '',
        f'Model: `{args.model}`. {report["rows"]} val rows. Built by `python -m submission.task2` '
        '(medico2026 recipes).', '',
        '## Method',
        '- **answer**: the Task 1 prediction for the question, taken as it is from '
        f'`{Path(report["task1_predictions"]).name}` (the Task 1 model, engine and greedy decoding). Scored again '
        f'with teacher forcing, {report["greedy_consistent"]}/{report["rows"]} answers are this model\'s top choice '
        'at every token (a check, reported only).',
        '- **textual_explanation**: self-probing, written for a clinician. The same model answers up to 4 auxiliary '
        'questions chosen from the question\'s topic (finding, location, size, morphology, colour, instruments, '
        'text / box artefacts, landmark, procedure); each answer gives one short sentence made of fixed words and the '
        'clinical terms found in it (the dataset\'s position words such as upper-left or center, sizes, colours, '
        'Paris classes; an answer with no known term is quoted; a note when the answer denies what the finding probe '
        'names), then how certain the model is (the calibrated '
        'confidence) and what the two visual explanations show. Every sentence\'s source (probe answer, confidence '
        'or visual) is in `report/explanations_audit.jsonl`.' + rewrite_method(report.get('rewrite')),
        '- **visual_explanation**: (a) `bounding_box`: the model is prompted for `{"bbox_2d": [x1, y1, x2, y2], '
        '"label": ...}`; Qwen2.5-VL answers in pixels of the resized input (smart_resize, factor 28), Qwen3-VL and '
        'MedGemma in 0..1000 coordinates relative to the image (the prompt says so); we map the box back to the '
        'original size and clip; unparseable or out-of-image boxes are dropped and counted. No box when '
        'the answer denies the finding. The boxes are drawn with their label in `visuals/<val_id>_box.png` (named in '
        'the entry\'s description). (b) `heatmap`: occlusion — the image is split into a '
        f'{args.grid}x{args.grid} grid, each cell is painted with the mean colour and the drop in the answer\'s '
        'log-probability is measured' + (f' (occluded passes on the image downscaled to {args.occlusion_max_pixels} '
                                         'pixels)' if args.occlusion_max_pixels else '') +
        '; cells are tinted by their drop in nats on one scale shared by every row (viridis, half-transparent, so '
        'the frame shows through; colour bar `visuals/heatmap_scale.png`), the hot regions the text names '
        '(connected cells with at least half the row\'s largest drop) are outlined in white, and a row where no '
        f'cell lowers the answer\'s log-probability by {report["heatmap"]["min_nats"]:g} nats or more is left '
        'untouched and described as "no region changed the answer". The untouched frame is '
        '`visuals/<val_id>_frame.jpg`.',
        '- **confidence_score**: the answer\'s token log-probs (geometric-mean token probability; for yes/no '
        'questions answered with yes/no, the yes-vs-no probability of the first token), calibrated by '
        f'**{cal["method"]}** on a labelled held-out split'
        + (f' (`{Path(args.calibration_data).name}`: a sample of {cal["sample"]["rows"]} of its '
           f'{cal["sample"]["of"]} predictions, at most {cal["sample"]["cap"]}, stratified by question class)'
           if args.calibration_data else ' — none given, so the scores are uncalibrated') +
        '. Correct = same yes/no polarity for closed questions, else normalised exact match or ROUGE-L F1 >= 0.5.',
        '', '## Report', '',
        '| calibration split | n | accuracy | mean confidence | ECE | Brier | NLL |', '|---|---|---|---|---|---|---|']
    for k, label in (('before', 'before'), ('after', f'after ({cal.get("after_kind", "")})'),
                     ('after_in_sample', 'after (in-sample, final map)')):
        m = cal.get(k)
        if m:
            lines.append(f'| {label} | {m["n"]} | {_fmt(m["accuracy"])} | {_fmt(m["mean_confidence"])} | '
                         f'{_fmt(m["ece"])} | {_fmt(m["brier"])} | {_fmt(m["nll"])} |')
    before, after = cal.get('before'), cal.get('after')
    if before and after:
        lines += ['', f'Calibration measured on {before["n"]} held-out labelled rows (the "after" numbers are '
                      f'{cal.get("after_kind", "")}): ECE {before["ece"]:.3f} before, {after["ece"]:.3f} after; Brier '
                      f'{before["brier"]:.3f} before, {after["brier"]:.3f} after.']
    if cal.get('diagram'):
        lines += ['', 'Reliability diagram (top: accuracy per confidence bin, each bar with its row count; bottom: how '
                      'many rows fall in each bin):', '', f'![reliability diagram]({cal["diagram"]})']
    heat = report['heatmap']
    lines += ['', f'Occlusion heatmaps: one scale for all {report["rows"]} rows, 0 to {heat["scale_nats"]:.3f} nats '
                  f'({heat["scale_rule"]}); {heat["rows_changed"]} rows have a region whose hiding lowers the '
                  f'answer\'s log-probability by {heat["min_nats"]:g} nats or more, the others are drawn '
                  'untouched.', '']
    if heat['rows_with_box_and_effect']:
        lines.append(f'Agreement of the two visual explanations: {heat["rows_with_box"]} rows have a box, '
                     f'{heat["rows_with_box_and_effect"]} of them also a heatmap region; there, on average '
                     f'{_fmt_pct(heat["mean_box_mass_share"])} of the heatmap\'s total drop lies inside the boxes, '
                     f'which cover {_fmt_pct(heat["mean_box_area_share"])} of the frame (per row: `box_mass_share` '
                     'in `report/explanations_audit.jsonl`).')
    else:
        lines.append(f'Agreement of the two visual explanations: {heat["rows_with_box"]} rows have a box, none of '
                     'them also a heatmap region, so no agreement is measured.')
    rw = report.get('rewrite')
    if rw and not rw['asked']:
        lines += ['', 'Rewrite check: no row had a fact sentence to rewrite.']
    elif rw:
        lines += ['', f'Rewrite check: {rw["asked"]} rewrites asked, {rw["rejected"]} rejected '
                      f'({_fmt_pct(rw["rejection_rate"])}; reasons: '
                      f'{", ".join(f"{k} {v}" for k, v in rw["reasons"].items()) or "none"}).']
    lines += ['', f'Grounding outputs: {boxes["outputs"]}, boxes kept: {boxes["kept"]}, unparseable outputs: '
                  f'{boxes["unparseable"]}, boxes outside the image: {boxes["out_of_bounds"]}.']
    if geo:
        q = geo.get('iou_quantiles') or {}
        lines += ['', 'Against the true geometry of the synthetic set:', '',
                  '| rows with a true region | with a box | mean best IoU | IoU p10 / p50 / p90 | IoU >= 0.5 | '
                  'boxes where nothing is | emitted boxes | of them IoU >= 0.5 | heatmap mass inside the box(es) | '
                  'their area share | inside the mask | its area share |', '|---' * 12 + '|',
                  f'| {geo["rows_with_truth"]} | {geo["rows_with_box"]} | {_fmt(geo["mean_best_iou"])} | '
                  + (' / '.join(_fmt(q[k], 2) for k in ('p10', 'p50', 'p90')) if q else '—') +
                  f' | {_fmt(geo["iou_at_0_5"])} | {geo.get("rows_without_truth_with_box", "—")} | '
                  f'{geo.get("emitted_boxes", "—")} | {_fmt(geo.get("emitted_box_iou_at_0_5"))} | '
                  f'{_fmt(geo["mean_heatmap_mass_inside"])} | {_fmt(geo["mean_true_area_share"])} | '
                  f'{_fmt(geo.get("mean_heatmap_mass_inside_mask"))} | {_fmt(geo.get("mean_true_mask_share"))} |',
                  '', 'IoU >= 0.5 per row: the best box-truth pair of each row with a true region; per emitted box: '
                  'every box of every row, at its IoU with the best-matching true object of its row (0 where the row '
                  'has none).', '', 'A heatmap mass above the area share means the map concentrates on the true '
                  'region more than a uniform map would; the mask is the objects\' exact pixels '
                  '(data_prep.synthetic\'s masks/).']
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', required=True, help='merged model folder (what Task 1 ran)')
    ap.add_argument('--hub-repo', default=None, help='user/name of the Hugging Face repo for Subtask 2')
    ap.add_argument('--name', default=None, help='build folder name (default: the model folder\'s parent name)')
    ap.add_argument('--team', default=str(DEFAULT_TEAM_FILE))
    ap.add_argument('--dataset', default=DEFAULT_DATASET)
    ap.add_argument('--images', default=None, help='folder of <img_id>.jpg for a local copy')
    ap.add_argument('--task1-predictions', default=None,
                    help='inference.predict JSONL for the task2_val split (--logprobs: its confidence inputs); '
                         'without it the val rows are answered now through inference.predict')
    ap.add_argument('--calibration-data', default=None,
                    help='labelled held-out predictions with log-probs (make infer SPLIT=val-original '
                         'INFER_ARGS=--logprobs)')
    ap.add_argument('--calibration-method', choices=('temperature', 'isotonic'), default='temperature')
    ap.add_argument('--calibration-rows', type=int, default=CALIBRATION_ROWS,
                    help='stratified sample of the calibration predictions (0 = all rows)')
    ap.add_argument('--grid', type=int, default=6, help='occlusion grid size (grid x grid cells)')
    ap.add_argument('--occlusion-max-pixels', type=int, default=None,
                    help='score the occlusion passes on images downscaled to this many pixels (fewer image tokens)')
    ap.add_argument('--min-effect', type=float, default=MIN_EFFECT_NATS,
                    help='nats: an occlusion drop below this changed nothing (not drawn, not named)')
    ap.add_argument('--rewrite', action='store_true',
                    help='let the same model rewrite the fact sentences as prose (used only when the check passes)')
    ap.add_argument('--rewrite-tokens', type=int, default=96, help='max new tokens of a rewrite')
    ap.add_argument('--answer-tokens', type=int, default=64,
                    help='max new tokens of the Task 1 answers (MAX_NEW_TOKENS: tells a cut answer from a whole one)')
    ap.add_argument('--probe-tokens', type=int, default=48, help='max new tokens per probe answer')
    ap.add_argument('--grounding-tokens', type=int, default=128, help='max new tokens of the grounding answer')
    ap.add_argument('--backend', choices=('auto', 'vllm', 'transformers'), default='auto',
                    help='engine of the probe and grounding generations (as make infer; auto: vLLM on GPUs)')
    ap.add_argument('--scorer', choices=('transformers', 'vllm'), default='transformers',
                    help='teacher-forced occlusion scoring: a batched transformers forward or vLLM prompt log-probs')
    ap.add_argument('--batch-size', type=int, default=None, help='generation requests per step (as make infer)')
    ap.add_argument('--score-batch', type=int, default=None, help='sequences per scoring pass (8 CPU, 32 GPU)')
    ap.add_argument('--gpus', type=int, default=None, help='use this many visible GPUs (0 = CPU)')
    ap.add_argument('--workers', type=int, default=None, help='worker processes (default: one per GPU)')
    ap.add_argument('--max-pixels', type=int, default=None, help='the max_pixels used in training/inference')
    ap.add_argument('--system', default=None, help='system prompt, if the model was trained with one')
    ap.add_argument('--dry-run', action='store_true', help='build and validate only; never upload')
    ap.add_argument('--submit', action='store_true', help='also `medvqa validate_and_submit` (asks to confirm)')
    ap.add_argument('--build-root', default=str(BUILD_ROOT), help=argparse.SUPPRESS)
    ap.add_argument('--limit', type=int, default=None, help='first N val rows only (tests; never uploaded)')
    args = ap.parse_args(argv)
    if not args.dry_run and not args.hub_repo:
        raise InputError('pass --hub-repo user/name (or --dry-run to build and check only)', field='hub-repo')
    if args.submit and (args.dry_run or args.limit is not None):
        raise InputError('--submit needs a full build: not with --dry-run or --limit', field='submit')
    if args.limit is not None and not args.dry_run:
        raise InputError('a --limit build is never uploaded: add --dry-run (DRY_RUN=1)', field='limit')
    if not args.min_effect > 0:
        raise InputError(f'must be > 0, got {args.min_effect}', field='--min-effect')
    require_positive(args, ('grid', 'answer_tokens', 'probe_tokens', 'grounding_tokens', 'rewrite_tokens',
                            'occlusion_max_pixels', 'batch_size', 'score_batch', 'workers', 'max_pixels', 'limit'))
    return args


def build(args) -> tuple[Path, dict]:
    from explain import stages
    from explain.confidence import reliability_diagram
    from explain.heatmap import cell_map
    from explain.pipeline import evaluate_geometry
    from submission import gallery
    from submission.hub import check_repo_id
    from submission.task1 import _NAME
    if args.hub_repo:
        check_repo_id(args.hub_repo, '--hub-repo')
    model = Path(args.model)
    name = args.name or _default_name(args.model)
    if not _NAME.match(name):
        raise InputError(f'use letters, digits, ".", "_" or "-": {name!r}', field='--name')
    team = load_team(args.team)
    if args.task1_predictions and not Path(args.task1_predictions).is_file():
        raise InputError('file not found (make it with `make infer SPLIT=task2_val-original INFER_ARGS=--logprobs`, '
                         'or leave it out to answer now)', file=args.task1_predictions, field='--task1-predictions')
    if args.calibration_data:
        calibration_inputs(args.calibration_data)   # a wrong file fails now, not after the model stages
    root = Path(args.build_root)
    work = root / f'.work-{name}'
    work.mkdir(parents=True, exist_ok=True)
    args.max_pixels = image_budget(model, args.max_pixels)   # as in training (the model's medico_env.json)

    # stage "answers": the Task 1 predictions, as they are
    rows = load_val_rows(args.dataset, args.images, args.limit)
    for r in rows:
        r['image'] = image_file(r['image'], work, r['val_id'])
    if not args.task1_predictions:
        args.backend = choose_backend(args.backend, len(visible_gpus(args.gpus)[1]))
        args.task1_predictions = str(make_task1_predictions(args, rows, work))
    t1 = task1_answers(Path(args.task1_predictions), rows)
    answers = {r['val_id']: t1[r['val_id']]['prediction'] for r in rows}
    stages.write_rows(work, [{**{k: r[k] for k in ('val_id', 'img_id', 'question', 'image', 'width', 'height')},
                              'answer': answers[r['val_id']], 'reference': r.get('reference'),
                              **{k: t1[r['val_id']][k] for k in ('token_logprobs', 'first_top_logprobs')
                                 if k in t1[r['val_id']]}} for r in rows])

    settings = stages.Settings(
        model=str(model), backend=args.backend, scorer=args.scorer, max_pixels=args.max_pixels, system=args.system,
        answer_tokens=args.answer_tokens, probe_tokens=args.probe_tokens, grounding_tokens=args.grounding_tokens,
        grid=args.grid, occlusion_max_pixels=args.occlusion_max_pixels, min_effect=args.min_effect,
        rewrite=args.rewrite, rewrite_tokens=args.rewrite_tokens, batch_size=args.batch_size,
        score_batch=args.score_batch, gpus=args.gpus, workers=args.workers, calibration=args.calibration_data,
        calibration_rows=args.calibration_rows, calibration_method=args.calibration_method)
    done = stages.run(work, settings)
    calibration = done['calibration']
    lines, audit, summary = stages.assemble(work, calibration)

    final = root / name
    with atomic_dir(final) as tmp:   # assembled aside, validated, then swapped in whole
        (tmp / 'report').mkdir()
        (tmp / 'visuals').mkdir()
        cal_report: dict = {'method': 'identity'}
        if calibration:
            cal_report = dict(calibration['report'])
            reliability_diagram(calibration['raw'], calibration['after'], calibration['labels'],
                                tmp / 'report' / 'reliability.png')
            cal_report['diagram'] = 'report/reliability.png'
        for rel in stages.visual_files(audit):   # heatmaps, drawn boxes, untouched frames, the colour bar
            shutil.copyfile(work / rel, tmp / rel)
        write_jsonl(tmp / JSONL, lines)
        write_jsonl(tmp / 'report' / 'explanations_audit.jsonl', audit)
        with atomic_open(tmp / SCRIPT, 'w', encoding='utf-8') as f:
            f.write(submission_script(team))

        scenes, folder = load_scenes(args.dataset)
        geometry = None
        if scenes:
            sizes = {r['val_id']: (r['width'], r['height']) for r in rows}
            cells = {a['val_id']: a['heatmap_cells'] for a in audit}

            def heat(val_id):   # one image-sized map at a time (1,500 at once would take gigabytes)
                return cell_map(cells[val_id], *sizes[val_id]) if val_id in cells else None

            geometry = evaluate_geometry(lines, scenes, heat, masks_root=folder)
        report = {**summary, 'task1_predictions': Path(args.task1_predictions).name, 'calibration': cal_report,
                  'geometry': geometry, 'settings': {k: v for k, v in vars(settings).items() if k != 'model'}}
        write_json(tmp / 'report' / 'report.json', report)
        shown = gallery.cards(lines, audit)   # the README's gallery and report/index.html (every row)
        with atomic_open(tmp / 'README.md', 'w', encoding='utf-8') as f:
            f.write(readme(name, args, report) + '\n' + gallery.readme_section(shown, gallery.pick(shown)))
        gallery.write_index(tmp, name, shown, report)

        validate_folder(tmp, [{k: r[k] for k in ('val_id', 'img_id', 'question', 'width', 'height')}
                              for r in rows], answers)
    return final, report


def _default_name(model: str) -> str:
    model = Path(model)
    return model.parent.name if model.name == 'merged' else model.name


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    from submission import hub
    from submission.validate_task2 import check_upload_size, val_set_size
    token = None
    if not args.dry_run:   # an upload was asked for: it must be possible before any work
        hub.check_repo_id(args.hub_repo, '--hub-repo')
        token = hub.hub_token()
        hub.require_online(token, args.hub_repo)
        check_upload_size(val_set_size(args.dataset, args.images), args.dataset)
    root, name = Path(args.build_root), args.name or _default_name(args.model)
    with exclusive_lock(root / f'.{name}.lock', 'submission.task2 build', root / name):
        folder, report = build(args)
    n = report['rows']
    print(f'built and validated {folder}: {n} rows, {report["boxes"]["kept"]} boxes, '
          f'calibration {report["calibration"]["method"]}')
    if args.dry_run:
        print(f'dry run: nothing uploaded (--dry-run); the build in {folder} is validated')
        return 0
    check_upload_size(n, str(folder / JSONL))   # the organizers take exactly the full val set; medvqa counts lines
    hub.upload(args.hub_repo, folder, token, exclude=())
    hub.medvqa('validate', args.hub_repo, 2, token)
    print(f'uploaded {folder} to {args.hub_repo}; `medvqa validate --task=2` passed')
    if args.submit:
        hub.submit_after_confirmation(args.hub_repo, 2, token)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
