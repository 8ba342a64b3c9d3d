"""A small synthetic Kvasir-VQA-x1 local copy whose answers are TRUE for the drawn images.

    python -m data_prep.synthetic --out DIR [--images 24] [--seed 0] [--test-fraction 0.3] [--qa-per-image 6]
        [--workers N]

Writes (docs/design.md, "Dataset local copy"):
    DIR/data/train-00000-of-00001.parquet, DIR/data/test-00000-of-00001.parquet   (the official column types)
    DIR/images/<img_id>.jpg                                                      (procedural endoscopy-like frames)
    DIR/masks/<img_id>.png                                                       (exact object masks, 8-bit labels)
    DIR/geometry.jsonl                                                           (ground truth per img_id)
Each frame shows pink/orange mucosa with a vignette and a dark round border, 0-3 polyps, maybe an instrument, the green
ScopeGuide box (bottom-left) and burnt-in white text (top-left). Questions and answers reuse the dataset's atomic
questions and phrasing; complexity = number of atomic classes merged into one question. Some test images also appear
in train, as in the official splits. Same seed -> same bytes (fixed JPEG quality, no timestamps), whatever --workers.
Each mask is drawn with the frame's own drawing calls (label values instead of colours; geometry.jsonl's "mask" says
which value is which object), so it holds exactly the pixels of each polyp and instrument that the dark border
leaves visible, plus the text overlay's and green box's rectangles.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from common.errors import InputError, cli_main
from common.io import atomic_path, write_jsonl
from data_prep.schema import ARROW_SCHEMA

JPEG_QUALITY = 90
FIELD_OF_VIEW = 1.08   # the dark round border covers normalised radii above this
MASKS = 'masks'   # DIR/masks/<img_id>.png: each object's exact pixels (geometry.jsonl "mask" names the values)
SIZES = ((320, 256), (400, 320), (480, 400), (576, 480), (600, 500))
MUCOSA = {'colonoscopy': (205, 112, 104), 'gastroscopy': (214, 128, 78)}
POLYP_RGB = {'red': (150, 18, 28), 'pink': (250, 168, 190), 'flesh': (238, 192, 150), 'white': (240, 236, 228),
             'yellow': (232, 206, 80)}
SIZE_CLASSES = (('<5mm', 0.08, 0.12), ('5-10mm', 0.13, 0.19), ('11-20mm', 0.20, 0.27), ('>20mm', 0.28, 0.36))
POLYP_TYPES = ('paris is', 'paris ip', 'paris iia')
INSTRUMENTS = ('tube', 'biopsy forceps', 'polyp snare', 'metal clip')
GRID_ROWS, GRID_COLS = ('upper', 'center', 'lower'), ('left', 'center', 'right')
CUID_CHARS = np.array(list('0123456789abcdefghijklmnopqrstuvwxyz'))


# ---------------------------------------------------------------- scene (what is in the image)
def _cell_name(row: str, col: str) -> str:
    if row == col == 'center':
        return 'center'
    return f'center-{col}' if row == 'center' else f'{row}-{col}'


def grid_cells(bbox, width: int, height: int, min_share: float = 0.1) -> list[str]:
    """The 3x3 regions holding at least `min_share` of the box's area, sorted as the dataset lists them."""
    x1, y1, x2, y2 = bbox
    area = max(1, (x2 - x1) * (y2 - y1))
    cells = []
    for r, row in enumerate(GRID_ROWS):
        for c, col in enumerate(GRID_COLS):
            cx1, cy1, cx2, cy2 = width * c / 3, height * r / 3, width * (c + 1) / 3, height * (r + 1) / 3
            inter = max(0, min(x2, cx2) - max(x1, cx1)) * max(0, min(y2, cy2) - max(y1, cy1))
            if inter >= min_share * area:
                cells.append(_cell_name(row, col))
    return sorted(cells)


def _overlaps(a, b, margin: int = 4) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def make_scene(rng: np.random.Generator, img_id: str) -> dict:
    """Decide what one frame shows; every answer is computed from this."""
    width, height = SIZES[rng.integers(len(SIZES))]
    procedure = 'colonoscopy' if rng.random() < 0.65 else 'gastroscopy'
    scale = min(width, height)
    text = green_box = None
    blocked = []
    if rng.random() < 0.55:
        string = (f'{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/20{rng.integers(14, 20)}\n'
                  f'{rng.integers(7, 19):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}')
        glyphs = text_glyphs(string)
        text = {'string': string, 'bbox': [8, 8, 8 + glyphs.width, 8 + glyphs.height]}
        blocked.append(text['bbox'])
    if rng.random() < 0.45:
        bw, bh = int(width * 0.22), int(height * 0.26)
        green_box = [6, height - bh - 6, 6 + bw, height - 6]
        blocked.append(green_box)
    n_polyps = int(rng.choice([0, 1, 1, 2, 3], p=[0.3, 0.25, 0.2, 0.15, 0.1]))
    polyp_type = POLYP_TYPES[rng.integers(len(POLYP_TYPES))]
    polyps = []
    for _ in range(60):  # rejection sampling: inside the round field of view, no overlaps
        if len(polyps) == n_polyps:
            break
        size, lo, hi = SIZE_CLASSES[rng.integers(len(SIZE_CLASSES))]
        d = int(scale * rng.uniform(lo, hi))
        cx, cy = rng.uniform(0.22, 0.78) * width, rng.uniform(0.22, 0.78) * height
        box = [int(cx - d / 2), int(cy - d / 2), int(cx + d / 2), int(cy + d / 2)]
        if polyp_type == 'paris ip':
            box[3] += d // 2  # the stalk
        if box[0] < 0 or box[1] < 0 or box[2] >= width or box[3] >= height:
            continue
        if any(_overlaps(box, b) for b in blocked + [p['bbox'] for p in polyps]):
            continue
        color = list(POLYP_RGB)[rng.integers(len(POLYP_RGB))]
        polyps.append({'bbox': box, 'color': color, 'size': size, 'type': polyp_type})
    instruments = []
    if rng.random() < 0.35:
        name = INSTRUMENTS[rng.integers(len(INSTRUMENTS))]
        side = int(rng.integers(3))  # enters from the right, bottom or top edge
        thick = int(scale * rng.uniform(0.05, 0.08))
        tip = (int(width * rng.uniform(0.35, 0.65)), int(height * rng.uniform(0.35, 0.65)))
        start = [(width - 1, int(height * rng.uniform(0.3, 0.7))), (int(width * rng.uniform(0.4, 0.8)), height - 1),
                 (int(width * rng.uniform(0.5, 0.8)), 0)][side]
        xs, ys = (start[0], tip[0]), (start[1], tip[1])
        pad = thick if name != 'polyp snare' else int(scale * 0.09)
        # the area the instrument is laid out in (the snare's loop is sized from it); its box is what gets drawn
        layout = [max(0, min(xs) - pad), max(0, min(ys) - pad), min(width - 1, max(xs) + pad),
                  min(height - 1, max(ys) + pad)]
        instruments.append({'name': name, 'layout': layout, 'start': list(start), 'tip': list(tip),
                            'thickness': thick})
    scene = {'img_id': img_id, 'width': int(width), 'height': int(height), 'procedure': procedure,
             'polyps': polyps, 'instruments': instruments, 'green_box': green_box, 'text': text}
    for ins, box in zip(instruments, instrument_boxes(scene)):
        ins['bbox'] = box
    return scene


def instrument_boxes(scene: dict) -> list[list[int]]:
    """Each instrument's box: the extent [x1, y1, x2, y2] (last pixels included, as for polyps) of the pixels drawn
    for it inside the field of view (the tube continues behind the dark border, outside the picture)."""
    w, h = scene['width'], scene['height']
    drawn = Image.new('L', (w, h), 0)
    only = {**scene, 'polyps': [], 'text': None, 'green_box': None}
    _draw_objects(ImageDraw.Draw(drawn), only, lambda label, rgb: label)
    values = np.asarray(drawn).copy()
    values[_field_of_view(w, h) > FIELD_OF_VIEW] = 0
    boxes = []
    for label in mask_labels(only)['instruments']:
        ys, xs = np.nonzero(values == label)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())])
    return boxes


# ---------------------------------------------------------------- drawing
def text_glyphs(string: str) -> Image.Image:
    """White-on-black mask of burnt-in text: Pillow's bitmap font (no FreeType, so the same pixels everywhere) x2."""
    small = Image.new('L', (200, 40))
    ImageDraw.Draw(small).multiline_text((0, 0), string, fill=255, font=ImageFont.load_default_imagefont())
    box = small.getbbox()
    return small.crop(box).resize(((box[2] - box[0]) * 2, (box[3] - box[1]) * 2), Image.NEAREST)


def _noise_cells(rng, width, height, cells: int) -> np.ndarray:
    return rng.normal(0, 1, (max(2, height // cells), max(2, width // cells))).astype(np.float32)


def _smooth(small: np.ndarray, width, height, amplitude: float) -> np.ndarray:
    img = Image.fromarray(((small + 4) * 32).clip(0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    return (np.asarray(img, np.float32) / 32 - 4) * amplitude


def frame_randomness(scene: dict, rng: np.random.Generator) -> dict:
    """Every random draw of a frame's background, in the order the frame has always drawn them: the scene is then
    drawn from (scene, these draws) alone, so frames can be drawn in worker processes with the same bytes."""
    w, h = scene['width'], scene['height']
    out = {'shade': _noise_cells(rng, w, h, 24), 'tint': _noise_cells(rng, w, h, 6)}
    if scene['procedure'] == 'colonoscopy':  # dark lumen with haustral folds around it
        out['lumen'] = (w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65))
        out['folds'] = [(int(rng.integers(0, 90)), int(rng.integers(200, 330))) for _ in range(4)]
    else:  # gastric rugae: long soft ridges
        out['rugae'] = [(h * rng.uniform(0.2, 0.8), h * rng.uniform(-0.1, 0.1)) for _ in range(5)]
    return out


def mask_labels(scene: dict) -> dict:
    """The value of each object in the frame's label mask (0 = none of them): polyps 1..P, instruments next, then
    the text overlay's and the green box's rectangles (None when the frame has no such thing)."""
    n_polyps, n_instruments = len(scene['polyps']), len(scene['instruments'])
    nxt = n_polyps + n_instruments + 1
    text = nxt if scene['text'] else None
    green = (nxt + (text is not None)) if scene['green_box'] else None
    return {'polyps': list(range(1, n_polyps + 1)),
            'instruments': list(range(n_polyps + 1, n_polyps + n_instruments + 1)), 'text': text, 'green_box': green}


def _draw_objects(draw: ImageDraw.ImageDraw, scene: dict, colour) -> None:
    """Polyps, then instruments, with `colour(label, rgb)` choosing what is painted: the RGB colour in the frame,
    the object's label in the mask, so that the mask holds exactly the drawn pixels."""
    labels = mask_labels(scene)
    for p, label in zip(scene['polyps'], labels['polyps']):
        x1, y1, x2, y2 = p['bbox']
        color = POLYP_RGB[p['color']]
        body_bottom = y2 - (y2 - y1) // 3 if p['type'] == 'paris ip' else y2
        if p['type'] == 'paris ip':  # pedunculated: head on a stalk
            cx, sw = (x1 + x2) // 2, max(3, (x2 - x1) // 6)
            draw.rectangle([cx - sw, (y1 + body_bottom) // 2, cx + sw, y2],
                           fill=colour(label, tuple(int(c * 0.85) for c in color)))
        if p['type'] == 'paris iia':  # flat: a low, outlined patch
            draw.ellipse([x1, y1, x2, body_bottom], fill=colour(label, color),
                         outline=colour(label, tuple(int(c * 0.6) for c in color)), width=2)
        else:
            draw.ellipse([x1, y1, x2, body_bottom], fill=colour(label, color))
            hx, hy = x1 + (x2 - x1) * 0.3, y1 + (body_bottom - y1) * 0.25
            draw.ellipse([hx, hy, hx + (x2 - x1) * 0.15, hy + (body_bottom - y1) * 0.12],
                         fill=colour(label, (255, 250, 245)))
    for ins, label in zip(scene['instruments'], labels['instruments']):
        (sx, sy), (tx, ty), t = ins['start'], ins['tip'], ins['thickness']
        draw.line([(sx, sy), (tx, ty)], fill=colour(label, (150, 152, 158)), width=t)
        draw.ellipse([tx - t / 2, ty - t / 2, tx + t / 2, ty + t / 2], fill=colour(label, (175, 178, 185)))
        if ins['name'] == 'polyp snare':
            rad = ins['layout'][2] - ins['layout'][0]
            rad = min(rad, ins['layout'][3] - ins['layout'][1]) // 4
            draw.ellipse([tx - rad, ty - rad, tx + rad, ty + rad], outline=colour(label, (200, 200, 205)), width=2)
        elif ins['name'] in ('biopsy forceps', 'metal clip'):
            draw.line([(tx, ty), (tx - t, ty - t)], fill=colour(label, (190, 192, 198)), width=max(2, t // 3))
            draw.line([(tx, ty), (tx + t, ty - t)], fill=colour(label, (190, 192, 198)), width=max(2, t // 3))


def _field_of_view(w: int, h: int) -> np.ndarray:
    """Normalised distance from the frame centre; the endoscope's dark round border covers r > FIELD_OF_VIEW."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)


def render_frame(scene: dict, randomness: dict) -> Image.Image:
    """The frame, from its scene and `frame_randomness` (no random draws here)."""
    w, h = scene['width'], scene['height']
    r = _field_of_view(w, h)
    base = np.array(MUCOSA[scene['procedure']], np.float32)
    shade = (1.15 - 0.55 * r ** 2)[..., None] + _smooth(randomness['shade'], w, h, 0.06)[..., None]
    rgb = base * shade + _smooth(randomness['tint'], w, h, 5.0)[..., None]
    im = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    if scene['procedure'] == 'colonoscopy':  # dark lumen with haustral folds around it
        lx, ly = randomness['lumen']
        for k, (start, end) in zip(range(4, 0, -1), randomness['folds']):
            rx, ry = w * 0.07 * k, h * 0.07 * k
            draw.arc([lx - rx, ly - ry, lx + rx, ly + ry], start, end, fill=tuple(int(c * 0.7) for c in base),
                     width=3)
        draw.ellipse([lx - w * 0.05, ly - h * 0.05, lx + w * 0.05, ly + h * 0.05], fill=(60, 20, 20))
    else:  # gastric rugae: long soft ridges
        for y0, dy in randomness['rugae']:
            draw.line([(w * 0.1, y0), (w * 0.5, y0 + dy), (w * 0.9, y0)],
                      fill=tuple(int(c * 0.8) for c in base), width=5, joint='curve')
    _draw_objects(draw, scene, lambda label, rgb: rgb)
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    # Dark round border of the endoscope's field of view.
    border = Image.fromarray(((r > FIELD_OF_VIEW) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    im.paste((12, 10, 10), mask=border)
    draw = ImageDraw.Draw(im)
    if scene['green_box']:  # ScopeGuide: black box, green frame and a green coil sketch
        x1, y1, x2, y2 = scene['green_box']
        draw.rectangle([x1, y1, x2, y2], fill=(8, 14, 8), outline=(40, 200, 60), width=2)
        draw.arc([x1 + 6, y1 + 6, x2 - 6, y2 - 6], 30, 300, fill=(60, 220, 80), width=3)
    if scene['text']:
        im.paste((255, 255, 255), tuple(scene['text']['bbox'][:2]), mask=text_glyphs(scene['text']['string']))
    return im


def render_mask(scene: dict) -> Image.Image:
    """The frame's label mask ('L'): each polyp and instrument where it was drawn (later ones over earlier, as in the
    frame), minus what the dark border hides; the text overlay's and green box's rectangles on top (mask_labels)."""
    w, h = scene['width'], scene['height']
    mask = Image.new('L', (w, h), 0)
    _draw_objects(ImageDraw.Draw(mask), scene, lambda label, rgb: label)
    values = np.asarray(mask).copy()
    values[_field_of_view(w, h) > FIELD_OF_VIEW] = 0
    labels = mask_labels(scene)
    if scene['green_box']:
        x1, y1, x2, y2 = scene['green_box']
        values[y1:y2 + 1, x1:x2 + 1] = labels['green_box']     # PIL's rectangle includes both corners
    if scene['text']:
        x1, y1, x2, y2 = scene['text']['bbox']
        values[y1:y2, x1:x2] = labels['text']                 # the pasted glyph block: [x1, x2) x [y1, y2)
    return Image.fromarray(values)


def draw_frame(scene: dict, rng: np.random.Generator) -> Image.Image:
    return render_frame(scene, frame_randomness(scene, rng))


# ---------------------------------------------------------------- questions and answers
def _join_places(cells: list[str]) -> str:
    return cells[0] if len(cells) == 1 else ', '.join(cells[:-1]) + ' and ' + cells[-1]


_NUM = {0: 'no', 1: 'one', 2: 'two', 3: 'three'}
# class -> atomic question (verbatim from the dataset, typos included), question variants, merge clauses,
# and an answer function: value -> (full answer variants, clause variants)
ATOMIC = {
    'procedure_type': ('What type of procedure is the image taken from?',
                       ['What type of procedure is depicted in the image?',
                        'Which procedure is depicted in the image?'],
                       ['what type of procedure was performed', 'which procedure is shown']),
    'polyp_count': ('How many polyps are in the image?',
                    ['How many polyps are visible in the image?', 'How many polyps are present in the image?'],
                    ['how many polyps are present', 'how many polyps are visible']),
    'polyp_size': ('What is the size of the polyp?',
                   ['What is the size of the polyp observed?', 'What is the size of the detected polyp?'],
                   ['what is the size of the polyp']),
    'polyp_type': ('What type of polyp is present?',
                   ['What type of polyp is present?', 'What type of polyp is observed in the image?'],
                   ['what type of polyp is present']),
    'polyp_removal_status': ('Have all polyps been removed?',
                             ['Have all polyps been removed?', 'Were all polyps successfully excised?'],
                             ['have all polyps been removed']),
    'abnormality_presence': ('Are there any abnormalities in the image? Check all that are present.',
                             ['Are there any abnormalities visible in the image?',
                              'Are there any abnormal findings in the image?'],
                             ['are there any abnormalities in the image']),
    'abnormality_color': ('What color is the abnormality? If more than one separate with ;',
                          ['What colors are observed in the abnormality?',
                           'What color does the abnormality appear to be?'],
                          ['what color is the abnormality']),
    'abnormality_location': ('Where in the image is the abnormality?',
                             ['Where is the abnormality located in the image?',
                              'In which regions of the image is the abnormality located?'],
                             ['where is the abnormality located']),
    'finding_count': ('How many findings are present?',
                      ['How many abnormalities are visible?', 'How many findings are present in the image?'],
                      ['how many findings are present']),
    'instrument_presence': ('Are there any instruments in the image? Check all that are present.',
                            ['Are there any medical instruments visible in the image?',
                             'Which instruments are visible in the image?'],
                            ['are there any instruments visible']),
    'instrument_count': ('How many instrumnets are in the image?',
                         ['How many surgical instruments are visible in the image?',
                          'How many instruments are present in the image?'],
                         ['how many instruments are visible']),
    'instrument_location': ('Where in the image is the instrument?',
                            ['In which region of the image is the instrument located?',
                             'Where is the instrument located in the image?'],
                            ['where is the instrument located']),
    'text_presence': ('Is there text?',
                      ['Is there any text visible on the image?', 'Is any text visible on the image?'],
                      ['is there any text present']),
    'box_artifact_presence': ('Is there a green/black box artefact?',
                              ['Are there any green or black box artifacts present?',
                               'Is there a green or black box artefact in the image?'],
                              ['is there a green or black box artefact']),
}
SIZE_WORDS = {'<5mm': 'less than 5 millimeters', '5-10mm': '5 to 10 millimeters', '11-20mm': '11 to 20 millimeters',
              '>20mm': 'greater than 20 millimeters'}


def atomic_value(cls: str, scene: dict) -> str:
    """The dataset's atomic answer for one class, computed from the scene."""
    polyps, ins = scene['polyps'], scene['instruments']

    def uniq(xs):  # order-keeping
        return list(dict.fromkeys(xs))

    def cells(boxes):
        return sorted({c for b in boxes for c in grid_cells(b, scene['width'], scene['height'])})

    return {
        'procedure_type': scene['procedure'],
        'polyp_count': str(len(polyps)),
        'polyp_size': ';'.join(uniq(p['size'] for p in polyps)) or 'none',
        'polyp_type': '; '.join(uniq(p['type'] for p in polyps)) or 'none',
        'polyp_removal_status': 'no' if polyps else 'not relevant',
        'abnormality_presence': 'polyp' if polyps else 'none',
        'abnormality_color': '; '.join(uniq(p['color'] for p in polyps)) or 'none',
        'abnormality_location': '; '.join(cells(p['bbox'] for p in polyps)) or 'none',
        'finding_count': str(len(polyps)),
        'instrument_presence': '; '.join(uniq(i['name'] for i in ins)) or 'none',
        'instrument_count': str(len(ins)),
        'instrument_location': '; '.join(cells(i['bbox'] for i in ins)) or 'none',
        'text_presence': 'yes' if scene['text'] else 'no',
        'box_artifact_presence': 'yes' if scene['green_box'] else 'no',
    }[cls]


def answer_clauses(cls: str, value: str) -> list[str]:
    """Lower-case answer clauses in the dataset's style, all true for `value`."""
    items = [v.strip() for v in value.replace(';', '; ').split(';') if v.strip()]
    listed = _join_places(items) if items else ''
    none = value in ('none', '0', 'no', 'not relevant')
    if cls == 'polyp_removal_status':  # 'no' = polyps remain; 'not relevant' = there are none
        return (['no residual polyps identified', 'polyp removal not applicable'] if value == 'not relevant' else
                ['polyps remain present', 'incomplete polyp removal observed'])
    if cls == 'procedure_type':
        return [f'evidence of {value} examination', f'the image is from a {value}', f'procedure performed via {value}']
    if cls in ('polyp_count', 'finding_count'):
        n = int(value)
        noun = 'polyp' if cls == 'polyp_count' else 'abnormal finding'
        if n == 0:
            return [f'no {noun}s observed', f'no {noun}s detected']
        return [f'{_NUM[n]} {noun}{"s" if n > 1 else ""} identified', f'{_NUM[n]} {noun}{"s" if n > 1 else ""} present']
    if cls == 'polyp_size':
        if none:
            return ['no polyp observed', 'no polypoid lesions identified']
        sizes = _join_places([SIZE_WORDS[s] for s in value.split(';')])
        return [f'polyp measuring {sizes}', f'polyp size of {sizes}']
    if cls == 'polyp_type':
        return (['no polyp detected', 'no polyp identified'] if none else
                [f'evidence of {listed} polyp', f'{listed} type polyp observed'])
    if cls == 'abnormality_presence':
        return ['no abnormalities observed', 'no abnormal findings'] if none else ['evidence of colonic polyp',
                                                                                 'a polyp is present']
    if cls == 'abnormality_color':
        return [f'{listed} coloration noted', f'lesions presenting as {listed} areas']
    if cls == 'abnormality_location':
        return [f'abnormality observed in the {listed} region{"s" if len(items) > 1 else ""}',
                f'located in the {listed} area{"s" if len(items) > 1 else ""}']
    if cls == 'instrument_presence':
        return ['no instruments observed', 'no instruments detected'] if none else [f'{listed} detected',
                                                                                  f'{listed} visible in the image']
    if cls == 'instrument_count':
        n = int(value)
        return (['no instruments visualized', 'no instruments identified'] if n == 0 else
                [f'{_NUM[n]} instrument{"s" if n > 1 else ""} present', f'{_NUM[n]} surgical instrument present'])
    if cls == 'instrument_location':
        return (['no instruments observed', 'no visible instrumentation noted'] if none else
                [f'instrument visualized in the {listed} region{"s" if len(items) > 1 else ""}',
                 f'instrument located in the {listed} area{"s" if len(items) > 1 else ""}'])
    if cls == 'text_presence':
        return ['no text is present', 'no text visible'] if none else ['text is visible on the image',
                                                                     'text present on the image']
    if cls == 'box_artifact_presence':
        return (['no visible box artifacts observed', 'no green or black box artefact present'] if none else
                ['evidence of green and black box artifacts', 'a green box artefact is present'])
    raise KeyError(cls)


def applicable_classes(scene: dict) -> list[str]:
    """Colour, location and finding count are only asked about images that show an abnormality (as in the data)."""
    skip = set() if scene['polyps'] else {'abnormality_color', 'abnormality_location', 'finding_count'}
    return [c for c in ATOMIC if c not in skip]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join_clauses(xs: list[str]) -> str:
    return f'{xs[0]} and {xs[1]}' if len(xs) == 2 else ', '.join(xs[:-1]) + ', and ' + xs[-1]


def make_qa(scene: dict, classes: list[str], rng: np.random.Generator) -> dict:
    """One dataset row (without image) merging `classes` into one question."""
    def pick(options):
        return options[rng.integers(len(options))]

    values = [atomic_value(c, scene) for c in classes]
    if len(classes) == 1:
        question = pick(ATOMIC[classes[0]][1])
        answer = _cap(pick(answer_clauses(classes[0], values[0])))
    else:
        qs = [pick(ATOMIC[c][2]) for c in classes]
        ans = [pick(answer_clauses(c, v)) for c, v in zip(classes, values)]
        question = _cap(_join_clauses(qs))
        question += '?' if question.endswith('image') else ' in the image?'
        answer = _cap(_join_clauses(ans)) + '.'
    original = '[\n' + ',\n'.join('{\n"q": %s,\n"a": %s\n}' % (json.dumps(ATOMIC[c][0]), json.dumps(v))
                                  for c, v in zip(classes, values)) + '\n]'
    return {'img_id': scene['img_id'], 'complexity': len(classes), 'question': question, 'answer': answer,
            'original': original, 'question_class': list(classes), 'image': f'images/{scene["img_id"]}.jpg'}


def image_rows(scene: dict, n: int, rng: np.random.Generator) -> list[dict]:
    """`n` rows for one image, complexities cycling 1, 2, 3, with no repeated question."""
    classes = applicable_classes(scene)
    rows, seen = [], set()
    for i in range(n * 20):
        if len(rows) == n:
            break
        k = len(rows) % 3 + 1
        chosen = [classes[j] for j in rng.choice(len(classes), size=k, replace=False)]
        row = make_qa(scene, chosen, rng)
        if row['question'] not in seen:
            seen.add(row['question'])
            rows.append(row)
    return rows


# ---------------------------------------------------------------- the local copy
def cuid(rng: np.random.Generator) -> str:
    """A 25-character cuid-looking id ('c' + 24 base-36 chars), like the dataset's img_ids."""
    return 'cl' + ''.join(rng.choice(CUID_CHARS, size=23))


def _write_parquet(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression='snappy')


def _render_job(job: tuple[dict, dict, str]) -> None:
    """Draw one frame and its label mask and write both (a worker process's unit of work)."""
    scene, randomness, out = job
    with atomic_path(Path(out) / 'images' / f'{scene["img_id"]}.jpg') as tmp:
        render_frame(scene, randomness).save(tmp, format='JPEG', quality=JPEG_QUALITY)
    with atomic_path(Path(out) / MASKS / f'{scene["img_id"]}.png') as tmp:
        render_mask(scene).save(tmp, format='PNG')


def generate(out_dir, n_images: int = 24, seed: int = 0, test_fraction: float = 0.3,
             qa_per_image: int = 6, workers: int = 1) -> Path:
    """Write the synthetic local copy into `out_dir` and return its path. The same bytes for any `workers`: scenes,
    questions and every random draw come from one generator in one process; only the drawing is spread out."""
    if n_images < 2:
        raise InputError(f'--images: need at least 2 images, got {n_images}')
    if not 0 < test_fraction < 1:
        raise InputError(f'--test-fraction: must be in (0, 1), got {test_fraction}')
    if qa_per_image < 3:
        raise InputError(f'--qa-per-image: need at least 3 rows per image (one per complexity), got {qa_per_image}')
    if workers < 1:
        raise InputError(f'--workers: must be >= 1, got {workers}')
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    ids, seen = [], set()
    while len(ids) < n_images:
        i = cuid(rng)
        if i not in seen:
            seen.add(i)
            ids.append(i)
    n_test = min(n_images - 1, max(1, round(n_images * test_fraction)))
    n_shared = max(1, n_test // 4)  # test images that also appear in train (with other questions)
    train, test, geometry, jobs = [], [], [], []
    for k, img_id in enumerate(ids):
        scene = make_scene(rng, img_id)
        jobs.append((copy.deepcopy(scene), frame_randomness(scene, rng), str(out)))
        rows = image_rows(scene, qa_per_image, rng)
        if k < n_test - n_shared:
            test += rows
            splits = ['test']
        elif k < n_test:  # shared image: alternate rows between the splits (each gets several complexities)
            test += rows[1::2]
            train += rows[0::2]
            splits = ['train', 'test']
        else:
            train += rows
            splits = ['train']
        for ins in scene['instruments']:
            for key in ('start', 'tip', 'thickness', 'layout'):
                ins.pop(key)
        geometry.append({**scene, 'splits': splits,
                         'mask': {'file': f'{MASKS}/{img_id}.png', **mask_labels(scene)}})
    if workers > 1 and len(jobs) >= 4 * workers:
        with ProcessPoolExecutor(workers) as pool:
            list(tqdm(pool.map(_render_job, jobs, chunksize=16), total=len(jobs), desc='synthetic frames',
                      unit='img', disable=len(jobs) < 500))
    else:
        for job in tqdm(jobs, desc='synthetic frames', unit='img', disable=len(jobs) < 500):
            _render_job(job)
    # The official splits are not grouped by image; shuffle rows (deterministically) the same way.
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    _write_parquet(out / 'data' / 'train-00000-of-00001.parquet', train)
    _write_parquet(out / 'data' / 'test-00000-of-00001.parquet', test)
    write_jsonl(out / 'geometry.jsonl', geometry)
    return out


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m data_prep.synthetic', description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='output folder (the local copy)')
    p.add_argument('--images', type=int, default=24, help='number of images (default 24)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--test-fraction', type=float, default=0.3, help='share of images in test (default 0.3)')
    p.add_argument('--qa-per-image', type=int, default=6, help='QA rows per image (default 6)')
    p.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                   help='processes that draw the frames (the bytes do not depend on it; default min(8, CPUs))')
    args = p.parse_args(argv)
    out = generate(args.out, args.images, args.seed, args.test_fraction, args.qa_per_image, args.workers)
    n = {s: pq.read_metadata(out / 'data' / f'{s}-00000-of-00001.parquet').num_rows for s in ('train', 'test')}
    print(f'wrote {out}: {args.images} images, train {n["train"]} rows, test {n["test"]} rows')
    return 0


if __name__ == '__main__':
    sys.exit(main())
