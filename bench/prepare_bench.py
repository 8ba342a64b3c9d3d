"""Benchmark: `make prepare` (ours) vs the official README's way, same dataset, same work, one run.

    python -m bench.prepare_bench [--images 6500] [--rows 159549] [--scale F] [--aug-k 10] [--workers N]
        [--official-procs 4] [--work DIR] [--out bench/results/prepare.md]

Default = the issue's full scale: 6,500 generated endoscopy-like JPEGs (~600x500, ~50 kB each, like the real
frames) and 159,549 rows whose text is drawn from the real x1 train subset (../shared), when present.
  ours:     `python -m data_prep.prepare --dataset COPY --out OUT --aug-k K` (checks every image, writes originals,
            K weak variants per image (opencv impl), splits, subsets, ms-swift JSONL + sidecars, stats, manifest).
  official: the README's way, written as our own code: `datasets.map(batched=True, batch_size=10, num_proc=4)`
            with the torchvision Compose looped K times per image (`{img_id}_aug{k}.jpg`, skip existing files, PIL's
            default JPEG save; the original image saved alongside), then its JSONL loop: one line per QA row, for
            train and test, original and augmented.
Each way runs in its own process tree; peak memory is the largest sum of RSS over that tree (0.2 s samples).
Rerun check: the variants of every 10th image are deleted and the same command is run again on the same folder;
"byte-identical" compares the sha256 of every output file before and after.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common.io import atomic_open, write_json
from data_prep.augment import official_weak

FULL_IMAGES, FULL_ROWS, FULL_TEST_ROWS = 6500, 159549, 15955  # Kvasir-VQA-x1: 143,594 train + 15,955 test rows
GENERATOR_VERSION = 1
SEED = 42
SHARED = Path(os.environ.get('MEDICO_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
REAL_ROWS = SHARED / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet'


# ---- the dataset: endoscopy-like JPEGs and x1-like rows -------------------------------------------------------

def endoscopy_frame(index: int) -> np.ndarray:
    """A smooth shaded mucosa-coloured field with folds, vessels, highlights, mild noise and the scope's dark
    corners: encodes (q90) to ~40-60 kB at ~600x500, like the real frames (flat synthetic images are ~10x smaller)."""
    import cv2
    rng = np.random.default_rng(index)
    w, h = int(rng.integers(576, 641)), int(rng.integers(480, 545))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    shade = np.clip(1.1 - 1.6 * (((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2), 0.15, 1.0)
    low = cv2.resize(rng.normal(0, 1, (6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = (np.array([200, 110, 95], np.float32) + 20 * low) * shade[..., None]
    for _ in range(int(rng.integers(2, 7))):  # folds and polyp-like bumps
        bx, by, s = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(15, 80)
        bump = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s)) * rng.uniform(-40, 50)
        img += bump[..., None] * np.array([1, .6, .5], np.float32)
    vessels = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(4, 10))):
        pts = np.cumsum(rng.normal(0, 25, (12, 2)), 0) + [rng.uniform(0, w), rng.uniform(0, h)]
        cv2.polylines(vessels, [pts.astype(np.int32)], False, float(rng.uniform(0.4, 1)), int(rng.integers(1, 4)),
                      cv2.LINE_AA)
    img -= cv2.GaussianBlur(vessels, (0, 0), 1.2)[..., None] * np.array([60, 70, 50], np.float32)
    for _ in range(int(rng.integers(3, 12))):  # specular highlights
        cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.integers(2, 7)), (255, 255, 255),
                   -1, cv2.LINE_AA)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    img[((xx - w / 2) / (0.56 * w)) ** 2 + ((yy - h / 2) / (0.6 * h)) ** 2 > 1] = rng.uniform(0, 6)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_frame(job: tuple[int, str]) -> int:
    from PIL import Image
    index, path = job
    buf = io.BytesIO()
    Image.fromarray(endoscopy_frame(index)).save(buf, format='JPEG', quality=90)
    Path(path).write_bytes(buf.getvalue())
    return len(buf.getvalue())


def _text_pool(n: int, rng: np.random.Generator) -> list[dict]:
    """Question/answer/class/complexity rows: the real train subset's when present, else data_prep.synthetic's."""
    import pandas as pd
    cols = ['complexity', 'question', 'answer', 'original', 'question_class']
    if REAL_ROWS.is_file():
        frame = pd.read_parquet(REAL_ROWS, columns=cols)
        return [{**r, 'question_class': list(r['question_class'])} for r in frame.to_dict('records')]
    from data_prep import synthetic
    pool = []
    for i in range(max(1, n // 20)):
        scene = synthetic.make_scene(rng, f'pool{i}')
        pool += [{c: r[c] for c in cols} for r in synthetic.image_rows(scene, 20, rng)]
    return pool


def make_dataset(folder: Path, n_images: int, n_rows: int, workers: int) -> dict:
    """A local copy (design.md layout) with n_images JPEGs and n_rows rows; reused when already there."""
    import pandas as pd
    stamp = folder / 'bench-dataset.json'
    want = {'generator': GENERATOR_VERSION, 'images': n_images, 'rows': n_rows,
            'text': 'real x1 train subset' if REAL_ROWS.is_file() else 'data_prep.synthetic'}
    if stamp.is_file() and json.loads(stamp.read_text()).get('spec') == want:
        return json.loads(stamp.read_text())
    from data_prep.synthetic import cuid
    rng = np.random.default_rng(SEED)
    img_ids = [cuid(rng) for _ in range(n_images)]
    (folder / 'images').mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(folder / 'images' / f'{img_id}.jpg')) for i, img_id in enumerate(img_ids)]
    print(f'generating {n_images} JPEGs in {folder}/images ...', file=sys.stderr, flush=True)
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_write_frame, jobs, chunksize=32))
    pool_rows = _text_pool(n_rows, rng)
    per_image = np.full(n_images, n_rows // n_images)
    per_image[:n_rows % n_images] += 1
    rows = []
    for img_id, n in zip(img_ids, per_image):  # no repeated question within an image
        for j in rng.choice(len(pool_rows), size=min(int(n), len(pool_rows)), replace=False):
            rows.append({'img_id': img_id, **pool_rows[j], 'image': f'images/{img_id}.jpg'})
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    n_test = round(len(rows) * FULL_TEST_ROWS / FULL_ROWS)
    (folder / 'data').mkdir(exist_ok=True)
    for name, part in (('train', rows[n_test:]), ('test', rows[:n_test])):
        frame = pd.DataFrame(part, columns=['img_id', 'complexity', 'question', 'answer', 'original',
                                            'question_class', 'image'])
        frame.to_parquet(folder / 'data' / f'{name}-00000-of-00001.parquet', index=False)
    info = {'spec': want, 'rows': len(rows), 'test_rows': n_test, 'images': n_images,
            'mean_jpeg_kb': round(float(np.mean(sizes)) / 1000, 1), 'min_jpeg_kb': round(min(sizes) / 1000, 1),
            'max_jpeg_kb': round(max(sizes) / 1000, 1)}
    write_json(stamp, info)
    return info


# ---- the official way (the README's datasets.map + torchvision, K variants) --------------------------------------

def _official_map(batch, out_dir, k_total):
    out_dir = Path(out_dir)
    for img_id, img in zip(batch['img_id'], batch['image']):
        img = img.convert('RGB')
        original = out_dir / 'images' / f'{img_id}.jpg'
        if not original.exists():
            img.save(original)
        for k in range(k_total):
            path = out_dir / 'image_weak_augmented' / f'{img_id}_aug{k}.jpg'
            if not path.exists():
                official_weak(img).save(path)
    return batch


def run_official(dataset: Path, out_dir: Path, k_total: int, num_proc: int) -> None:
    import datasets
    import torch
    datasets.disable_progress_bars()
    torch.manual_seed(SEED)
    (out_dir / 'images').mkdir(parents=True, exist_ok=True)
    (out_dir / 'image_weak_augmented').mkdir(exist_ok=True)
    cache = str(out_dir.parent / f'{out_dir.name}-hf-cache')
    splits = {s: datasets.Dataset.from_parquet(str(dataset / 'data' / f'{s}-00000-of-00001.parquet'), cache_dir=cache)
              for s in ('train', 'test')}
    img_ids = sorted({i for ds in splits.values() for i in ds['img_id']})
    host = datasets.Dataset.from_dict({'img_id': img_ids,
                                       'image': [str(dataset / 'images' / f'{i}.jpg') for i in img_ids]})
    host = host.cast_column('image', datasets.Image())
    host.map(_official_map, batched=True, batch_size=10, num_proc=num_proc, load_from_cache_file=False,
             fn_kwargs={'out_dir': str(out_dir), 'k_total': k_total})
    for split, ds in splits.items():  # anchors.md 1.3: one line per QA row
        for suffix, folder in (('', 'images'), ('-aug', 'image_weak_augmented')):
            with open(out_dir / f'Kvasir-VQA-x1-{split}{suffix}.jsonl', 'w', encoding='utf-8') as f:
                for i, r in enumerate(ds):
                    name = f"{r['img_id']}.jpg" if not suffix else f"{r['img_id']}_aug{i % k_total}.jpg"
                    f.write(json.dumps({'messages': [{'role': 'user', 'content': f"<image>{r['question']}"},
                                                     {'role': 'assistant', 'content': r['answer']}],
                                        'images': [str(out_dir / folder / name)]}) + '\n')


# ---- measuring ---------------------------------------------------------------------------------------------------

def measure(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run cmd; returns (wall seconds, peak GiB of the summed RSS of its process tree)."""
    import psutil
    from common.offline import offline_env
    env = {**offline_env(), 'CUDA_VISIBLE_DEVICES': '', 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    peak = 0
    start = time.perf_counter()
    with open(log, 'ab') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.wait(0.2):
                total = 0
                try:
                    for p in [root, *root.children(recursive=True)]:
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
                except psutil.Error:
                    pass
                peak = max(peak, total)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    if rc != 0:
        sys.exit(f'error: {" ".join(cmd)} exited {rc}; see {log}')
    return seconds, peak / 2 ** 30


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def rerun_check(cmd: list[str], out: Path, variants: Path, img_ids: list[str], log: Path) -> str:
    """Delete the variants of every 10th image, run cmd again, compare every output file's sha256."""
    before = digests(out)
    regenerated = 0
    for img_id in img_ids[::10]:
        for p in variants.glob(f'{img_id}_aug*.jpg'):
            p.unlink()
            regenerated += 1
    measure(cmd, log)
    after = digests(out)
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if not differ:
        return f'yes ({len(before)} files; {regenerated} regenerated)'
    return f'NO ({len(differ)} of {len(before)} files differ; {regenerated} regenerated)'


# ---- main --------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=None, help=f'generated JPEGs (default {FULL_IMAGES})')
    p.add_argument('--rows', type=int, default=None, help=f'QA rows (default {FULL_ROWS})')
    p.add_argument('--scale', type=float, default=1.0, help='shrink both counts, e.g. 0.02 for a quick run')
    p.add_argument('--aug-k', type=int, default=10)
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='ours: --workers of data_prep.prepare')
    p.add_argument('--official-procs', type=int, default=4, help="official: datasets.map num_proc (README: 4)")
    p.add_argument('--work', default=None, help='scratch folder (default /tmp/medico-prepare-bench); the '
                                                 'generated dataset is reused from there')
    p.add_argument('--out', default='bench/results/prepare.md')
    p.add_argument('--run-official', nargs=2, metavar=('DATASET', 'OUT'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_official:
        run_official(Path(args.run_official[0]), Path(args.run_official[1]), args.aug_k, args.official_procs)
        return 0
    n_images = args.images or max(1, round(FULL_IMAGES * args.scale))
    n_rows = args.rows or max(n_images, round(FULL_ROWS * args.scale))
    work = Path(args.work or '/tmp/medico-prepare-bench').resolve()
    dataset = work / f'dataset-{n_images}x{n_rows}'
    info = make_dataset(dataset, n_images, n_rows, args.workers)
    img_ids = sorted(p.stem for p in (dataset / 'images').glob('*.jpg'))
    load_before = os.getloadavg()[0]
    ways = {
        'ours: make prepare (data_prep.prepare, opencv impl)': (
            [sys.executable, '-m', 'data_prep.prepare', '--dataset', str(dataset), '--out', str(work / 'ours'),
             '--aug-k', str(args.aug_k), '--workers', str(args.workers)],
            work / 'ours', work / 'ours' / 'images' / 'augmented'),
        'official: datasets.map + torchvision + JSONL loop': (
            [sys.executable, '-m', 'bench.prepare_bench', '--run-official', str(dataset), str(work / 'official'),
             '--aug-k', str(args.aug_k), '--official-procs', str(args.official_procs)],
            work / 'official', work / 'official' / 'image_weak_augmented'),
    }
    results = {}
    for name, (cmd, out, variants) in ways.items():
        for folder in (out, Path(f'{out}-hf-cache')):
            shutil.rmtree(folder, ignore_errors=True)
        log = work / f'{out.name}.log'
        log.unlink(missing_ok=True)
        print(f'== {name}\n   {" ".join(cmd)}', file=sys.stderr, flush=True)
        seconds, peak = measure(cmd, log)
        print(f'   {seconds:.1f} s, peak {peak:.2f} GiB; rerun check ...', file=sys.stderr, flush=True)
        results[name] = (seconds, peak, rerun_check(cmd, out, variants, img_ids, log))
    official = results[list(ways)[1]][0]
    augmentations = n_images * args.aug_k
    lines = [f'# prepare benchmark: {info["rows"]:,} rows, {n_images:,} images x K={args.aug_k} '
             f'({augmentations:,} augmentations), {os.cpu_count()} CPU cores', '',
             f'Generated endoscopy-like JPEGs ~600x500: mean {info["mean_jpeg_kb"]} kB '
             f'({info["min_jpeg_kb"]}-{info["max_jpeg_kb"]} kB); row text from the {info["spec"]["text"]}. '
             f'Load average (1 min) before the runs: {load_before:.2f}.', '',
             '| way | wall s | rows/s | images/s | augmentations/s | peak memory GiB | speed-up | '
             'byte-identical on rerun |', '|---|---|---|---|---|---|---|---|']
    for name, (seconds, peak, same) in results.items():
        lines.append(f'| {name} | {seconds:.1f} | {info["rows"] / seconds:,.0f} | {n_images / seconds:.1f} | '
                     f'{augmentations / seconds:.1f} | {peak:.2f} | {official / seconds:.2f}x | {same} |')
    lines += ['', f'ours: `{" ".join(ways[list(ways)[0]][0][1:])}` (workers {args.workers}); official: '
              f'`datasets.map(batched=True, batch_size=10, num_proc={args.official_procs})`, torchvision Compose '
              f'x{args.aug_k} per image, PIL default save, then 4 JSONL files (train/test x original/augmented).',
              'Ours also checks every image, writes val/subsets/sidecars, the stats report and the manifest. '
              'Peak memory: largest sum of RSS over the process tree (shared pages counted per process). '
              'Rerun: the variants of every 10th image deleted, the same command run again, sha256 of every output '
              'file compared.']
    text = '\n'.join(lines) + '\n'
    print(text)
    with atomic_open(args.out, 'w', encoding='utf-8') as f:
        f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
