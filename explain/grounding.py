"""Bounding boxes from the model's own grounding output, mapped back to the original image per model family.

Every family answers a grounding prompt with JSON `{"bbox_2d": [x1, y1, x2, y2], "label": ...}`; the coordinates
differ (common.model_family):
- Qwen2.5-VL: ABSOLUTE pixels of the image as the processor resized it (smart_resize: both sides multiples of 28,
  pixel count within [min_pixels, max_pixels]) -> scaled by original / resized size;
- Qwen3-VL: integers 0..1000 relative to the image width and height (its trained format; Qwen2-VL used it too);
- Gemma 3 / MedGemma: no trained box format, so our prompt and training rows use the same 0..1000 convention.
A resize stretches the whole image onto the whole input, so relative coordinates are relative to the original too.
We clip each box to the image and skip (and count) output that does not parse or lies outside the image.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from common.model_family import DEFAULT_FAMILY, RELATIVE_1000, RESIZED_PIXELS, family
# shared word for word with the training rows of data_prep.grounding_data
from common.prompts import DEFAULT_GROUNDING_TARGET, GROUNDING_TARGETS, grounding_prompt  # noqa: F401
from common.qwen_vision import smart_resize  # noqa: F401  (the processor's resize; boxes map back through it)

TARGETS = GROUNDING_TARGETS   # what to ask the model to locate, by question topic
DEFAULT_TARGET = DEFAULT_GROUNDING_TARGET


@dataclass
class BoxStats:
    """Counts over a run: outputs seen, boxes kept, outputs with no parseable box, boxes outside the image."""
    outputs: int = 0
    kept: int = 0
    unparseable: int = 0
    out_of_bounds: int = 0

    def add(self, other: 'BoxStats') -> None:
        for k in ('outputs', 'kept', 'unparseable', 'out_of_bounds'):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_dict(self) -> dict:
        return dict(outputs=self.outputs, kept=self.kept, unparseable=self.unparseable,
                    out_of_bounds=self.out_of_bounds)


@dataclass
class RawBox:
    coords: list[float]
    label: str = ''


_FENCE = re.compile(r'```(?:json)?\s*(.*?)```', re.S)
_BBOX = re.compile(r'"?bbox_2d"?\s*:\s*\[\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\]'
                   r'(?:\s*,\s*"label"\s*:\s*"([^"]*)")?')


def _from_json(obj) -> list[RawBox] | None:
    items = obj if isinstance(obj, list) else [obj]
    boxes = []
    for it in items:
        if not isinstance(it, dict) or 'bbox_2d' not in it:
            return None
        c = it['bbox_2d']
        if not (isinstance(c, list) and len(c) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in c)):
            return None
        boxes.append(RawBox([float(v) for v in c], str(it.get('label', ''))))
    return boxes


def parse_boxes(text: str) -> list[RawBox]:
    """Every `bbox_2d` box in a model output: strict JSON (inside ``` fences or bare) first, then a lenient regex for
    JSON the model left unfinished. Empty list = unparseable."""
    candidates = _FENCE.findall(text) + [text]
    for cand in candidates:
        cand = cand.strip()
        try:
            boxes = _from_json(json.loads(cand))
        except (json.JSONDecodeError, ValueError):
            boxes = None
        if boxes:
            return boxes
    out = []
    for m in _BBOX.finditer(text):
        try:
            coords = [float(m.group(i)) for i in range(1, 5)]
        except ValueError:
            continue
        if all(math.isfinite(v) for v in coords):
            out.append(RawBox(coords, m.group(5) or ''))
    return out


def map_box(coords: list[float], resized_wh: tuple[int, int], orig_wh: tuple[int, int],
            family_name: str = DEFAULT_FAMILY) -> list[int] | None:
    """A box in `family_name`'s coordinates -> original pixels, clipped to [0, W] x [0, H]; None when the box has no
    area inside the image (out of bounds, inverted or degenerate). `resized_wh`: the image as the model saw it (only
    Qwen2.5-VL's pixel coordinates need it)."""
    (rw, rh), (ow, oh) = resized_wh, orig_wh
    if not all(math.isfinite(v) for v in coords):
        return None
    x1, y1, x2, y2 = coords
    if x2 <= x1 or y2 <= y1:       # inverted or empty: not a box
        return None
    convention = family(family_name).box_coordinates
    if convention == RESIZED_PIXELS:
        sx, sy = ow / rw, oh / rh
    elif convention == RELATIVE_1000:
        sx, sy = ow / 1000, oh / 1000
    else:
        raise ValueError(f'unknown box convention {convention!r}')
    x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
    cx1, cy1 = min(max(x1, 0.0), ow), min(max(y1, 0.0), oh)
    cx2, cy2 = min(max(x2, 0.0), ow), min(max(y2, 0.0), oh)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        return None
    return [int(round(cx1)), int(round(cy1)), int(round(cx2)), int(round(cy2))]


def boxes_from_output(text: str, resized_wh, orig_wh,
                      family_name: str = DEFAULT_FAMILY) -> tuple[list[dict], BoxStats]:
    """Parse + map + clip one grounding output of a `family_name` model; returns [{"box": [x1,y1,x2,y2], "label"}]
    and the counts."""
    stats = BoxStats(outputs=1)
    raw = parse_boxes(text)
    if not raw:
        stats.unparseable = 1
        return [], stats
    kept = []
    for b in raw:
        box = map_box(b.coords, resized_wh, orig_wh, family_name)
        if box is None:
            stats.out_of_bounds += 1
        elif box not in [k['box'] for k in kept]:
            kept.append({'box': box, 'label': b.label})
    stats.kept = len(kept)
    return kept, stats


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
