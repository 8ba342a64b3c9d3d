"""Weak augmentation: the torchvision impl gives the official Compose's pixels, the fast opencv impl stays within
~1 grey level of it with the same geometry; both give the same bytes for any worker count and on a rerun."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import InputError
from data_prep.augment import (WeakParams, apply_weak, apply_weak_fast, augment_images, check_stamp, official_weak,
                               sample_params, variant_name, weak_variant)


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


@pytest.mark.parametrize('seed', [0, 1, 7, 42])
def test_same_pixels_as_official_transform_with_same_seed(seed):
    img = _image(seed, 170 + seed, 130)
    torch.manual_seed(seed)
    official = np.asarray(official_weak(img))
    ours = np.asarray(apply_weak(img, sample_params(*img.size, torch.Generator().manual_seed(seed))))
    assert np.array_equal(official, ours)


@pytest.mark.parametrize('impl', ['opencv', 'torchvision'])
def test_output_keeps_size_and_changes_pixels(impl):
    img = _image(3, 150, 110)
    diffs = []
    for k in range(8):
        out = weak_variant(img, 'abc', k, seed=42, impl=impl)
        assert out.size == img.size and out.mode == 'RGB'
        diffs.append(np.abs(np.asarray(out, float) - np.asarray(img, float)).mean())
    assert min(diffs) > 1.0, diffs                      # never the input itself
    assert max(diffs) < 100, diffs                      # weak: still the same picture
    a, b = (np.asarray(weak_variant(img, 'abc', k, seed=42, impl=impl)) for k in (0, 1))
    assert not np.array_equal(a, b)                     # variants differ from each other
    assert np.array_equal(a, np.asarray(weak_variant(img, 'abc', 0, seed=42, impl=impl)))  # and are reproducible


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


@pytest.mark.parametrize('impl', ['opencv', 'torchvision'])
def test_files_identical_for_one_and_two_workers(tmp_path, sources, impl):
    one, two = tmp_path / 'w1', tmp_path / 'w2'
    assert augment_images(sources.items(), one, k=3, seed=42, workers=1, impl=impl) == 9
    assert augment_images(list(sources.items())[::-1], two, k=3, seed=42, workers=2, impl=impl) == 9
    names = sorted(p.name for p in one.glob('*.jpg'))
    assert names == sorted(variant_name(i, k) for i in sources for k in range(3))
    assert names == sorted(p.name for p in two.glob('*.jpg'))
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


@pytest.mark.parametrize('impl', ['opencv', 'torchvision'])
def test_rerun_skips_existing_and_rewrites_identically(tmp_path, sources, impl):
    out = tmp_path / 'aug'
    augment_images(sources.items(), out, k=2, workers=1, impl=impl)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert augment_images(sources.items(), out, k=2, workers=1, impl=impl) == 0
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    victim = out / variant_name('img1', 1)
    victim.unlink()
    assert augment_images(sources.items(), out, k=2, workers=1, impl=impl) == 1
    assert victim.read_bytes() == before[victim.name][0]
    for p in out.glob('*.jpg'):  # everything deleted: the same bytes again
        p.unlink()
    assert augment_images(sources.items(), out, k=2, workers=2, impl=impl) == 6
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {n: b for n, (b, _) in before.items()}
    assert not [p for p in out.iterdir() if p.name.endswith('.tmp')]


def test_rerun_with_another_seed_is_refused(tmp_path, sources):
    out = tmp_path / 'aug'
    augment_images(sources.items(), out, k=1, seed=1, workers=1)
    with pytest.raises(InputError, match='seed'):
        augment_images(sources.items(), out, k=1, seed=2, workers=1)
    assert augment_images(sources.items(), out, k=2, seed=1, workers=1) == 3  # more variants, same seed: fine


# ---- the fast (opencv) implementation against the torchvision reference -------------------------------------------

def _textured(seed: int, width: int, height: int) -> Image.Image:
    """Smooth but busy (periods of 9-23 px), bounded away from 0 so fill is told apart from content."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    chans = []
    for c in range(3):
        fx, fy, ph = rs.uniform(2 * np.pi / 23, 2 * np.pi / 9, 2).tolist() + [rs.uniform(0, 6)]
        chans.append(120 + 45 * np.sin(fx * xx + ph) * np.cos(fy * yy) + 20 * np.sin((xx + yy) / 31 + c))
    return Image.fromarray(np.clip(np.stack(chans, -1), 0, 255).astype('uint8'))


def _params(img, seed):
    return sample_params(*img.size, torch.Generator().manual_seed(seed))


def _mean_abs_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


def _real_frames(shared_dir):
    paths = sorted((shared_dir / 'data' / 'gi-images' / 'kvasir-seg' / 'images').glob('*.jpg'))
    if not paths:
        pytest.skip('no Kvasir-SEG frames under shared/data/gi-images')
    frames = []
    for path in paths:
        with Image.open(path) as im:
            img = im.convert('RGB')
        if img.width > 700:  # keep the test fast: the frames the dataset has are ~600x500
            img = img.resize((img.width // 2, img.height // 2), Image.BICUBIC)
        frames.append(img)
    return frames


def test_fast_matches_reference_on_a_smooth_image():
    diffs, shifted = [], []
    for seed in range(6):
        img = _textured(seed, 160 + 7 * seed, 120)
        p = _params(img, seed)
        ref = apply_weak(img, p)
        diffs.append(_mean_abs_diff(apply_weak_fast(np.asarray(img), p), ref))
        # A one-pixel error in the composed map must not pass the bound.
        off_by_one = dataclasses.replace(p, translate=(p.translate[0] + 1, p.translate[1]))
        shifted.append(_mean_abs_diff(apply_weak_fast(np.asarray(img), off_by_one), ref))
    assert max(diffs) < 1.5, diffs
    assert min(shifted) > 3.0, shifted


def test_fast_matches_reference_on_real_frames(shared_dir):
    diffs = []
    for i, img in enumerate(_real_frames(shared_dir)):
        for s in range(2):
            p = _params(img, 10 * i + s)
            diffs.append(_mean_abs_diff(apply_weak_fast(np.asarray(img), p), apply_weak(img, p)))
    # measured ~0.6 grey levels; a half-pixel error in the map gives ~1.3-3.6
    assert np.mean(diffs) < 1.0 and max(diffs) < 1.25, diffs


def test_colour_jitter_matches_pil_within_one_level():
    img = _textured(5, 150, 110)
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    for brightness, contrast, first in [(0.8, 1.2, True), (1.2, 0.8, False), (1.13, 0.87, True), (0.91, 1.17, False)]:
        p = WeakParams((0, 0, h, w), 0.0, (0, 0), brightness, contrast, first)  # identity geometry
        ours = apply_weak_fast(arr, p).astype(int)
        assert np.abs(ours - np.asarray(apply_weak(img, p), int)).max() <= 1


def _fill(rgb):
    return np.asarray(rgb).max(-1) <= 2


def test_fill_regions_agree_except_at_their_edges():
    import cv2
    band_kernel = np.ones((5, 5), np.uint8)  # 2 px either side
    checked = 0
    for seed in range(8):
        img = _textured(seed, 170, 130)
        p = _params(img, 100 + seed)
        ref, ours = _fill(apply_weak(img, p)), _fill(apply_weak_fast(np.asarray(img), p))
        mask = ref.astype(np.uint8)
        band = cv2.dilate(mask, band_kernel).astype(bool) & ~cv2.erode(mask, band_kernel).astype(bool)
        assert not (ref ^ ours)[~band].any(), seed
        checked += ref.sum()
    assert checked > 1000  # the parameters do bring fill in


def _forward(p, width, height, x, y):
    """Where source pixel (x, y) lands, applying the official steps forward (independent of source_matrix)."""
    top, left, h, w = p.crop
    u = ((x - left) + 0.5) * width / w - 0.5, ((y - top) + 0.5) * height / h - 0.5   # crop + resize
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    t = np.radians(p.angle)                                                          # counter-clockwise on screen
    dx, dy = u[0] - cx, u[1] - cy
    return (cx + np.cos(t) * dx + np.sin(t) * dy + p.translate[0],
            cy - np.sin(t) * dx + np.cos(t) * dy + p.translate[1])


def _bright_centroid(rgb):
    grey = np.asarray(rgb, float).mean(-1)
    spot = grey > grey.max() * 0.6
    yy, xx = np.nonzero(spot)
    weights = grey[spot]
    return (xx * weights).sum() / weights.sum(), (yy * weights).sum() / weights.sum()


@pytest.mark.parametrize('impl', ['opencv', 'torchvision'])
def test_a_bright_dot_lands_where_the_analytic_map_says(impl):
    width, height = 200, 150
    for seed in range(6):
        rs = np.random.RandomState(seed)
        x0, y0 = int(rs.randint(70, 130)), int(rs.randint(55, 95))
        base = np.full((height, width, 3), 60, np.uint8)
        yy, xx = np.mgrid[0:height, 0:width]
        dot = 190 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5 ** 2))
        img = Image.fromarray(np.clip(base + dot[..., None], 0, 255).astype(np.uint8))
        p = _params(img, seed)
        out = apply_weak_fast(np.asarray(img), p) if impl == 'opencv' else apply_weak(img, p)
        want = _forward(p, width, height, x0, y0)
        got = _bright_centroid(out)
        assert abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1, (seed, p, got, want)


def test_stamp_refuses_a_folder_made_by_the_other_impl(tmp_path, sources):
    out = tmp_path / 'aug'
    augment_images(sources.items(), out, k=1, seed=42, workers=1, impl='opencv')
    with pytest.raises(InputError, match='torchvision'):
        augment_images(sources.items(), out, k=1, seed=42, workers=1, impl='torchvision')
    other = tmp_path / 'aug-tv'
    augment_images(sources.items(), other, k=1, seed=42, workers=1, impl='torchvision')
    with pytest.raises(InputError, match='opencv'):
        check_stamp(other, 42, 'opencv')
    with pytest.raises(InputError, match='impl'):
        augment_images(sources.items(), tmp_path / 'x', k=1, impl='pillow')
    # the two impls do differ (slightly), so mixing them would be visible
    name = variant_name('img0', 0)
    assert (out / name).read_bytes() != (other / name).read_bytes()
