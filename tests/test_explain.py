"""Subtask 2 machinery, checked exactly: grounding coordinates, box parsing, heatmap files, calibration maths and the
faithfulness of the composed explanation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from explain import confidence, grounding, heatmap, probing


# ---------------------------------------------------------------- grounding
def test_smart_resize_known_numbers():
    assert grounding.smart_resize(400, 480) == (392, 476)                      # rounding to multiples of 28
    assert grounding.smart_resize(400, 480, max_pixels=28 * 28 * 64) == (196, 224)  # scaled down (floor)
    assert grounding.smart_resize(20, 30, min_pixels=56 * 56) == (56, 84)      # scaled up (ceil)


def test_smart_resize_matches_the_qwen_processor():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize
    for h, w in [(400, 480), (576, 720), (1070, 1348), (256, 320), (33, 29), (500, 600)]:
        for mx in (28 * 28 * 64, 1003520, 12845056):
            assert grounding.smart_resize(h, w, max_pixels=mx) == hf_smart_resize(h, w, max_pixels=mx), (h, w, mx)


def test_map_box_scales_back_and_clips():
    # resized 476x392 -> original 480x400 (sx = 480/476, sy = 400/392)
    assert grounding.map_box([119, 98, 238, 196], (476, 392), (480, 400)) == [120, 100, 240, 200]
    # half-size input: everything doubles; right/bottom edge beyond the image is clipped to it
    assert grounding.map_box([10, 20, 300, 250], (240, 200), (480, 400)) == [20, 40, 480, 400]
    assert grounding.map_box([-15, -5, 50, 60], (240, 200), (480, 400)) == [0, 0, 100, 120]
    # entirely outside, inverted, degenerate, non-finite: no box
    assert grounding.map_box([250, 10, 300, 50], (240, 200), (480, 400)) is None
    assert grounding.map_box([100, 10, 50, 50], (240, 200), (480, 400)) is None
    assert grounding.map_box([10, 10, 10, 50], (240, 200), (480, 400)) is None
    assert grounding.map_box([10, 10, math.nan, 50], (240, 200), (480, 400)) is None


def test_map_box_per_family_convention():
    # Qwen3-VL and Gemma 3: 0..1000 relative to the image, whatever size the model saw (resized size unused)
    for family_name in ('qwen3_vl', 'gemma3'):
        for resized in ((224, 192), (112, 112)):
            assert grounding.map_box([200, 200, 500, 600], resized, (1000, 800), family_name) == [200, 160, 500, 480]
        assert grounding.map_box([0, 0, 1000, 1000], (64, 64), (480, 400), family_name) == [0, 0, 480, 400]
        assert grounding.map_box([900, 900, 1200, 1100], (64, 64), (480, 400), family_name) == [432, 360, 480, 400]
        assert grounding.map_box([1001, 10, 1200, 50], (64, 64), (480, 400), family_name) is None
    # the same numbers as Qwen2.5-VL resized pixels (the default family) mean another box
    assert grounding.map_box([20, 20, 50, 60], (224, 196), (1000, 800)) == [89, 82, 223, 245]
    with pytest.raises(ValueError, match='unknown model family'):
        grounding.map_box([1, 1, 2, 2], (10, 10), (10, 10), 'llava')


def test_grounding_prompt_states_the_family_convention():
    qwen25 = grounding.grounding_prompt('polyp')
    assert qwen25 == grounding.grounding_prompt('polyp', 'qwen2_5_vl') and '1000' not in qwen25
    for family_name in ('qwen3_vl', 'gemma3'):
        prompt = grounding.grounding_prompt('polyp', family_name)
        assert prompt.startswith(qwen25) and 'integers from 0 to 1000, relative to the image width and height' in prompt


def test_parse_boxes_formats():
    fenced = '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "polyp"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}]\n```'
    boxes = grounding.parse_boxes(fenced)
    assert [(b.coords, b.label) for b in boxes] == [([1, 2, 30, 40], 'polyp'), ([5, 6, 7, 8], 'b')]
    bare = grounding.parse_boxes('{"bbox_2d": [10.5, 20, 30, 40], "label": "x"}')
    assert [b.coords for b in bare] == [[10.5, 20, 30, 40]]
    cut = grounding.parse_boxes('Here: [{"bbox_2d": [3, 4, 50, 60], "label": "polyp"}, {"bbox_2d": [1, 2')
    assert [(b.coords, b.label) for b in cut] == [([3, 4, 50, 60], 'polyp')]
    for bad in ('', 'json json json', '{"bbox_2d": [1, 2, 3]}', '{"box": [1, 2, 3, 4]}', '[1, 2, 3, 4]'):
        assert grounding.parse_boxes(bad) == [], bad


def test_boxes_from_output_counts_failures():
    stats = grounding.BoxStats()
    for text in ['no json here',
                 '{"bbox_2d": [10, 10, 100, 100], "label": "polyp"}',
                 '[{"bbox_2d": [500, 500, 600, 600], "label": "a"}, {"bbox_2d": [0, 0, 50, 50], "label": "b"}]',
                 '{"bbox_2d": [1, 2, 3'] :
        _, s = grounding.boxes_from_output(text, (240, 200), (480, 400))
        stats.add(s)
    assert stats.as_dict() == {'outputs': 4, 'kept': 2, 'unparseable': 2, 'out_of_bounds': 1}
    boxes, _ = grounding.boxes_from_output('{"bbox_2d": [10, 10, 100, 100], "label": "polyp"}', (240, 200),
                                           (480, 400))
    assert boxes == [{'box': [20, 20, 200, 200], 'label': 'polyp'}]


def test_iou():
    assert grounding.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert grounding.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert grounding.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0


# ---------------------------------------------------------------- heatmap
def test_heatmap_png_has_the_image_size(tmp_path):
    from explain import visuals
    image = Image.new('RGB', (123, 77), (200, 100, 90))
    cells = np.zeros((3, 3))
    cells[0, 2] = 2.0
    cells[1, 1] = 1.0
    path = tmp_path / 'v' / 'h.png'
    visuals.draw_heatmap(image, cells, 2.0, 0.1, heatmap.hot_regions(cells), path)
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ('PNG', (123, 77), 'RGB')
        px = np.asarray(im)
    assert px[12, 100, 1] > 150 and px[12, 100, 2] < 110   # the hot cell is tinted towards yellow
    assert tuple(px[70, 5]) == (200, 100, 90)              # a cold corner is the image
    assert [r['name'] for r in heatmap.hot_regions(cells)] == ['upper-right', 'center']
    assert heatmap.upsample(np.zeros((3, 3)), 10, 10).sum() == 0


def test_heatmap_cells_and_mass():
    assert heatmap.cell_boxes(10, 7, 2) == [(0, 0, 5, 4), (5, 0, 10, 4), (0, 4, 5, 7), (5, 4, 10, 7)]
    heat = np.zeros((10, 20))
    heat[2:4, 5:10] = 1.0
    heat[8, 0] = 2.0
    assert heatmap.mass_inside(heat, [5, 2, 10, 4]) == pytest.approx(10 / 12)
    assert heatmap.mass_inside(np.zeros((4, 4)), [0, 0, 2, 2]) == 0.0
    occluded = heatmap.occluded_images(Image.new('RGB', (10, 7), (10, 20, 30)), 2)
    assert len(occluded) == 4 and all(im.size == (10, 7) for im in occluded)


# ---------------------------------------------------------------- confidence
def test_raw_scores():
    assert confidence.geometric_mean_prob([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert confidence.yes_no_margin(math.log(0.6), math.log(0.2), 'yes') == pytest.approx(0.75)
    assert confidence.yes_no_margin(math.log(0.6), math.log(0.2), 'no') == pytest.approx(0.25)
    first = {'Yes': math.log(0.3), ' yes': math.log(0.3), 'No': math.log(0.2), 'Maybe': math.log(0.01)}
    assert confidence.raw_score('Is there a polyp?', 'Yes, one polyp', [-5.0], first) == pytest.approx(0.75)
    assert confidence.raw_score('Is there a polyp?', 'no polyp', [-5.0], first) == pytest.approx(0.25)
    # "no" not among the alternatives: it gets the smallest listed log-prob (0.01) as its upper bound
    assert confidence.raw_score('Is there a polyp?', 'yes', [-5.0], {'yes': math.log(0.5), 'x': math.log(0.01)}) \
        == pytest.approx(0.5 / 0.51)
    # open question, or no alternatives: geometric mean
    assert confidence.raw_score('What colour is it?', 'Yes red', [math.log(0.5)], first) == pytest.approx(0.5)
    assert confidence.raw_score('Is it red?', 'yes', [math.log(0.5)], {}) == pytest.approx(0.5)


def test_correctness_per_question_kind():
    assert confidence.is_correct('Is there a polyp?', 'No polyp visible', 'no polyps were found')
    assert not confidence.is_correct('Is there a polyp?', 'Yes, one polyp', 'No polyp seen')
    assert confidence.is_correct('What colour is the lesion?', 'Red.', 'red')
    assert confidence.is_correct('What is the size?', 'polyp of 5 to 10 mm', 'a polyp of 5 to 10 mm in size')
    assert not confidence.is_correct('What is the size?', 'larger than 20 mm', 'smaller than five millimetres')


def test_ece_and_brier_exact():
    p = [0.05, 0.15, 0.95, 0.95, 0.55, 0.55]
    y = [0, 0, 1, 0, 1, 1]
    # bins: (0,.1]: p .05 acc 0 -> .05; (.1,.2]: .15 vs 0 -> .15; (.5,.6]: .55 vs 1 -> .45; (.9,1]: .95 vs .5 -> .45
    expected = (0.05 + 0.15 + 2 * 0.45 + 2 * 0.45) / 6
    assert confidence.ece(p, y) == pytest.approx(expected)
    assert confidence.brier(p, y) == pytest.approx((0.05 ** 2 + 0.15 ** 2 + 0.05 ** 2 + 0.95 ** 2 + 2 * 0.45 ** 2) / 6)
    assert confidence.ece([1.0, 0.0], [1, 0]) == 0.0 and confidence.brier([1.0, 0.0], [1, 0]) == 0.0
    bins = confidence.reliability_bins(p, y)
    assert [b['n'] for b in bins] == [1, 1, 0, 0, 0, 2, 0, 0, 0, 2]


def _overconfident(n=4000, seed=0):
    """True probability sigmoid(z / 2.5 - 0.4); the model reports sigmoid(z): over-confident and biased."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(z / 2.5 - 0.4)))).astype(int)
    return 1 / (1 + np.exp(-z)), y


def test_temperature_scaling_recovers_the_temperature_and_improves_nll():
    p, y = _overconfident()
    cal = confidence.fit_temperature(p, y)
    assert cal.temperature == pytest.approx(2.5, rel=0.1)
    assert cal.bias / cal.temperature == pytest.approx(0.4, abs=0.12)
    after = cal(p)
    assert confidence.nll(after, y) < confidence.nll(p, y) - 0.05
    assert confidence.ece(after, y) < confidence.ece(p, y) / 2
    assert np.all(np.diff(after[np.argsort(p)]) >= -1e-12)  # ranking kept


def test_temperature_scaling_never_worse_on_degenerate_scores():
    p = np.array([2e-5, 1.9e-5, 2.1e-5, 2e-5, 1.8e-5, 2.2e-5])  # all nearly equal and tiny (a random model)
    y = np.array([0, 0, 1, 0, 0, 0])
    cal = confidence.fit_temperature(p, y)
    assert confidence.nll(cal(p), y) <= confidence.nll(p, y)
    assert np.all(np.isfinite(cal(p)))


def test_isotonic_is_monotone_and_exact_on_pav_example():
    cal = confidence.fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    # PAV pools the violating pair (0.2, 0.3) to 0.5
    assert cal([0.1, 0.2, 0.3, 0.4]).tolist() == [0.0, 0.5, 0.5, 1.0]
    p, y = _overconfident(seed=1)
    iso = confidence.fit_isotonic(p, y)
    assert confidence.brier(iso(p), y) < confidence.brier(p, y)
    assert np.all(np.diff(iso(np.linspace(0, 1, 101))) >= 0)


def test_calibrator_round_trip_and_degenerate_data(tmp_path):
    p, y = _overconfident(n=500)
    cal, report, after = confidence.calibration_report(p, y)
    assert report['after_kind'] == '2-fold cross-fitted'
    assert report['after']['nll'] < report['before']['nll']                  # holds out of sample too
    assert report['after']['nll'] == pytest.approx(confidence.nll(after, y))
    assert report['after_in_sample']['nll'] == pytest.approx(confidence.nll(cal(p), y))
    confidence.save_calibrator(cal, tmp_path / 'c.json')
    assert confidence.load_calibrator(tmp_path / 'c.json')(0.7) == pytest.approx(cal(0.7))
    assert confidence.fit([0.3, 0.9], [1, 1]).method == 'identity'   # one class: nothing to learn
    confidence.reliability_diagram(p, after, y, tmp_path / 'r.png')
    with Image.open(tmp_path / 'r.png') as im:
        assert im.format == 'PNG'


# ---------------------------------------------------------------- probing
def test_classify_and_probe_choice():
    assert probing.classify_question('What colour is the polyp?') == ['polyp', 'colour']
    assert probing.classify_question('Is there text in the image?') == ['text']
    assert probing.classify_question('Any abnormality?') == []
    keys = probing.probes_for('What is the size of the polyp?')
    assert keys[:2] == ['finding', 'location'] and 'size' not in keys  # never re-asks the question itself
    assert 'polyp_type' in keys and len(keys) <= probing.MAX_PROBES
    assert probing.probes_for('How many instruments are visible?')[2:] == ['instrument', 'instrument_location']


def test_nan_log_probs_are_a_clear_error_not_a_nan_confidence():
    from common.errors import InputError
    from explain.confidence import raw_score
    assert raw_score('What colour is it?', 'pink', [-0.5, -0.5]) == pytest.approx(math.exp(-0.5))
    with pytest.raises(InputError, match='NaN token log-prob'):
        raw_score('What colour is it?', 'pink', [-0.5, float('nan')])


# ---------------------------------------------------------------- calibration sample
def test_stratified_sample_is_proportional_seeded_and_capped():
    strata = ['polyp'] * 600 + ['instrument'] * 300 + ['text'] * 100
    picked = confidence.stratified_sample(strata, 100)
    assert len(picked) == 100 and picked == sorted(set(picked))
    counts = {s: sum(strata[i] == s for i in picked) for s in ('polyp', 'instrument', 'text')}
    assert counts == {'polyp': 60, 'instrument': 30, 'text': 10}
    assert confidence.stratified_sample(strata, 100) == picked                       # seeded
    assert confidence.stratified_sample(strata, 100, seed=1) != picked
    # largest remainders: 7 rows over 3 equal strata -> 3 + 2 + 2, never more than asked
    assert len(confidence.stratified_sample(['a'] * 10 + ['b'] * 10 + ['c'] * 10, 7)) == 7
    assert confidence.stratified_sample(strata[:50], 2000) == list(range(50))          # fewer rows than the cap
    assert confidence.stratified_sample(strata, 0) == list(range(len(strata)))         # 0 = every row
    assert confidence.question_stratum({'question_class': ['polyp_type', 'polyp_count']}) == 'polyp_count+polyp_type'
    assert confidence.question_stratum({'question': 'Is there any text in the image?'}) == 'text'


def test_calibration_inputs_need_predictions_with_log_probs(tmp_path):
    from common.errors import InputError
    row = {'question': 'Is it red?', 'prediction': 'yes', 'reference': 'no', 'token_logprobs': [-0.1],
           'first_top_logprobs': {'yes': -0.1, 'no': -2.5}}
    good = tmp_path / 'val.pred.jsonl'
    good.write_text(json.dumps(row) + '\n')
    assert confidence.calibration_inputs(good) == [row]
    old = tmp_path / 'old.pred.jsonl'
    old.write_text(json.dumps({k: v for k, v in row.items() if k != 'first_top_logprobs'}) + '\n')
    with pytest.raises(InputError, match='first_top_logprobs: missing .predictions made with --logprobs'):
        confidence.calibration_inputs(old)
    swift = tmp_path / 'val.jsonl'
    swift.write_text(json.dumps({'messages': [{'role': 'user', 'content': '<image>q'}], 'images': ['a.jpg']}) + '\n')
    with pytest.raises(InputError, match='make infer SPLIT=val-original INFER_ARGS=--logprobs'):
        confidence.calibration_inputs(swift)


# ---------------------------------------------------------------- occlusion views and cheaper maps
def test_occlusion_views():
    image = Image.new('RGB', (60, 40), (200, 100, 50))
    image.paste((0, 0, 0), (0, 0, 10, 10))
    assert [np.asarray(heatmap.View(3, c)(image)).tolist() for c in range(9)] == \
        [np.asarray(im).tolist() for im in heatmap.occluded_images(image, 3)]
    assert heatmap.View(3)(image) is image
    big = image.resize((600, 400))
    small = heatmap.View(3, None, 28 * 28 * 16)(big)                  # fewer image tokens: the processor's size
    assert small.size == (112, 84) == grounding.smart_resize(400, 600, 28 * 28 * 16)[::-1]
    occluded = np.asarray(heatmap.View(2, 3, 28 * 28 * 16)(big))
    assert occluded.shape == (84, 112, 3) and len(np.unique(occluded[42:, 56:].reshape(-1, 3), axis=0)) == 1
    cells = heatmap.cells_from_scores(-1.0, [-1.5, -0.9, -1.0, -3.0], 2)
    assert cells.tolist() == [[0.5, 0.0], [0.0, 2.0]]


def test_rank_agreement_of_cheaper_maps():
    yy, xx = np.mgrid[0:6, 0:6]
    reference = np.exp(-((yy - 1.5) ** 2 + (xx - 4.0) ** 2) / 4.0)          # one hot region, upper right
    same = heatmap.rank_agreement(reference, reference)
    assert same == {'spearman': pytest.approx(1.0), 'same_peak_cell': True}
    coarse = reference.reshape(3, 2, 3, 2).mean((1, 3))                     # grid 3 of the same map
    agree = heatmap.rank_agreement(coarse, reference)
    assert agree['spearman'] > 0.9 and agree['same_peak_cell']
    flipped = heatmap.rank_agreement(reference[:, ::-1], reference)
    assert flipped['spearman'] < 0.5 and not flipped['same_peak_cell']
    assert heatmap.rank_agreement(np.zeros((3, 3)), reference) == {'spearman': None, 'same_peak_cell': None}


# ---------------------------------------------------------------- evaluation against the synthetic geometry
def test_evaluate_geometry_against_the_drawn_objects(synthetic_dataset):
    """Exact boxes score IoU 1; a heatmap that is the object's mask puts all its mass inside the mask, a uniform one
    only the area share; a box on a frame without the object is counted apart."""
    from common.io import read_jsonl
    from explain.pipeline import evaluate_geometry, true_boxes, true_mask
    scenes = {g['img_id']: g for g in read_jsonl(synthetic_dataset / 'geometry.jsonl')}
    with_polyps = [g for g in scenes.values() if g['polyps']]
    without = next(g for g in scenes.values() if not g['polyps'])
    question = 'Where in the image is the polyp?'
    records, maps = [], {}
    for val_id, g in enumerate(with_polyps):
        boxes = true_boxes(g, question)
        records.append({'val_id': val_id, 'img_id': g['img_id'], 'question': question,
                        'visual_explanation': [{'type': 'bounding_box', 'data': boxes}]})
        labels = np.asarray(Image.open(synthetic_dataset / g['mask']['file']))
        maps[val_id] = true_mask(g, question, labels).astype(np.float64)
    records.append({'val_id': 99, 'img_id': without['img_id'], 'question': question,
                    'visual_explanation': [{'type': 'bounding_box', 'data': [[1, 1, 20, 20]]}]})
    geo = evaluate_geometry(records, scenes, maps.get, masks_root=synthetic_dataset)
    n = len(with_polyps)
    assert geo['rows_with_truth'] == geo['rows_with_box'] == n and geo['rows_without_truth_with_box'] == 1
    assert geo['mean_best_iou'] == 1.0 and geo['iou_at_0_5'] == 1.0 and geo['iou_histogram'][-1] == n
    assert geo['mean_heatmap_mass_inside_mask'] == pytest.approx(1.0) and geo['mask_rows_above_share'] == 1.0
    assert geo['mean_heatmap_mass_inside'] == pytest.approx(1.0)    # the mask lies inside the boxes
    assert 0 < geo['mean_true_mask_share'] < geo['mean_true_area_share'] < 0.5   # ellipses fill less than boxes

    shape = {r['val_id']: (scenes[r['img_id']]['height'], scenes[r['img_id']]['width']) for r in records}
    uniform = evaluate_geometry(records, scenes, lambda val_id: np.ones(shape[val_id]), masks_root=synthetic_dataset)
    assert uniform['mean_heatmap_mass_inside_mask'] == pytest.approx(uniform['mean_true_mask_share'])
    assert uniform['mask_rows_above_share'] == 0.0
    # off by a shift: IoU falls, and the histogram says where
    shifted = [{**r, 'visual_explanation': [{'type': 'bounding_box', 'data': [
        [x1 + (x2 - x1) // 2, y1, x2 + (x2 - x1) // 2, y2] for x1, y1, x2, y2 in r['visual_explanation'][0]['data']]}]}
        for r in records[:n]]
    moved = evaluate_geometry(shifted, scenes, lambda val_id: None)
    assert moved['iou_at_0_5'] == 0.0 and 0.2 < moved['iou_quantiles']['p50'] < 0.5 and moved['heatmap_rows'] == 0


def test_evaluate_geometry_counts_every_emitted_box(synthetic_dataset):
    """Issue 21's box share is over the boxes the model emits: extra boxes on a row and boxes on a row without the
    object count against it, while the per-row figures (best pair of a row with the object) do not see them."""
    from common.io import read_jsonl
    from explain.pipeline import evaluate_geometry, true_boxes
    scenes = {g['img_id']: g for g in read_jsonl(synthetic_dataset / 'geometry.jsonl')}
    question = 'Where in the image is the polyp?'
    with_polyps = [g for g in scenes.values() if g['polyps']]
    without = next(g for g in scenes.values() if not g['polyps'])
    corner = [[0, 0, 2, 2], [1, 1, 3, 3]]   # 2 x 2 px: IoU far below 0.5 with any drawn polyp
    records = [{'val_id': i, 'img_id': g['img_id'], 'question': question,
                'visual_explanation': [{'type': 'bounding_box', 'data': [true_boxes(g, question)[0], *corner]}]}
               for i, g in enumerate(with_polyps)]
    records.append({'val_id': 99, 'img_id': without['img_id'], 'question': question,   # a false positive row
                    'visual_explanation': [{'type': 'bounding_box', 'data': [[1, 1, 20, 20]]}]})
    records.append({'val_id': 98, 'img_id': 'not-in-the-synthetic-set', 'question': question,
                    'visual_explanation': [{'type': 'bounding_box', 'data': [[1, 1, 20, 20]]}]})   # no scene: skipped
    geo = evaluate_geometry(records, scenes, lambda val_id: None)
    n = len(with_polyps)
    assert geo['rows_with_box'] == n and geo['iou_at_0_5'] == 1.0 and geo['rows_without_truth_with_box'] == 1
    assert geo['emitted_boxes'] == 3 * n + 1
    assert geo['emitted_box_iou_at_0_5'] == pytest.approx(n / (3 * n + 1))
    assert geo['emitted_box_mean_iou'] < n / (3 * n + 1) + 0.01
    # only the exact boxes and the false positive: the false positive alone keeps the share below 1
    exact = [{**r, 'visual_explanation': [{'type': 'bounding_box', 'data': r['visual_explanation'][0]['data'][:1]}]}
             for r in records[:n]] + records[n:]
    geo = evaluate_geometry(exact, scenes, lambda val_id: None)
    assert geo['emitted_boxes'] == n + 1 and geo['emitted_box_iou_at_0_5'] == pytest.approx(n / (n + 1))
    assert geo['iou_at_0_5'] == 1.0
    none = evaluate_geometry([{**r, 'visual_explanation': []} for r in records], scenes, lambda val_id: None)
    assert none['emitted_boxes'] == 0 and none['emitted_box_iou_at_0_5'] is None
