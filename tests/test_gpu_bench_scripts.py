"""The one-GPU scripts, as far as they run without a GPU: bench/gpu/e2e.sh's syntax, stage list and argument check
(a bad stage name is one line and exit 2 before anything runs), and bench/gpu/vllm_bench.py's agreement count
(identical greedy answers between two stages' prediction files)."""
from __future__ import annotations

import json
import re
import subprocess

from bench.gpu import vllm_bench
from tests.conftest import REPO, cpu_env

E2E = 'bench/gpu/e2e.sh'
DEFAULT = ['model', 'data', 'prepare', 'sft', 'export', 'infer', 'score', 'submit1', 'submit2']
EXTRA = ['infer_logprobs', 'infer_lora', 'kill_parent', 'kill_group', 'too_long', 'kv_too_big']


def run_e2e(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', E2E, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_e2e_script_parses():
    proc = subprocess.run(['bash', '-n', E2E], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_e2e_stage_list(tmp_path):
    proc = run_e2e('--list', env={**cpu_env(), 'E2E': str(tmp_path / 'e2e')})
    assert proc.returncode == 0, proc.stderr
    rows = [line.split('\t') for line in proc.stdout.strip().splitlines()]
    assert rows == [['stage', 'default']] + [[s, 'yes'] for s in DEFAULT] + [[s, 'no'] for s in EXTRA]
    assert not (tmp_path / 'e2e').exists()   # nothing made
    script = (REPO / E2E).read_text()
    body = script[script.index('run_stage() {'):script.index('\n}\n', script.index('run_stage() {'))]
    assert re.findall(r'^    (\w+)\)', body, re.M) == DEFAULT + EXTRA   # every listed stage has its branch
    # two_gpu.sh runs e2e.sh's default stages one invocation each (issue 25)
    two_gpu = (REPO / 'bench/gpu/two_gpu.sh').read_text()
    assert re.search(r'^E2E_STAGES=\((.*)\)$', two_gpu, re.M).group(1).split() == DEFAULT


def test_e2e_unknown_stage_is_one_line_before_anything_runs(tmp_path):
    """`model` first: with the old script it would have run (and failed: PY is false) before the typo was seen."""
    env = {**cpu_env(), 'E2E': str(tmp_path / 'e2e'), 'BASE': str(tmp_path / 'base'), 'PY': 'false'}
    proc = run_e2e('model', 'inferr', env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and not proc.stdout, proc.stdout + proc.stderr
    assert lines[0] == f"error: {E2E}: stage: unknown stage 'inferr' (stages: {' '.join(DEFAULT + EXTRA)})"
    assert not (tmp_path / 'e2e').exists()   # no state, logs or results made


def test_identical_answers_between_two_prediction_files(tmp_path):
    def write(name: str, answers: list[str]):
        path = tmp_path / f'{name}.jsonl'
        path.write_text(''.join(json.dumps({'index': i, 'prediction': a}) + '\n' for i, a in enumerate(answers)))
        return vllm_bench.predictions(path)

    preds = {'ours': write('ours', ['one polyp', 'none', 'two polyps', 'yes']),
             'ours_warm': write('ours_warm', ['one polyp ', 'none', 'two', 'yes']),   # surrounding space: same
             'plain': write('plain', ['one polyp', 'no'])}                              # shorter: compared as far
    assert vllm_bench.identical_answers(preds) == {'ours vs ours_warm': '3/4', 'ours vs plain': '1/2'}
    assert vllm_bench.identical_answers({'ours_warm': preds['ours_warm'], 'plain': preds['plain']}) == {}
    assert 'identical greedy answers: ours vs ours_warm 3/4, ours vs plain 1/2' in \
        vllm_bench.table([], vllm_bench.identical_answers(preds))
