"""Optional grounding training data: Kvasir-SEG polyp boxes and Kvasir-Instrument boxes as ms-swift JSONL, or the
boxes a data_prep.synthetic copy drew (`--synthetic DIR [--images-of DATA/swift/train-original.meta.jsonl]`: per
frame, one row for each of polyp, abnormality (= its polyps), surgical instrument, text overlay and green
picture-in-picture box that it shows, with the boxes of its geometry.jsonl).

Each line asks exactly the question `explain.grounding` asks at inference (`grounding_prompt(target, family)`) and
answers in the JSON it parses (`{"bbox_2d": [...], "label": ...}`), in the coordinates of the model family
(`--family`, common.model_family):

- qwen2_5_vl (default): ms-swift's generic placeholders, so ms-swift rescales the boxes to the image it feeds the
  model (`Template.normalize_bbox`: qwen2_5_vl has norm_bbox='none' = pixels of the MAX_PIXELS-rescaled image):

    {"messages": [{"role": "user", "content": "<image>Locate the polyp ..."},
                  {"role": "assistant", "content": "{\"bbox_2d\": <bbox>, \"label\": \"<ref-object>\"}"}],
     "images": ["/abs/img.jpg"], "objects": {"ref": ["polyp"], "bbox": [[x1, y1, x2, y2]]}}

  Boxes in `objects` are absolute pixels of the ORIGINAL image. Train with `QWENVL_BBOX_FORMAT=new` so `<bbox>`
  becomes `[x1, y1, x2, y2]` and `<ref-object>` the bare label (the default 'legacy' wraps them in
  <|box_start|>/<|object_ref_start|> tokens, which breaks the JSON). `--answer-style swift` writes ms-swift's plain
  `<ref-object><bbox>` instead.
- qwen3_vl, gemma3: integers 0..1000 relative to the image width and height, written into the answer itself
  (`{"bbox_2d": [200, 160, 500, 480], "label": "polyp"}`; x * 1000 / width rounded, as ms-swift's norm1000): Qwen3-VL's
  trained convention; Gemma 3 has none, and ms-swift's generic `<bbox>` would render `[(x1,y1),(x2,y2)]`, not JSON.
  The prompt says so (common.prompts).

Kvasir-SEG masks are JPEGs: we threshold them, split connected components (one box per polyp) and drop specks.
A box is [x1, y1, x2, y2] in pixel-edge coordinates: x2 = last mask column + 1.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from tqdm import tqdm

from common.errors import InputError, cli_main
from common.io import write_jsonl
from common.model_family import DEFAULT_FAMILY, FAMILIES, RELATIVE_1000, family
from common.prompts import DEFAULT_GROUNDING_TARGET, GROUNDING_TARGETS, grounding_prompt

POLYP, INSTRUMENT = GROUNDING_TARGETS['polyp'], GROUNDING_TARGETS['instrument']
# What a synthetic frame's geometry answers for each target explain.grounding asks about: the polyps are its only
# abnormality (so "abnormality" = the polyps; instruments are not findings in Kvasir-VQA-x1 either).
SYNTHETIC_TARGETS = ((POLYP, 'polyps'), (DEFAULT_GROUNDING_TARGET, 'polyps'), (INSTRUMENT, 'instruments'),
                     (GROUNDING_TARGETS['text'], 'text'), (GROUNDING_TARGETS['box'], 'green_box'))
MASK_THRESHOLD = 128          # JPEG masks: 0/255 plus compression noise
MIN_AREA_FRACTION = 0.001     # components under 0.1 % of the image are specks, not polyps
BBOX_JSON_NAME = 'kavsir_bboxes.json'
AGREE_IOU = 0.5               # kavsir_bboxes.json vs mask-derived union box: "roughly agree"
IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


@dataclass
class Sample:
    image: Path
    target: str
    boxes: list[list[int]]


@dataclass
class Counts:
    written: int = 0
    skipped: int = 0
    boxes: int = 0
    bbox_json_disagree: int = 0
    reasons: list[str] = field(default_factory=list)


def answer_text(n: int, style: str) -> str:
    """The assistant turn with ms-swift placeholders, one `<ref-object>`/`<bbox>` pair per object, in order."""
    if style == 'swift':
        return '\n'.join(['<ref-object><bbox>'] * n)
    one = '{"bbox_2d": <bbox>, "label": "<ref-object>"}'
    return one if n == 1 else '[' + ', '.join([one] * n) + ']'


def relative_1000(box: list[int], width: int, height: int) -> list[int]:
    """Original pixels -> integers 0..1000 relative to the image size (rounded like ms-swift's norm1000)."""
    x1, y1, x2, y2 = box
    return [round(x1 * 1000 / width), round(y1 * 1000 / height), round(x2 * 1000 / width), round(y2 * 1000 / height)]


def relative_answer(sample: Sample) -> str:
    """The assistant turn with the boxes written out in 0..1000 relative coordinates (one object or a list)."""
    width, height = image_size(sample.image)
    items = [{'bbox_2d': relative_1000(b, width, height), 'label': sample.target} for b in sample.boxes]
    return json.dumps(items[0] if len(items) == 1 else items)


def swift_line(sample: Sample, style: str = 'json', family_name: str = DEFAULT_FAMILY) -> dict:
    n = len(sample.boxes)
    prompt = {'role': 'user', 'content': '<image>' + grounding_prompt(sample.target, family_name)}
    images = [str(sample.image.resolve())]
    if style == 'json' and family(family_name).box_coordinates == RELATIVE_1000:
        return {'messages': [prompt, {'role': 'assistant', 'content': relative_answer(sample)}], 'images': images}
    return {'messages': [prompt, {'role': 'assistant', 'content': answer_text(n, style)}], 'images': images,
            'objects': {'ref': [sample.target] * n, 'bbox': [list(b) for b in sample.boxes]}}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height); an unreadable image is an InputError."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f'unreadable image ({e.__class__.__name__})', file=str(path), field='image') from None


def mask_boxes(mask_path: Path) -> tuple[list[list[int]], tuple[int, int]]:
    """One box per connected component of the thresholded mask (specks dropped); also the mask's (width, height)."""
    try:
        with Image.open(mask_path) as im:
            gray = np.asarray(im.convert('L'))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f'unreadable mask ({e.__class__.__name__})', file=str(mask_path), field='mask') from None
    binary = gray >= MASK_THRESHOLD
    labels, n = ndimage.label(binary)
    min_area = MIN_AREA_FRACTION * binary.size
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is None or int((labels[sl] == i).sum()) < min_area:
            continue
        ys, xs = sl
        boxes.append([xs.start, ys.start, xs.stop, ys.stop])
    boxes.sort(key=lambda b: (b[0], b[1]))
    return boxes, (gray.shape[1], gray.shape[0])


def check_box(box, width: int, height: int, file: str, field_name: str) -> list[int]:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise InputError(f'box must be 4 numbers, got {box!r}', file=file, field=field_name)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise InputError(f'box {[x1, y1, x2, y2]} outside the {width}x{height} image or empty', file=file,
                         field=field_name)
    return [x1, y1, x2, y2]


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _union(boxes):
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def load_bbox_json(path: Path) -> dict:
    """{id: {"height", "width", "bbox": [{"label", "xmin", "ymin", "xmax", "ymax"}]}} (Kvasir-SEG and -Instrument)."""
    if not path.is_file():
        raise InputError('file not found', file=str(path))
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f'not valid JSON ({e})', file=str(path)) from None
    if not isinstance(data, dict):
        raise InputError('expected an object {image_id: {...}}', file=str(path))
    return data


def json_boxes(entry, width: int, height: int, file: str, image_id: str) -> list[list[int]]:
    """Boxes of one bbox-JSON entry, checked against the JSON's own size and the real image size."""
    if not isinstance(entry, dict) or not isinstance(entry.get('bbox'), list):
        raise InputError('entry needs a "bbox" list', file=file, field=f'{image_id}.bbox')
    for key, real in (('width', width), ('height', height)):
        if key in entry and int(entry[key]) != real:
            raise InputError(f'{key} {entry[key]} but the image is {width}x{height}', file=file,
                             field=f'{image_id}.{key}')
    boxes = []
    for j, b in enumerate(entry['bbox']):
        name = f'{image_id}.bbox[{j}]'
        if not isinstance(b, dict) or not all(k in b for k in ('xmin', 'ymin', 'xmax', 'ymax')):
            raise InputError('needs xmin, ymin, xmax, ymax', file=file, field=name)
        boxes.append(check_box([b['xmin'], b['ymin'], b['xmax'], b['ymax']], width, height, file, name))
    return boxes


def find_image(folder: Path, image_id: str) -> Path | None:
    for ext in IMAGE_EXTS:
        if (folder / f'{image_id}{ext}').is_file():
            return folder / f'{image_id}{ext}'
    return None


def kvasir_seg_samples(root: Path, counts: Counts):
    """Polyp samples from Kvasir-SEG: masks first; kavsir_bboxes.json only for images without a mask."""
    images_dir, masks_dir = root / 'images', root / 'masks'
    for d, name in ((root, 'kvasir-seg'), (images_dir, 'images'), (masks_dir, 'masks')):
        if not d.is_dir():
            raise InputError('folder not found', file=str(d), field=name)
    bbox_json_path = root / BBOX_JSON_NAME
    bbox_json = load_bbox_json(bbox_json_path) if bbox_json_path.is_file() else {}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTS}
    ids = sorted(set(masks) | set(bbox_json))
    for image_id in ids:
        yield image_id, lambda image_id=image_id: _seg_sample(image_id, images_dir, masks.get(image_id),
                                                              bbox_json, bbox_json_path, counts)


def _seg_sample(image_id, images_dir, mask_path, bbox_json, bbox_json_path, counts) -> Sample | None:
    image = find_image(images_dir, image_id)
    source = mask_path or bbox_json_path
    if image is None:
        raise InputError(f'no image {image_id}.jpg in {images_dir}', file=str(source), field='image')
    width, height = image_size(image)
    if mask_path is None:
        return Sample(image, POLYP, json_boxes(bbox_json[image_id], width, height, str(bbox_json_path), image_id))
    boxes, mask_size = mask_boxes(mask_path)
    if mask_size != (width, height):
        raise InputError(f'mask is {mask_size[0]}x{mask_size[1]} but the image is {width}x{height}',
                         file=str(mask_path), field='mask')
    if not boxes:
        raise InputError('mask has no polyp (empty after thresholding)', file=str(mask_path), field='mask')
    if image_id in bbox_json:
        listed = json_boxes(bbox_json[image_id], width, height, str(bbox_json_path), image_id)
        if listed and _iou(_union(listed), _union(boxes)) < AGREE_IOU:
            counts.bbox_json_disagree += 1     # masks win; the count tells the user the two sources differ
    return Sample(image, POLYP, boxes)


def kvasir_instrument_samples(spec: Path, images_dir: Path | None, counts: Counts):
    """Instrument samples: `spec` is the bbox JSON, or a folder holding images/ and one *.json of boxes."""
    if spec.is_dir():
        jsons = sorted(spec.glob('*.json'))
        if len(jsons) != 1:
            raise InputError(f'expected one bbox *.json in the folder, found {len(jsons)}', file=str(spec),
                             field='kvasir-instrument')
        json_path, images_dir = jsons[0], images_dir or spec / 'images'
    else:
        json_path = spec
        if images_dir is None:
            raise InputError('--kvasir-instrument-images is needed when --kvasir-instrument is a JSON file',
                             file=str(spec), field='kvasir-instrument-images')
    if not images_dir.is_dir():
        raise InputError('folder not found', file=str(images_dir), field='kvasir-instrument-images')
    data = load_bbox_json(json_path)

    def one(image_id):
        image = find_image(images_dir, image_id)
        if image is None:
            raise InputError(f'no image {image_id}.jpg in {images_dir}', file=str(json_path), field=image_id)
        width, height = image_size(image)
        boxes = json_boxes(data[image_id], width, height, str(json_path), image_id)
        if not boxes:
            raise InputError('no boxes', file=str(json_path), field=f'{image_id}.bbox')
        return Sample(image, INSTRUMENT, boxes)

    for image_id in sorted(data):
        yield image_id, lambda image_id=image_id: one(image_id)


def synthetic_boxes(scene: dict, what: str) -> list[list[int]]:
    """The boxes of one kind of object in a data_prep.synthetic scene (geometry.jsonl line), as it drew them."""
    if what in ('polyps', 'instruments'):
        return [list(o['bbox']) for o in scene[what]]
    if what == 'text':
        return [list(scene['text']['bbox'])] if scene.get('text') else []
    return [list(scene['green_box'])] if scene.get('green_box') else []


def images_of_split(meta: Path) -> dict[str, Path]:
    """img_id -> image file of a prepared split's sidecar (DATA/swift/<split>-original.meta.jsonl)."""
    from common.io import read_jsonl
    if not meta.is_file():
        raise InputError('file not found (run `make prepare` first?)', file=str(meta), field='images-of')
    found = {}
    for i, row in enumerate(read_jsonl(meta), 1):
        if not isinstance(row, dict) or not isinstance(row.get('img_id'), str) or not isinstance(row.get('image'), str):
            raise InputError('needs img_id and image strings (a .meta.jsonl of make prepare)', file=str(meta), row=i)
        found.setdefault(row['img_id'], Path(row['image']))
    return found


def synthetic_samples(root: Path, images_of: Path | None):
    """Samples from a data_prep.synthetic copy: for each image, one per target of SYNTHETIC_TARGETS that it shows,
    with the boxes of its geometry.jsonl. `images_of` (a prepared split's .meta.jsonl) keeps only that split's images
    (and uses its copies of them), so no validation or test image gets a grounding row; without it, every image the
    copy puts in its train split."""
    from common.io import read_jsonl
    geometry = root / 'geometry.jsonl'
    if not geometry.is_file():
        raise InputError('no geometry.jsonl: not a data_prep.synthetic copy', file=str(root), field='synthetic')
    scenes = read_jsonl(geometry)
    if images_of is not None:
        wanted = images_of_split(Path(images_of))
    else:
        wanted = {g['img_id']: root / 'images' / f'{g["img_id"]}.jpg' for g in scenes if 'train' in g.get('splits', [])}

    def one(scene, image, line):
        width, height = image_size(image)
        if (width, height) != (scene['width'], scene['height']):
            raise InputError(f'image is {width}x{height}, geometry says {scene["width"]}x{scene["height"]}',
                             file=str(geometry), row=line, field='width')
        out = []
        for target, what in SYNTHETIC_TARGETS:
            boxes = sorted(check_box(b, width, height, str(geometry), f'{scene["img_id"]}.{what}')
                           for b in synthetic_boxes(scene, what))   # left to right, as mask_boxes lists them
            if boxes:
                out.append(Sample(image, target, boxes))
        return out

    for line, scene in enumerate(scenes, 1):
        if scene['img_id'] in wanted:
            yield scene['img_id'], lambda s=scene, i=wanted[scene['img_id']], n=line: one(s, i, n)


def shrink_to(sample: Sample, out_dir: Path, max_pixels: int | None) -> Sample:
    """Copy the image into out_dir (downscaled to max_pixels if larger), scaling its boxes the same way."""
    dest = out_dir / sample.image.name
    with Image.open(sample.image) as im:
        w, h = im.size
        scale = min(1.0, math.sqrt(max_pixels / (w * h))) if max_pixels else 1.0
        if scale == 1.0:
            if not dest.exists():
                shutil.copyfile(sample.image, dest)
            return Sample(dest, sample.target, sample.boxes)
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        if not dest.exists():       # resume: finished images are kept
            tmp = dest.with_name(f'.{dest.name}.tmp')
            im.convert('RGB').resize((nw, nh), Image.BICUBIC).save(tmp, format='JPEG', quality=95)
            tmp.replace(dest)
    sx, sy = nw / w, nh / h
    boxes = [[math.floor(b[0] * sx), math.floor(b[1] * sy), min(nw, math.ceil(b[2] * sx)),
              min(nh, math.ceil(b[3] * sy))] for b in sample.boxes]
    return Sample(dest, sample.target, boxes)


def build(kvasir_seg: Path | None, kvasir_instrument: Path | None, out: Path, *,
          instrument_images: Path | None = None, images_out: Path | None = None, max_pixels: int | None = None,
          limit: int | None = None, lenient: bool = False, answer_style: str = 'json',
          family_name: str = DEFAULT_FAMILY, synthetic: Path | None = None, images_of: Path | None = None) -> Counts:
    """Write the grounding JSONL; returns the counts. Strict by default: the first bad input is an InputError."""
    if images_of is not None and synthetic is None:
        raise InputError('--images-of selects images of a --synthetic copy: give --synthetic too', field='images-of')
    if kvasir_seg is None and kvasir_instrument is None and synthetic is None:
        raise InputError('give --kvasir-seg and/or --kvasir-instrument (or --synthetic)', field='kvasir-seg')
    if max_pixels and images_out is None:
        raise InputError('--max-pixels resizes copies: it needs --images-out', field='max-pixels')
    counts = Counts()
    sources = []
    if kvasir_seg is not None:
        sources.append(list(kvasir_seg_samples(Path(kvasir_seg), counts)))
    if kvasir_instrument is not None:
        sources.append(list(kvasir_instrument_samples(Path(kvasir_instrument), instrument_images, counts)))
    if synthetic is not None:
        sources.append(list(synthetic_samples(Path(synthetic), images_of)))
    if images_out is not None:
        Path(images_out).mkdir(parents=True, exist_ok=True)
    lines = []
    for items in sources:
        items = items[:limit] if limit else items     # --limit applies per dataset, so both stay represented
        for image_id, make in tqdm(items, desc='grounding', unit='img'):
            try:
                made = make()   # one Sample, or a list of them (a synthetic frame: one per target it shows)
                samples = made if isinstance(made, list) else [made]
                if images_out is not None:
                    samples = [shrink_to(sample, Path(images_out), max_pixels) for sample in samples]
            except InputError as e:
                if not lenient:
                    raise
                counts.skipped += 1
                counts.reasons.append(str(e))
                continue
            for sample in samples:
                lines.append(swift_line(sample, answer_style, family_name))
                counts.boxes += len(sample.boxes)
    counts.written = write_jsonl(out, lines)
    return counts


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--kvasir-seg', type=Path, help='Kvasir-SEG folder: images/, masks/ [, kavsir_bboxes.json]')
    ap.add_argument('--kvasir-instrument', type=Path,
                    help='Kvasir-Instrument bbox JSON, or a folder with images/ and one *.json')
    ap.add_argument('--kvasir-instrument-images', type=Path, help='images folder when --kvasir-instrument is a JSON')
    ap.add_argument('--synthetic', type=Path,
                    help='a data_prep.synthetic copy: its own boxes (geometry.jsonl) for polyp, abnormality, surgical '
                         'instrument, text overlay and green box')
    ap.add_argument('--images-of', type=Path,
                    help='with --synthetic: only the images of this prepared split, e.g. '
                         'DATA/swift/train-original.meta.jsonl (no val or test image gets a row)')
    ap.add_argument('--out', type=Path, required=True, help='output ms-swift JSONL')
    ap.add_argument('--images-out', type=Path, help='copy (and with --max-pixels shrink) the images here')
    ap.add_argument('--max-pixels', type=int, help='downscale copied images to at most this many pixels')
    ap.add_argument('--limit', type=int, help='at most N images per dataset')
    ap.add_argument('--lenient', action='store_true', help='skip and count bad images instead of stopping')
    ap.add_argument('--answer-style', choices=('json', 'swift'), default='json',
                    help='json: {"bbox_2d": <bbox>, "label": "<ref-object>"} (needs QWENVL_BBOX_FORMAT=new at '
                         'training); swift: <ref-object><bbox>')
    ap.add_argument('--family', choices=sorted(FAMILIES), default=DEFAULT_FAMILY,
                    help='model family whose box coordinates the answers use (default %(default)s; qwen3_vl and '
                         'gemma3: 0..1000 relative)')
    a = ap.parse_args(argv)
    counts = build(a.kvasir_seg, a.kvasir_instrument, a.out, instrument_images=a.kvasir_instrument_images,
                   images_out=a.images_out, max_pixels=a.max_pixels, limit=a.limit, lenient=a.lenient,
                   answer_style=a.answer_style, family_name=a.family, synthetic=a.synthetic, images_of=a.images_of)
    print(f'wrote {counts.written} lines ({counts.boxes} boxes) to {a.out}; skipped {counts.skipped}; '
          f'kavsir_bboxes.json disagreeing with masks: {counts.bbox_json_disagree}')
    for r in counts.reasons[:10]:
        print(f'  skipped: {r}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
