"""Shared fixtures: the tiny real Qwen2.5-VL (and Qwen3-VL, Gemma 3 on request), a small synthetic Kvasir-VQA-x1 copy,
and ../shared when present."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('MEDICO_SHARED', REPO.parent / 'shared'))

# Tests never reach a hub.
for _k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE', 'MODELSCOPE_OFFLINE'):
    os.environ[_k] = '1'
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')


def run_module(module: str, *args: str, cwd: Path = REPO, check: bool = True, env: dict | None = None,
               timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repository root, as the Makefile does."""
    proc = subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=cwd, env=env or os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{module} {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """../shared (third-party data, read in place). Tests that need it skip when it is absent."""
    if not (SHARED / 'data').is_dir():
        pytest.skip(f'{SHARED} not present')
    return SHARED


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialised Qwen2.5-VL with the real Qwen tokenizer, built offline."""
    out = tmp_path_factory.mktemp('tiny') / 'tiny-qwen2.5-vl'
    run_module('training.tiny_model', '--out', out)
    return out


@pytest.fixture(scope='session')
def tiny_model_of(tmp_path_factory, request):
    """tiny_model_of(arch) -> a tiny random model of that architecture (qwen2_5_vl, qwen3_vl, gemma3), built once."""
    built = {}

    def get(arch: str) -> Path:
        if arch == 'qwen2_5_vl':
            return request.getfixturevalue('tiny_model_dir')
        if arch not in built:
            out = tmp_path_factory.mktemp('tiny') / f'tiny-{arch}'
            run_module('training.tiny_model', '--out', out, '--arch', arch)
            built[arch] = out
        return built[arch]

    return get


@pytest.fixture(scope='session')
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small synthetic Kvasir-VQA-x1 local copy (parquet + images + geometry.jsonl)."""
    out = tmp_path_factory.mktemp('synthetic') / 'kvasir-vqa-x1-synthetic'
    run_module('data_prep.synthetic', '--out', out, '--images', '24', '--seed', '0')
    return out


RECIPE = 'recipes/tiny/qwen2_5_vl_lora_cpu.args'


def write_vqa_data(out: Path, n_train: int = 12, n_val: int = 4) -> Path:
    """A small prepared-data folder like data_prep writes: images + swift/{train,val}-original.jsonl."""
    rng = random.Random(0)
    (out / 'images').mkdir(parents=True, exist_ok=True)
    (out / 'swift').mkdir(exist_ok=True)
    rows = []
    for i in range(n_train + n_val):
        size = rng.choice([(96, 80), (120, 96), (80, 112)])
        img = Image.new('RGB', size, (rng.randint(150, 220), rng.randint(40, 90), rng.randint(60, 110)))
        polyp = i % 2 == 0
        if polyp:
            x, y = rng.randint(5, size[0] - 40), rng.randint(5, size[1] - 40)
            ImageDraw.Draw(img).ellipse((x, y, x + 30, y + 30), fill=(235, 200, 130))
        path = out / 'images' / f'img{i:03d}.jpg'
        img.save(path)
        answer = 'Yes, a polyp is visible.' if polyp else 'No polyp is visible.'
        rows.append({'messages': [{'role': 'user', 'content': '<image>Is there a polyp in the image?'},
                                  {'role': 'assistant', 'content': answer}], 'images': [str(path.resolve())]})
    for split, part in (('train', rows[:n_train]), ('val', rows[n_train:])):
        (out / 'swift' / f'{split}-original.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in part))
    return out


def cpu_env() -> dict:
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': ''}
    for k in ('NPROC_PER_NODE', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'MAX_PIXELS', 'MIN_PIXELS'):
        env.pop(k, None)
    return env


@pytest.fixture(scope='session')
def trained_run(tiny_model_dir, tmp_path_factory):
    """(data dir, run dir) after 4 LoRA steps of the tiny recipe (tests/test_sft.py checks it; the reliability suite
    exports copies of it). Tests that add to it (resume) run after those that only read it."""
    root = tmp_path_factory.mktemp('sft')
    data, run = write_vqa_data(root / 'data'), root / 'run'
    proc = run_module('training.launch', '--recipe', RECIPE, '--data', data, '--run', run, '--model', tiny_model_dir,
                      env=cpu_env(), timeout=600)
    assert ' sft ' in proc.stdout.splitlines()[0]
    # the recipe's speed callbacks ran inside ms-swift's trainer: 2 layers x 7 adapted projections
    assert '[training] lora_fused: 14 LoRA linears' in proc.stdout + proc.stderr
    assert '[training] vit_mlp_pad: no vision MLP to pad' in proc.stdout + proc.stderr   # tiny width 128 is aligned
    return data, run
