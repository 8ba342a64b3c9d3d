"""The dependency sets: the GPU set is the one that ran on an H200, its lock agrees with the requirement files, the CPU
and GPU sets share every pin, and the make targets run on a Python that already holds the stack (SETUP=none)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('check_stack', REPO / 'scripts' / 'check_stack.py')
check_stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_stack)

GPU_FILES = ('requirements.txt', 'requirements-base.txt', 'requirements-dev.txt')
# What trained at 40 % MFU and served vLLM on the H200 (docs/benchmarks.md, "GPU software"): the default GPU set
RAN_ON_H200 = {'torch': '2.11.0', 'torchvision': '0.26.0', 'vllm': '0.26.0', 'transformers': '5.17.0',
               'ms-swift': '4.6.0', 'deepspeed': '0.19.8', 'liger-kernel': '0.8.5', 'peft': '0.20.0',
               'trl': '0.29.1', 'datasets': '4.8.4', 'accelerate': '1.15.0', 'qwen-vl-utils': '0.0.14'}


def lock_pins() -> dict[str, str | None]:
    return check_stack.read_requirements(REPO / check_stack.LOCK)


def test_gpu_set_is_the_one_that_ran_on_the_h200():
    gpu = check_stack.read_requirements(REPO / 'requirements.txt')
    assert {k: gpu.get(k) for k in RAN_ON_H200} == RAN_ON_H200
    assert lock_pins()['vllm'] == '0.26.0' and lock_pins()['torch'] == '2.11.0'


def test_lock_agrees_with_the_requirement_files():
    lock = lock_pins()
    wanted = {}
    for name in ('requirements.txt', 'requirements-dev.txt'):
        wanted.update(check_stack.read_requirements(REPO / name))
    missing = sorted(set(wanted) - set(lock))
    assert not missing, f'in the requirement files but not in the lock: {missing} (run scripts/lock.sh)'
    differ = {k: (v, lock[k]) for k, v in wanted.items() if v is not None and lock[k] != v}
    assert not differ, f'pinned vs locked: {differ} (run scripts/lock.sh)'
    assert all(v for v in lock.values()), 'every locked package has an exact version'


def test_lock_was_made_from_the_current_requirement_files():
    digest = hashlib.sha256(b''.join((REPO / f).read_bytes() for f in GPU_FILES)).hexdigest()[:16]
    header = (REPO / check_stack.LOCK).read_text(encoding='utf-8').splitlines()[:4]
    assert any(f'inputs sha256: {digest}' in line for line in header), \
        'requirements changed since the lock was made: run scripts/lock.sh'
    assert any('--python-version 3.12' in line and 'x86_64' in line for line in header)


def test_cpu_and_gpu_sets_share_every_pin():
    cpu = check_stack.read_requirements(REPO / 'requirements-cpu.txt')
    for gpu_file in ('requirements.txt', 'requirements-gpu-next.txt'):
        gpu = check_stack.read_requirements(REPO / gpu_file)
        shared = set(cpu) & set(gpu) - {'torch', 'torchvision'}
        assert shared >= {'transformers', 'ms-swift', 'datasets', 'peft', 'trl', 'accelerate'}
        assert {k: cpu[k] for k in shared} == {k: gpu[k] for k in shared}, gpu_file
    # the CPU set follows the GPU set's torch (measured: docs/benchmarks.md, "GPU software"); it adds nothing else
    gpu = check_stack.read_requirements(REPO / 'requirements.txt')
    assert (cpu['torch'], cpu['torchvision']) == (gpu['torch'], gpu['torchvision'])
    base = set(check_stack.read_requirements(REPO / 'requirements-base.txt'))
    assert set(cpu) - base <= {'torch', 'torchvision', 'pytest'}


def test_read_requirements_follows_includes_and_extras(tmp_path):
    (tmp_path / 'base.txt').write_text('Foo_Bar==1.2  # why\nbaz[x,y]==3; python_version > "3.8"\nqux\n')
    (tmp_path / 'top.txt').write_text('--index-url https://example.invalid\n-r base.txt\ntorch==2.11.0\n')
    assert check_stack.read_requirements(tmp_path / 'top.txt') == {
        'foo-bar': '1.2', 'baz': '3', 'qux': None, 'torch': '2.11.0'}
    assert check_stack.matches('2.11.0', '2.11.0+cu130') and not check_stack.matches('2.11.0', '2.11.1')
    assert not check_stack.matches(None, None)


def test_stack_check_reports_this_python():
    """`make stack` on the CPU venv: the CPU set matches; the GPU set names vLLM as missing and exits 1."""
    run = lambda s: subprocess.run([sys.executable, 'scripts/check_stack.py', '--set', s], cwd=REPO,
                                   capture_output=True, text=True)
    cpu = run('cpu')
    assert cpu.returncode == 0, cpu.stdout
    gpu = run('gpu')
    assert gpu.returncode == 1
    assert any(line.split()[:1] == ['vllm'] and 'MISSING' in line for line in gpu.stdout.splitlines())



def test_import_check_covers_every_family_and_vllm_where_pinned():
    """--imports loads each family's modelling code; the GPU set adds vLLM's model module per family."""
    from common.model_family import FAMILIES
    cpu = check_stack.import_targets(check_stack.read_requirements(REPO / 'requirements-cpu.txt'))
    gpu = check_stack.import_targets(check_stack.read_requirements(REPO / 'requirements.txt'))
    assert not any(m.startswith('vllm') for m in cpu)
    assert {f'vllm.model_executor.models.{f.vllm_module}' for f in FAMILIES.values()} <= set(gpu)
    assert {'vllm.model_executor.models.qwen3_vl', 'vllm.model_executor.models.gemma3_mm'} <= set(gpu)
    assert set(cpu) < set(gpu) and 'swift.infer_engine.vllm_engine' in gpu


def test_import_check_imports_for_real(tmp_path):
    """On the CPU venv every import of the CPU set succeeds; a broken ms-swift ahead on the path fails it, by name."""
    run = lambda env: subprocess.run([sys.executable, 'scripts/check_stack.py', '--set', 'cpu', '--imports'],
                                     cwd=REPO, capture_output=True, text=True, env=env)
    good = run(os.environ.copy())
    assert good.returncode == 0, good.stdout + good.stderr
    assert 'transformers.models.gemma3.modeling_gemma3' in good.stdout and '5 of 5 import' in good.stdout
    broken = tmp_path / 'swift'
    broken.mkdir()
    (broken / '__init__.py').write_text('raise ImportError("a wheel is missing")\n')
    bad = run({**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert bad.returncode == 1
    rows = {line.split()[0]: line for line in bad.stdout.splitlines() if line.startswith('swift.')}
    assert 'NO: ImportError: a wheel is missing' in rows['swift.template'], bad.stdout
    assert '2 fail' in bad.stdout

def _make(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(['make', '--no-print-directory', *args], cwd=REPO, capture_output=True, text=True,
                          env=env or os.environ.copy())


def test_setup_none_never_installs(tmp_path):
    """SETUP=none: no venv stamp, no setup.sh, PY as given — the targets run on a Python that holds the stack."""
    venv = tmp_path / 'no-venv'
    dry = _make('-n', 'infer', 'score', 'SETUP=none', f'VENV={venv}').stdout
    assert 'setup.sh' not in dry and 'python3 -m inference.predict' in dry and 'python3 -m eval.score' in dry
    # the default still sets up a venv first
    assert 'bash scripts/setup.sh' in _make('-n', 'infer', f'VENV={venv}').stdout
    bad = _make('-n', 'infer', 'SETUP=conda')
    assert bad.returncode != 0 and 'SETUP must be venv or none' in bad.stderr


@pytest.mark.slow
def test_setup_none_runs_a_real_target(tmp_path):
    """A real target end to end with SETUP=none and this interpreter: it works and creates no venv."""
    venv = tmp_path / 'no-venv'
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    syn = _make('synthetic', 'SETUP=none', f'PY={sys.executable}', f'VENV={venv}', f'OUT={tmp_path / "syn"}',
                'IMAGES_N=8', env=env)
    assert syn.returncode == 0, syn.stderr[-2000:]
    sub = _make('subsets', 'SETUP=none', f'PY={sys.executable}', f'VENV={venv}', f'DATASET={tmp_path / "syn"}',
                f'OUT={tmp_path / "subsets"}', env=env)
    assert sub.returncode == 0, sub.stderr[-2000:]
    assert (tmp_path / 'subsets' / 'task2_val.jsonl').is_file()
    assert not venv.exists()


def _setup(venv: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', 'scripts/setup.sh'], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'VENV': str(venv), 'DEVICE': 'cpu', **env})


def test_setup_refuses_an_unknown_installer_before_creating_anything(tmp_path):
    venv = tmp_path / 'venv'
    proc = _setup(venv, INSTALLER='bogus')
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr == "error: INSTALLER must be pip or uv (got 'bogus')\n"
    assert not venv.exists()


def _recording_venv(venv: Path) -> Path:
    """A venv whose python only records its arguments: setup.sh runs for real and offline, and says what it ran."""
    log = venv / 'calls.log'
    (venv / 'bin').mkdir(parents=True)
    python = venv / 'bin' / 'python'
    python.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    python.chmod(0o755)
    return log


def test_setup_installs_with_uv_when_asked_and_pip_by_default(tmp_path):
    calls = {}
    for installer in ('uv', 'pip'):
        venv = tmp_path / installer
        log = _recording_venv(venv)
        proc = _setup(venv, INSTALLER=installer)
        assert proc.returncode == 0, proc.stderr
        assert f'into {venv} with {installer}' in proc.stdout
        calls[installer] = log.read_text().splitlines()
        assert (venv / '.medico-setup').read_text().split()[::2] == ['cpu', installer]   # set, hash, installer
    assert calls['uv'] == ['-m pip --version', '-m pip install -q --upgrade pip', '-m pip install -q uv',
                           f'-m uv pip install --python {tmp_path}/uv/bin/python -r requirements-cpu.txt '
                           '-r requirements-dev.txt', '-m eval.nltk_data']
    assert calls['pip'] == ['-m pip --version', '-m pip install -q --upgrade pip',
                            '-m pip install -r requirements-cpu.txt -r requirements-dev.txt', '-m eval.nltk_data']
    # the stamp records the set, not the installer: the same requirements are not installed again
    log = tmp_path / 'uv' / 'calls.log'
    log.unlink()
    again = _setup(tmp_path / 'uv', INSTALLER='pip')
    assert again.returncode == 0 and 'is up to date (cpu set)' in again.stdout
    assert log.read_text().splitlines() == ['-m eval.nltk_data']
