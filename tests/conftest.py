"""Shared fixtures: the tiny real Qwen2.5-VL (and Qwen3-VL, Gemma 3 on request), a small synthetic Kvasir-VQA-x1 copy,
and ../shared when present."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
