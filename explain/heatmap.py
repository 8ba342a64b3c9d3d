"""Occlusion heatmap: where the answer looked.

Method (chosen over attention maps because it needs no eager attention, works with any attention kernel and measures
the answer itself): split the original image into a G x G grid; for each cell, paint it with the image's mean colour
and re-score the model's own answer under teacher forcing (explain.scoring); the cell's effect is the drop in the
answer's summed log-prob in nats, max(0, base - occluded). Cost: G*G + 1 forward passes per image (G=6: 37), batched
over all rows by explain.stages; `View.max_pixels` scores smaller images (fewer image tokens per pass).

What a reader is shown (explain.visuals draws it, explain.pipeline words it): the hot regions, i.e. connected groups
of cells whose drop is at least half the row's largest and at least MIN_EFFECT_NATS, each named by its position in
the dataset's terms (upper-left ... lower-right) with its share of the row's total effect; cells are coloured on
one scale in nats shared by every row of the submission (effect_scale); a row whose largest drop is below
MIN_EFFECT_NATS has no region that changed the answer and is drawn as the untouched frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from common.qwen_vision import smart_resize

DEFAULT_GRID = 6
MIN_EFFECT_NATS = 0.1      # a cell whose hiding lowers the answer's log-prob by less changed nothing (exp(-0.1) = 0.90)
HOT_SHARE_OF_PEAK = 0.5    # a hot cell's drop is at least this share of the row's largest drop
SCALE_QUANTILE = 0.95      # the shared colour scale ends at this quantile of the rows' largest drops (above: saturated)
# The dataset's own position words (Kvasir-VQA-x1 location answers), by thirds of the frame: [row][column].
POSITIONS = (('upper-left', 'upper-center', 'upper-right'),
             ('center-left', 'center', 'center-right'),
             ('lower-left', 'lower-center', 'lower-right'))


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


def mass_inside(heat: np.ndarray, box) -> float:
    """Share of the heat map's total mass inside box [x1, y1, x2, y2] (0 when the map is empty)."""
    total = float(heat.sum())
    if total <= 0:
        return 0.0
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return float(heat[max(0, y1):max(0, y2), max(0, x1):max(0, x2)].sum()) / total


def box_mask(boxes, width: int, height: int) -> np.ndarray:
    """[height, width] boolean mask of the union of boxes [x1, y1, x2, y2] (pixels, clipped to the frame)."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in (x1, y1, x2, y2))
        mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
    return mask


def position_name(y: float, x: float) -> str:
    """The dataset's word for a point given as fractions of the frame's height and width ('upper-left', 'center')."""
    third = lambda v: min(2, max(0, int(v * 3)))  # noqa: E731
    return POSITIONS[third(y)][third(x)]


def box_position(box, width: int, height: int) -> str:
    """The dataset's word for where a box [x1, y1, x2, y2] lies (its centre)."""
    x1, y1, x2, y2 = box
    return position_name((y1 + y2) / 2 / height, (x1 + x2) / 2 / width)


def hot_regions(cells, min_nats: float = MIN_EFFECT_NATS, rel: float = HOT_SHARE_OF_PEAK) -> list[dict]:
    """The regions the picture shows as hot, largest effect first: 4-connected groups of cells whose drop is at least
    `rel` of the row's largest and at least `min_nats`. Each: `cells` ([row, col], row-major), `nats` (their summed
    drop), `peak_nats`, `share` (of the summed drop of all cells: the row's total effect) and `name` (the dataset's
    position word for the region's drop-weighted centre). [] when no cell reaches `min_nats`."""
    from scipy import ndimage
    cells = np.asarray(cells, dtype=np.float64)
    peak = float(cells.max()) if cells.size else 0.0
    if peak < min_nats:
        return []
    total = float(cells.sum())
    labels, n = ndimage.label(cells >= max(min_nats, rel * peak))
    g_rows, g_cols = cells.shape
    regions = []
    for k in range(1, n + 1):
        rr, cc = np.nonzero(labels == k)
        w = cells[rr, cc]
        y = float(((rr + 0.5) * w).sum() / w.sum()) / g_rows
        x = float(((cc + 0.5) * w).sum() / w.sum()) / g_cols
        regions.append({'cells': [[int(r), int(c)] for r, c in zip(rr, cc)], 'nats': float(w.sum()),
                        'peak_nats': float(w.max()), 'share': float(w.sum()) / total, 'name': position_name(y, x)})
    return sorted(regions, key=lambda r: (-r['nats'], r['cells']))


def effect_scale(all_cells, min_nats: float = MIN_EFFECT_NATS, quantile: float = SCALE_QUANTILE) -> float:
    """One colour scale (nats) for every row: the `quantile` of the largest drop per row, over the rows where some
    cell reaches `min_nats` (larger drops are drawn saturated); `2 * min_nats` when no row does or when that is
    larger (a scale is never shorter than twice the threshold, so the colours below it stay apart)."""
    peaks = [float(np.max(c)) for c in all_cells if np.size(c)]
    drawn = [p for p in peaks if p >= min_nats]
    if not drawn:
        return 2 * min_nats
    return max(2 * min_nats, float(np.quantile(drawn, quantile)))


def cell_map(cells, width: int, height: int) -> np.ndarray:
    """[height, width] map where every pixel holds its grid cell's value (the cells exactly as measured)."""
    cells = np.asarray(cells, dtype=np.float64)
    out = np.zeros((height, width), dtype=np.float64)
    for (x1, y1, x2, y2), v in zip(cell_boxes(width, height, cells.shape[0]), cells.ravel()):
        out[y1:y2, x1:x2] = v
    return out


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
