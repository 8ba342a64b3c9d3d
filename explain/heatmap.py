"""Occlusion heatmap: where the answer looked.

Method (chosen over attention maps because it needs no eager attention, works with any attention kernel and measures
the answer itself): split the original image into a G x G grid; for each cell, paint it with the image's mean colour
and re-score the model's own answer under teacher forcing; the cell's importance is the drop in the answer's summed
log-prob, max(0, base - occluded). Cells are normalised to [0, 1], upsampled bilinearly to the image size and
overlaid in viridis colours (yellow = largest drop). Cost: G*G + 1 batched forward passes per image (G=6: 37;
a fraction of a second each for the tiny model on CPU).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.io import atomic_path

DEFAULT_GRID = 6


def cell_boxes(width: int, height: int, grid: int) -> list[tuple[int, int, int, int]]:
    """Row-major grid cells (x1, y1, x2, y2) covering the image exactly."""
    xs = np.linspace(0, width, grid + 1).round().astype(int)
    ys = np.linspace(0, height, grid + 1).round().astype(int)
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(grid) for c in range(grid)]


def occluded_images(image: Image.Image, grid: int) -> list[Image.Image]:
    image = image.convert('RGB')
    fill = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0))
    out = []
    for box in cell_boxes(*image.size, grid):
        im = image.copy()
        ImageDraw.Draw(im).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=fill)
        out.append(im)
    return out


def occlusion_grid(runner, image: Image.Image, question: str, answer: str, grid: int = DEFAULT_GRID,
                   batch_size: int = 8) -> np.ndarray:
    """[grid, grid] drop in the answer's log-prob when each cell is hidden (>= 0)."""
    base = runner.answer_logprob_batch([image.convert('RGB')], question, answer, batch_size=1)[0]
    scores = runner.answer_logprob_batch(occluded_images(image, grid), question, answer, batch_size=batch_size)
    return np.maximum(0.0, base - np.asarray(scores, dtype=np.float64)).reshape(grid, grid)


def upsample(cells: np.ndarray, width: int, height: int) -> np.ndarray:
    """[height, width] map in [0, 1]: cells normalised by their max, bilinearly resized (all zeros stays zeros)."""
    peak = float(cells.max()) if cells.size else 0.0
    norm = (cells / peak if peak > 0 else np.zeros_like(cells)).astype(np.float32)
    up = Image.fromarray(norm).resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(up, dtype=np.float64), 0.0, 1.0)


def save_overlay(image: Image.Image, heat: np.ndarray, path: str | Path, alpha: float = 0.6) -> None:
    """PNG of the image's size: the frame with the heat map blended in (viridis colours, weight alpha * heat, so cold
    regions show the untouched frame and hot ones turn yellow, which stands out on red mucosa)."""
    from matplotlib import colormaps
    base = np.asarray(image.convert('RGB'), dtype=np.float64)
    colour = colormaps['viridis'](heat)[..., :3] * 255.0
    w = (alpha * heat)[..., None]
    out = (base * (1 - w) + colour * w).round().clip(0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format='PNG')


def mass_inside(heat: np.ndarray, box) -> float:
    """Share of the heat map's total mass inside box [x1, y1, x2, y2] (0 when the map is empty)."""
    total = float(heat.sum())
    if total <= 0:
        return 0.0
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return float(heat[max(0, y1):max(0, y2), max(0, x1):max(0, x2)].sum()) / total


def peak_region(heat: np.ndarray) -> str:
    """Plain-words position of the heat map's centre of mass ('upper left', 'centre', ...)."""
    total = heat.sum()
    if total <= 0:
        return 'nowhere in particular'
    h, w = heat.shape
    cy = float((heat.sum(1) * np.arange(h)).sum() / total) / h
    cx = float((heat.sum(0) * np.arange(w)).sum() / total) / w
    row = 'upper' if cy < 1 / 3 else 'lower' if cy > 2 / 3 else 'middle'
    col = 'left' if cx < 1 / 3 else 'right' if cx > 2 / 3 else 'centre'
    return 'centre' if (row, col) == ('middle', 'centre') else f'{row} {col}' if row != 'middle' else f'middle {col}'
