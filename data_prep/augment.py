"""Weak augmentation (the official "Transformed" track), K reproducible variants per image.

The official Kvasir-VQA-x1 README composes, per image of size (W, H):
    RandomResizedCrop((H, W), scale=(0.9, 1.0), ratio=(W/H*0.95, W/H*1.05), bicubic)
    RandomRotation((-10, 10), bicubic, fill=0)
    RandomAffine(0, translate=(0.1, 0.1), bicubic, fill=0)
    ColorJitter(brightness=0.2, contrast=0.2)
Every random parameter is drawn exactly as torchvision draws it (`sample_params`), but from a torch.Generator
seeded by a stable hash of (seed, img_id, k). torchvision's own transforms draw from the global RNG, so their
result depends on which worker process handled an image; ours is the same for any worker count.

Two implementations of the same transform with the same parameters (`impl`):
  'opencv' (default): crop, resize, rotation and translation composed into ONE affine map and resampled once with
      cv2.warpAffine (bicubic); the two colour blends as one 256-entry lookup table. ~6x cheaper per variant than
      PIL's generic bicubic path, which is what makes K=10 over 6,500 images take minutes, not an hour. Not
      pixel-identical to torchvision (one resampling instead of three, OpenCV's cubic kernel): mean abs diff
      ~0.6 grey levels on real GI frames (tests/test_augment.py and docs/benchmarks.md give the numbers).
  'torchvision': torchvision's functional ops, pixel-identical to the official Compose given the same
      parameters; the reference the fast path is tested against.
Output: OUT/<img_id>_aug<k>.jpg, fixed JPEG quality, written atomically; existing files are skipped. A stamp
(OUT/.augment.json) records transform version, impl, seed and quality, so variants of two settings never mix.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image
from tqdm import tqdm

from common.errors import InputError
from common.io import atomic_path, write_json

JPEG_QUALITY = 95
TRANSFORM_VERSION = 'kvasir-vqa-x1-weak/2'  # bump when the transform changes: old variants then stop matching
IMPLS = ('opencv', 'torchvision')
DEFAULT_IMPL = 'opencv'
# torch/torchvision/cv2/numpy are imported where used, so stable_hash/variant_name (used by to_swift) load in ms.


def stable_hash(*parts: object) -> int:
    """A 63-bit integer from sha256 of the parts: the same in every process and Python run (unlike hash())."""
    digest = hashlib.sha256('\x1f'.join(map(str, parts)).encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big') >> 1


def variant_name(img_id: str, k: int) -> str:
    return f'{img_id}_aug{k}.jpg'


def variant_files(out_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """{img_id: its variant files} in out_dir (one listing for all images)."""
    found: dict[str, list[Path]] = {}
    if os.path.isdir(out_dir):
        for entry in os.scandir(out_dir):
            m = re.match(r'^(.+)_aug\d+\.jpg$', entry.name)
            if m:
                found.setdefault(m[1], []).append(Path(entry.path))
    return found


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


def official_weak(img: Image.Image) -> Image.Image:
    """The Kvasir-VQA-x1 README's transform as written there: a torchvision Compose drawing from the global RNG.
    Used by the tests and the benchmark as the official way; `make prepare` never calls it."""
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode as IM
    return T.Compose([
        T.RandomResizedCrop(img.size[::-1], scale=(0.9, 1.0),
                            ratio=(img.size[0] / img.size[1] * 0.95, img.size[0] / img.size[1] * 1.05),
                            interpolation=IM.BICUBIC),
        T.RandomRotation((-10, 10), interpolation=IM.BICUBIC, fill=0),
        T.RandomAffine(0, translate=(0.1, 0.1), interpolation=IM.BICUBIC, fill=0),
        T.ColorJitter(0.2, 0.2)])(img)


def apply_weak(img: Image.Image, p: WeakParams) -> Image.Image:
    """The reference: torchvision's functional ops in the official order (pixel-identical to the Compose)."""
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


def source_matrix(p: WeakParams, width: int, height: int):
    """2x3 map from an output pixel (x, y) to crop-box pixel coordinates: the crop, resize, rotation and translation
    in one. Pixel centres are integers here (OpenCV); PIL samples at x + 0.5, hence the half-pixel terms."""
    import numpy as np
    top, left, h, w = p.crop
    scale = np.diag([w / width, h / height])                       # resize W x H <- w x h (PIL: centre to centre)
    theta = math.radians(p.angle)                                  # PIL rotates counter-clockwise about (W/2, H/2)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = np.array([width / 2 - 0.5, height / 2 - 0.5])
    shift = np.array(p.translate, dtype=float)
    linear = scale @ rot
    offset = scale @ (centre - rot @ (shift + centre)) + (np.diag(scale) - 1) / 2
    return np.hstack([linear, offset[:, None]])


def _blend_lut(base: float, factor: float):
    """PIL's Image.blend(flat base, img, factor) per grey level: float32 maths, clipped, truncated toward zero."""
    import numpy as np
    levels = np.arange(256, dtype=np.float32)
    out = np.float32(base) + np.float32(factor) * (levels - np.float32(base))
    return np.clip(out, 0, 255).astype(np.uint8)


def _grey_mean(rgb) -> int:
    """ImageEnhance.Contrast's pivot: the rounded mean of PIL's 'L' conversion."""
    hist = Image.fromarray(rgb).convert('L').histogram()
    return int(sum(i * n for i, n in enumerate(hist)) / sum(hist) + 0.5)


def apply_weak_fast(rgb, p: WeakParams):
    """The same transform on an H x W x 3 uint8 array with one bicubic resampling (cv2) and lookup tables."""
    import cv2
    import numpy as np
    height, width = rgb.shape[:2]
    top, left, h, w = p.crop
    # Warping the crop-box view (not the whole image) makes everything outside the box fill, as after the crop.
    out = cv2.warpAffine(rgb[top:top + h, left:left + w], source_matrix(p, width, height), (width, height),
                         flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # RandomAffine fills what its shift brings in from outside the frame, even where the rotation had content.
    tx, ty = p.translate
    out[:, :max(tx, 0)] = 0
    out[:, width + min(tx, 0):] = 0
    out[:max(ty, 0)] = 0
    out[height + min(ty, 0):] = 0
    brightness = _blend_lut(0, p.brightness)
    if p.brightness_first:
        out = cv2.LUT(out, brightness)
        return cv2.LUT(out, _blend_lut(_grey_mean(out), p.contrast))
    contrast = _blend_lut(_grey_mean(out), p.contrast)
    return cv2.LUT(out, brightness[contrast])


def _generator(img_id: str, k: int, seed: int):
    import torch
    return torch.Generator().manual_seed(stable_hash(seed, img_id, k))


def weak_variant(img: Image.Image, img_id: str, k: int, seed: int, impl: str = DEFAULT_IMPL) -> Image.Image:
    """Variant k of img_id: a pure function of (image, seed, img_id, k, impl)."""
    p = sample_params(*img.size, _generator(img_id, k, seed))
    if check_impl(impl) == 'torchvision':
        return apply_weak(img, p)
    import numpy as np
    return Image.fromarray(apply_weak_fast(np.asarray(img), p))


def save_jpeg(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format='JPEG', quality=JPEG_QUALITY)


def _augment_one(job: tuple[str, str, str, int, int, str]) -> int:
    """Write the missing variants of one image (decoded once for all of them); returns how many were written."""
    src, out_dir, img_id, k_total, seed, impl = job
    todo = [k for k in range(k_total) if not (Path(out_dir) / variant_name(img_id, k)).exists()]
    if not todo:
        return 0
    with Image.open(src) as im:
        img = im.convert('RGB')
    if impl == 'opencv':
        import cv2
        cv2.setNumThreads(1)  # we parallelise by process; one thread also keeps the arithmetic order fixed
    for k in todo:
        save_jpeg(weak_variant(img, img_id, k, seed, impl), Path(out_dir) / variant_name(img_id, k))
    return len(todo)


def _stamp(out_dir: Path, seed: int, impl: str) -> tuple[Path, dict]:
    return out_dir / '.augment.json', {'transform': TRANSFORM_VERSION, 'impl': impl, 'seed': seed,
                                       'jpeg_quality': JPEG_QUALITY}


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise InputError(f'unknown augmentation impl {impl!r}; choose one of {", ".join(IMPLS)}', field='impl')
    return impl


def check_stamp(out_dir: str | os.PathLike, seed: int, impl: str = DEFAULT_IMPL) -> None:
    """Existing variants are skipped on rerun, so they must come from the same seed, impl and settings."""
    stamp, want = _stamp(Path(out_dir), seed, check_impl(impl))
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if have != want:
            raise InputError(f'holds variants made with {have}, not {want}; use another output folder or delete it',
                             file=str(out_dir))


def augment_images(images: Iterable[tuple[str, str | os.PathLike]], out_dir: str | os.PathLike, k: int,
                   seed: int = 42, workers: int | None = None, impl: str = DEFAULT_IMPL) -> int:
    """Write K weak variants for each (img_id, source path) into out_dir; returns the number of new files."""
    import torch
    torch.set_num_threads(1)  # torch only samples numbers
    if impl == 'torchvision':
        import torchvision.transforms.functional  # noqa: F401  (imported once here, before the workers fork)
    else:
        import cv2  # noqa: F401
    out_dir = Path(out_dir)
    check_stamp(out_dir, seed, impl)
    stamp, want = _stamp(out_dir, seed, impl)
    if not stamp.exists():
        write_json(stamp, want)
    jobs = [(str(src), str(out_dir), img_id, k, seed, impl) for img_id, src in images]
    workers = max(1, workers or os.cpu_count() or 1)
    written = 0
    bar = tqdm(total=len(jobs), desc=f'augment x{k} ({impl})', unit='img')
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
