"""The Subtask 2 GPU benchmark's entry point runs end to end on CPU with the tiny model (the H200 numbers come from
the same code): the staged mode (before on a few rows, after on all rows, per stage, and the same content where the
method is the same) and the occlusion agreement of cheaper settings with grid 6, on synthetic images and, when
../shared is present, real frames."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO, SHARED, run_module

SMALL = str(28 * 28 * 16)


@pytest.fixture(scope='module')
def bench_data(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'data'
    run_module('bench.gpu.make_data', out, 6, '--workers', 1)
    return out


def _env():
    env = dict(os.environ, MAX_PIXELS=SMALL)
    env.pop('IMAGE_MAX_TOKEN_NUM', None)
    return env


@pytest.mark.slow
def test_agreement_of_cheaper_occlusion_settings(tiny_model_dir, bench_data, tmp_path):
    out = tmp_path / 'agreement.json'
    frames = SHARED / 'data' / 'gi-images' / 'kvasir-seg' / 'images'
    run_module('bench.gpu.task2_bench', 'agreement', tiny_model_dir, '--synthetic', bench_data, '--images', 2,
               '--variants', f'3 6@{28 * 28 * 8}', '--max-new-tokens', 2, '--out', out,
               *(['--frames', frames] if frames.is_dir() else []), env=_env())
    result = json.loads(out.read_text())
    assert set(result['sources']) == ({'synthetic', 'frames'} if frames.is_dir() else {'synthetic'})
    for source in result['sources'].values():
        assert source['images'] == 2 and set(source['variants']) == {'6', '3', f'6@{28 * 28 * 8}'}
        for name, v in source['variants'].items():
            assert v['seconds_per_image'] > 0
            if name != '6':
                assert v['spearman_mean'] is None or -1.0 <= v['spearman_mean'] <= 1.0
                assert v['maps_compared'] <= 2


# Largest heatmap cell difference (nats) allowed between the per-row path and the staged build: the same scores from
# other batch shapes (padded batches of occluded images vs the per-row path's batches); measured 0.0 here and
# 1.6e-5 on make demo's data (bench/results/task2.md, cells up to 0.16 nats; the audit rounds them to 1e-6).
CELL_TOLERANCE_NATS = 1e-4


@pytest.mark.slow
def test_staged_benchmark_before_and_after(tiny_model_dir, bench_data, tmp_path):
    """Issue 17 item 4: where the method is the same, the staged build gives the per-row path's content. Both sides
    run with the same method settings (--method-args) on the same Task 1 answers; the per-row path's first two rows
    are compared (bench.task2_bench.compare). The texts are not: issue 18 rewrote them by design; what they are made
    of (probe answers, grounding output, boxes, heatmap, confidence) is."""
    before = tmp_path / 'before'
    try:
        archive = subprocess.run(['git', '-C', str(REPO), 'archive', '88f43d9'], capture_output=True,
                                 check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip('no git history with commit 88f43d9 (the per-row path)')
    before.mkdir()
    subprocess.run(['tar', '-x', '-C', str(before)], input=archive, check=True)
    out = tmp_path / 'staged.json'
    run_module('bench.gpu.task2_bench', 'staged', tiny_model_dir, bench_data, '--rows', 3, '--calibration-rows', 4,
               '--before-tree', before, '--before-rows', 2, '--max-new-tokens', 4, '--work', tmp_path / 'work',
               '--method-args', '--grid 2 --probe-tokens 2 --grounding-tokens 2', '--out', out, env=_env())
    result = json.loads(out.read_text())
    assert result['complete'] and result['rows'] == 3 and result['calibration_rows'] == 4
    assert {'task1_inference', 'calibration_inference', 'before', 'after'} <= set(result['steps'])
    assert {'probes', 'grounding', 'occlusion', 'confidence', 'calibration', 'visuals'} <= \
        set(result['after_stages_s'])
    assert result['before']['s_per_row'] > 0 and result['before']['extrapolated_s'] > 0
    assert result['speedup_vs_before'] > 0
    content = result['content']
    assert content['rows'] == 2 and content['same_rows_and_order']
    assert content['same_answer'] == content['same_probes'] == content['same_grounding_output'] == 2
    assert content['same_boxes'] == content['same_heatmap_grid'] == 2
    assert content['max_heatmap_cell_diff_nats'] <= CELL_TOLERANCE_NATS
    assert content['max_raw_confidence_diff'] <= 1e-6
    lines = (tmp_path / 'work' / 'after' / 'bench' / 'submission_task2.jsonl').read_text().splitlines()
    assert len(lines) == 3
    # a second call finds every step done and only reports
    proc = run_module('bench.gpu.task2_bench', 'staged', tiny_model_dir, bench_data, '--rows', 3,
                      '--calibration-rows', 4, '--before-tree', before, '--before-rows', 2, '--max-new-tokens', 4,
                      '--work', tmp_path / 'work', '--out', out, env=_env())
    assert json.loads(out.read_text())['steps'] == result['steps'] and 'not finished' not in proc.stdout
