"""Occlusion heatmap: where the answer looked.

Method (chosen over attention maps because it needs no eager attention, works with any attention kernel and measures
the answer itself): split the original image into a G x G grid; for each cell, paint it with the image's mean colour
and re-score the model's own answer under teacher forcing (explain.scoring); the cell's importance is the drop in the
answer's summed log-prob, max(0, base - occluded). Cells are normalised to [0, 1], upsampled bilinearly to the image
size and overlaid in viridis colours (yellow = largest drop). Cost: G*G + 1 forward passes per image (G=6: 37),
batched over all rows by explain.stages; `View.max_pixels` scores smaller images (fewer image tokens per pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.io import atomic_path
from common.qwen_vision import smart_resize

DEFAULT_GRID = 6


def cell_boxes(width: int, height: int, grid: int) -> list[tuple[int, int, int, int]]:
    """Row-major grid cells (x1, y1, x2, y2) covering the image exactly."""
    xs = np.linspace(0, width, grid + 1).round().astype(int)
    ys = np.linspace(0, height, grid + 1).round().astype(int)
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(grid) for c in range(grid)]


def fill_colour(image: Image.Image) -> tuple[int, int, int]:
    """The image's mean colour (what an occluded cell is painted with)."""
    return tuple(int(v) for v in np.asarray(image.convert('RGB')).reshape(-1, 3).mean(0))


def occlude(image: Image.Image, grid: int, cell: int) -> Image.Image:
    """A copy of the image with grid cell `cell` (row-major) painted in the image's mean colour."""
    image = image.convert('RGB')
    box = cell_boxes(*image.size, grid)[cell]
    out = image.copy()
    ImageDraw.Draw(out).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=fill_colour(image))
    return out


def occluded_images(image: Image.Image, grid: int) -> list[Image.Image]:
    return [occlude(image, grid, cell) for cell in range(grid * grid)]


def downscale(image: Image.Image, max_pixels: int) -> Image.Image:
    """The image at the size Qwen2.5-VL's processor gives it under `max_pixels` (fewer image tokens)."""
    height, width = smart_resize(image.height, image.width, max_pixels)
    return image if (width, height) == image.size else image.resize((width, height), Image.BICUBIC)


@dataclass(frozen=True)
class View:
    """What one occlusion pass scores: the image (downscaled first when `max_pixels` is set: fewer image tokens per
    pass), with cell `cell` occluded (None: the unoccluded base pass). A picklable callable for ScoreItem.view."""
    grid: int
    cell: int | None = None
    max_pixels: int | None = None

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.max_pixels:
            image = downscale(image, self.max_pixels)
        return image if self.cell is None else occlude(image, self.grid, self.cell)


def cells_from_scores(base: float, occluded, grid: int) -> np.ndarray:
    """[grid, grid] drop in the answer's log-prob when each cell is hidden (>= 0)."""
    return np.maximum(0.0, base - np.asarray(occluded, dtype=np.float64)).reshape(grid, grid)


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


def rank_agreement(cells: np.ndarray, reference: np.ndarray, raster: int = 24) -> dict:
    """How well a cheaper map (coarser grid, fewer image tokens) agrees with a reference map (grid 6): Spearman rank
    correlation of both maps upsampled to one raster x raster grid (None when either map is flat), and whether both
    maps' hottest points fall in the same cell of the coarser of the two grids."""
    from scipy.stats import spearmanr
    a, b = upsample(np.asarray(cells), raster, raster), upsample(np.asarray(reference), raster, raster)
    rho = None
    if np.ptp(a) > 0 and np.ptp(b) > 0:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    g = min(np.asarray(cells).shape[0], np.asarray(reference).shape[0])
    peak = [divmod(int(np.argmax(m)), raster) for m in (a, b)]
    same = [(r * g // raster, c * g // raster) for r, c in peak]
    return {'spearman': rho, 'same_peak_cell': bool(same[0] == same[1]) if rho is not None else None}
