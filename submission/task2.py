"""Build, validate and (with a token) upload the Subtask 2 submission: the Task 1 answer, a self-probing textual
explanation, grounding boxes + an occlusion heatmap, and a calibrated confidence per val row.

    python -m submission.task2 --model RUN/merged --hub-repo user/name [--name N] [--team submission/team.json]
        [--dataset D] [--task1-predictions P] [--calibration-data VAL_PRED_OR_SWIFT] [--dry-run] [--limit N]
        [--submit] [--max-pixels N] [--system S] [--grid G]

Writes submission/build/task2/<name>/ (temp folder + rename): submission_task2.jsonl, visuals/, submission_task2.py
(SUBMISSION_INFO only), README.md (method + report numbers), report/ (reliability diagram, report.json,
explanations_audit.jsonl with every probe and claim). Per-row work is cached in submission/build/task2/.work-<name>/,
so an interrupted run resumes. Answers come from --task1-predictions (inference.predict on the task2_val split) and
are checked against the model answering again with the same ms-swift engine and greedy decoding (it must give the
same text); without that file the model answers now.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.errors import InputError, cli_main
from common.io import atomic_dir, atomic_open, exclusive_lock, read_jsonl, write_json, write_jsonl
from common.run_env import image_budget
from submission.team import DEFAULT_TEAM_FILE, load_team
from submission.validate_task2 import JSONL, REAL_VAL_SIZE, SCRIPT, read_task1_answers, validate_folder  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
BUILD_ROOT = REPO / 'submission' / 'build' / 'task2'
DEFAULT_DATASET = 'SimulaMet/Kvasir-VQA-x1'
MAX_GREEDY_MISMATCH = 0.05  # above this share the model is not the one that made the Task 1 predictions


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


def load_scenes(dataset: str) -> dict[str, dict]:
    """geometry.jsonl of a synthetic copy (ground-truth boxes), {} for real data."""
    from data_prep.sources import dataset_folder
    try:
        path = dataset_folder(dataset) / 'geometry.jsonl'
    except Exception:
        return {}
    return {r['img_id']: r for r in read_jsonl(path)} if path.is_file() else {}


def load_calibration_rows(path: str, dataset: str | None, limit: int | None) -> list[dict]:
    """Labelled held-out rows: an inference.predict JSONL (question, prediction, reference, image) or an ms-swift
    JSONL (messages + images; the model then answers). Returns question, reference, prediction|None, image path."""
    rows = []
    for i, r in enumerate(read_jsonl(path), 1):
        if 'messages' in r:
            user = next((m['content'] for m in r['messages'] if m.get('role') == 'user'), None)
            ref = next((m['content'] for m in r['messages'] if m.get('role') == 'assistant'), None)
            imgs = r.get('images') or []
            if not isinstance(user, str) or ref is None or not imgs:
                raise InputError('expected a user turn, an assistant turn and one image', file=path, row=i)
            q, pred = user.replace('<image>', '').strip(), None
            img = imgs[0]['path'] if isinstance(imgs[0], dict) else imgs[0]
        else:
            for k in ('question', 'reference', 'prediction'):
                if k not in r:
                    raise InputError('missing field (need a predictions file or an ms-swift JSONL)', file=path,
                                     row=i, field=k)
            q, ref, pred, img = r['question'], r['reference'], r['prediction'], r.get('image')
        rows.append({'question': q, 'reference': ref, 'prediction': pred,
                     'image': _find_image(img, path, dataset, r.get('img_id'), i)})
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise InputError('no rows', file=path, field='--calibration-data')
    return rows


def _find_image(img, path: str, dataset: str | None, img_id: str | None, row: int) -> Path:
    cands = []
    if isinstance(img, str) and img:
        p = Path(img)
        cands += [p] if p.is_absolute() else [Path(path).parent / p, p]
    if dataset:
        from data_prep.sources import resolve_image
        found = resolve_image(img if img is not None else {'img_id': img_id, 'image': None}, dataset=dataset,
                              img_id=img_id)
        if isinstance(found, Path):
            cands.append(found)
    for c in cands:
        if c.is_file():
            return c
    raise InputError(f'image not found: {img!r}', file=path, row=row, field='image')


# ---------------------------------------------------------------- work (cached per row)
def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def explain_rows(runner, rows, answers, work: Path, model_key: str, args) -> list[dict]:
    from explain.pipeline import explain_row
    (work / 'rows').mkdir(parents=True, exist_ok=True)
    out = []
    for row in tqdm(rows, desc='task2 explanations', unit='row'):
        vid = row['val_id']
        cache = work / 'rows' / f'{vid}.json'
        answer = answers.get(vid)
        key = _key(model_key, row['img_id'], row['question'], answer, args.grid, args.probe_tokens,
                   args.grounding_tokens, args.answer_tokens)
        if cache.is_file():
            rec = json.loads(cache.read_text(encoding='utf-8'))
            if rec.get('key') == key and (work / rec['visual_explanation'][-1]['data']).is_file():
                out.append(rec)
                continue
        rel = f'visuals/{vid}_heatmap.png'
        rec = explain_row(runner, open_image(row['image']), row['question'], answer, work / rel, rel, args.grid,
                          args.probe_tokens, args.grounding_tokens, args.answer_tokens)
        rec.update(key=key, val_id=vid, img_id=row['img_id'], question=row['question'],
                   reference=row.get('reference'))
        write_json(cache, rec)
        out.append(rec)
    return out


def calibration_scores(runner, rows, work: Path, model_key: str,
                       answer_tokens: int = 64) -> tuple[list[float], list[int]]:
    """Raw confidence and correctness on the labelled split, computed exactly as for the submission rows (the model
    answers each question again; a prediction in the file must be that answer)."""
    from explain import confidence
    from explain.pipeline import answer_confidence
    (work / 'calibration').mkdir(parents=True, exist_ok=True)
    raw, labels = [], []
    for i, row in enumerate(tqdm(rows, desc='calibration split', unit='row')):
        key = _key(model_key, row['question'], row['reference'], row['prediction'], str(row['image']),
                   answer_tokens)
        cache = work / 'calibration' / f'{i}.json'
        rec = json.loads(cache.read_text(encoding='utf-8')) if cache.is_file() else {}
        if rec.get('key') != key:
            pred, score, matches = answer_confidence(runner, open_image(row['image']), row['question'],
                                                     row['prediction'], answer_tokens)
            rec = {'key': key, 'prediction': pred, 'raw': score, 'matches': matches,
                   'correct': int(confidence.is_correct(row['question'], pred, row['reference']))}
            write_json(cache, rec)
        raw.append(rec['raw'])
        labels.append(rec['correct'])
    return raw, labels


# ---------------------------------------------------------------- outputs
def submission_script(team: dict) -> str:
    return ('"""Medico 2026 Subtask 2 submission details (read by the organizers; nothing runs on import)."""\n'
            'SUBMISSION_INFO = ' + json.dumps(team, indent=4, ensure_ascii=False) + '\n')


def _fmt(v, nd=4):
    return '—' if v is None else (f'{v:.{nd}f}' if isinstance(v, float) else str(v))


def readme(name: str, args, report: dict) -> str:
    cal, geo, boxes = report['calibration'], report.get('geometry'), report['boxes']
    lines = [
        f'# {name}: Medico 2026 Subtask 2 (explanations)', '',
        f'Model: `{args.model}`. {report["rows"]} val rows. Built by `python -m submission.task2` '
        '(medico2026 recipes).', '',
        '## Method',
        '- **answer**: the Task 1 model\'s own prediction for the question (greedy decoding)' +
        (f', taken from `{Path(args.task1_predictions).name}`' if args.task1_predictions else '') +
        f'. Re-generated with the same ms-swift engine and greedy decoding: '
        f'{report["greedy_consistent"]}/{report["rows"]} identical.',
        '- **textual_explanation**: self-probing. The same model answers up to 4 auxiliary questions chosen from the '
        'question\'s topic (finding, location, size/morphology, colour, instruments, text / box artefacts, landmark, '
        'procedure); the justification quotes only the main answer and those probe answers, then describes the '
        'visual evidence. Every sentence\'s source is in `report/explanations_audit.jsonl`.',
        '- **visual_explanation**: (a) `bounding_box`: the model is prompted for `{"bbox_2d": [x1, y1, x2, y2], '
        '"label": ...}`; Qwen2.5-VL answers in pixels of the resized input (smart_resize, factor 28), which we map '
        'back to the original size and clip; unparseable or out-of-image boxes are dropped and counted. No box when '
        'the answer denies the finding. (b) `heatmap`: occlusion — the image is split into a '
        f'{args.grid}x{args.grid} grid, each cell is painted with the mean colour and the drop in the answer\'s '
        'log-probability is measured; the normalised drops are upsampled to the image size and blended in '
        '(viridis; yellow = largest drop).',
        '- **confidence_score**: the answer\'s token log-probs (geometric-mean token probability; for yes/no '
        'questions answered with yes/no, the yes-vs-no probability of the first token), calibrated by '
        f'**{cal["method"]}** on a labelled held-out split'
        + (f' (`{Path(args.calibration_data).name}`, {cal["before"]["n"]} rows)' if args.calibration_data
           else ' — none given, so the scores are uncalibrated') +
        '. Correct = same yes/no polarity for closed questions, else normalised exact match or ROUGE-L F1 >= 0.5.',
        '', '## Report', '',
        '| calibration split | n | accuracy | mean confidence | ECE | Brier | NLL |', '|---|---|---|---|---|---|---|']
    for k, label in (('before', 'before'), ('after', f'after ({cal.get("after_kind", "")})'),
                     ('after_in_sample', 'after (in-sample, final map)')):
        m = cal.get(k)
        if m:
            lines.append(f'| {label} | {m["n"]} | {_fmt(m["accuracy"])} | {_fmt(m["mean_confidence"])} | '
                         f'{_fmt(m["ece"])} | {_fmt(m["brier"])} | {_fmt(m["nll"])} |')
    if cal.get('diagram'):
        lines += ['', f'![reliability diagram]({cal["diagram"]})']
    lines += ['', f'Grounding outputs: {boxes["outputs"]}, boxes kept: {boxes["kept"]}, unparseable outputs: '
                  f'{boxes["unparseable"]}, boxes outside the image: {boxes["out_of_bounds"]}.']
    if geo:
        lines += ['', 'Against the true geometry of the synthetic set:', '',
                  '| rows with a true region | with a box | mean best IoU | IoU >= 0.5 | heatmap mass inside | '
                  'true region area share |', '|---|---|---|---|---|---|',
                  f'| {geo["rows_with_truth"]} | {geo["rows_with_box"]} | {_fmt(geo["mean_best_iou"])} | '
                  f'{_fmt(geo["iou_at_0_5"])} | {_fmt(geo["mean_heatmap_mass_inside"])} | '
                  f'{_fmt(geo["mean_true_area_share"])} |',
                  '', 'A heatmap mass above the area share means the map concentrates on the true region more than '
                  'a uniform map would.']
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
    ap.add_argument('--task1-predictions', default=None, help='inference.predict JSONL for the task2_val split')
    ap.add_argument('--calibration-data', default=None,
                    help='labelled held-out split: predictions JSONL (with reference) or ms-swift JSONL')
    ap.add_argument('--calibration-method', choices=('temperature', 'isotonic'), default='temperature')
    ap.add_argument('--calibration-limit', type=int, default=None)
    ap.add_argument('--grid', type=int, default=6, help='occlusion grid size (grid x grid cells)')
    ap.add_argument('--answer-tokens', type=int, default=64,
                    help='max new tokens when the model answers itself (match inference.predict)')
    ap.add_argument('--probe-tokens', type=int, default=48, help='max new tokens per probe answer')
    ap.add_argument('--grounding-tokens', type=int, default=128, help='max new tokens of the grounding answer')
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
    if args.task1_predictions and not Path(args.task1_predictions).is_file():   # given, so it must be there
        raise InputError('file not found (make infer SPLIT=task2_val-original writes it)',
                         file=args.task1_predictions, field='--task1-predictions')
    return args


def build(args) -> tuple[Path, dict]:
    from explain import confidence
    from explain.heatmap import upsample
    from explain.pipeline import evaluate_geometry
    from explain.runner import VLRunner
    from submission.hub import check_repo_id
    from submission.task1 import _NAME
    if args.hub_repo:
        check_repo_id(args.hub_repo, '--hub-repo')
    model = Path(args.model)
    name = args.name or _default_name(args.model)
    if not _NAME.match(name):
        raise InputError(f'use letters, digits, ".", "_" or "-": {name!r}', field='--name')
    team = load_team(args.team)
    rows = load_val_rows(args.dataset, args.images, args.limit)
    answers = {}
    if args.task1_predictions:
        t1 = read_task1_answers(args.task1_predictions)
        for r in rows:
            p = t1.get(r['val_id'])
            if p is None:
                raise InputError(f'no prediction for val_id {r["val_id"]}', file=args.task1_predictions,
                                 field='val_id')
            for k in ('img_id', 'question'):
                if k in p and p[k] != r[k]:
                    raise InputError(f'{k} {p[k]!r} differs from the val set\'s {r[k]!r} (val_id {r["val_id"]}); '
                                     'predictions must be for the task2_val split', file=args.task1_predictions,
                                     field=k)
            answers[r['val_id']] = p['prediction']
    args.max_pixels = image_budget(model, args.max_pixels)   # as in training (the model's medico_env.json)
    runner = VLRunner(model, max_pixels=args.max_pixels, system=args.system)
    model_key = _key(str(model.resolve()), args.max_pixels, args.system)
    root = Path(args.build_root)
    root.mkdir(parents=True, exist_ok=True)
    work = root / f'.work-{name}'

    records = explain_rows(runner, rows, answers, work, model_key, args)
    greedy_ok = sum(r['greedy_consistent'] for r in records)
    if args.task1_predictions and len(records) - greedy_ok > MAX_GREEDY_MISMATCH * len(records):
        raise InputError(f'{len(records) - greedy_ok}/{len(records)} Task 1 answers are not this model\'s greedy '
                         'output: is --model the model that made them?', file=args.task1_predictions,
                         field='prediction')

    cal_report: dict = {'method': 'identity'}
    calibrator = confidence.Calibrator('identity')
    final = root / name
    with atomic_dir(final) as tmp:   # assembled aside, validated, then swapped in whole
        (tmp / 'report').mkdir()
        if args.calibration_data:
            cal_rows = load_calibration_rows(args.calibration_data, args.dataset, args.calibration_limit)
            raw, labels = calibration_scores(runner, cal_rows, work, model_key, args.answer_tokens)
            calibrator, cal_report, after = confidence.calibration_report(raw, labels, args.calibration_method)
            confidence.reliability_diagram(raw, after, labels, tmp / 'report' / 'reliability.png')
            cal_report['diagram'] = 'report/reliability.png'
        (tmp / 'visuals').mkdir()
        lines, audit = [], []
        for rec in records:
            src = work / rec['visual_explanation'][-1]['data']
            shutil.copyfile(src, tmp / rec['visual_explanation'][-1]['data'])
            conf = float(np.clip(calibrator(float(rec['raw_confidence'])), 0.0, 1.0))
            lines.append({'val_id': rec['val_id'], 'img_id': rec['img_id'], 'question': rec['question'],
                          'answer': rec['answer'], 'textual_explanation': rec['textual_explanation'],
                          'visual_explanation': rec['visual_explanation'], 'confidence_score': round(conf, 6)})
            audit.append({k: rec[k] for k in ('val_id', 'answer', 'probes', 'claims', 'grounding_target',
                                              'grounding_output', 'box_stats', 'raw_confidence',
                                              'greedy_consistent', 'heatmap_peak', 'heatmap_cells')}
                         | {'confidence_score': round(conf, 6)})
        write_jsonl(tmp / JSONL, lines)
        write_jsonl(tmp / 'report' / 'explanations_audit.jsonl', audit)
        with atomic_open(tmp / SCRIPT, 'w', encoding='utf-8') as f:
            f.write(submission_script(team))

        from explain.grounding import BoxStats
        box_stats = BoxStats()
        for rec in records:
            box_stats.add(BoxStats(**rec['box_stats']))
        scenes = load_scenes(args.dataset)
        geometry = None
        if scenes:
            heat = {r['val_id']: upsample(np.asarray(r['heatmap_cells']), *_size(rows, r['val_id']))
                    for r in records}
            geometry = evaluate_geometry(records, scenes, heat)
        report = {'rows': len(records), 'greedy_consistent': greedy_ok, 'boxes': box_stats.as_dict(),
                  'calibration': cal_report, 'geometry': geometry}
        write_json(tmp / 'report' / 'report.json', report)
        with atomic_open(tmp / 'README.md', 'w', encoding='utf-8') as f:
            f.write(readme(name, args, report))

        validate_folder(tmp, [{k: r[k] for k in ('val_id', 'img_id', 'question', 'width', 'height')}
                              for r in rows], answers or None)
    return final, report


def _default_name(model: str) -> str:
    model = Path(model)
    return model.parent.name if model.name == 'merged' else model.name


def _size(rows, vid):
    r = next(r for r in rows if r['val_id'] == vid)
    return r['width'], r['height']


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
