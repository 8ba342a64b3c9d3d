"""Benchmark: our weak augmentation vs the official `datasets.map(..., num_proc)` + torchvision way.

    python -m bench.prepare_bench [--images 200] [--size 600x500] [--workers 1 2] [--out bench/results/prepare.md]

Both make one weak variant per image from the same JPEGs. The official way (Kvasir-VQA-x1 README) maps batches of
10 through `num_proc` processes and draws parameters from each process's global RNG; ours samples from a per-image
generator. Columns: wall time, images/s, and whether the files are byte-identical to a 1-worker run of the same way.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common.io import atomic_open
from data_prep.augment import augment_images, variant_name

SEED = 42


def make_images(folder: Path, n: int, width: int, height: int) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(0)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        base = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, (i * 37) % 255)], -1)
        img = np.clip(base + rs.normal(0, 25, base.shape), 0, 255).astype('uint8')
        path = folder / f'img{i:05d}.jpg'
        Image.fromarray(img).save(path, quality=90)
        out.append((path.stem, path))
    return out


def _official_map(batch, out_dir):
    # The README's weak transform, applied as its script does (global RNG, skip existing files).
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode as IM
    for img_id, img in zip(batch['img_id'], batch['image']):
        path = Path(out_dir) / f'{img_id}.jpg'
        if path.exists():
            continue
        weak = T.Compose([
            T.RandomResizedCrop(img.size[::-1], scale=(0.9, 1.0),
                                ratio=(img.size[0] / img.size[1] * 0.95, img.size[0] / img.size[1] * 1.05),
                                interpolation=IM.BICUBIC),
            T.RandomRotation((-10, 10), interpolation=IM.BICUBIC, fill=0),
            T.RandomAffine(0, translate=(0.1, 0.1), interpolation=IM.BICUBIC, fill=0),
            T.ColorJitter(0.2, 0.2)])
        weak(img.convert('RGB')).save(path)
    return batch


def run_official(images, out_dir: Path, workers: int) -> float:
    import datasets
    import torch
    datasets.disable_progress_bars()
    torch.manual_seed(SEED)
    ds = datasets.Dataset.from_dict({'img_id': [i for i, _ in images], 'image': [str(p) for _, p in images]})
    ds = ds.cast_column('image', datasets.Image())
    out_dir.mkdir(parents=True)
    start = time.perf_counter()
    ds.map(_official_map, batched=True, batch_size=10, num_proc=workers if workers > 1 else None,
           fn_kwargs={'out_dir': str(out_dir)}, load_from_cache_file=False)
    return time.perf_counter() - start


def run_ours(images, out_dir: Path, workers: int) -> float:
    start = time.perf_counter()
    augment_images(images, out_dir, k=1, seed=SEED, workers=workers)
    return time.perf_counter() - start


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=200)
    p.add_argument('--size', default='600x500', help='WIDTHxHEIGHT of the generated JPEGs (Kvasir frames ~600x500)')
    p.add_argument('--workers', type=int, nargs='+', default=sorted({1, min(4, os.cpu_count() or 1)}))
    p.add_argument('--repeats', type=int, default=2, help='runs per method and worker count; the best is kept')
    p.add_argument('--out', default='bench/results/prepare.md')
    args = p.parse_args(argv)
    width, height = map(int, args.size.lower().split('x'))
    methods = (('official: datasets.map + torchvision (global RNG)', run_official),
               ('ours: data_prep.augment (per-image generator)', run_ours))
    best: dict[tuple[str, int], float] = {}
    digests: dict[tuple[str, int], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_images(tmp / 'src', args.images, width, height)
        # Interleave the methods and keep each one's best time: shared machines drift in load over minutes.
        for rep in range(args.repeats):
            for w in args.workers:
                for name, fn in methods:
                    out = tmp / f'{fn.__name__}-{w}-{rep}'
                    seconds = fn(images, out, w)
                    best[name, w] = min(seconds, best.get((name, w), float('inf')))
                    digests[name, w] = digest(out)
                    shutil.rmtree(out)
    rows = []
    for name, _ in methods:
        reference = digests[name, args.workers[0]]
        for w in args.workers:
            seconds = best[name, w]
            rows.append((name, w, seconds, args.images / seconds, 'yes' if digests[name, w] == reference else 'NO'))
    lines = [f'# prepare benchmark: one weak variant of {args.images} JPEGs at {width}x{height}, '
             f'{os.cpu_count()} CPU cores', '',
             f'Best of {args.repeats} interleaved runs per row.', '',
             '| method | workers | seconds | images/s | same bytes as the 1st worker count |', '|---|---|---|---|---|']
    lines += [f'| {n} | {w} | {s:.2f} | {r:.1f} | {same} |' for n, w, s, r, same in rows]
    lines += ['', 'Official output uses PIL\'s default JPEG quality (75); ours writes quality 95 '
              f'(file name `{variant_name("<img_id>", 0)}`).']
    text = '\n'.join(lines) + '\n'
    print(text)
    with atomic_open(args.out, 'w', encoding='utf-8') as f:
        f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
