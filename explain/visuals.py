"""The pictures a rater sees for a row, drawn from the model's outputs only (its grounding boxes and the occlusion
cells of its own answer; nothing from ground truth). The visuals stage (explain.stages) draws, per row, in
WORK/visuals/:

    <val_id>_frame.jpg     the untouched frame, to set beside the overlays (the dataset's JPEG bytes as they are)
    <val_id>_heatmap.png   the frame at its own size; every occlusion cell whose drop reaches the threshold is tinted
                           (viridis, ALPHA) on the one scale all rows share, and the hot regions the text names are
                           outlined; a row where no cell reaches the threshold is the untouched frame
    <val_id>_box.png       the frame with the model's grounding boxes outlined and labelled (rows with a box)
and once: heatmap_scale.png, the colour bar of that scale in nats.
"""
from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.io import atomic_path
from explain import heatmap

ALPHA = 0.5                      # tint weight: the frame stays visible under every drawn cell
OUTLINE = (255, 255, 255)        # hot-region outline, on a dark edge so it shows on pale mucosa too
BOX_COLOUR = (0, 255, 255)       # cyan: far from the reds and pinks of mucosa
COLOURMAP = 'viridis'
SCALE_FILE = 'heatmap_scale.png'


def line_width(width: int, height: int) -> int:
    return max(2, round(min(width, height) / 160))


def _save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format='PNG')


def draw_heatmap(image: Image.Image, cells, scale: float, min_nats: float, regions: list[dict],
                 path: str | Path) -> None:
    """The frame with each cell whose drop is >= min_nats tinted by its drop on [0, scale] nats (above: the top
    colour), the hot regions outlined; cells below min_nats (and a row with none above it) untouched."""
    from matplotlib import colormaps
    base = np.asarray(image.convert('RGB'), dtype=np.float64)
    h, w = base.shape[:2]
    values = heatmap.cell_map(cells, w, h)
    drawn = values >= min_nats
    colour = colormaps[COLOURMAP](np.clip(values / scale, 0.0, 1.0))[..., :3] * 255.0
    out = base.copy()
    out[drawn] = base[drawn] * (1 - ALPHA) + colour[drawn] * ALPHA
    picture = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    outline_regions(picture, np.asarray(cells).shape[0], regions)
    _save_png(picture, path)


def region_edges(grid: int, region_cells, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Pixel segments (x1, y1, x2, y2) of a region's outline: the cell edges not shared with another of its cells."""
    boxes = heatmap.cell_boxes(width, height, grid)
    inside = {(r, c) for r, c in region_cells}
    edges = []
    for r, c in sorted(inside):
        x1, y1, x2, y2 = boxes[r * grid + c]
        x2, y2 = x2 - 1, y2 - 1
        if (r - 1, c) not in inside:
            edges.append((x1, y1, x2, y1))
        if (r + 1, c) not in inside:
            edges.append((x1, y2, x2, y2))
        if (r, c - 1) not in inside:
            edges.append((x1, y1, x1, y2))
        if (r, c + 1) not in inside:
            edges.append((x2, y1, x2, y2))
    return edges


def outline_regions(picture: Image.Image, grid: int, regions: list[dict]) -> None:
    w, h = picture.size
    lw = line_width(w, h)
    pad = lw // 2 + 1
    draw = ImageDraw.Draw(picture)
    for colour, width in (((0, 0, 0), lw + 2), (OUTLINE, lw)):
        for region in regions:
            for x1, y1, x2, y2 in region_edges(grid, region['cells'], w, h):
                clamp = lambda v, hi: min(max(v, pad), hi - 1 - pad)  # noqa: E731  (a frame edge stays inside)
                draw.line([(clamp(x1, w), clamp(y1, h)), (clamp(x2, w), clamp(y2, h))], fill=colour, width=width)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    import matplotlib
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / 'fonts/ttf/DejaVuSans-Bold.ttf'), size)


def draw_boxes(image: Image.Image, boxes: list[dict], default_label: str, path: str | Path) -> None:
    """The frame with each box outlined and its label (the model's, else what it was asked to find) on a tag above
    the box (below it when the box touches the top edge, inside it only when it spans the whole height)."""
    picture = image.convert('RGB').copy()
    w, h = picture.size
    lw = line_width(w, h)
    font = _font(max(10, round(min(w, h) / 28)))
    draw = ImageDraw.Draw(picture)
    for b in boxes:
        x1, y1, x2, y2 = b['box']
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=BOX_COLOUR, width=lw)
    for b in boxes:   # tags last: a later box's outline never crosses an earlier box's label
        x1, y1, x2, y2 = b['box']
        label = (b.get('label') or default_label).strip() or default_label
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 2 * lw, bottom - top + 2 * lw
        ty = y1 - th if y1 - th >= 0 else y2 if y2 + th <= h else y1   # above, else below, else inside the box
        tx = min(max(0, x1), max(0, w - tw))
        draw.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=BOX_COLOUR)
        draw.text((tx + lw - left, ty + lw - top), label, fill=(0, 0, 0), font=font)
    _save_png(picture, path)


def draw_colourbar(scale: float, min_nats: float, path: str | Path) -> None:
    """The shared scale: drop in the answer's log-probability (nats) from 0 to `scale` (larger drops saturate);
    [0, min_nats) in grey: such cells are not drawn."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    fig = plt.figure(figsize=(5.6, 1.25), dpi=100)
    ax = fig.add_axes([0.04, 0.62, 0.92, 0.22])
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, scale), COLOURMAP), cax=ax, orientation='horizontal',
                       extend='max')
    ax.axvspan(0.0, min_nats, color='#cccccc', zorder=3)
    ax.tick_params(labelsize=8)
    bar.set_label(f"drop in the answer's log-probability when a cell is hidden (nats); one scale for every row;\n"
                  f'grey: below {min_nats:g} nats, not drawn (no region changed the answer)', fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def save_frame(source: str, path: str | Path) -> None:
    """The untouched frame as a JPEG: the source's own bytes when it is one, else its pixels at quality 95."""
    with Image.open(source) as im:
        fmt = im.format
        if fmt != 'JPEG':
            rgb = im.convert('RGB')
    with atomic_path(path) as tmp:
        if fmt == 'JPEG':
            shutil.copyfile(source, tmp)
        else:
            rgb.save(tmp, format='JPEG', quality=95)


@dataclass(frozen=True)
class RowJob:
    """One row's drawing (a process-pool job): its image, occlusion cells, grounding boxes, the shared scale."""
    image: str
    val_id: int
    cells: list
    boxes: list
    target: str
    scale: float
    min_nats: float
    folder: str        # WORK/visuals


def draw_row(job: RowJob) -> dict:
    """Draw a row's frame, heatmap and box pictures; return what the text and the report say about them: the hot
    regions, the largest and total drop, and the heat-in-box agreement (share of the total drop inside the boxes)."""
    folder, vid = Path(job.folder), job.val_id
    with Image.open(job.image) as im:
        image = im.convert('RGB')
    w, h = image.size
    cells = np.asarray(job.cells, dtype=np.float64)
    regions = heatmap.hot_regions(cells, job.min_nats)
    draw_heatmap(image, cells, job.scale, job.min_nats, regions, folder / f'{vid}_heatmap.png')
    save_frame(job.image, folder / f'{vid}_frame.jpg')
    rec = {'heatmap': f'visuals/{vid}_heatmap.png', 'frame': f'visuals/{vid}_frame.jpg', 'box_image': None,
           'grid': int(cells.shape[0]), 'scale_nats': job.scale, 'min_nats': job.min_nats,
           'peak_nats': float(cells.max()), 'total_nats': float(cells.sum()), 'changed': bool(regions),
           'regions': regions,
           'box_positions': [], 'box_area_share': None, 'box_mass_share': None}
    if job.boxes:
        draw_boxes(image, job.boxes, job.target, folder / f'{vid}_box.png')
        mask = heatmap.box_mask([b['box'] for b in job.boxes], w, h)
        rec.update(box_image=f'visuals/{vid}_box.png', box_area_share=float(mask.mean()),
                   box_positions=[heatmap.box_position(b['box'], w, h) for b in job.boxes])
        if regions:   # agreement is reported only where the occlusion map shows something
            heat = heatmap.cell_map(cells, w, h)
            rec['box_mass_share'] = float(heat[mask].sum() / heat.sum())
    return rec
