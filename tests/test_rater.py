"""Subtask 2 as the expert raters see it, on real renders checked by pixel statistics: the text names the regions the
heatmap shows, one heatmap scale with a colour bar and a threshold below which nothing is drawn, drawn boxes and
their agreement with the heatmap, the clinician-oriented text traceable to probe answers and its checked rewrite, the
README gallery and report/index.html, and a reliability diagram with counts and a histogram."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain import heatmap, narrative, pipeline, visuals
from submission import gallery

FRAME = (190, 90, 80)


def _frame(tmp_path: Path, size=(240, 180), colour=FRAME) -> Path:
    path = tmp_path / 'frame.jpg'
    Image.new('RGB', size, colour).save(path, quality=100)
    return path


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB')).astype(int)


def _maps():
    one = np.zeros((6, 6))
    one[0:2, 4:6] = [[0.9, 0.8], [0.7, 0.6]]                       # one block, upper-right
    two = np.zeros((6, 6))
    two[2:4, 0] = 0.8                                               # two side regions: their centre of mass is the
    two[2:4, 5] = 0.8                                               # centre, where nothing is hot
    four = np.zeros((6, 6))
    four[0, 0], four[0, 5], four[5, 0], four[5, 5] = 1.0, 0.9, 0.8, 0.7   # four corners
    for m in (one, two, four):
        m[2, 2] += 0.02                                             # a small effect elsewhere: never named
    return {'one': (one, ['upper-right']), 'two': (two, ['center-left', 'center-right']),
            'four': (four, ['upper-left', 'upper-right', 'lower-left', 'lower-right'])}


# ---------------------------------------------------------------- 1. the text names what the picture shows
@pytest.mark.parametrize('case', ['one', 'two', 'four'])
def test_text_names_the_hot_regions_the_picture_shows(tmp_path, case):
    cells, names = _maps()[case]
    job = visuals.RowJob(str(_frame(tmp_path)), 7, cells.tolist(), [], 'polyp', 1.0, heatmap.MIN_EFFECT_NATS,
                         str(tmp_path))
    rec = visuals.draw_row(job)
    assert [r['name'] for r in rec['regions']] == names
    total = cells.sum()
    for r in rec['regions']:
        assert r['share'] == pytest.approx(sum(cells[i, j] for i, j in r['cells']) / total)
    text = pipeline.heatmap_description(rec)
    for r in rec['regions']:
        assert f'{r["name"]} ({100 * r["share"]:.0f} %' in text
    assert not re.search(r'\bcenter\b(?!-)', text)                   # never the (empty) centre of mass
    short = pipeline.evidence_sentences([], 'polyp', rec)[0]['sentence']
    assert all(n in short for n in names) and short.startswith('Occlusion: hiding the')
    # the picture: exactly the cells with a drop >= the threshold are tinted, every named region is outlined
    px, frame = _pixels(tmp_path / '7_heatmap.png'), np.array(FRAME)
    boxes = heatmap.cell_boxes(240, 180, 6)
    lw = visuals.line_width(240, 180)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        inner = px[y1 + lw + 2:y2 - lw - 2, x1 + lw + 2:x2 - lw - 2].reshape(-1, 3)
        tinted = np.abs(inner - frame).max(axis=1) > 6
        assert tinted.all() if cells.ravel()[k] >= heatmap.MIN_EFFECT_NATS else not tinted.any(), (case, k)
    for r in rec['regions']:
        for x1, y1, x2, y2 in visuals.region_edges(6, r['cells'], 240, 180):
            mx, my = (x1 + x2) // 2, (y1 + y2) // 2
            mx, my = min(max(mx, lw), 239 - lw), min(max(my, lw), 179 - lw)
            assert tuple(px[my, mx]) == visuals.OUTLINE, (case, (mx, my))


def test_regions_use_the_dataset_position_words():
    words = {w for row in heatmap.POSITIONS for w in row}
    assert words == {'upper-left', 'upper-center', 'upper-right', 'center-left', 'center', 'center-right',
                     'lower-left', 'lower-center', 'lower-right'}
    assert heatmap.box_position([0, 0, 30, 30], 300, 300) == 'upper-left'
    assert heatmap.box_position([100, 200, 200, 300], 300, 300) == 'lower-center'
    assert heatmap.hot_regions(np.full((3, 3), 0.05)) == []          # nothing reaches the threshold


# ---------------------------------------------------------------- 2. one scale, a colour bar, a threshold
def test_one_scale_for_every_row_and_no_paint_below_the_threshold(tmp_path):
    strong, weak, none = np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3))
    strong[0, 0], weak[0, 0], none[0, 0] = 1.5, 0.3, 0.0077
    scale = heatmap.effect_scale([strong, weak, none])
    assert scale == pytest.approx(np.quantile([1.5, 0.3], heatmap.SCALE_QUANTILE))   # rows with an effect only
    frame = _frame(tmp_path, (90, 90))
    recs = [visuals.draw_row(visuals.RowJob(str(frame), i, c.tolist(), [], 'polyp', scale, 0.1, str(tmp_path)))
            for i, c in enumerate((strong, weak, none))]
    from matplotlib import colormaps
    for i, value in ((0, 1.5), (1, 0.3)):   # the tint is the shared scale's colour, not each map's own maximum
        want = np.array(FRAME) * (1 - visuals.ALPHA) + \
            np.array(colormaps['viridis'](min(1.0, value / scale))[:3]) * 255 * visuals.ALPHA
        assert np.abs(_pixels(tmp_path / f'{i}_heatmap.png')[15, 15] - want).max() <= 2
    assert np.abs(_pixels(tmp_path / '0_heatmap.png')[15, 15] - _pixels(tmp_path / '1_heatmap.png')[15, 15]).max() > 40
    # 0.0077 nats: no region changed the answer; the picture is the untouched frame and the text says so
    assert np.array_equal(_pixels(tmp_path / '2_heatmap.png'), _pixels(frame))
    assert recs[2]['changed'] is False and recs[2]['regions'] == []
    assert 'no region changed the answer' in pipeline.heatmap_description(recs[2])
    assert 'no image region changed the answer' in pipeline.evidence_sentences([], 'polyp', recs[2])[0]['sentence']
    assert f'0 to {scale:.2f} nats' in pipeline.heatmap_description(recs[0])
    # the untouched frame beside it: the dataset's JPEG bytes as they are
    assert (tmp_path / '0_frame.jpg').read_bytes() == frame.read_bytes()


def test_colour_bar_spans_the_scale_with_the_threshold_in_grey(tmp_path):
    path = tmp_path / 'scale.png'
    visuals.draw_colourbar(1.2, 0.1, path)
    px = _pixels(path)
    rows = [np.unique(px[y], axis=0).shape[0] for y in range(px.shape[0])]
    y = int(np.argmax(rows))
    assert rows[y] > 150                                       # one row crosses the whole gradient
    bar = px[y]
    grey = np.where((np.abs(bar - 204) <= 1).all(axis=1))[0]   # [0, 0.1) nats: not drawn
    from matplotlib import colormaps
    yellow = np.array(colormaps['viridis'](1.0)[:3]) * 255
    end = np.where(np.abs(bar - yellow).max(axis=1) <= 3)[0]
    assert len(grey) > 10 and len(end) > 5 and grey.max() < end.min()
    assert 0.04 < len(grey) / (end.min() - grey.min()) < 0.15   # 0.1 of 1.2 nats: about 1/12 of the bar


# ---------------------------------------------------------------- 3. boxes drawn, their agreement with the heatmap
def test_boxes_are_drawn_with_their_label_and_agreement_is_measured(tmp_path):
    frame = _frame(tmp_path, (300, 240))
    cells = np.zeros((3, 3))
    cells[1, 1], cells[2, 2] = 0.9, 0.3                      # 3/4 of the drop in the centre cell
    boxes = [{'box': [100, 80, 200, 160], 'label': 'polyp'}, {'box': [0, 0, 60, 50], 'label': ''}]
    rec = visuals.draw_row(visuals.RowJob(str(frame), 3, cells.tolist(), boxes, 'instrument', 1.0, 0.1,
                                          str(tmp_path)))
    assert rec['box_image'] == 'visuals/3_box.png'
    px = _pixels(tmp_path / '3_box.png')
    cyan = np.array(visuals.BOX_COLOUR)
    for x, y in ((100, 120), (199, 120), (150, 159), (1, 40), (58, 40)):   # edges of both boxes
        assert np.abs(px[y, x] - cyan).max() <= 2, (x, y)
    source = _pixels(frame)
    assert np.array_equal(px[120, 150], source[120, 150]) and np.array_equal(px[230, 290], source[230, 290])
    tag = px[60:80, 100:160].reshape(-1, 3)                  # the label above the first box: cyan tag, dark text
    assert (np.abs(tag - cyan).max(axis=1) <= 2).sum() > 250 and (tag.sum(axis=1) < 150).sum() > 20
    assert not (np.abs(px[60:78, 170:300] - cyan).max(axis=2) <= 2).any()   # the tag is the label's width
    below = px[50:70, 0:60].reshape(-1, 3)                   # a box on the top edge has its tag below it ...
    assert (np.abs(below - cyan).max(axis=1) <= 2).sum() > 200 and (below.sum(axis=1) < 150).sum() > 10
    assert np.array_equal(px[10:40, 10:50], source[10:40, 10:50])   # ... not over what it boxes
    assert rec['box_mass_share'] == pytest.approx(0.9 / 1.2) and rec['box_area_share'] == pytest.approx(
        (100 * 80 + 60 * 50) / (300 * 240))
    entry = pipeline.box_visual(boxes, 'instrument', rec)
    assert entry['data'] == [[100, 80, 200, 160], [0, 0, 60, 50]]
    assert 'visuals/3_box.png' in entry['description'] and '75 % of the occlusion heatmap' in entry['description']
    # no region changed the answer: no agreement claimed
    flat = visuals.draw_row(visuals.RowJob(str(frame), 4, np.zeros((3, 3)).tolist(), boxes[:1], 'polyp', 1.0, 0.1,
                                           str(tmp_path)))
    assert flat['box_mass_share'] is None and 'not measured' in pipeline.box_visual(boxes[:1], 'polyp', flat)[
        'description']


# ---------------------------------------------------------------- 4. clinician-oriented text, traceable
PROBES = [{'key': 'finding', 'question': 'q', 'answer': 'evidence of a colonic polyp'},
          {'key': 'location', 'question': 'q', 'answer': 'polyp located in the central and upper-left regions'},
          {'key': 'size', 'question': 'q', 'answer': 'polyp measuring 5 to 10 millimeters'},
          {'key': 'polyp_type', 'question': 'q', 'answer': 'paris ip'},
          {'key': 'colour', 'question': 'q', 'answer': 'none'},
          {'key': 'instrument', 'question': 'q', 'answer': 'No instruments identified'},
          {'key': 'landmark', 'question': 'q', 'answer': 'zzk qq'}]


def test_clinical_text_is_built_from_the_probe_answers():
    certainty = {'sentence': narrative.certainty_sentence(0.81, 400), 'score': 0.81}
    out = narrative.compose(PROBES, certainty, [{'sentence': 'Occlusion: x.', 'source': 'visual:heatmap'}])
    assert out['text'] == ('Finding: polyp. Location in the image: center, upper-left. Size: 5-10 mm. Morphology: '
                           'Paris Ip. Instruments: none reported. Landmark (the model\'s words): "zzk qq". Certainty: '
                           'high (confidence 0.81, calibrated on 400 held-out answers). Occlusion: x.')
    assert 'The model answers' not in out['text'] and 'Colour' not in out['text']   # a denied attribute says nothing
    for claim in out['claims']:
        if claim['source'].startswith('probe:'):
            said = PROBES[int(claim['source'].split(':')[1])]['answer']
            assert claim['evidence'] and all(span in said for span in claim['evidence']), claim
    assert [c['source'] for c in out['claims']] == ['probe:0', 'probe:1', 'probe:2', 'probe:3', 'probe:5', 'probe:6',
                                                    'confidence', 'visual:heatmap']
    assert narrative.certainty_sentence(0.3, None) == 'Certainty: low (confidence 0.30, not calibrated).'
    # an answer that denies what the finding probe names: the text says the model disagrees with itself
    noted = narrative.compose(PROBES, answer='No, there is no polyp.')
    assert noted['claims'][6] == {'sentence': 'Note: the answer is a denial, yet asked separately the model names '
                                              'polyp.', 'source': 'answer+probe:0',
                                  'evidence': ['No, there is no polyp.', 'polyp']}
    assert narrative.compose(PROBES, answer='Yes, one polyp.')['text'] == narrative.compose(PROBES)['text']
    # a denial that names things is quoted, never reworded into its opposite
    quoted = narrative.probe_sentence({'key': 'finding', 'answer': 'No polyps identified'})
    assert quoted['sentence'] == 'Finding (the model\'s words): "No polyps identified".'


def test_rewrite_is_used_only_when_it_adds_no_claim():
    notes = [c['sentence'] for c in narrative.facts(PROBES)]
    good = ('A Paris Ip polyp of 5-10 mm is seen in the center and upper-left of the image; no instruments; landmark '
            'zzk qq.')
    assert narrative.check_rewrite(good, notes) == (True, 'ok')
    for bad, reason in ((good.replace('Paris Ip', 'pedunculated Paris Ip'), 'adds morphology "pedunculated"'),
                        (good.replace('5-10 mm', '12 mm'), 'adds size "12 mm"'),
                        (good.replace('polyp', 'malignant polyp'), 'unsupported word(s): malignant'),
                        (good.replace('; no instruments', ''), 'drops a denial'),
                        (good.replace(' and upper-left', ''), 'drops location "upper-left"'),
                        (good + ' Bleeding is seen.', 'adds finding "bleeding"'),
                        ('', 'empty')):
        ok, why = narrative.check_rewrite(bad, notes)
        assert not ok and why.startswith(reason), (bad, why)
    used = narrative.compose(PROBES, rewrite=good)
    assert used['text'] == good and used['claims'][0]['source'] == 'rewrite'
    assert [c['source'] for c in used['claims'][0]['rewrites']] == ['probe:0', 'probe:1', 'probe:2', 'probe:3',
                                                                    'probe:5', 'probe:6']
    kept = narrative.compose(PROBES, rewrite=good + ' It is malignant.')
    assert kept['text'].startswith('Finding: polyp.') and kept['rewrite'] == {
        'output': good + ' It is malignant.', 'accepted': False, 'reason': 'unsupported word(s): malignant'}


# ---------------------------------------------------------------- 5. gallery and index (the browser test drives it)
def _cards(n: int) -> list[dict]:
    topics, levels = ['polyp', 'instrument', 'text', 'finding'], narrative.CERTAINTY_LEVELS
    out = []
    for i in range(n):
        score = [0.2, 0.6, 0.8, 0.95][(i // 4) % 4]
        out.append({'val_id': i, 'question': f'Is there a polyp <{i}>?', 'answer': f'yes | {i}',
                    'textual_explanation': f'Finding: polyp {i}.', 'confidence_score': score,
                    'question_class': topics[i % 4], 'certainty': narrative.certainty_level(score),
                    'frame': f'visuals/{i}_frame.jpg', 'heatmap_image': f'visuals/{i}_heatmap.png',
                    'box_image': f'visuals/{i}_box.png' if i % 3 else None, 'heatmap_changed': True,
                    'heatmap_regions': [{'name': 'upper-left', 'share': 0.5, 'nats': 1.0, 'peak_nats': 1.0}],
                    'box_mass_share': 0.4 if i % 3 else None, 'box_area_share': 0.2, 'grounding_target': 'polyp'})
    assert {c['certainty'] for c in out} == set(levels)
    return out


def test_gallery_spreads_over_topics_and_confidence_levels():
    rows = _cards(64)
    picked = gallery.pick(rows)
    assert len(picked) == 20 and [r['val_id'] for r in picked] == sorted(r['val_id'] for r in picked)
    assert {(r['question_class'], r['certainty']) for r in picked} == \
        {(r['question_class'], r['certainty']) for r in rows}            # all 16 pairs, then more
    text = gallery.readme_section(rows, picked)
    assert text.count('### val_id ') == 20 and text.count(f'![colour bar]({gallery.SCALE})') == 20
    for r in picked:
        assert f'![frame {r["val_id"]}]({r["frame"]})' in text and f'({r["heatmap_image"]})' in text
        assert (f'![box {r["val_id"]}]({r["box_image"]})' in text) == bool(r['box_image'])
    assert '&lt;3&gt;' in text and 'yes \\| 3' in text                  # question text cannot break the markdown
    assert gallery.pick(rows[:5]) == rows[:5]


def test_index_has_every_row_and_no_external_asset(tmp_path):
    rows = _cards(30)
    page = gallery.write_index(tmp_path, 'demo', rows, {'heatmap': {'scale_nats': 1.2, 'min_nats': 0.1}})
    html = page.read_text()
    assert html.count('<tr class="row"') == 30 and '30 of 30 rows' in html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(not re.match(r'[a-z]+:', r) and r.startswith('../visuals/') for r in refs), refs
    assert '<link' not in html and '@import' not in html and 'url(' not in html
    assert 'data-topic="instrument"' in html and 'data-level="very high"' in html


# ---------------------------------------------------------------- 6. calibration a rater can read
def test_reliability_diagram_shows_counts_and_a_histogram(tmp_path):
    from explain import confidence
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 300)
    y = (rng.uniform(0, 1, 300) < p).astype(float)
    path = tmp_path / 'rel.png'
    confidence.reliability_diagram(p, np.clip(p * 0.9 + 0.05, 0, 1), y, path)
    px = _pixels(path)
    assert px.shape[:2] == (700, 1000)
    lower = px[int(0.62 * 700):]                                    # the histogram panels: grey count bars
    grey = (np.abs(lower - 127).max(axis=2) <= 2).sum()
    assert grey > 2000
    assert (np.abs(px[: int(0.55 * 700)] - 127).max(axis=2) <= 2).sum() < grey / 4   # not in the top panels


def test_overlays_keep_the_lesion_visible_on_real_frames(shared_dir, tmp_path):
    """Real Kvasir-SEG frames (read in place): with every cell over the polyp hot, the heatmap keeps the lesion's
    texture (the tinted pixels follow the frame's luminance), and the drawn box leaves what it boxes as it was."""
    seg = shared_dir / 'data' / 'gi-images' / 'kvasir-seg'
    frames = sorted((seg / 'images').glob('*.jpg'))
    if not frames:
        pytest.skip(f'no Kvasir-SEG frames in {seg}')
    for frame in frames:
        with Image.open(seg / 'masks' / frame.name) as m:
            mask = np.asarray(m.convert('L')) > 128
        h, w = mask.shape
        cells = np.array([[mask[y1:y2, x1:x2].mean() for x1, y1, x2, y2 in heatmap.cell_boxes(w, h, 6)]]).reshape(6, 6)
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        rec = visuals.draw_row(visuals.RowJob(str(frame), 0, cells.tolist(), [{'box': box, 'label': 'polyp'}],
                                              'polyp', 1.0, 0.1, str(tmp_path)))
        source, heat = _pixels(frame), _pixels(tmp_path / '0_heatmap.png')
        lw = visuals.line_width(w, h)
        weights = np.array([0.299, 0.587, 0.114])
        drawn_cells = 0
        for value, (x1, y1, x2, y2) in zip(cells.ravel(), heatmap.cell_boxes(w, h, 6)):
            inner = (slice(y1 + lw + 2, y2 - lw - 2), slice(x1 + lw + 2, x2 - lw - 2))
            a, b = source[inner] @ weights, heat[inner] @ weights
            if value < 0.1:
                assert np.array_equal(heat[inner], source[inner])                 # cold cells: the frame itself
                continue
            drawn_cells += 1
            assert np.abs(heat[inner] - source[inner]).max(axis=2).mean() > 10   # the lesion's cells are tinted ...
            if a.std() > 3:                                                       # ... and its texture shows through
                assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98, frame.name
                assert 0.4 < b.std() / a.std() < 0.6                              # at (1 - ALPHA) of its contrast
        assert drawn_cells >= 4, frame.name
        assert rec['box_mass_share'] > rec['box_area_share']                      # the heat sits in the box
        drawn = _pixels(tmp_path / '0_box.png')
        inner = (slice(box[1] + lw + 1, box[3] - lw - 1), slice(box[0] + lw + 1, box[2] - lw - 1))
        hidden = (drawn[inner] != source[inner]).any(axis=2).mean()           # the box hides nothing inside it,
        assert hidden < (0.03 if box[3] - box[1] > h - 40 else 1e-9), frame.name  # but its tag when no room is left
