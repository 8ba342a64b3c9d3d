"""The GPU benchmark's measuring callback (bench/gpu/swift_plugin.py) runs inside ms-swift's trainer on the tiny CPU
recipe and writes a record whose host-side batch shapes agree with the token and patch counts taken on the device."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_module
from tests.conftest import RECIPE, cpu_env, write_vqa_data


@pytest.mark.slow
def test_bench_perf_records_every_step(tiny_model_dir, tmp_path):
    data = write_vqa_data(tmp_path / 'data', n_train=8)
    env = {**cpu_env(), 'BENCH_OUT': str(tmp_path / 'logs'), 'BENCH_NAME': 'tiny', 'BENCH_WARMUP': '1'}
    run_module('training.launch', '--recipe', RECIPE, '--data', data, '--run', tmp_path / 'run',
               '--model', tiny_model_dir, '--', '--max_steps', '4', '--save_strategy', 'no', '--eval_strategy', 'no',
               '--dataloader_num_workers', '1', '--external_plugins', 'bench/gpu/swift_plugin.py',
               '--callbacks', 'bench_perf', 'vit_packed', env=env, timeout=600)
    perf = json.loads((tmp_path / 'logs' / 'perf_tiny.json').read_text())
    assert perf['steps'] == 4 and perf['steady_steps'] == '2..4' and perf['s_per_step'] > 0
    assert sorted(perf['step_s']) == sorted(perf['wait_s']) == ['2', '3', '4']   # step 1 has no previous end
    assert all(w >= 0 for w in perf['wait_s'].values())
    shapes = perf['shapes']
    assert sorted(shapes) == ['1', '2', '3', '4']
    batch = perf['batch_per_step']
    samples = batch * 4
    # padded length and patch rows read from the batch on the host == what the device counted
    assert perf['padded_tokens_per_sample'] == pytest.approx(sum(batch * s for s, _ in shapes.values()) / samples)
    assert perf['vit_patches_per_sample'] == pytest.approx(sum(p for _, p in shapes.values()) / samples)
    assert 0 < perf['label_tokens_per_sample'] < perf['tokens_per_sample'] <= perf['padded_tokens_per_sample']
    assert perf['triton_compiles'] == [] and perf['compile_times'] == {}   # CPU: no Triton kernel, nothing compiled
