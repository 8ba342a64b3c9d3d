"""Generated Kvasir-VQA-like data for throughput benchmarks, prepared by the same code as `make prepare`.

Usage: python -m bench.gpu.make_data OUT N [--workers 8] [--test 1500] [--val 32]
Writes a local dataset copy in the official schema (OUT/source/data/{train,test}-00000-of-00001.parquet +
OUT/source/images/<img_id>.jpg, docs/design.md "Dataset local copy") and runs data_prep.prepare on it (AUG_K=1) into
OUT: OUT/swift/<split>-<setting>.jsonl with their .meta.jsonl sidecars (what inference.predict needs), subsets, stats.
Images: ~600x500 JPEGs (mucosa-pink background, dark vignette, blurred colour blobs; about 25 kB like the real
images), as every recorded benchmark used. Questions are ~14 words and answers ~10 words, as in Kvasir-VQA-x1.
train-original holds exactly N rows, one per image (the training benchmarks' epoch length); N + --val images are drawn
and prepare's image-disjoint split holds --val of them out (val-original). The test split repeats the first --test
(image, question, answer) rows, so task1_public-original holds those items (the organizers' shuffle, seed 42).
"""
from __future__ import annotations

import argparse
import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(600, 500), (624, 512), (576, 480), (640, 512), (600, 496)]
QUESTIONS = [
    ('Is there a polyp in this colonoscopy image and in which region is it located?', 'abnormality_location'),
    ('What kind of abnormality is visible near the lower left part of this endoscopic image?', 'finding_presence'),
    ('How many instruments can be seen in this image taken during the gastroscopy procedure?', 'instrument_count'),
    ('Are there signs of bleeding or ulceration anywhere on the mucosal surface shown here?', 'abnormality_presence'),
    ('How large is the polyp when compared with the surrounding folds of the colon wall?', 'polyp_size'),
    ('Which anatomical landmark can be identified in this image from the upper GI tract?', 'landmark_presence'),
    ('Does the image contain a text overlay or a green box in one of its corners?', 'box_artifact_presence'),
    ('What colour is the abnormal tissue that appears close to the centre of the frame?', 'abnormality_color'),
]
ANSWERS = [
    'Yes, a single small polyp is visible in the upper right region.',
    'A raised reddish lesion that looks like a sessile polyp.',
    'One biopsy forceps instrument is visible in the image.',
    'No bleeding is seen, but there is mild inflammation of the mucosa.',
    'The polyp is small, about five millimetres across.',
    'The pylorus is visible as a round opening in the centre.',
    'Yes, there is a green box overlay in the lower left corner.',
    'The abnormal tissue looks pale pink with a whitish surface.',
]


def draw_image(job: tuple[int, str]) -> None:
    index, path = job
    if os.path.exists(path):  # a rerun keeps the bytes it wrote
        return
    rng = np.random.default_rng(index)
    w, h = SIZES[index % len(SIZES)]
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    shade = np.clip(1.15 - 0.75 * radius ** 2, 0.05, 1.0)[..., None]
    colour = np.array([170, 70, 60], np.float32) + rng.normal(0, 15, 3)
    pixels = colour * shade + rng.normal(0, 12, (h, w, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):  # folds, polyps, glare
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        rx, ry = int(rng.integers(15, 110)), int(rng.integers(15, 90))
        fill = tuple(int(c) for c in rng.integers([120, 30, 30], [255, 150, 140]))
        pen.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    img.filter(ImageFilter.GaussianBlur(2.0)).save(path + '.tmp', format='JPEG', quality=90)
    os.replace(path + '.tmp', path)


def write_source(out: Path, n_images: int, n_test: int, workers: int) -> tuple[int, int]:
    """The local copy: one QA row per image in train, the first `n_test` of them again in test."""
    from data_prep.schema import ARROW_SCHEMA
    from data_prep.synthetic import _write_parquet
    images = out / 'images'
    images.mkdir(parents=True, exist_ok=True)
    ids = [f'bench_{i:05d}' for i in range(n_images)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(draw_image, [(i, str(images / f'{img_id}.jpg')) for i, img_id in enumerate(ids)],
                      chunksize=16))
    pick = random.Random(0)
    rows = []
    for img_id in ids:
        (question, qclass), answer = pick.choice(QUESTIONS), pick.choice(ANSWERS)
        rows.append({'img_id': img_id, 'complexity': 1, 'question': question, 'answer': answer,
                     'original': json.dumps([{'q': question, 'a': answer}]), 'question_class': [qclass],
                     'image': f'images/{img_id}.jpg'})
    assert set(rows[0]) == set(ARROW_SCHEMA.names)
    _write_parquet(out / 'data' / 'train-00000-of-00001.parquet', rows)
    _write_parquet(out / 'data' / 'test-00000-of-00001.parquet', rows[:n_test])
    return len(rows), n_test


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out')
    ap.add_argument('n', type=int, help='train rows (= train images)')
    ap.add_argument('--workers', type=int, default=8)
    ap.add_argument('--test', type=int, default=1500, help='test rows (the first train items again)')
    ap.add_argument('--val', type=int, default=32, help='extra images held out as val by prepare\'s split')
    a = ap.parse_args(argv)
    out = Path(a.out)
    n_images = a.n + a.val
    write_source(out / 'source', n_images, min(a.test, n_images), a.workers)
    import importlib.util

    from data_prep import prepare
    # val fraction such that prepare's split (round(fraction x images)) holds out exactly --val images; the one weak
    # variant per image (unused by the benchmarks) with opencv where it is installed, else torchvision
    impl = 'opencv' if importlib.util.find_spec('cv2') else 'torchvision'
    prepare.main(['--dataset', str(out / 'source'), '--out', str(out), '--aug-k', '1', '--augment-impl', impl,
                  '--val-fraction', repr(a.val / n_images), '--workers', str(a.workers)])
    train = out / 'swift' / 'train-original.jsonl'
    with open(train, encoding='utf-8') as f:
        images = [json.loads(line)['images'][0] for line in f]
    assert len(images) == a.n, f'{len(images)} train rows, expected {a.n}'
    print(json.dumps(dict(n=len(images), jsonl=str(train), task1=str(out / 'swift' / 'task1_public-original.jsonl'),
                          jpeg_bytes_mean=int(np.mean([os.path.getsize(p) for p in images])))))


if __name__ == '__main__':
    main()
