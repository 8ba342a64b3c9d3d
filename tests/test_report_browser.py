"""report/index.html in a real headless Chromium (Debian's chromium, installed by `make browser` / .ci/run; skipped
with the reason when none is found): built from real renders of 24 rows (frames, drawn boxes, heatmaps on one scale,
the colour bar, the composed texts), it loads offline from its folder, every image decodes, every row and its text
are on the page, the topic filter shows exactly that topic's rows, and a screenshot is kept in build/test-artifacts/.
The full tiny-model build's page is checked the same way in tests/test_task2.py."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from explain import heatmap, narrative, pipeline, visuals
from submission import gallery
from tests.browser import find_chromium, load_report

N_ROWS = 24
QUESTIONS = ['Is there a polyp in the image?', 'Are there any instruments in the image?', 'Is there text?',
             'Are there any abnormalities in the image?']


def _frame(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    im = Image.new('RGB', (320, 256), (170 + seed % 40, 80, 70))
    x, y = int(rng.integers(20, 220)), int(rng.integers(20, 150))
    ImageDraw.Draw(im).ellipse([x, y, x + 80, y + 80], fill=(230, 150, 150))   # a "lesion"
    im.save(path, quality=90)


@pytest.fixture(scope='module')
def report_folder(tmp_path_factory):
    """A submission-shaped folder: visuals/ drawn by explain.visuals, report/index.html by submission.gallery."""
    root = tmp_path_factory.mktemp('report')
    (root / 'visuals').mkdir()
    src = root / 'src'
    src.mkdir()
    rng = np.random.default_rng(0)
    all_cells = []
    for i in range(N_ROWS):
        cells = np.zeros((4, 4))
        if i % 4:                                  # every 4th row: no region changed the answer
            cells[rng.integers(0, 4), rng.integers(0, 4)] = rng.uniform(0.2, 2.0)
        all_cells.append(cells)
    scale = heatmap.effect_scale(all_cells)
    rows = []
    for i, cells in enumerate(all_cells):
        _frame(src / f'{i}.jpg', i)
        boxes = [{'box': [40, 30, 160, 140], 'label': 'polyp'}] if i % 3 else []
        v = visuals.draw_row(visuals.RowJob(str(src / f'{i}.jpg'), i, cells.tolist(), boxes, 'polyp', scale, 0.1,
                                            str(root / 'visuals')))
        score = [0.3, 0.6, 0.8, 0.95][i % 4]
        certainty = {'sentence': narrative.certainty_sentence(score, 100), 'score': score}
        probes = [{'key': 'finding', 'question': 'q', 'answer': f'a pedunculated polyp number {i}'},
                  {'key': 'location', 'question': 'q', 'answer': 'lower-left'}]
        entry = pipeline.describe(probes, {'boxes': boxes, 'target': 'polyp'}, v, certainty)
        question = QUESTIONS[i % len(QUESTIONS)]
        rows.append({'val_id': i, 'question': question, 'answer': 'yes', 'confidence_score': score,
                     'textual_explanation': entry['textual_explanation'],
                     'question_class': pipeline.question_class(question), 'certainty': narrative.certainty_level(score),
                     'frame': v['frame'], 'heatmap_image': v['heatmap'], 'box_image': v['box_image'],
                     'heatmap_changed': v['changed'], 'heatmap_regions': v['regions'],
                     'box_mass_share': v['box_mass_share'], 'box_area_share': v['box_area_share'],
                     'grounding_target': 'polyp'})
    visuals.draw_colourbar(scale, 0.1, root / 'visuals' / visuals.SCALE_FILE)
    shutil.rmtree(src)                             # the page may only use what is in the folder
    index = gallery.write_index(root, 'browser-test', rows, {'heatmap': {'scale_nats': scale, 'min_nats': 0.1}})
    return root, index, rows


@pytest.fixture(scope='module')
def chromium() -> str:
    executable, why = find_chromium()
    if not executable:
        pytest.skip(why)
    return executable


def test_report_page_in_headless_chromium(chromium, report_folder):   # chromium first: no browser, no rendering
    executable = chromium
    root, index, rows = report_folder
    page = load_report(executable, index, 'report_index.png')
    n_images = 1 + sum(3 if r['box_image'] else 2 for r in rows)          # colour bar + frame, heatmap (, box)
    assert len(page['images']) == n_images
    assert [src for src, width in page['images'] if width <= 0] == []      # every image decoded
    assert page['rows'] == N_ROWS and f'{N_ROWS} of {N_ROWS} rows' in page['count']
    assert rows[5]['textual_explanation'] in ' '.join(page['text'].split())
    topics = sorted({r['question_class'] for r in rows})
    assert page['topics'] == [''] + topics and page['levels'] == [''] + list(narrative.CERTAINTY_LEVELS)
    for topic in topics:
        n = sum(r['question_class'] == topic for r in rows)
        assert page['filtered'][topic] == {'count': f'{n} of {N_ROWS} rows', 'shown': n, 'topics': [topic]}
    with Image.open(page['screenshot']) as shot:
        assert shot.size[0] >= 1000 and shot.size[1] > 2000                 # the whole page, not a blank tab
        px = np.asarray(shot.convert('RGB'))
    assert len(np.unique(px.reshape(-1, 3)[::97], axis=0)) > 200             # pictures were drawn into it
