"""The GPU benchmarks' generated data (bench.gpu.make_data) goes through `make prepare`'s code: prepared splits with
their sidecars, which `make infer` requires, and the image sizes the recorded benchmarks used."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from bench.gpu.make_data import SIZES
from inference.predict import load_inputs
from tests.conftest import run_module


@pytest.mark.slow
def test_bench_data_is_prepared_like_make_prepare(tmp_path):
    out = tmp_path / 'bench'
    proc = run_module('bench.gpu.make_data', out, '12', '--test', '6', '--val', '3', '--workers', '1', timeout=600)
    assert json.loads(proc.stdout.strip().splitlines()[-1])['n'] == 12
    prompts, metas, refs = load_inputs(str(out / 'swift' / 'task1_public-original.jsonl'))   # sidecar present
    assert len(prompts) == 6 and all(m['index'] == i for i, m in enumerate(metas))
    train, train_metas, _ = load_inputs(str(out / 'swift' / 'train-original.jsonl'))
    assert len(train) == 12                                      # the training benchmarks' epoch: N rows exactly
    assert len(load_inputs(str(out / 'swift' / 'val-original.jsonl'))[0]) == 3
    for prompt in train:
        with Image.open(prompt['images'][0]) as im:
            assert im.size in SIZES and im.format == 'JPEG'
    assert {m['img_id'] for m in metas} <= {f'bench_{i:05d}' for i in range(15)}
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['counts']['rows']['task1_public'] == 6


@pytest.mark.slow
def test_vllm_bench_driver_runs_the_transformers_stages_on_cpu(tiny_model_dir, tmp_path):
    """The comparison driver end to end where it can run here (vLLM stages need the GPU machine): each stage in its
    own process on the prepared task1_public split, a table, a results JSON with the answers compared."""
    data = tmp_path / 'bench'
    run_module('bench.gpu.make_data', data, '6', '--test', '4', '--val', '2', '--workers', '1', timeout=600)
    out = tmp_path / 'results' / 'vllm_bench.json'
    proc = run_module('bench.gpu.vllm_bench', tiny_model_dir, data, '--n', '3', '--max-new-tokens', '2',
                      '--stages', 'tf,medvqa', '--work', tmp_path / 'work', '--out', out, timeout=900)
    result = json.loads(out.read_text())
    tf, medvqa = result['stages']
    assert (tf['stage'], tf['rc'], tf['items']) == ('tf', 0, 3) and tf['timing']['backend'] == 'transformers'
    assert tf['end_to_end_s'] >= tf['startup_s'] > 0 and tf['items_per_s'] > 0
    assert (medvqa['stage'], medvqa['rc'], medvqa['items']) == ('medvqa', 0, 3)
    assert '| tf | 3 |' in proc.stdout and '| medvqa | 3 |' in proc.stdout
