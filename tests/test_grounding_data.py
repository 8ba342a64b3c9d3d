"""data_prep.grounding_data: real Kvasir-SEG masks, the real Kvasir-Instrument boxes, ms-swift encoding, training."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from common.errors import InputError
from common.io import read_jsonl
from data_prep import grounding_data as gd
from explain import grounding as inference_grounding
from tests.conftest import run_module

SEG_REL = 'data/gi-images/kvasir-seg'
INSTR_REL = 'data/gi-images/kvasir-instrument-bboxes.json'
N_INSTR = 8


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert('L')) >= gd.MASK_THRESHOLD


@pytest.fixture(scope='module')
def seg_dir(shared_dir) -> Path:
    d = shared_dir / SEG_REL
    if not (d / 'masks').is_dir():
        pytest.skip(f'{d} not present')
    return d


@pytest.fixture()
def seg_link(seg_dir, tmp_path) -> Path:
    """A Kvasir-SEG folder in tmp whose images/ and masks/ point at the real frames (read in place)."""
    d = tmp_path / 'kvasir-seg'
    d.mkdir()
    (d / 'images').symlink_to(seg_dir / 'images')
    (d / 'masks').symlink_to(seg_dir / 'masks')
    return d


@pytest.fixture(scope='module')
def instrument(shared_dir, tmp_path_factory) -> tuple[Path, Path, dict]:
    """The real box file + stand-in images of the right size, named by the real ids, for the first N ids."""
    path = shared_dir / INSTR_REL
    if not path.is_file():
        pytest.skip(f'{path} not present')
    data = json.loads(path.read_text())
    images = tmp_path_factory.mktemp('instrument') / 'images'
    images.mkdir()
    for image_id in sorted(data)[:N_INSTR]:
        e = data[image_id]
        Image.new('RGB', (e['width'], e['height']), (90, 40, 30)).save(images / f'{image_id}.jpg')
    return path, images, data


def test_kvasir_seg_boxes_are_the_masks_extent(seg_dir, tmp_path):
    counts = gd.build(seg_dir, None, tmp_path / 'g.jsonl')
    rows = read_jsonl(tmp_path / 'g.jsonl')
    assert counts.written == len(rows) == len(list((seg_dir / 'masks').iterdir())) == 5
    exact = 0
    for row in rows:
        image = Path(row['images'][0])
        assert image.is_absolute() and image.parent == (seg_dir / 'images').resolve()   # paths are written resolved
        assert row['messages'][0]['content'] == '<image>' + inference_grounding.grounding_prompt('polyp')
        boxes = row['objects']['bbox']
        assert row['objects']['ref'] == ['polyp'] * len(boxes) and len(boxes) >= 1
        assert row['messages'][1]['content'].count('<bbox>') == len(boxes)
        w, h = Image.open(image).size
        mask = _mask(seg_dir / 'masks' / image.name)
        covered = np.zeros_like(mask)
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            # tight: the mask touches all four edges of its box
            assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()
            assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()
            covered[y1:y2, x1:x2] = True
        # everything the boxes leave out is specks
        assert mask[~covered].sum() < gd.MIN_AREA_FRACTION * mask.size * 5
        if ndimage.label(mask)[1] == 1:      # one blob, no specks: the box is the mask's extent exactly
            ys, xs = np.nonzero(mask)
            assert boxes == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            exact += 1
    assert exact >= 3
    # the real frames include one with two polyps and corner specks: two boxes, specks dropped
    assert any(len(r['objects']['bbox']) == 2 for r in rows)


def test_kavsir_bboxes_json_agreement_and_bad_boxes(seg_link, tmp_path):
    gd.build(seg_link, None, tmp_path / 'ref.jsonl')
    rows = read_jsonl(tmp_path / 'ref.jsonl')
    listed = {}
    for r in rows:
        image_id = Path(r['images'][0]).stem
        w, h = Image.open(r['images'][0]).size
        listed[image_id] = {'height': h, 'width': w, 'bbox': [
            {'label': 'polyp', 'xmin': b[0] + 2, 'ymin': b[1], 'xmax': b[2] - 2, 'ymax': b[3]} for b in
            r['objects']['bbox']]}
    (seg_link / gd.BBOX_JSON_NAME).write_text(json.dumps(listed))
    counts = gd.build(seg_link, None, tmp_path / 'a.jsonl')
    assert counts.bbox_json_disagree == 0
    assert read_jsonl(tmp_path / 'a.jsonl') == rows          # masks win
    first = sorted(listed)[0]
    listed[first]['bbox'] = [{'label': 'polyp', 'xmin': 0, 'ymin': 0, 'xmax': 5, 'ymax': 5}]
    (seg_link / gd.BBOX_JSON_NAME).write_text(json.dumps(listed))
    assert gd.build(seg_link, None, tmp_path / 'b.jsonl').bbox_json_disagree == 1
    listed[first]['bbox'] = [{'label': 'polyp', 'xmin': 0, 'ymin': 0, 'xmax': listed[first]['width'] + 1,
                              'ymax': 5}]
    (seg_link / gd.BBOX_JSON_NAME).write_text(json.dumps(listed))
    with pytest.raises(InputError) as e:
        gd.build(seg_link, None, tmp_path / 'c.jsonl')
    assert e.value.file.endswith(gd.BBOX_JSON_NAME) and e.value.field == f'{first}.bbox[0]'
    assert 'outside' in str(e.value) and not (tmp_path / 'c.jsonl').exists()


def test_kvasir_instrument_real_boxes(instrument, tmp_path):
    path, images, data = instrument
    counts = gd.build(None, path, tmp_path / 'i.jsonl', instrument_images=images, limit=N_INSTR)
    rows = read_jsonl(tmp_path / 'i.jsonl')
    assert counts.written == N_INSTR == len(rows)
    for row, image_id in zip(rows, sorted(data)[:N_INSTR]):
        assert Path(row['images'][0]) == (images / f'{image_id}.jpg').resolve()
        assert row['objects']['ref'] == ['surgical instrument'] * len(data[image_id]['bbox'])
        assert row['objects']['bbox'] == [[b['xmin'], b['ymin'], b['xmax'], b['ymax']] for b in data[image_id]['bbox']]
        assert inference_grounding.grounding_prompt('surgical instrument') in row['messages'][0]['content']
    # past the stand-ins the images are missing: strict stops, lenient skips and counts
    with pytest.raises(InputError, match='no image'):
        gd.build(None, path, tmp_path / 'x.jsonl', instrument_images=images, limit=N_INSTR + 2)
    counts = gd.build(None, path, tmp_path / 'y.jsonl', instrument_images=images, limit=N_INSTR + 2, lenient=True)
    assert (counts.written, counts.skipped) == (N_INSTR, 2)


def test_multiple_objects_answer_template(instrument, tmp_path):
    path, images, data = instrument
    multi = {k: v for k, v in data.items() if len(v['bbox']) > 1}
    image_id = sorted(multi)[0]
    e = multi[image_id]
    Image.new('RGB', (e['width'], e['height'])).save(images / f'{image_id}.jpg')
    folder = tmp_path / 'kvasir-instrument'          # the folder form: images/ + one box JSON
    folder.mkdir()
    (folder / 'images').symlink_to(images)
    (folder / 'boxes.json').write_text(json.dumps({image_id: e}))
    with pytest.raises(InputError, match='--kvasir-instrument-images'):
        gd.build(None, folder / 'boxes.json', tmp_path / 'm.jsonl')
    gd.build(None, folder, tmp_path / 'm.jsonl')
    row = read_jsonl(tmp_path / 'm.jsonl')[0]
    n = len(e['bbox'])
    assert row['messages'][1]['content'].count('"bbox_2d": <bbox>') == n and row['messages'][1]['content'][0] == '['
    assert len(row['objects']['bbox']) == n


def test_bad_inputs_one_line_errors(seg_dir, tmp_path):
    missing = run_module('data_prep.grounding_data', '--kvasir-seg', tmp_path / 'nope', '--out', tmp_path / 'o.jsonl',
                         check=False)
    assert missing.returncode == 2 and missing.stderr.strip().count('\n') == 0 and 'nope' in missing.stderr
    # a mask without its image, and an unreadable image
    d = tmp_path / 'seg'
    (d / 'images').mkdir(parents=True)
    (d / 'masks').mkdir()
    real_mask = sorted((seg_dir / 'masks').iterdir())[0]
    (d / 'masks' / 'orphan.jpg').symlink_to(real_mask)
    with pytest.raises(InputError) as e:
        gd.build(d, None, tmp_path / 'o.jsonl')
    assert e.value.field == 'image' and e.value.file.endswith('orphan.jpg')
    (d / 'images' / 'orphan.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(InputError) as e:
        gd.build(d, None, tmp_path / 'o.jsonl')
    assert 'unreadable image' in str(e.value) and e.value.file.endswith('images/orphan.jpg')
    (d / 'images' / 'good.jpg').symlink_to(seg_dir / 'images' / real_mask.name)
    (d / 'masks' / 'good.jpg').symlink_to(real_mask)
    proc = run_module('data_prep.grounding_data', '--kvasir-seg', d, '--out', tmp_path / 'o.jsonl', '--lenient')
    assert 'skipped 1' in proc.stdout and len(read_jsonl(tmp_path / 'o.jsonl')) == 1
    # a mask of the wrong size
    Image.new('L', (10, 10), 255).save(d / 'images' / 'orphan.jpg')
    with pytest.raises(InputError, match='mask is'):
        gd.build(d, None, tmp_path / 'o.jsonl')


def test_images_out_max_pixels_scales_boxes(seg_dir, tmp_path):
    gd.build(seg_dir, None, tmp_path / 'full.jsonl', limit=2)
    gd.build(seg_dir, None, tmp_path / 'small.jsonl', images_out=tmp_path / 'imgs', max_pixels=50_000, limit=2)
    for full, small in zip(read_jsonl(tmp_path / 'full.jsonl'), read_jsonl(tmp_path / 'small.jsonl')):
        W, H = Image.open(full['images'][0]).size
        w, h = Image.open(small['images'][0]).size
        assert Path(small['images'][0]).parent == (tmp_path / 'imgs').resolve() and w * h <= 50_000
        for (a, b, c, d), (x1, y1, x2, y2) in zip(full['objects']['bbox'], small['objects']['bbox']):
            assert abs(x1 - a * w / W) <= 1 and abs(x2 - c * w / W) <= 1 and 0 <= x1 < x2 <= w
            assert abs(y1 - b * h / H) <= 1 and abs(y2 - d * h / H) <= 1 and 0 <= y1 < y2 <= h


def test_ms_swift_encodes_rescaled_boxes(seg_dir, tiny_model_dir, tmp_path, monkeypatch):
    """ms-swift turns `objects` into the model's own pixels (qwen2_5_vl: the resized image it sees)."""
    monkeypatch.setenv('QWENVL_BBOX_FORMAT', 'new')
    monkeypatch.setenv('MAX_PIXELS', '50176')
    from swift import get_processor, get_template
    gd.build(seg_dir, None, tmp_path / 'g.jsonl')
    row = next(r for r in read_jsonl(tmp_path / 'g.jsonl') if len(r['objects']['bbox']) == 2)
    processor = get_processor(str(tiny_model_dir), model_type='qwen2_5_vl')
    template = get_template(processor, template_type='qwen2_5_vl')
    template.set_mode('train')
    enc = template.encode(json.loads(json.dumps(row)))
    answer = processor.tokenizer.decode([i for i in enc['labels'] if i != -100])
    _, gh, gw = (int(v) for v in enc['image_grid_thw'][0])
    W, H = Image.open(row['images'][0]).size
    expected = [[round(x1 / W * gw * 14), round(y1 / H * gh * 14), round(x2 / W * gw * 14), round(y2 / H * gh * 14)]
                for x1, y1, x2, y2 in row['objects']['bbox']]
    assert (gw * 14, gh * 14) != (W, H)          # the boxes really were rescaled
    assert json.loads(re.sub(r'<\|im_end\|>.*', '', answer, flags=re.S)) == [
        {'bbox_2d': b, 'label': 'polyp'} for b in expected]
    # and the inference parser reads exactly what training taught
    assert [b.coords for b in inference_grounding.parse_boxes(answer)] == [[float(v) for v in b] for b in expected]


@pytest.mark.slow
def test_swift_sft_trains_on_grounding(seg_dir, instrument, tiny_model_dir, tmp_path):
    path, images, _ = instrument
    data = tmp_path / 'data'
    gd.build(seg_dir, path, data / 'swift' / 'train-original.jsonl', instrument_images=images, limit=N_INSTR)
    gd.build(seg_dir, None, data / 'swift' / 'val-original.jsonl', limit=2)
    env = {**os.environ, 'QWENVL_BBOX_FORMAT': 'new'}
    run = tmp_path / 'run'
    proc = run_module('training.launch', '--recipe', 'recipes/tiny/qwen2_5_vl_lora_cpu.args', '--data', data,
                      '--run', run, '--model', tiny_model_dir, env=env, timeout=600)
    assert list(run.glob('v*/checkpoint-*/adapter_model.safetensors')), proc.stdout[-2000:]
    logs = [json.loads(line) for f in run.glob('v*/logging.jsonl') for line in f.read_text().splitlines()]
    assert any('loss' in entry and np.isfinite(entry['loss']) for entry in logs)
    out = proc.stdout + proc.stderr
    # ms-swift's sample print: the placeholders were filled with pixel boxes in the model's JSON
    assert 'QWENVL_BBOX_FORMAT: new' in out
    assert re.search(r'"bbox_2d": \[\d+, \d+, \d+, \d+\], "label": "(polyp|surgical instrument)"', out)


# ---------------------------------------------------------------- boxes of the synthetic generator
@pytest.fixture(scope='module')
def synthetic_prepared(synthetic_dataset, tmp_path_factory) -> Path:
    """`make prepare` of the synthetic copy: its train split is what grounding rows may show."""
    out = tmp_path_factory.mktemp('syn-prepared') / 'prepared'
    run_module('data_prep.prepare', '--dataset', synthetic_dataset, '--out', out, '--aug-k', '1', '--workers', '1')
    return out


def _split_ids(prepared: Path, name: str) -> set[str]:
    return {r['img_id'] for r in read_jsonl(prepared / 'swift' / f'{name}-original.meta.jsonl')}


def test_synthetic_rows_are_the_boxes_the_generator_drew(synthetic_dataset, synthetic_prepared, tmp_path):
    out = tmp_path / 'grounding.jsonl'
    run_module('data_prep.grounding_data', '--synthetic', synthetic_dataset, '--images-of',
               synthetic_prepared / 'swift' / 'train-original.meta.jsonl', '--out', out)
    rows = read_jsonl(out)
    geometry = {g['img_id']: g for g in read_jsonl(synthetic_dataset / 'geometry.jsonl')}
    train = _split_ids(synthetic_prepared, 'train')
    held_out = _split_ids(synthetic_prepared, 'val') | _split_ids(synthetic_prepared, 'test')
    by_image: dict[str, dict[str, list]] = {}
    for row in rows:
        image = Path(row['images'][0])
        assert image.parent == (synthetic_prepared / 'images' / 'original').resolve()   # the copy training reads
        target = row['objects']['ref'][0]
        assert row['objects']['ref'] == [target] * len(row['objects']['bbox'])
        assert row['messages'][0]['content'] == '<image>' + inference_grounding.grounding_prompt(target)
        by_image.setdefault(image.stem, {})[target] = row['objects']['bbox']
    assert set(by_image) <= train and not set(by_image) & held_out   # no val or test frame is ever shown
    shown = {'polyp': 0, 'surgical instrument': 0, 'text overlay': 0, 'green picture-in-picture box': 0}
    for img_id in train:
        g = geometry[img_id]
        labels = np.asarray(Image.open(synthetic_dataset / g['mask']['file']))
        want = {'polyp': [p['bbox'] for p in g['polyps']], 'abnormality': [p['bbox'] for p in g['polyps']],
                'surgical instrument': [i['bbox'] for i in g['instruments']],
                'text overlay': [g['text']['bbox']] if g['text'] else [],
                'green picture-in-picture box': [g['green_box']] if g['green_box'] else []}
        want = {k: sorted(v) for k, v in want.items() if v}
        assert by_image.get(img_id, {}) == want, img_id
        # and those boxes are where the generator drew the objects: each object's mask lies inside its box
        values = {'polyp': g['mask']['polyps'], 'surgical instrument': g['mask']['instruments'],
                  'text overlay': [g['mask']['text']], 'green picture-in-picture box': [g['mask']['green_box']]}
        for target, value_list in values.items():
            for value in value_list if target in want else []:
                ys, xs = np.nonzero(labels == value)
                assert any(x1 <= xs.min() and xs.max() <= x2 and y1 <= ys.min() and ys.max() <= y2
                           for x1, y1, x2, y2 in want[target]), (img_id, target)
                shown[target] += 1
    assert all(shown.values()), shown


def test_synthetic_boxes_reach_the_model_and_map_back(synthetic_dataset, tiny_model_dir, tmp_path, monkeypatch):
    """ms-swift writes the drawn boxes in the resized image's pixels; explain.grounding maps them back onto the
    frame to within the rounding of one resized pixel."""
    monkeypatch.setenv('QWENVL_BBOX_FORMAT', 'new')
    monkeypatch.setenv('MAX_PIXELS', '50176')
    from swift import get_processor, get_template
    gd.build(None, None, tmp_path / 'g.jsonl', synthetic=synthetic_dataset)
    processor = get_processor(str(tiny_model_dir), model_type='qwen2_5_vl')
    template = get_template(processor, template_type='qwen2_5_vl')
    template.set_mode('train')
    checked = 0
    for row in read_jsonl(tmp_path / 'g.jsonl'):
        enc = template.encode(json.loads(json.dumps(row)))
        answer = processor.tokenizer.decode([i for i in enc['labels'] if i != -100])
        _, gh, gw = (int(v) for v in enc['image_grid_thw'][0])
        W, H = Image.open(row['images'][0]).size
        parsed = inference_grounding.parse_boxes(answer)
        assert [b.label for b in parsed] == row['objects']['ref']
        back = [inference_grounding.map_box(b.coords, (gw * 14, gh * 14), (W, H)) for b in parsed]
        tolerance = max(W / (gw * 14), H / (gh * 14))   # one resized pixel, in frame pixels
        for got, drawn in zip(back, row['objects']['bbox']):
            assert max(abs(a - b) for a, b in zip(got, drawn)) <= tolerance + 1, (got, drawn)
            checked += 1
    assert checked >= 20


def test_synthetic_bad_inputs_one_line_errors(synthetic_dataset, tmp_path):
    cases = [(['--images-of', tmp_path / 'x.meta.jsonl'], '--images-of selects images of a --synthetic copy'),
             (['--synthetic', tmp_path], 'no geometry.jsonl'),
             (['--synthetic', synthetic_dataset, '--images-of', tmp_path / 'missing.meta.jsonl'], 'file not found')]
    for args, message in cases:
        proc = run_module('data_prep.grounding_data', *args, '--out', tmp_path / 'g.jsonl', check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith('error: ') and message in lines[-1], proc.stderr
        assert not (tmp_path / 'g.jsonl').exists()
