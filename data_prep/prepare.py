"""`make prepare`: dataset -> checked images, weak variants, leak-free splits, ms-swift JSONL, subsets, stats.

    python -m data_prep.prepare --dataset D [--images DIR] --out OUT [--aug-k 10] [--val-fraction 0.05]
        [--seed 42] [--system-prompt S] [--prompt-template "{question}"] [--max-pixels N] [--curriculum]
        [--train-on-test] [--lenient] [--duplicates keep|drop|error] [--augment-impl opencv|torchvision] [--workers N]

Strict (default): the first bad row or image stops the run with one line `file:row: field: message` (exit 2),
before anything is written. --lenient skips bad rows (and every row of a bad image) and counts them in the report.
Reruns skip images already written from the same source bytes (OUT/images/original/.sources.json records each
source's sha256; a changed source gets a new original and new variants) and rewrite the same bytes everywhere else.
One run at a time per OUT (a lock file OUT/.prepare.lock): a second run into the same folder stops at once.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.errors import InputError, cli_main
from common.io import atomic_path, exclusive_lock, write_json
from data_prep import augment, schema, sources, splits, subsets, to_swift

SPLITS = ('train', 'test')
SOURCES_STAMP = '.sources.json'   # in OUT/images/original: {img_id: sha256 of the source image bytes}
LOCK = '.prepare.lock'
# The default recipe's MAX_PIXELS (recipes/qwen2_5_vl/7B_lora.args, --env MAX_PIXELS): the token statistics show what
# `make sft` will train on (tests/test_recipes.py checks that the two agree). MAX_PIXELS=... or --max-pixels override.
DEFAULT_MAX_PIXELS = 640000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python -m data_prep.prepare', description=__doc__.split('\n')[0])
    p.add_argument('--dataset', required=True, help='hub id or local copy (parquet file/folder, save_to_disk folder)')
    p.add_argument('--images', help='folder of <img_id>.jpg (default: the dataset\'s own image column/folder)')
    p.add_argument('--out', required=True, help='output folder (e.g. data/prepared)')
    p.add_argument('--aug-k', type=int, default=10, help='weak variants per image (1 = the official layout)')
    p.add_argument('--val-fraction', type=float, default=0.05, help='share of train images held out as val')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--system-prompt', default=None)
    p.add_argument('--prompt-template', default=to_swift.DEFAULT_TEMPLATE, help='user text; must contain {question}')
    p.add_argument('--max-pixels', type=int, default=int(os.environ.get('MAX_PIXELS', DEFAULT_MAX_PIXELS)),
                   help='Qwen-VL MAX_PIXELS used for the image-token statistics')
    p.add_argument('--curriculum', action='store_true', help='order train by complexity 1 -> 2 -> 3')
    p.add_argument('--train-on-test', action='store_true', help='add test rows to train (contaminates the subsets)')
    p.add_argument('--lenient', action='store_true', help='skip bad rows and count them instead of stopping')
    p.add_argument('--duplicates', choices=('keep', 'drop', 'error'), default='keep',
                   help='repeated (img_id, question) pairs; the official train split has some (default keep)')
    p.add_argument('--augment-impl', choices=augment.IMPLS, default=augment.DEFAULT_IMPL,
                   help='weak transform: opencv (fast, default) or torchvision (the pixel-exact reference)')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.aug_k < 1:
        p.error('--aug-k must be >= 1')
    if not 0 <= args.val_fraction < 1:
        p.error('--val-fraction must be in [0, 1)')
    to_swift.check_template(args.prompt_template)
    return args


# ---- images ----------------------------------------------------------------------------------------------------

def _open(src: Path | bytes) -> Image.Image:
    return Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)


def _check_image(job: tuple[str, Path | bytes]) -> tuple[str, tuple[int, int] | None, str | None]:
    """Decode one source image fully; returns (img_id, (width, height), None) or (img_id, None, reason)."""
    img_id, src = job
    try:
        with _open(src) as im:
            im.load()
            return img_id, im.size, None
    except Exception as e:  # any decoder failure is a bad input image
        return img_id, None, f'unreadable image ({type(e).__name__}: {e})'


def _source_sha256(src: Path | bytes) -> str:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    return _sha256(src)


def _write_original(src: Path | bytes, dst: Path, variants: list[Path]) -> bool:
    """JPEG sources are copied byte for byte (what the organizers' scripts see); others become JPEG. When an
    earlier original of other content is replaced, its `variants` (made from it) are removed first, so that they are
    made again; returns whether the original changed."""
    data = src if isinstance(src, bytes) else None
    head = data[:3] if data is not None else open(src, 'rb').read(3)
    with atomic_path(dst) as tmp:
        if head != b'\xff\xd8\xff':
            with _open(src) as im:
                im.convert('RGB').save(tmp, format='JPEG', quality=augment.JPEG_QUALITY)
        elif data is not None:
            tmp.write_bytes(data)
        else:
            shutil.copyfile(src, tmp)
        changed = not dst.exists() or _sha256(dst) != _sha256(tmp)
        if changed:
            for path in variants:
                path.unlink(missing_ok=True)
    return changed


def _pool_map(fn, jobs, workers, desc):
    if workers <= 1 or len(jobs) < 2:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit='img')]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=16), total=len(jobs), desc=desc, unit='img'))


# ---- rows ------------------------------------------------------------------------------------------------------

def _load_rows(args, ds, skipped: Counter) -> tuple[dict[str, list[dict]], dict, dict[str, tuple]]:
    """Rows per split (validated), image source per img_id, and where each img_id first appears (file, row, split)."""
    rows_by_split, image_src, first_seen = {}, {}, {}
    for split in SPLITS:
        if split not in ds:
            if split == 'train':
                raise InputError('no train split', file=args.dataset)
            print('note: no test split: test, task1_public and task2_val will be empty', file=sys.stderr)
            rows_by_split[split] = []
            continue
        part = ds[split]
        label = f'{args.dataset}[{split}]'
        missing = [c for c in schema.REQUIRED_COLUMNS if c not in part.column_names]
        if missing:
            raise InputError(f'missing column(s) {", ".join(missing)}', file=label, field=missing[0])
        import datasets
        if isinstance(part.features.get('image'), datasets.Image):  # embedded images: keep the bytes, don't decode
            part = part.cast_column('image', datasets.Image(decode=False))
        part, undecodable = _decodable(part, label, split, args.lenient, skipped)
        ds[split] = part
        good = []
        for number, row in enumerate(part.to_list(), 1):
            if number - 1 in undecodable:
                continue
            try:
                schema.validate_row(row, label, number)
                src = image_src.get(row['img_id']) or sources.resolve_image(row, dataset=args.dataset,
                                                                             images=args.images)
                if not src:
                    why = sources.escapes(row.get('image'), args.dataset, args.images)
                    raise InputError(why or f'no image for img_id {row["img_id"]}', file=label, row=number,
                                     field='image')
                if isinstance(src, str):  # a hub URL: this stage works offline on local files
                    raise InputError(f'image {src} is not local; fetch the images (python -m data_prep.sources '
                                     f'--dataset D --download-images DIR) and pass --images DIR', file=label,
                                     row=number, field='image')
            except InputError as e:
                if not args.lenient:
                    raise
                skipped[f'{split}: bad {e.field or "row"}'] += 1
                continue
            image_src.setdefault(row['img_id'], src)
            first_seen.setdefault(row['img_id'], (label, number, split))
            row = {k: row[k] for k in ('img_id', 'complexity', 'question', 'answer', 'question_class') if k in row}
            row['question_class'] = list(row.get('question_class') or [])
            row['_row'] = number
            good.append(row)
        rows_by_split[split] = _handle_duplicates(good, label, args.duplicates, skipped, split)
    return rows_by_split, image_src, first_seen


def _decodable(part, label: str, split: str, lenient: bool, skipped: Counter):
    """(split, 0-based rows to leave out): text that is not valid UTF-8 makes a bad row (strict: the first one is the
    error). Lenient: those rows are left out and their bytes replaced, so the organizer subsets drawn from the whole
    test split can still be read."""
    import datasets
    from datasets.table import InMemoryTable
    if part._indices is not None:
        part = part.flatten_indices()
    table = part.data.table
    bad = schema.invalid_utf8_rows(table)
    if not bad:
        return part, set()
    first = next(iter(bad))
    if not lenient:
        raise InputError('text is not valid UTF-8', file=label, row=first + 1, field=bad[first])
    for column in bad.values():
        skipped[f'{split}: bad {column}'] += 1
    fixed = datasets.Dataset(InMemoryTable(schema.replace_invalid_utf8(table, set(bad.values()))), info=part.info)
    return fixed, set(bad)


def _handle_duplicates(rows, label, policy, skipped, split):
    """Repeated (img_id, question) pairs: keep (default; the official train split has some), drop or error."""
    repeats = sorted(i for positions in schema.find_duplicates(rows).values() for i in positions[1:])
    if not repeats:
        return rows
    if policy == 'error':
        row = rows[repeats[0]]
        first = schema.find_duplicates(rows)[(row['img_id'], row['question'])][0]
        raise InputError(f'duplicate (img_id, question) of row {rows[first]["_row"]}', file=label, row=row['_row'],
                         field='question')
    skipped[f'{split}: duplicate (img_id, question) {"dropped" if policy == "drop" else "kept"}'] += len(repeats)
    if policy == 'keep':
        return rows
    drop = set(repeats)
    return [r for i, r in enumerate(rows) if i not in drop]


# ---- main ------------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {'python': platform.python_version()}
    for pkg in ('torch', 'torchvision', 'pillow', 'opencv-python-headless', 'datasets', 'numpy'):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _recorded_sources(orig_dir: Path) -> dict[str, str]:
    try:
        recorded = json.loads((orig_dir / SOURCES_STAMP).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def prepare(args: argparse.Namespace) -> dict:
    """The whole stage, holding OUT's lock: a second run into the same folder is refused at once."""
    out = Path(args.out)
    created = not out.exists()
    try:
        with exclusive_lock(out / LOCK, 'data_prep.prepare run', out):
            return _prepare(args)
    except BaseException:
        if created:   # bad input found before anything was written: leave no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _prepare(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    skipped: Counter = Counter()
    ds = sources.load_source(args.dataset, images=args.images)
    if args.images is None and args.dataset == sources.HUB_DATASET:
        # The x1 rows only reference their images: fetch each one once, by img_id, from SimulaMet-HOST/Kvasir-VQA.
        args.images = str(out / 'hub_images')
        img_ids = {i for split in ds.values() for i in split['img_id']}
        sources.download_hub_images(args.images, img_ids)
    rows_by_split, image_src, first_seen = _load_rows(args, ds, skipped)

    # Check every image (and that old variants match this seed) before writing anything: no partial output.
    augment.check_stamp(out / 'images' / 'augmented', args.seed, args.augment_impl)
    orig_dir, aug_dir = out / 'images' / 'original', out / 'images' / 'augmented'
    sizes: dict[str, tuple[int, int]] = {}
    to_check = []
    recorded = _recorded_sources(orig_dir)
    source_sha256 = {img_id: _source_sha256(src) for img_id, src in
                     tqdm(sorted(image_src.items()), desc='hash sources', unit='img')}
    for img_id in sorted(image_src):
        done = orig_dir / f'{img_id}.jpg'
        if done.exists() and recorded.get(img_id) == source_sha256[img_id]:  # written from these bytes before
            with Image.open(done) as im:
                sizes[img_id] = im.size
        else:
            to_check.append((img_id, image_src[img_id]))
    bad_images = set()
    for img_id, size, reason in _pool_map(_check_image, to_check, args.workers, 'check images'):
        if reason is None:
            sizes[img_id] = size
            continue
        if not args.lenient:
            label, number, _ = first_seen[img_id]
            where = 'embedded bytes' if isinstance(image_src[img_id], bytes) else image_src[img_id]
            raise InputError(f'{reason}: {where}', file=label, row=number, field='image')
        bad_images.add(img_id)
    if bad_images:
        for split, rows in rows_by_split.items():
            kept = [r for r in rows if r['img_id'] not in bad_images]
            if len(rows) > len(kept):
                skipped[f'{split}: rows of unreadable images'] += len(rows) - len(kept)
            rows_by_split[split] = kept

    variants = augment.variant_files(aug_dir) if any((orig_dir / f'{i}.jpg').exists() for i, _ in to_check) else {}
    for img_id, src in tqdm([j for j in to_check if j[0] not in bad_images], desc='write originals', unit='img'):
        _write_original(src, orig_dir / f'{img_id}.jpg', variants.get(img_id, []))
    used = sorted(sizes.keys() - bad_images)
    if {i: source_sha256[i] for i in used} != recorded:   # rewritten only when it changes: reruns touch no image file
        write_json(orig_dir / SOURCES_STAMP, {i: source_sha256[i] for i in used})
    augment.augment_images([(i, orig_dir / f'{i}.jpg') for i in used], aug_dir,
                           args.aug_k, seed=args.seed, workers=args.workers, impl=args.augment_impl)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # printed once below, in words
        s = splits.make_splits(rows_by_split['train'], rows_by_split['test'], val_fraction=args.val_fraction,
                               seed=args.seed, curriculum=args.curriculum, train_on_test=args.train_on_test)
    if args.train_on_test:
        print('warning: --train-on-test: task1_public and task2_val come from test, so their scores will be '
              'contaminated (optimistic) for a model trained on this data', file=sys.stderr)

    # Organizer subsets come from the full official test split (never re-sorted or filtered first). A position
    # column ties each subset row to its validated test row: repeated (img_id, question) pairs make a key join unsafe.
    subset_rows, subset_info = {'task1_public': [], 'task2_val': []}, {}
    if 'test' in ds:
        subset_info = subsets.write_subsets(ds['test'], out / 'subsets')
        test_by_row = {r['_row']: r for r in rows_by_split['test']}
        positioned = ds['test'].select_columns(['complexity']).add_column('_pos', list(range(len(ds['test']))))
        for name, fn, key in (('task1_public', subsets.task1_subset, 'index'),
                              ('task2_val', subsets.task2_subset, 'val_id')):
            picked = fn(positioned)
            ids = picked['val_id'] if key == 'val_id' else range(len(picked))
            subset_rows[name] = [{**test_by_row[pos + 1], key: i} for pos, i in zip(picked['_pos'], ids)
                                 if pos + 1 in test_by_row]
            if len(picked) > len(subset_rows[name]):
                skipped[f'{name}: rows not usable (bad row or image)'] += len(picked) - len(subset_rows[name])

    split_rows = {'train': s.train, 'val': s.val, 'test': s.test, **subset_rows}
    swift_paths = to_swift.write_all(out / 'swift', split_rows, out / 'images', args.aug_k,
                                     args.prompt_template, args.system_prompt)
    notes = {**{f'skipped: {k}': v for k, v in sorted(skipped.items())},
             **{f'split: {k}': v for k, v in s.info.items()}}
    from data_prep import stats  # matplotlib: imported only once there is something to plot
    stats.write_report(out / 'stats', split_rows, sizes, args.max_pixels, notes)

    manifest = {
        'args': {k: v for k, v in sorted(vars(args).items()) if k != 'workers'},
        'counts': {'rows': {k: len(v) for k, v in split_rows.items()},
                   'images': {'original': len(used), 'augmented_per_image': args.aug_k},
                   'skipped': dict(sorted(skipped.items())), 'splits': s.info},
        'versions': _versions(),
        'subsets': {name: {k: v for k, v in info.items() if k != 'path'} for name, info in subset_info.items()},
        'sha256': {str(p.relative_to(out)): _sha256(p) for p in
                   sorted(swift_paths + list((out / 'subsets').glob('*.jsonl')))},
    }
    write_json(out / 'manifest.json', manifest)
    return manifest


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    manifest = prepare(args)
    rows = manifest['counts']['rows']
    print(f'prepared {args.out}: ' + ', '.join(f'{k} {v}' for k, v in rows.items()) +
          f'; {manifest["counts"]["images"]["original"]} images x {args.aug_k} variants')
    return 0


if __name__ == '__main__':
    sys.exit(main())
