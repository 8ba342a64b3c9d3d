"""The tiny CPU recipe trains for real through training.launch (`swift sft`), resumes, and training.export merges
the LoRA into a model that answers exactly like base model + adapter."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import RECIPE, cpu_env, run_module


@pytest.fixture(scope='module')
def trained(trained_run):
    """(data dir, run dir) after 4 LoRA steps of the tiny recipe (the session's run, tests/conftest.py)."""
    return trained_run


def checkpoints(run: Path) -> list[str]:
    return sorted(p.relative_to(run).as_posix().split('-', 2)[0] + '/' + p.name for p in run.glob('v*/checkpoint-*'))


@pytest.mark.slow
def test_tiny_recipe_trains(trained):
    data, run = trained
    assert checkpoints(run) == ['v0/checkpoint-2', 'v0/checkpoint-4']
    ck = next(run.glob('v0-*/checkpoint-4'))
    adapter = json.loads((ck / 'adapter_config.json').read_text())
    assert 'language_model' in adapter['target_modules'] and adapter['r'] == 8   # LoRA on the LLM only
    logs = [json.loads(line) for line in next(run.glob('v0-*/logging.jsonl')).read_text().splitlines()]
    losses = [float(r['loss']) for r in logs if 'loss' in r]
    evals = [float(r['eval_loss']) for r in logs if 'eval_loss' in r]
    assert len(losses) == 4 and len(evals) == 2
    assert losses[-1] < losses[0] and evals[-1] < evals[0]          # the optimizer moved the model downhill
    composed = (run / 'recipe.args').read_text()
    assert '--gradient_accumulation_steps 1  # --global_batch' in composed and '--tuner_type lora' in composed
    assert json.loads((run / 'medico_env.json').read_text()) == {'MAX_PIXELS': '50176'}   # the recipe's image budget
    assert json.loads(next(run.glob('v0-*/args.json')).read_text())['use_hf'] is True   # what reached ms-swift
    assert Image.open(run / 'loss_curve.png').format == 'PNG'   # drawn from logging.jsonl after the run


@pytest.mark.slow
def test_export_merges_and_answers_like_the_adapter(trained, tiny_model_dir):
    data, run = trained
    out = run / 'merged'
    proc = run_module('training.export', '--run', run, '--out', out, '--check-data',
                      data / 'swift/val-original.jsonl', '--check-samples', '2', env=cpu_env(), timeout=600)
    gaps = [float(g) for g in re.findall(r': same \(max log-prob gap ([0-9.e+-]+)\)', proc.stdout)]
    assert len(gaps) == 2 and 'DIFFERENT' not in proc.stdout, proc.stdout[-2000:]
    assert max(gaps) < 1e-4                      # merged == base + adapter to float precision (fp32)
    for name in ('config.json', 'model.safetensors', 'tokenizer.json', 'processor_config.json', 'EXPORT_INFO.json',
                 'medico_env.json'):   # the training image budget travels with the model to inference/submissions
        assert (out / name).is_file(), name
    assert not (out / 'adapter_config.json').exists()
    assert not (run / '.merged.partial').exists()
    info = json.loads((out / 'EXPORT_INFO.json').read_text())
    assert info['lora_merged'] and info['checkpoint'].endswith('checkpoint-4') and info['checked_samples'] == 2
    # The check can fail: against the untouched base model the same comparison sees what the adapter changed.
    from training.export import compare_with_adapter
    base = compare_with_adapter(Path(info['checkpoint']), tiny_model_dir, str(data / 'swift/val-original.jsonl'), 2)
    assert max(r['logprob_gap'] for r in base) > 1e-3
    # A second export of the same checkpoint keeps the folder.
    again = run_module('training.export', '--run', run, '--out', out, env=cpu_env())
    assert 'already holds' in again.stdout


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained, tiny_model_dir):
    """Runs after the export test on purpose: it adds v1/checkpoint-6 to the shared run."""
    data, run = trained
    proc = run_module('training.launch', '--recipe', RECIPE, '--data', data, '--run', run, '--model', tiny_model_dir,
                      '--resume', '--', '--max_steps', '6', env=cpu_env(), timeout=600)
    command = proc.stdout.splitlines()[0]
    assert '--resume_from_checkpoint' in command and 'checkpoint-4' in command
    assert 'v1/checkpoint-6' in checkpoints(run)
    state = json.loads(next(run.glob('v1-*/checkpoint-6/trainer_state.json')).read_text())
    assert state['global_step'] == 6
    from training.curves import run_curves   # the curve redrawn after the resumed run: one line over v0 and v1
    curves, restarts = run_curves(run)
    assert [step for step, _ in curves['loss']] == [1, 2, 3, 4, 5, 6] and restarts == [5]
    assert f'loss curve: {run}/loss_curve.png' in proc.stdout


def test_export_of_a_full_checkpoint_copies_weights_without_optimizer_state(tmp_path):
    ck = tmp_path / 'run' / 'v0-20260101-000000' / 'checkpoint-10'
    ck.mkdir(parents=True)
    for name in ('config.json', 'model.safetensors', 'tokenizer.json', 'trainer_state.json', 'optimizer.pt',
                 'rng_state.pth', 'scheduler.pt', 'training_args.bin'):
        (ck / name).write_text('{}')
    (ck / 'global_step10').mkdir()
    env = {**cpu_env(), 'HF_TOKEN': '', 'HF_HOME': str(tmp_path / 'hf')}
    proc = run_module('training.export', '--run', tmp_path / 'run', '--out', tmp_path / 'run/merged',
                      '--hub-model-id', 'someone/model', env=env)
    assert sorted(p.name for p in (tmp_path / 'run/merged').iterdir()) == [
        'EXPORT_INFO.json', 'config.json', 'model.safetensors', 'tokenizer.json']
    assert 'not pushing' in proc.stdout


def test_export_without_checkpoint_is_a_one_line_error(tmp_path):
    proc = run_module('training.export', '--run', tmp_path, '--out', tmp_path / 'merged', check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith('error: ')
