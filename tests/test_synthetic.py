"""The synthetic local copy: layout, exact official schema, determinism, and answers true to the drawn images."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep import schema, synthetic

SPLIT_FILES = {s: f'data/{s}-00000-of-00001.parquet' for s in ('train', 'test')}
ATOMIC_CLASS = {q: c for c, (q, _, _) in synthetic.ATOMIC.items()}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _rows(root: Path, split: str) -> list[dict]:
    return pq.read_table(root / SPLIT_FILES[split]).to_pylist()


def _geometry(root: Path) -> dict[str, dict]:
    return {g['img_id']: g for g in map(json.loads, (root / 'geometry.jsonl').read_text().splitlines())}


@pytest.fixture(scope='module')
def copies(tmp_path_factory):
    base = tmp_path_factory.mktemp('syn')
    started = time.perf_counter()
    a = synthetic.generate(base / 'a', n_images=24, seed=0)
    seconds = time.perf_counter() - started
    return {'a': a, 'a2': synthetic.generate(base / 'a2', n_images=24, seed=0),
            'b': synthetic.generate(base / 'b', n_images=24, seed=1), 'seconds': seconds}


def test_cli_writes_the_design_layout(synthetic_dataset):
    for rel in (*SPLIT_FILES.values(), 'geometry.jsonl'):
        assert (synthetic_dataset / rel).is_file(), rel
    geometry = _geometry(synthetic_dataset)
    assert len(geometry) == 24
    for img_id in geometry:
        assert (synthetic_dataset / 'images' / f'{img_id}.jpg').is_file()
    assert not list(synthetic_dataset.rglob('*.tmp'))


def test_same_seed_same_bytes_other_seed_differs(copies):
    a, a2, b = _files(copies['a']), _files(copies['a2']), _files(copies['b'])
    assert a == a2
    assert a.keys() != b.keys()  # other img_ids
    assert a[SPLIT_FILES['test']] != b[SPLIT_FILES['test']]


def test_cli_in_another_process_writes_the_same_bytes(copies, synthetic_dataset):
    """conftest's copy comes from `python -m data_prep.synthetic --images 24 --seed 0` (another hash seed)."""
    assert _files(synthetic_dataset) == _files(copies['a'])


def test_fast(copies):
    assert copies['seconds'] < 10, copies['seconds']


def test_schema_equals_the_official_parquet(copies, shared_dir):
    real = pq.read_schema(shared_dir / 'data/kvasir-vqa-x1/train-subset.parquet')
    for split in SPLIT_FILES:
        ours = pq.read_schema(copies['a'] / SPLIT_FILES[split])
        assert ours.names == real.names
        for name in real.names:
            assert ours.field(name).type == real.field(name).type, name


def test_rows_are_valid_and_cover_every_complexity(copies):
    root = copies['a']
    for split in SPLIT_FILES:
        rows = _rows(root, split)
        for i, row in enumerate(rows, 1):
            schema.validate_row(row, split, i)
            assert len(row['img_id']) == 25 and row['img_id'].startswith('c') and row['img_id'].isalnum()
            atomic = json.loads(row['original'])
            assert row['complexity'] == len(row['question_class']) == len(atomic)
            assert [ATOMIC_CLASS[p['q']] for p in atomic] == row['question_class']
            assert (root / row['image']).is_file() and row['image'] == f'images/{row["img_id"]}.jpg'
        assert {r['complexity'] for r in rows} == {1, 2, 3}
        assert not schema.find_duplicates(rows)


def test_some_test_images_are_also_in_train_most_not(copies):
    train = {r['img_id'] for r in _rows(copies['a'], 'train')}
    test = {r['img_id'] for r in _rows(copies['a'], 'test')}
    shared = train & test
    assert 0 < len(shared) < len(test) / 2
    assert not {(r['img_id'], r['question']) for r in _rows(copies['a'], 'train')} & \
        {(r['img_id'], r['question']) for r in _rows(copies['a'], 'test')}


def test_atomic_answers_match_the_geometry(copies):
    geometry = _geometry(copies['a'])
    checked = set()
    for split in SPLIT_FILES:
        for row in _rows(copies['a'], split):
            g = geometry[row['img_id']]
            assert split in g['splits']
            for pair in json.loads(row['original']):
                cls, a = ATOMIC_CLASS[pair['q']], pair['a']
                checked.add(cls)
                if cls == 'polyp_count':
                    assert a == str(len(g['polyps']))
                elif cls == 'instrument_count':
                    assert a == str(len(g['instruments']))
                elif cls == 'text_presence':
                    assert a == ('yes' if g['text'] else 'no')
                elif cls == 'box_artifact_presence':
                    assert a == ('yes' if g['green_box'] else 'no')
                elif cls == 'abnormality_color':
                    assert set(a.split('; ')) == {p['color'] for p in g['polyps']}
                elif cls == 'polyp_size':
                    assert a == ('none' if not g['polyps'] else a) and set(a.split(';')) <= \
                        ({p['size'] for p in g['polyps']} or {'none'})
                elif cls == 'abnormality_location':
                    cells = {c for p in g['polyps'] for c in synthetic.grid_cells(p['bbox'], g['width'], g['height'])}
                    assert set(a.split('; ')) == cells
                elif cls == 'instrument_presence':
                    assert a == ('; '.join(i['name'] for i in g['instruments']) or 'none')
    assert {'polyp_count', 'text_presence', 'box_artifact_presence', 'abnormality_location'} <= checked


def test_grid_cells_follow_the_dataset_naming():
    assert synthetic.grid_cells([0, 0, 10, 10], 300, 300) == ['upper-left']
    assert synthetic.grid_cells([140, 140, 160, 160], 300, 300) == ['center']
    assert synthetic.grid_cells([0, 0, 300, 300], 300, 300) == sorted(
        ['center', 'center-left', 'center-right', 'lower-center', 'lower-left', 'lower-right', 'upper-center',
         'upper-left', 'upper-right'])


def test_geometry_is_what_the_pixels_show(copies):
    """The boxes in geometry.jsonl hold the drawn things: polyp colours, the green box, white text."""
    seen = {'polyp': 0, 'green': 0, 'no_green': 0, 'text': 0, 'no_text': 0}
    for g in _geometry(copies['a']).values():
        px = np.asarray(Image.open(copies['a'] / 'images' / f'{g["img_id"]}.jpg').convert('RGB'), np.int32)
        assert px.shape[:2] == (g['height'], g['width'])
        corner = px[g['height'] - 60:g['height'] - 10, 10:60]
        greenish = ((corner[..., 1] > 150) & (corner[..., 0] < 120)).sum()
        if g['green_box']:
            seen['green'] += 1
            assert greenish > 0
        else:
            seen['no_green'] += 1
            assert greenish == 0
        top = px[8:30, 8:60]
        white = (top.min(axis=2) > 220).sum()
        if g['text']:
            seen['text'] += 1
            assert white > 20
        else:
            seen['no_text'] += 1
            assert white == 0
        for p in g['polyps']:
            if any(synthetic._overlaps(p['bbox'], i['bbox'], 0) for i in g['instruments']):
                continue
            x1, y1, x2, y2 = p['bbox']
            cx, cy = (x1 + x2) // 2, y1 + (y2 - y1) * 2 // 5  # inside the head, below the highlight
            patch = px[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3).mean(axis=0)
            assert np.abs(patch - synthetic.POLYP_RGB[p['color']]).max() < 45, (g['img_id'], p, patch)
            seen['polyp'] += 1
    assert all(seen.values()), seen


def test_bad_arguments_are_one_line_exit_2(tmp_path):
    from tests.conftest import run_module
    proc = run_module('data_prep.synthetic', '--out', tmp_path / 'x', '--images', '1', check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ['error: --images: need at least 2 images, got 1']
    assert not (tmp_path / 'x').exists()


def test_drawing_in_worker_processes_writes_the_same_bytes(copies, tmp_path):
    """The frames are drawn by a process pool (24 images >= 4 per worker) from draws made in one process."""
    spread = synthetic.generate(tmp_path / 'w', n_images=24, seed=0, workers=3)
    assert _files(spread) == _files(copies['a'])


def _interior(mask: np.ndarray) -> np.ndarray:
    """The mask without its outer 2 pixels (the frame is blurred there)."""
    from scipy import ndimage
    return ndimage.binary_erosion(mask, iterations=2)


def test_masks_hold_exactly_the_drawn_objects(copies):
    """masks/<img_id>.png: each polyp and instrument where the frame shows it, text and green box rectangles."""
    root, seen = copies['a'], {'polyp': 0, 'instrument': 0, 'text': 0, 'green_box': 0}
    for g in _geometry(root).values():
        labels = np.asarray(Image.open(root / g['mask']['file']))
        px = np.asarray(Image.open(root / 'images' / f'{g["img_id"]}.jpg').convert('RGB'), np.int32)
        assert labels.shape == px.shape[:2] and labels.dtype == np.uint8
        names = g['mask']
        used = set(np.unique(labels)) - {0}
        assert used <= set(names['polyps'] + names['instruments'] + [names['text'], names['green_box']])
        assert len(names['polyps']) == len(g['polyps']) and len(names['instruments']) == len(g['instruments'])
        for p, value in zip(g['polyps'], names['polyps']):
            ys, xs = np.nonzero(labels == value)
            x1, y1, x2, y2 = p['bbox']
            assert len(xs) and x1 <= xs.min() and xs.max() <= x2 and y1 <= ys.min() and ys.max() <= y2
            if any(synthetic._overlaps(p['bbox'], i['bbox'], 0) for i in g['instruments']):
                continue
            # unhidden: the drawn pixels fill the box (an ellipse: pi/4 of it, a flat one a little less)
            assert xs.min() == x1 and ys.min() == y1 and xs.max() >= x2 - 1 and ys.max() >= y2 - 1
            inside = px[_interior(labels == value)]
            assert np.abs(np.median(inside, axis=0) - synthetic.POLYP_RGB[p['color']]).max() < 40, (p, inside.mean(0))
            seen['polyp'] += 1
        for ins, value in zip(g['instruments'], names['instruments']):
            shown = labels == value
            ys, xs = np.nonzero(shown)
            x1, y1, x2, y2 = ins['bbox']
            assert len(xs) and x1 <= xs.min() and xs.max() <= x2 and y1 <= ys.min() and ys.max() <= y2
            overlaid = [b for b in (g['text'] and g['text']['bbox'], g['green_box']) if b]
            if not any(synthetic._overlaps(ins['bbox'], b, 0) for b in overlaid):   # the box is the drawn extent
                assert [xs.min(), ys.min(), xs.max(), ys.max()] == ins['bbox']
            grey = px[_interior(shown)]
            if len(grey):   # metal: grey, unlike the pink mucosa around it
                spread = np.median(grey.max(axis=1) - grey.min(axis=1))
                assert spread < 30, (ins, spread)
                seen['instrument'] += 1
        for key, box in (('text', g['text'] and g['text']['bbox']), ('green_box', g['green_box'])):
            if not box:
                assert names[key] is None
                continue
            ys, xs = np.nonzero(labels == names[key])
            x1, y1, x2, y2 = box
            end = 0 if key == 'text' else 1   # text: [x1, x2) of the pasted glyphs; the green box includes x2
            assert (xs.min(), ys.min(), xs.max() + 1 - end, ys.max() + 1 - end) == (x1, y1, x2, y2)
            seen[key] += 1
        # nothing behind the dark round border but the overlays drawn on top of it
        behind = labels[synthetic._field_of_view(g['width'], g['height']) > synthetic.FIELD_OF_VIEW]
        assert set(np.unique(behind)) <= {0, names['text'], names['green_box']}
    assert all(seen.values()), seen
