"""Strict check of a Subtask 2 submission folder, run before any upload.

    python -m submission.validate_task2 FOLDER --dataset D [--images I] [--task1-predictions P] [--limit N]
        [--for-upload]

Checks: submission_task2.jsonl has exactly val_ids 0..N-1 once each (N = val set size, 1500 for the real set; the
first N with --limit); img_id and question equal the val set's; answers equal the Task 1 predictions (when given);
textual_explanation is non-empty; every visual is a PNG inside the folder (no path escapes) of the image's size whose
pixels decode, or a list of boxes inside the image; confidence_score is a finite number in [0, 1];
submission_task2.py holds only SUBMISSION_INFO. --for-upload (what `make submit-task2` applies before an upload):
exactly the 1500 rows of the real val set. The first problem is printed as one line and the exit code is 2.
"""
from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path

from PIL import Image

from common.errors import InputError, cli_main
from common.io import read_jsonl

JSONL = 'submission_task2.jsonl'
REAL_VAL_SIZE = 1500   # the organizers' val set; medvqa's own check counts lines only
SCRIPT = 'submission_task2.py'
VISUAL_TYPES = ('heatmap', 'segmentation_mask', 'bounding_box')
FILE_TYPES = ('heatmap', 'segmentation_mask')
REQUIRED = ('val_id', 'img_id', 'question', 'answer', 'textual_explanation', 'confidence_score')
TEAM_KEYS = ('Participant_Names', 'Affiliations', 'Contact_emails', 'Team_Name', 'Country', 'Notes_to_organizers')


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_visual(item, folder: Path, size: tuple[int, int], file: str, row: int, k: int) -> None:
    field = f'visual_explanation[{k}]'
    if not isinstance(item, dict):
        raise InputError('expected an object {type, data, description}', file=file, row=row, field=field)
    kind = item.get('type')
    if kind not in VISUAL_TYPES:
        raise InputError(f'type must be one of {", ".join(VISUAL_TYPES)}, got {kind!r}', file=file, row=row,
                         field=field)
    if not isinstance(item.get('description'), str) or not item['description'].strip():
        raise InputError('empty description', file=file, row=row, field=field)
    data, (w, h) = item.get('data'), size
    if kind in FILE_TYPES:
        if not isinstance(data, str) or not data:
            raise InputError('data must be a relative path to a PNG', file=file, row=row, field=field)
        rel = Path(data)
        root = folder.resolve()
        target = (root / rel).resolve()
        if rel.is_absolute() or '\\' in data or (target != root and root not in target.parents):
            raise InputError(f'path escapes the submission folder: {data}', file=file, row=row, field=field)
        if not target.is_file():
            raise InputError(f'file not found: {data}', file=file, row=row, field=field)
        try:
            with Image.open(target) as im:
                fmt, got = im.format, im.size
                im.verify()   # chunk structure and CRCs only
            with Image.open(target) as im:
                im.load()     # every pixel: valid chunks can still hold an undecodable stream
        except Exception as e:
            raise InputError(f'not a readable image: {data} ({type(e).__name__})', file=file, row=row,
                             field=field) from None
        if fmt != 'PNG':
            raise InputError(f'not a PNG ({fmt}): {data}', file=file, row=row, field=field)
        if got != (w, h):
            raise InputError(f'{data} is {got[0]}x{got[1]}, the image is {w}x{h}', file=file, row=row, field=field)
    else:
        if not isinstance(data, list) or not data:
            raise InputError('data must be a non-empty list of [x1, y1, x2, y2]', file=file, row=row, field=field)
        for box in data:
            if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
                raise InputError(f'not a box [x1, y1, x2, y2]: {box!r}', file=file, row=row, field=field)
            x1, y1, x2, y2 = box
            if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                raise InputError(f'box {box} is not inside the {w}x{h} image', file=file, row=row, field=field)


def check_script(path: Path) -> None:
    """submission_task2.py: only `SUBMISSION_INFO = {...}` with the organizers' keys; nothing runs on import."""
    if not path.is_file():
        raise InputError('file not found', file=str(path))
    try:
        tree = ast.parse(path.read_text(encoding='utf-8'))
    except SyntaxError as e:
        raise InputError(f'not valid Python ({e.msg})', file=str(path), row=e.lineno) from None
    except UnicodeDecodeError as e:
        raise InputError(f'not UTF-8 text (byte at offset {e.start})', file=str(path)) from None
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Assign) or \
            [getattr(t, 'id', None) for t in body[0].targets] != ['SUBMISSION_INFO']:
        raise InputError('must contain only the assignment SUBMISSION_INFO = {...}', file=str(path))
    try:
        info = ast.literal_eval(body[0].value)
    except ValueError:
        raise InputError('SUBMISSION_INFO must be a literal dict', file=str(path)) from None
    if not isinstance(info, dict) or set(info) != set(TEAM_KEYS):
        raise InputError(f'SUBMISSION_INFO keys must be {", ".join(TEAM_KEYS)}', file=str(path))


def validate_folder(folder: str | Path, val_rows: list[dict], answers: dict[int, str] | None = None) -> int:
    """Raise InputError on the first problem; returns the number of lines. `val_rows`: the val set (first N rows)
    as dicts with val_id, img_id, question, width, height; `answers`: Task 1 prediction per val_id."""
    folder = Path(folder)
    path = folder / JSONL
    file = str(path)
    rows = read_jsonl(path)
    expected = {int(r['val_id']): r for r in val_rows}
    if sorted(expected) != list(range(len(expected))):
        raise InputError('the val set must have val_ids 0..N-1', field='val_id')
    seen: set[int] = set()
    for i, row in enumerate(rows, 1):
        for key in REQUIRED:
            if key not in row:
                raise InputError('missing field', file=file, row=i, field=key)
        vid = row['val_id']
        if not isinstance(vid, int) or isinstance(vid, bool) or vid not in expected:
            raise InputError(f'val_id {vid!r} is not in 0..{len(expected) - 1}', file=file, row=i, field='val_id')
        if vid in seen:
            raise InputError(f'duplicate val_id {vid}', file=file, row=i, field='val_id')
        seen.add(vid)
        ref = expected[vid]
        for key in ('img_id', 'question'):
            if row[key] != ref[key]:
                raise InputError(f'{row[key]!r} differs from the val set\'s {ref[key]!r} (val_id {vid})', file=file,
                                 row=i, field=key)
        if not isinstance(row['answer'], str):
            raise InputError('answer must be a string', file=file, row=i, field='answer')
        if answers is not None:
            if vid not in answers:
                raise InputError(f'no Task 1 prediction for val_id {vid}', file=file, row=i, field='answer')
            if row['answer'] != answers[vid]:
                raise InputError(f'answer differs from the Task 1 prediction {answers[vid]!r} (val_id {vid})',
                                 file=file, row=i, field='answer')
        if not isinstance(row['textual_explanation'], str) or not row['textual_explanation'].strip():
            raise InputError('empty textual_explanation', file=file, row=i, field='textual_explanation')
        conf = row['confidence_score']
        if not _number(conf) or not 0.0 <= conf <= 1.0:
            raise InputError(f'confidence_score must be a finite number in [0, 1], got {conf!r}', file=file, row=i,
                             field='confidence_score')
        visuals = row.get('visual_explanation', [])
        if not isinstance(visuals, list):
            raise InputError('visual_explanation must be a list', file=file, row=i, field='visual_explanation')
        for k, item in enumerate(visuals):
            check_visual(item, folder, (int(ref['width']), int(ref['height'])), file, i, k)
    missing = sorted(set(expected) - seen)
    if missing:
        raise InputError(f'{len(missing)} val_id(s) missing, first {missing[0]}', file=file, field='val_id')
    check_script(folder / SCRIPT)
    return len(rows)


def check_upload_size(n: int, where: str) -> None:
    """An upload carries exactly the real val set: a smaller (test or --limit) build is never uploaded."""
    if n != REAL_VAL_SIZE:
        raise InputError(f'{n} rows, but an upload needs the full {REAL_VAL_SIZE}-row val set (DRY_RUN=1 builds '
                         'and checks a smaller set offline)', file=where, field='val_id')


def val_set_size(dataset: str, images: str | None = None) -> int:
    """Rows of the organizers' val set in this copy (no image is decoded)."""
    from data_prep.sources import load_source
    from data_prep.subsets import task2_subset
    ds = load_source(dataset, images=images)
    if 'test' not in ds:
        raise InputError('no test split (the val set is drawn from it)', file=dataset, field='--dataset')
    return len(task2_subset(ds['test']))


def read_task1_answers(path: str | Path) -> dict[int, dict]:
    """Task 1 predictions for the val set (inference.predict JSONL on task2_val): val_id -> the row."""
    out = {}
    for i, row in enumerate(read_jsonl(path), 1):
        if 'val_id' not in row or 'prediction' not in row:
            raise InputError('expected val_id and prediction (predictions for the task2_val split)', file=str(path),
                             row=i)
        if not isinstance(row['prediction'], str):
            raise InputError('prediction must be a string', file=str(path), row=i, field='prediction')
        if row['val_id'] in out:
            raise InputError(f'duplicate val_id {row["val_id"]}', file=str(path), row=i, field='val_id')
        out[int(row['val_id'])] = row
    return out


def main(argv=None) -> int:
    from submission.task2 import load_val_rows  # the dataset side lives with the builder
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('folder')
    ap.add_argument('--dataset', required=True, help='hub id or local copy (as data_prep.sources.load_source)')
    ap.add_argument('--images', default=None)
    ap.add_argument('--task1-predictions', default=None)
    ap.add_argument('--limit', type=int, default=None, help='expect only the first N val rows (test builds)')
    ap.add_argument('--for-upload', action='store_true', help=f'also require the full {REAL_VAL_SIZE}-row val set')
    args = ap.parse_args(argv)
    import datasets
    datasets.disable_progress_bars()  # the verdict is one line
    val = load_val_rows(args.dataset, args.images, args.limit)
    answers = None
    if args.task1_predictions:
        answers = {k: v['prediction'] for k, v in read_task1_answers(args.task1_predictions).items()}
    n = validate_folder(args.folder, [{k: r[k] for k in ('val_id', 'img_id', 'question', 'width', 'height')}
                                      for r in val], answers)
    if args.for_upload:
        check_upload_size(n, str(Path(args.folder) / JSONL))
    print(f'ok: {args.folder}: {n} lines, val_ids 0..{n - 1}')
    return 0


if __name__ == '__main__':
    raise SystemExit(cli_main(main)())
