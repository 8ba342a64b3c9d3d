"""Generated Kvasir-VQA-like samples in the prepared-data layout, for throughput benchmarks.

Usage: python -m bench.gpu.make_data OUT N [--workers 8]
Writes OUT/images/original/bench_XXXXX.jpg (~600x500 JPEG: mucosa-pink background, dark vignette, blurred colour
blobs; about 25 kB like the real images) and OUT/swift/{train,val}-original.jsonl in ms-swift's format (docs/design.md).
Questions are ~14 words and answers ~10 words, as in Kvasir-VQA-x1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(600, 500), (624, 512), (576, 480), (640, 512), (600, 496)]
QUESTIONS = [
    'Is there a polyp in this colonoscopy image and in which region is it located?',
    'What kind of abnormality is visible near the lower left part of this endoscopic image?',
    'How many instruments can be seen in this image taken during the gastroscopy procedure?',
    'Are there signs of bleeding or ulceration anywhere on the mucosal surface shown here?',
    'How large is the polyp when compared with the surrounding folds of the colon wall?',
    'Which anatomical landmark can be identified in this image from the upper GI tract?',
    'Does the image contain a text overlay or a green box in one of its corners?',
    'What colour is the abnormal tissue that appears close to the centre of the frame?',
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
    img.filter(ImageFilter.GaussianBlur(2.0)).save(path, quality=90)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out')
    ap.add_argument('n', type=int)
    ap.add_argument('--workers', type=int, default=8)
    a = ap.parse_args(argv)
    image_dir = os.path.abspath(os.path.join(a.out, 'images', 'original'))
    swift_dir = os.path.join(a.out, 'swift')
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(swift_dir, exist_ok=True)
    paths = [os.path.join(image_dir, f'bench_{i:05d}.jpg') for i in range(a.n)]
    with ProcessPoolExecutor(a.workers) as pool:
        list(pool.map(draw_image, list(enumerate(paths)), chunksize=16))
    pick = random.Random(0)
    lines = []
    for path in paths:
        q, ans = pick.choice(QUESTIONS), pick.choice(ANSWERS)
        lines.append(json.dumps({'messages': [{'role': 'user', 'content': '<image>' + q},
                                              {'role': 'assistant', 'content': ans}], 'images': [path]}) + '\n')
    # the recipes also read a validation file: the first 32 samples (benchmarks never reach an eval step)
    for split, part in (('train', lines), ('val', lines[:32])):
        target = os.path.join(swift_dir, f'{split}-original.jsonl')
        with open(target + '.tmp', 'w', encoding='utf-8') as f:
            f.writelines(part)
        os.replace(target + '.tmp', target)
    target = os.path.join(swift_dir, 'train-original.jsonl')
    print(json.dumps(dict(n=a.n, jsonl=target, jpeg_bytes_mean=int(np.mean([os.path.getsize(p) for p in paths])))))


if __name__ == '__main__':
    main()
