"""`make sft` counts the training samples longer than --max_length at the recipe's MAX_PIXELS (ms-swift drops them
without a word); the count uses the same lengths as ms-swift's own encoding."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_module
from training.length_check import load_tokenizer, sample_lengths

RECIPE = 'recipes/tiny/qwen2_5_vl_lora_cpu.args'   # --max_length 512, MAX_PIXELS 50176


def write_rows(folder: Path, questions: list[str], size=(1000, 800)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / 'frame.jpg'
    Image.new('RGB', size, (180, 70, 90)).save(image)
    rows = [{'messages': [{'role': 'user', 'content': '<image>' + q}, {'role': 'assistant', 'content': 'A polyp.'}],
             'images': [str(image)]} for q in questions]
    path = folder / 'train-original.jsonl'
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (folder / 'val-original.jsonl').write_text(json.dumps(rows[0]) + '\n')
    return path


def launch(data: Path, run: Path, model: Path, env_extra: dict | None = None):
    env = {k: v for k, v in os.environ.items() if k != 'MAX_PIXELS'} | (env_extra or {})
    return run_module('training.launch', '--recipe', RECIPE, '--data', data, '--run', run, '--model', model,
                      '--dry-run', env=env)


def test_sft_warns_with_the_count_of_samples_over_max_length(tmp_path):
    # 1000 x 800 at MAX_PIXELS=50176: 224 x 196 px = 56 image tokens; a 450-word question is far over 512 tokens
    write_rows(tmp_path / 'data' / 'swift', ['Is there a polyp?'] * 9 + ['Describe the lesion in detail. ' * 90] * 3)
    proc = launch(tmp_path / 'data', tmp_path / 'run', tmp_path / 'no-model')   # tokenizer: the offline Qwen one
    assert ('warning: 3 of 12 training samples are longer than --max_length 512 at MAX_PIXELS=50176' in proc.stderr
            and 'ms-swift drops them' in proc.stderr), proc.stderr
    # at MAX_PIXELS=1003520 the frame alone takes 1044 tokens: every sample is over
    proc = launch(tmp_path / 'data', tmp_path / 'run', tmp_path / 'no-model', {'MAX_PIXELS': '1003520'})
    assert 'warning: 12 of 12 training samples are longer than --max_length 512 at MAX_PIXELS=1003520' in proc.stderr


def test_all_samples_fitting_is_said_once(tmp_path):
    write_rows(tmp_path / 'data' / 'swift', ['Is there a polyp?'] * 4)
    proc = launch(tmp_path / 'data', tmp_path / 'run', tmp_path / 'no-model')
    assert 'length check: all 4 training samples fit --max_length 512 at MAX_PIXELS=50176' in proc.stderr
    assert 'warning' not in proc.stderr


@pytest.mark.slow
def test_lengths_equal_ms_swifts_own_encoding(tiny_model_dir, tmp_path, monkeypatch):
    from swift import get_model_processor
    from swift.template import get_template

    monkeypatch.setenv('MAX_PIXELS', '50176')
    monkeypatch.delenv('IMAGE_MAX_TOKEN_NUM', raising=False)
    frames = {size: tmp_path / f'{size[0]}x{size[1]}.jpg' for size in ((600, 500), (96, 120), (40, 300))}
    for size, path in frames.items():
        Image.new('RGB', size, (120, 60, 60)).save(path)
    rows = []
    for i, (size, path) in enumerate(frames.items()):
        messages = [{'role': 'system', 'content': 'Answer briefly.'}] if i == 1 else []
        messages += [{'role': 'user', 'content': f'<image>What is {"very " * 7 * i}visible here?\nBe exact.'},
                     {'role': 'assistant', 'content': f'A polyp,  about {i + 4} mm,\n\nat 3 o\'clock.'}]
        rows.append({'messages': messages, 'images': [str(path)]})
    _, processor = get_model_processor(str(tiny_model_dir), model_type='qwen2_5_vl', load_model=False)
    template = get_template(processor, template_type='qwen2_5_vl')
    template.set_mode('train')
    swift_lengths = [len(template.encode(row)['input_ids']) for row in rows]
    for model in (tiny_model_dir, 'Qwen/Qwen2.5-VL-7B-Instruct'):   # its own tokenizer; the offline Qwen one
        assert sample_lengths(rows, 'qwen2_5_vl', 50176, load_tokenizer(str(model))) == swift_lengths
