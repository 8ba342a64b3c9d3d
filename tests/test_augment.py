"""Weak augmentation: same pixels as the official torchvision Compose, same bytes for any worker count."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode as IM

from common.errors import InputError
from data_prep.augment import apply_weak, augment_images, sample_params, variant_name, weak_variant


def _image(seed: int, width: int, height: int) -> Image.Image:
    """Smooth gradients + noise, so crops/rotations visibly change pixels."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
    return Image.fromarray(np.clip(base + rs.normal(0, 20, base.shape), 0, 255).astype('uint8'))


@pytest.fixture
def sources(tmp_path):
    out = {}
    for i, (w, h) in enumerate([(160, 120), (96, 128), (200, 90)]):
        path = tmp_path / 'src' / f'img{i}.jpg'
        path.parent.mkdir(exist_ok=True)
        _image(i, w, h).save(path, quality=90)
        out[f'img{i}'] = path
    return out


def _official_weak(img):
    # The Kvasir-VQA-x1 README transform, verbatim.
    return T.Compose([
        T.RandomResizedCrop(img.size[::-1], scale=(0.9, 1.0),
                            ratio=(img.size[0] / img.size[1] * 0.95, img.size[0] / img.size[1] * 1.05),
                            interpolation=IM.BICUBIC),
        T.RandomRotation((-10, 10), interpolation=IM.BICUBIC, fill=0),
        T.RandomAffine(0, translate=(0.1, 0.1), interpolation=IM.BICUBIC, fill=0),
        T.ColorJitter(0.2, 0.2)])(img)


@pytest.mark.parametrize('seed', [0, 1, 7, 42])
def test_same_pixels_as_official_transform_with_same_seed(seed):
    img = _image(seed, 170 + seed, 130)
    torch.manual_seed(seed)
    official = np.asarray(_official_weak(img))
    ours = np.asarray(apply_weak(img, sample_params(*img.size, torch.Generator().manual_seed(seed))))
    assert np.array_equal(official, ours)


def test_output_keeps_size_and_changes_pixels():
    img = _image(3, 150, 110)
    diffs = []
    for k in range(8):
        out = weak_variant(img, 'abc', k, seed=42)
        assert out.size == img.size and out.mode == 'RGB'
        diffs.append(np.abs(np.asarray(out, float) - np.asarray(img, float)).mean())
    assert min(diffs) > 1.0, diffs                      # never the input itself
    assert max(diffs) < 100, diffs                      # weak: still the same picture
    a, b = (np.asarray(weak_variant(img, 'abc', k, seed=42)) for k in (0, 1))
    assert not np.array_equal(a, b)                     # variants differ from each other
    assert np.array_equal(a, np.asarray(weak_variant(img, 'abc', 0, seed=42)))  # and are reproducible


def test_parameters_stay_in_official_ranges():
    w, h = 640, 480
    for s in range(300):
        p = sample_params(w, h, torch.Generator().manual_seed(s))
        top, left, ch, cw = p.crop
        assert 0.9 * w * h * 0.97 <= ch * cw <= w * h            # scale 0.9-1.0 (rounding slack)
        assert 0.95 * 0.98 <= (cw / ch) / (w / h) <= 1.05 * 1.02  # aspect +-5 % (rounding slack)
        assert 0 <= top <= h - ch and 0 <= left <= w - cw
        assert -10 <= p.angle <= 10
        assert abs(p.translate[0]) <= 64 and abs(p.translate[1]) <= 48
        assert 0.8 <= p.brightness <= 1.2 and 0.8 <= p.contrast <= 1.2


def test_files_identical_for_one_and_two_workers(tmp_path, sources):
    one, two = tmp_path / 'w1', tmp_path / 'w2'
    assert augment_images(sources.items(), one, k=3, seed=42, workers=1) == 9
    assert augment_images(list(sources.items())[::-1], two, k=3, seed=42, workers=2) == 9
    names = sorted(p.name for p in one.glob('*.jpg'))
    assert names == sorted(variant_name(i, k) for i in sources for k in range(3))
    assert names == sorted(p.name for p in two.glob('*.jpg'))
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_rerun_skips_existing_and_rewrites_identically(tmp_path, sources):
    out = tmp_path / 'aug'
    augment_images(sources.items(), out, k=2, workers=1)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert augment_images(sources.items(), out, k=2, workers=1) == 0
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    victim = out / variant_name('img1', 1)
    victim.unlink()
    assert augment_images(sources.items(), out, k=2, workers=1) == 1
    assert victim.read_bytes() == before[victim.name][0]
    assert not [p for p in out.iterdir() if p.name.endswith('.tmp')]


def test_rerun_with_another_seed_is_refused(tmp_path, sources):
    out = tmp_path / 'aug'
    augment_images(sources.items(), out, k=1, seed=1, workers=1)
    with pytest.raises(InputError, match='seed'):
        augment_images(sources.items(), out, k=1, seed=2, workers=1)
    assert augment_images(sources.items(), out, k=2, seed=1, workers=1) == 3  # more variants, same seed: fine
