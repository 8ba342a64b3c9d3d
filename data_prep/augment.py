"""Weak augmentation (the official "Transformed" track), K reproducible variants per image.

The official Kvasir-VQA-x1 README composes, per image of size (W, H):
    RandomResizedCrop((H, W), scale=(0.9, 1.0), ratio=(W/H*0.95, W/H*1.05), bicubic)
    RandomRotation((-10, 10), bicubic, fill=0)
    RandomAffine(0, translate=(0.1, 0.1), bicubic, fill=0)
    ColorJitter(brightness=0.2, contrast=0.2)
We apply the same operations with torchvision's functional ops, but draw every random parameter from a
torch.Generator seeded by a stable hash of (seed, img_id, k). torchvision's own transforms draw from the global
RNG, so their result depends on which worker process handled an image; ours is the same for any worker count.
Output: OUT/<img_id>_aug<k>.jpg, fixed JPEG quality, written atomically; existing files are skipped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image
from tqdm import tqdm

from common.errors import InputError
from common.io import atomic_path, write_json

JPEG_QUALITY = 95
TRANSFORM_VERSION = 'kvasir-vqa-x1-weak/1'  # bump when the transform changes: old variants then stop matching
# torch/torchvision are imported where used, so stable_hash/variant_name (used by to_swift) load in milliseconds.


def stable_hash(*parts: object) -> int:
    """A 63-bit integer from sha256 of the parts: the same in every process and Python run (unlike hash())."""
    digest = hashlib.sha256('\x1f'.join(map(str, parts)).encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big') >> 1


def variant_name(img_id: str, k: int) -> str:
    return f'{img_id}_aug{k}.jpg'


@dataclass(frozen=True)
class WeakParams:
    crop: tuple[int, int, int, int]   # top, left, height, width
    angle: float
    translate: tuple[int, int]
    brightness: float
    contrast: float
    brightness_first: bool


def _uniform(gen, low: float, high: float) -> float:
    import torch
    return float(torch.empty(1).uniform_(low, high, generator=gen).item())


def sample_params(width: int, height: int, gen) -> WeakParams:
    """Draw the parameters of the official weak transform from `gen` (a torch.Generator), in torchvision's order."""
    import torch
    area, aspect = width * height, width / height
    # float32 logs and this draw order are torchvision's, so a globally seeded official Compose gives the same pixels.
    log_lo, log_hi = torch.log(torch.tensor([aspect * 0.95, aspect * 1.05])).tolist()
    crop = None
    for _ in range(10):  # RandomResizedCrop.get_params: 10 tries, then a central crop
        target_area = area * _uniform(gen, 0.9, 1.0)
        ratio = math.exp(_uniform(gen, log_lo, log_hi))
        w, h = int(round(math.sqrt(target_area * ratio))), int(round(math.sqrt(target_area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen).item())
            crop = (top, left, h, w)
            break
    if crop is None:  # torchvision's fallback: the image's own aspect is in range, so the whole image
        crop = (0, 0, height, width)
    angle = _uniform(gen, -10.0, 10.0)
    _uniform(gen, 0.0, 0.0)  # RandomAffine(degrees=0) still draws its (zero) angle
    max_dx, max_dy = 0.1 * width, 0.1 * height
    translate = (int(round(_uniform(gen, -max_dx, max_dx))), int(round(_uniform(gen, -max_dy, max_dy))))
    order = torch.randperm(4, generator=gen).tolist()  # ColorJitter applies its 4 ops in random order
    brightness, contrast = _uniform(gen, 0.8, 1.2), _uniform(gen, 0.8, 1.2)
    return WeakParams(crop, angle, translate, brightness, contrast, order.index(0) < order.index(1))


def apply_weak(img: Image.Image, p: WeakParams) -> Image.Image:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    BICUBIC = InterpolationMode.BICUBIC
    width, height = img.size
    out = TF.resized_crop(img, *p.crop, size=[height, width], interpolation=BICUBIC)
    out = TF.rotate(out, p.angle, interpolation=BICUBIC, fill=0)
    out = TF.affine(out, angle=0.0, translate=list(p.translate), scale=1.0, shear=[0.0, 0.0],
                    interpolation=BICUBIC, fill=0)
    ops = [(TF.adjust_brightness, p.brightness), (TF.adjust_contrast, p.contrast)]
    for fn, factor in (ops if p.brightness_first else ops[::-1]):
        out = fn(out, factor)
    return out


def weak_variant(img: Image.Image, img_id: str, k: int, seed: int) -> Image.Image:
    """Variant k of img_id: a pure function of (image, seed, img_id, k)."""
    import torch
    gen = torch.Generator().manual_seed(stable_hash(seed, img_id, k))
    return apply_weak(img, sample_params(*img.size, gen))


def save_jpeg(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format='JPEG', quality=JPEG_QUALITY)


def _augment_one(job: tuple[str, str, str, int, int]) -> int:
    """Write the missing variants of one image; returns how many were written."""
    src, out_dir, img_id, k_total, seed = job
    todo = [k for k in range(k_total) if not (Path(out_dir) / variant_name(img_id, k)).exists()]
    if not todo:
        return 0
    with Image.open(src) as im:
        img = im.convert('RGB')
    for k in todo:
        save_jpeg(weak_variant(img, img_id, k, seed), Path(out_dir) / variant_name(img_id, k))
    return len(todo)


def _stamp(out_dir: Path, seed: int) -> tuple[Path, dict]:
    return out_dir / '.augment.json', {'transform': TRANSFORM_VERSION, 'seed': seed, 'jpeg_quality': JPEG_QUALITY}


def check_stamp(out_dir: str | os.PathLike, seed: int) -> None:
    """Existing variants are skipped on rerun, so they must come from the same seed and settings."""
    stamp, want = _stamp(Path(out_dir), seed)
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if have != want:
            raise InputError(f'holds variants made with {have}, not {want}; use another output folder or delete it',
                             file=str(out_dir))


def augment_images(images: Iterable[tuple[str, str | os.PathLike]], out_dir: str | os.PathLike, k: int,
                   seed: int = 42, workers: int | None = None) -> int:
    """Write K weak variants for each (img_id, source path) into out_dir; returns the number of new files."""
    import torch
    import torchvision.transforms.functional  # noqa: F401  (imported once here, before the workers fork)
    torch.set_num_threads(1)  # PIL does the work; torch only samples numbers
    out_dir = Path(out_dir)
    check_stamp(out_dir, seed)
    stamp, want = _stamp(out_dir, seed)
    if not stamp.exists():
        write_json(stamp, want)
    jobs = [(str(src), str(out_dir), img_id, k, seed) for img_id, src in images]
    workers = max(1, workers or os.cpu_count() or 1)
    written = 0
    bar = tqdm(total=len(jobs), desc=f'augment x{k}', unit='img')
    if workers == 1:
        for job in jobs:
            written += _augment_one(job)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for n in pool.map(_augment_one, jobs, chunksize=8):
                written += n
                bar.update()
    bar.close()
    return written
