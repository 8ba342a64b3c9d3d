"""bench/gpu/stages.sh, the stage runs shared by the resumable GPU bench scripts, through the scripts themselves on
CPU: a stage's row of stage_times.tsv (the one layout of all three scripts) and its done-marker, a finished stage
skipped on rerun and redone with FORCE=1, a failed one reported with its own part of the log and continued (fresh 0)
by the next invocation, a stage that no longer fits the budget left for the next call; and bench.gpu.stage_times,
the one reader of that file (another layout is one line, exit 2)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu.stage_times import COLUMNS, read_stage_times
from tests.conftest import REPO, cpu_env, run_module


def run(script: str, *stages: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', f'bench/gpu/{script}', *stages], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_stage_is_timed_marked_done_and_skipped_on_rerun(tmp_path):
    """e2e.sh's data stage (make synthetic: it runs on a CPU) and its score stage without predictions (it fails)."""
    work = tmp_path / 'e2e'
    env = {**cpu_env(), 'E2E': str(work), 'PY': sys.executable, 'IMAGES_N': '4'}
    tsv = work / 'results' / 'stage_times.tsv'

    first = run('e2e.sh', 'data', env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert tsv.read_text().splitlines()[0] == '\t'.join(COLUMNS)
    (row,) = read_stage_times(tsv)
    assert (row['stage'], row['rc'], row['fresh'], row['seconds']) == ('data', 0, True, row['end'] - row['start'])
    assert (work / 'state' / 'data.done').is_file() and not (work / 'state' / 'data.started').exists()

    again = run('e2e.sh', 'data', env=env)
    assert again.returncode == 0 and 'skip data (done)' in again.stdout, again.stdout + again.stderr
    assert len(read_stage_times(tsv)) == 1   # nothing ran, nothing recorded
    forced = run('e2e.sh', 'data', env={**env, 'FORCE': '1'})
    assert forced.returncode == 0 and 'skip' not in forced.stdout
    assert [(t['stage'], t['rc'], t['fresh']) for t in read_stage_times(tsv)] == [('data', 0, True)] * 2
    assert (work / 'logs' / 'data.log').read_text().count('=== invocation ') == 2   # each run appends its part

    failed = run('e2e.sh', 'score', 'data', env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert 'score FAILED (exit 2) after ' in failed.stdout and 'file not found' in failed.stdout
    assert 'skip data' not in failed.stdout   # the stages after a failed one wait (KEEP_GOING=1 runs them)
    assert not (work / 'state' / 'score.done').exists() and (work / 'state' / 'score.started').is_file()
    failed_again = run('e2e.sh', 'score', env=env)
    assert failed_again.returncode == 1
    log = failed_again.stdout.split('the end of ')[1]
    assert log.count('file not found') == 1 and '=== invocation' not in log   # this run's lines, not the first's
    rows = read_stage_times(tsv)
    assert [(t['stage'], t['rc'] != 0, t['fresh']) for t in rows[2:]] == [('score', True, True), ('score', True, False)]


def test_a_stage_that_no_longer_fits_the_budget_waits_for_the_next_call(tmp_path):
    """two_gpu.sh's data stage expects 180 s; BUDGET=60 cannot hold it: exit 3 ("run me again") before it starts."""
    pytest.importorskip('swift')
    work = tmp_path / 'w'
    env = {**cpu_env(), 'W': str(work), 'PY': sys.executable, 'DEVICE': 'cpu', 'BUDGET': '60'}
    proc = run('two_gpu.sh', 'data', env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert '] data needs ~180 s, ' in proc.stdout
    assert 's of BUDGET=60 left: stopping here; run again (the next call) to continue' in proc.stdout
    assert not (work / 'state' / 'data.started').exists() and read_stage_times(work / 'results' / 'stage_times.tsv') \
        == []


def test_stage_times_of_another_layout_are_one_line_errors(tmp_path):
    path = tmp_path / 'stage_times.tsv'
    assert read_stage_times(path) == []   # no stage has run yet
    path.write_text('\t'.join(COLUMNS) + '\nsft\t300\t3\t1700000000\t1700000013\t1700000313\t1\n')
    assert read_stage_times(path) == [{'stage': 'sft', 'seconds': 300, 'rc': 3, 'invocation': '1700000000',
                                       'start': 1700000013, 'end': 1700000313, 'fresh': True}]
    with path.open('a') as f:
        f.write('data\t12\t0\t1700000000\n')   # learned.sh's old four columns
    for module, args in (('bench.gpu.two_gpu_summary', [tmp_path]),
                         ('bench.gpu.learned_numbers', ['--work', tmp_path, '--out', tmp_path])):
        proc = run_module(module, *args, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: {path}:3: expected 7 tab-separated columns (stage, seconds, exit_code, invocation, start, end, "
            f"fresh; integers but stage and invocation), got 'data\\t12\\t0\\t1700000000'"], module
    assert not (tmp_path / 'two_gpu.json').exists() and not (tmp_path / 'learned.json').exists()
