"""Where the Kvasir-VQA-x1 rows and images come from: the hub, or a local copy in one of three layouts.

    python -m data_prep.sources --dataset D [--images DIR]      # check a source: splits, rows, first image
    python -m data_prep.sources --dataset D --download-images DIR [--images-source S]  # the SimulaMet-HOST/Kvasir-VQA
                                                                 # images these rows use (hub, or a local copy S)

Local copies: a parquet file (one split: `test` if its name says so, else `train`), a folder of parquet files whose
names contain `train` / `test` (searched recursively, e.g. the hub layout data/train-00000-of-00001.parquet), or a
`datasets` save_to_disk folder. Row order is kept exactly: the organizers' subsets depend on it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common.errors import InputError, cli_main
from data_prep.schema import ARROW_SCHEMA, REQUIRED_COLUMNS, TYPED_COLUMNS, check_column_types

HUB_DATASET = 'SimulaMet/Kvasir-VQA-x1'
HUB_IMAGES = 'SimulaMet-HOST/Kvasir-VQA'  # the x1 rows reference these images by img_id (split "raw")
RAW_IMAGE_COLUMNS = ('img_id', 'image')   # what download_hub_images reads from that split
SPLITS = ('train', 'test')
LAYOUTS = ('a parquet file, a folder of *train*/*test* parquet files, a save_to_disk folder, or the hub id '
           + HUB_DATASET)


def _split_of(path: Path) -> str | None:
    name = path.name.lower()
    return 'test' if 'test' in name else 'train' if 'train' in name else None


def _check_parquet(path: Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    """Fail early, naming the file, when it is not parquet or lacks a required column."""
    import pyarrow.parquet as pq
    try:
        names = pq.read_schema(path).names
    except Exception as e:  # pyarrow raises several types for non-parquet input
        raise InputError(f'not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0]})',
                         file=str(path)) from None
    for col in required:
        if col not in names:
            raise InputError(f'missing required column (has: {", ".join(names)})', file=str(path), field=col)


def _check_columns(ds, where: str, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    for col in required:
        if col not in ds.column_names:
            raise InputError(f'missing required column (has: {", ".join(ds.column_names)})', file=where, field=col)


def _features(path: Path):
    """The file's own features (datasets' metadata when it has some), with the official types for the typed columns:
    every file is then cast to these, never to whichever file `datasets` happens to read first."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features
    features = Features.from_arrow_schema(pq.read_schema(path))
    for name in TYPED_COLUMNS:
        if name in features:
            features[name] = Features.from_arrow_schema(pa.schema([ARROW_SCHEMA.field(name)]))[name]
    return features


def _from_parquet(files: dict[str, list[Path]], required: tuple[str, ...] = REQUIRED_COLUMNS):
    import pyarrow.parquet as pq
    from datasets import load_dataset
    first, names = None, None
    for paths in files.values():
        for p in paths:
            _check_parquet(p, required)
            check_column_types(p, required)
            columns = pq.read_schema(p).names
            if first is None:
                first, names = p, columns
            elif sorted(columns) != sorted(names):
                raise InputError(f'columns differ from those of {first} ({", ".join(columns)} vs {", ".join(names)})',
                                 file=str(p))
    # The packaged parquet builder keeps the files' row order (what the hub loader does for the official copy).
    try:
        return load_dataset('parquet', data_files={s: [str(p) for p in ps] for s, ps in files.items()},
                            features=_features(first))
    except Exception as e:  # a cast the per-file checks did not foresee: still the files' fault, in one line
        cause = e.__cause__ or e
        raise InputError(f'cannot read these parquet files as one dataset ({type(cause).__name__}: '
                         f'{str(cause).splitlines()[0] if str(cause) else ""})', file=str(first)) from None


def _is_saved_to_disk(folder: Path) -> bool:
    return (folder / 'dataset_dict.json').is_file() or (folder / 'state.json').is_file()


def _from_disk(folder: Path, required: tuple[str, ...] = REQUIRED_COLUMNS):
    from datasets import Dataset, DatasetDict, load_from_disk
    try:
        loaded = load_from_disk(str(folder))
    except Exception as e:
        raise InputError(f'not a readable save_to_disk folder ({type(e).__name__}: {e})', file=str(folder)) from None
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({_split_of(folder) or 'train': loaded})
    for split, ds in loaded.items():
        _check_columns(ds, f'{folder}[{split}]', required)
    return loaded


def _from_hub(dataset: str):
    from datasets import load_dataset
    try:
        dd = load_dataset(dataset)
    except Exception as e:  # offline, unknown id, no access: all the user's to fix
        offline = os.environ.get('HF_HUB_OFFLINE') == '1' or os.environ.get('HF_DATASETS_OFFLINE') == '1'
        hint = ' (HF_HUB_OFFLINE=1 is set)' if offline else ''
        raise InputError(f'not a local path, and loading it from the hub failed{hint}: {type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""}. Pass a local copy: {LAYOUTS}',
                         file=dataset) from None
    for split, ds in dd.items():
        _check_columns(ds, f'{dataset}[{split}]')
    return dd


def _looks_like_hub_id(dataset: str) -> bool:
    parts = dataset.split('/')
    return len(parts) == 2 and all(parts) and not dataset.startswith(('.', '~')) and '\\' not in dataset


def load_source(dataset: str, images: str | None = None):
    """`datasets.DatasetDict` with the splits found (train and/or test) from a hub id or a local copy.

    `images` (a folder of <img_id>.jpg) is only checked here; pass it to `resolve_image` for each row.
    """
    from datasets import DatasetDict
    if images is not None and not Path(images).is_dir():
        raise InputError('images folder not found; pass a folder holding <img_id>.jpg files', file=str(images))
    path = Path(dataset).expanduser()
    if path.is_file():
        return _from_parquet({_split_of(path) or 'train': [path]})
    if path.is_dir():
        if _is_saved_to_disk(path):
            return _from_disk(path)
        files: dict[str, list[Path]] = {}
        for p in sorted(path.rglob('*.parquet')):
            split = _split_of(p)
            if split and not any(part.startswith('.') for part in p.relative_to(path).parts):
                files.setdefault(split, []).append(p)
        if not files:
            raise InputError(f'no parquet file with "train" or "test" in its name under this folder; expected '
                             f'{LAYOUTS}', file=str(path))
        return DatasetDict(_from_parquet(files))
    if _looks_like_hub_id(dataset):
        return _from_hub(dataset)
    raise InputError(f'no such file or folder; pass {LAYOUTS}', file=dataset)


def dataset_folder(dataset: str | os.PathLike) -> Path:
    """The folder that relative image paths of a local copy start from (the copy's root, not its data/ folder)."""
    path = Path(dataset)
    folder = path if path.is_dir() else path.parent
    return folder.parent if folder.name == 'data' else folder


def resolve_image(value: Any, dataset: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
                  img_id: str | None = None) -> Path | bytes | str | None:
    """Where one row's image is: a local Path, raw bytes, or an http(s) URL string; None if nowhere.

    `value` is the image column (bytes, {"bytes", "path"}, a path absolute or relative to the copy's root, a URL) or
    a whole row (then its `image` and `img_id` are used). A file `<images>/<img_id>.jpg` wins over everything else,
    so a local images folder replaces the hub URLs of the official parquet.
    """
    if isinstance(value, dict) and 'img_id' in value:  # a whole row
        img_id, value = img_id or value['img_id'], value.get('image')
    if isinstance(value, dict):  # datasets Image(decode=False): {"bytes": ..., "path": ...}
        value = value.get('bytes') or value.get('path')
    if images is not None:
        stem = img_id or (Path(str(value).split('?')[0]).stem if isinstance(value, str) else None)
        if stem and (Path(images) / f'{stem}.jpg').is_file():
            return Path(images) / f'{stem}.jpg'
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str) or not value:
        return None
    if value.startswith(('http://', 'https://')):
        return value
    if escapes(value, dataset, images):   # never read a file the rows point to outside the copy (see escapes)
        return None
    p = Path(value).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    if dataset is not None:
        root = dataset_folder(dataset)
        for base in (root, Path(dataset) if Path(dataset).is_dir() else Path(dataset).parent):
            if (base / p).is_file():
                return base / p
    return None


def escapes(value: Any, dataset: str | os.PathLike | None, images: str | os.PathLike | None = None) -> str | None:
    """Why an image path from a row is refused, or None. A path from the data must stay inside the copy's folder (or
    the images folder): rows must not choose which local file is read and copied into the output. The check is
    lexical ('..' and absolute paths), so the user's own symlinks inside the copy keep working."""
    if not isinstance(value, str) or not value or value.startswith(('http://', 'https://')) or dataset is None:
        return None
    root = dataset_folder(dataset)
    p = Path(value).expanduser()
    folders = [root, *([Path(images)] if images is not None else [])]
    candidates = [p] if p.is_absolute() else [root / p, (Path(dataset) if Path(dataset).is_dir()
                                                         else Path(dataset).parent) / p]
    if all(any(_inside(c, f) for f in folders) for c in candidates):
        return None
    return (f'image path {value!r} leads outside the dataset folder {root}; keep the images inside it or pass '
            '--images DIR holding <img_id>.jpg')


def _inside(path: Path, folder: Path) -> bool:
    """`path` names something inside `folder` once '..' and '.' are resolved (without following symlinks)."""
    path, folder = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    return os.path.commonpath([path, folder]) == folder


def _load_raw_images(source: str):
    """The "raw" split of SimulaMet-HOST/Kvasir-VQA from the hub, or a local copy of it in the same layouts as the x1
    rows (a parquet file, a folder of parquet files of any name, or a save_to_disk folder)."""
    path = Path(source).expanduser()
    if path.is_dir() and _is_saved_to_disk(path):
        loaded = _from_disk(path, RAW_IMAGE_COLUMNS)
        return loaded['raw'] if 'raw' in loaded else next(iter(loaded.values()))
    if path.exists():
        files = sorted(path.rglob('*.parquet')) if path.is_dir() else [path]
        if not files:
            raise InputError('no parquet files in this folder', file=source)
        return _from_parquet({'raw': files}, RAW_IMAGE_COLUMNS)['raw']
    from datasets import load_dataset
    try:
        raw = load_dataset(source, split='raw')
    except Exception as e:
        raise InputError(f'cannot load the hub images ({type(e).__name__}); needs network access',
                         file=source) from None
    _check_columns(raw, source, RAW_IMAGE_COLUMNS)
    return raw


def download_hub_images(out_dir: str | os.PathLike, img_ids: set[str] | None = None, source: str = HUB_IMAGES) -> int:
    """Save the SimulaMet-HOST/Kvasir-VQA "raw" images as <out_dir>/<img_id>.jpg, skipping existing files.

    The raw split has one row per atomic QA (58.8k rows, 6,500 images), so each img_id is written once, as stored
    (bytes; or copied from the stored path when a copy keeps paths). `source`: the hub id or a local copy."""
    import shutil

    from datasets import Image
    from tqdm import tqdm

    from common.io import atomic_open
    raw = _load_raw_images(source)
    first: dict[str, int] = {}
    for i, img_id in enumerate(raw['img_id']):
        if (img_ids is None or img_id in img_ids) and img_id not in first:
            first[img_id] = i
    if img_ids is not None and len(first) < len(img_ids):
        missing = sorted(img_ids - set(first))
        raise InputError(f'{len(missing)} img_id(s) have no image there, e.g. {missing[0]}', file=source,
                         field='img_id')
    raw = raw.cast_column('image', Image(decode=False))
    out, written = Path(out_dir), 0
    out.mkdir(parents=True, exist_ok=True)
    for img_id, i in tqdm(sorted(first.items()), desc='hub images', unit='img'):
        dst = out / f'{img_id}.jpg'
        if dst.exists():
            continue
        image = raw[i]['image']
        if image.get('bytes') is None and not (image.get('path') and os.path.isfile(image['path'])):
            raise InputError('no image bytes and no readable path', file=source, row=i + 1, field='image')
        with atomic_open(dst, 'wb') as f:
            if image.get('bytes') is not None:
                f.write(image['bytes'])
            else:
                with open(image['path'], 'rb') as src:
                    shutil.copyfileobj(src, f)
        written += 1
    return written


def quiet_datasets() -> None:
    """No `datasets` load/filter bars in our CLIs: the work is seconds long and stderr stays one error line."""
    import datasets
    datasets.disable_progress_bars()


@cli_main
def main(argv=None) -> int:
    quiet_datasets()
    p = argparse.ArgumentParser(prog='python -m data_prep.sources', description=__doc__.split('\n')[0])
    p.add_argument('--dataset', required=True, help=f'hub id or local copy: {LAYOUTS}')
    p.add_argument('--images', help='folder of <img_id>.jpg')
    p.add_argument('--download-images', metavar='DIR', help=f'save the {HUB_IMAGES} images this dataset uses in DIR')
    p.add_argument('--images-source', default=HUB_IMAGES,
                   help='where --download-images reads the "raw" image rows: the hub id or a local copy of it')
    args = p.parse_args(argv)
    dd = load_source(args.dataset, args.images)
    for split, ds in dd.items():
        first = resolve_image(ds[0], args.dataset, args.images) if len(ds) else None
        kind = 'bytes' if isinstance(first, bytes) else 'none' if first is None else str(first)
        print(f'{split}: {len(ds)} rows, {len(set(ds["img_id"]))} images; first image: {kind}')
    if args.download_images:
        ids = {i for ds in dd.values() for i in ds['img_id']}
        n = download_hub_images(args.download_images, ids, args.images_source)
        print(f'wrote {n} images to {args.download_images}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
