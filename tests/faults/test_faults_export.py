"""`make sft` and `make export` under attack: bad recipes, flags, data and GPU settings (one line before ms-swift
starts), resume after a kill during a checkpoint save, an unreachable hub, SIGKILL during the merge and before the
rename, a second export, a full disk."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import RECIPE, REPO, cpu_env, run_module
from tests.faults.harness import Trigger, debris, files_mode, fill, one_line_error, run_main, small_disk, tree
from training import export, launch


def launch_fails(runner, argv, *parts, env=None) -> str:
    """training.launch --dry-run in a fork-server child (ms-swift's parser is already imported there)."""
    run = runner.run('training.launch', ['--dry-run', *argv], env=env)
    assert run.code == 2, run.err[-3000:]
    return one_line_error(run.err, *parts)


@pytest.fixture
def data(tmp_path) -> Path:
    from tests.conftest import write_vqa_data
    return write_vqa_data(tmp_path / 'data', 2, 1)


def sft_argv(data: Path, run: Path, recipe=RECIPE, *extra) -> list:
    return ['--recipe', recipe, '--data', data, '--run', run, '--model', 'unused-base/model', *extra]


@pytest.mark.case('T1')
def test_unknown_recipe(data, tmp_path, capsys):
    code, err = run_main(launch.main, ['--dry-run', *sft_argv(data, tmp_path / 'run', 'recipes/nope/missing.args')],
                         capsys)
    assert code == 2
    one_line_error(err, 'error: recipes/nope/missing.args: recipe not found')


@pytest.mark.case('T2', 'T3', 'T4')
def test_bad_flags_and_values(runner, data, tmp_path):
    base = (REPO / RECIPE).read_text()
    typo, badval = tmp_path / 'typo.args', tmp_path / 'badval.args'
    typo.write_text(base + '--learning_rat 1e-3\n')
    badval.write_text(base.replace('--max_steps 4', '--max_steps four'))
    line = base.count('\n') + 1
    launch_fails(runner, sft_argv(data, tmp_path / 'run', typo), f'{typo}:{line}: --learning_rat is not a `swift sft`')
    launch_fails(runner, sft_argv(data, tmp_path / 'run', badval), 'invalid int value: \'four\'')
    launch_fails(runner, [*sft_argv(data, tmp_path / 'run'), '--', '--lerning_rate', '1e-4'],
                 'error: <command line>: --lerning_rate is not a `swift sft` argument')
    assert not (tmp_path / 'run').exists()


@pytest.mark.case('T5', 'T6')
def test_more_processes_than_gpus(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('NPROC_PER_NODE', '4')
    code, err = run_main(launch.main, ['--dry-run', *sft_argv(data, tmp_path / 'run')], capsys)
    assert code == 2
    one_line_error(err, "NPROC_PER_NODE=4 but only 0 GPU(s) are visible here (CUDA_VISIBLE_DEVICES='')")
    import torch
    if torch.cuda.is_available():
        pytest.skip('T6 (CUDA_VISIBLE_DEVICES unset) needs a machine without GPUs')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    code, err = run_main(launch.main, ['--dry-run', *sft_argv(data, tmp_path / 'run')], capsys)
    assert code == 2
    one_line_error(err, 'NPROC_PER_NODE=4 but only 0 GPU(s) are visible here')


@pytest.mark.case('T7')
def test_data_folder_missing(tmp_path, capsys):
    code, err = run_main(launch.main, ['--dry-run', *sft_argv(tmp_path / 'nonexistent', tmp_path / 'run')], capsys)
    assert code == 2
    one_line_error(err, f'--dataset: {tmp_path}/nonexistent/swift/train-original.jsonl not found (run `make prepare`')


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the session's trained run (v0-*/checkpoint-2 and checkpoint-4) to break or export."""
    return Path(shutil.copytree(trained_run[1], tmp_path / 'run', ignore=shutil.ignore_patterns('merged', '.merged*',
                                                                                                'v1-*')))


@pytest.mark.case('T8', 'T9')
def test_resume_picks_the_last_complete_checkpoint(runner, trained_run, run_copy, tmp_path):
    """T9's run was killed while checkpoint-4 was being saved (its trainer_state.json, written last, is missing):
    RESUME=1 continues from checkpoint-2. That the resumed training then continues: tests/test_sft.py."""
    data = trained_run[0]
    run = runner.run('training.launch', ['--dry-run', *sft_argv(data, tmp_path / 'fresh'), '--resume'])
    assert run.code == 0 and 'starting from scratch' in run.err and '--resume_from_checkpoint' not in run.out
    ck4 = next(run_copy.glob('v0-*/checkpoint-4'))
    (ck4 / 'trainer_state.json').unlink()
    run = runner.run('training.launch', ['--dry-run', *sft_argv(data, run_copy), '--resume'])
    assert run.code == 0, run.err[-2000:]
    assert f'--resume_from_checkpoint {ck4.parent / "checkpoint-2"}' in run.out.splitlines()[0]


@pytest.mark.case('T10')
def test_push_to_an_unreachable_hub_is_refused_before_the_merge(run_copy, tmp_path):
    """Cause 15: the merge ran, then create_repo died with a 29-frame httpx traceback. A real process: the hub client
    reads its endpoint and offline switch at import."""
    env = dict(cpu_env(), HF_TOKEN='hf_FAKEtoken123', HF_HUB_OFFLINE='0',
               HF_ENDPOINT='http://127.0.0.1:9')   # nothing listens there: connection refused at once
    out = run_copy / 'merged'
    proc = run_module('training.export', '--run', run_copy, '--out', out, '--hub-model-id', 'demo-user/medico-merged',
                      env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_line_error(proc.stderr, 'error: --hub-model-id: cannot push to demo-user/medico-merged: the hub is not '
                                'reachable with this token (ConnectError)')
    assert 'hf_FAKEtoken123' not in proc.stdout + proc.stderr
    assert not out.exists() and not (run_copy / '.merged.partial').exists()


@pytest.fixture(scope='session')
def exported(runner, trained_run, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(run copy, its merged model, the model's tree) of one uninterrupted export (no check samples, no push)."""
    run = Path(shutil.copytree(trained_run[1], tmp_path_factory.mktemp('export') / 'run',
                               ignore=shutil.ignore_patterns('merged', '.merged*', 'v1-*')))
    result = runner.run('training.export', ['--run', run, '--out', run / 'merged'], env=cpu_env())
    assert result.code == 0, result.err[-3000:]
    return run, run / 'merged', tree(run / 'merged')


@pytest.mark.case('B-export-kill', 'B-export-conc', 'X7')
def test_sigkill_during_the_merge_and_before_the_rename_then_rerun(runner, exported, capsys):
    run, merged, reference = exported
    out = run / 'merged-again'
    partial = export.partial_path(out)
    argv = ['--run', run, '--out', out]
    # a second export into the same folder while `swift export` starts is refused
    with runner.paused_at('training.export', argv, Trigger('subprocess.Popen', '* export *'), env=cpu_env(),
                          then='kill'):
        code, err = run_main(export.main, argv, capsys)
        assert code == 2
        one_line_error(err, f'error: {out}: another training.export run is writing here now')
    # killed while swift export writes the merged weights
    runner.killed_when('training.export', argv, lambda: any(partial.glob('*.safetensors')))
    # the rerun merges again (the half-written folder is discarded) and is killed before the rename
    runner.killed_at('training.export', argv, Trigger('os.rename', str(partial), 1), env=cpu_env())
    assert export.read_info(partial) and not out.exists()
    last = runner.run('training.export', argv, env=cpu_env())   # reuses the complete, checked folder
    assert last.code == 0 and 'holds a complete, checked export' in last.out, last.err[-2000:]
    assert tree(out) == reference and debris(run) == []
    assert files_mode(out) == {0o644}


@pytest.mark.case('B-export-disk')
def test_full_disk_is_refused_before_the_merge(exported, tmp_path, capsys):
    run, merged, reference = exported
    size = sum(p.stat().st_size for p in merged.iterdir()) >> 20
    with small_disk(tmp_path / 'disk', size + 8) as disk:
        out = disk / 'merged'
        shutil.copytree(merged, out)
        fill(disk)
        other = run / 'v0-other' / 'checkpoint-9'   # another checkpoint to export over the previous model
        shutil.copytree(next(run.glob('v0-2*/checkpoint-4')), other)
        code, err = run_main(export.main, ['--run', run, '--checkpoint', other, '--out', out], capsys)
        assert code == 2
        one_line_error(err, f'error: {disk}: --out: needs about', 'MiB free for the merged model')
        assert tree(out) == reference and debris(disk) == []
