"""The loss curve of a run: ms-swift's logging.jsonl of every v<N> folder joined into one line per series, drawn as a
PNG; and the hub `make sft` downloads from."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.conftest import run_module
from training.curves import CURVE_FILE, run_curves, write_curve


def write_log(folder: Path, records: list[dict], max_steps: int, tail: str = '') -> None:
    """A logging.jsonl as ms-swift writes it: 'global_step/max_steps' on every record, a summary record last."""
    folder.mkdir(parents=True)
    lines = [json.dumps({**r, 'global_step/max_steps': f'{r.pop("step")}/{max_steps}', 'elapsed_time': '1s'})
             for r in records]
    lines.append(json.dumps({'model_parameter_info': 'PeftModel', 'global_step': max_steps}))
    (folder / 'logging.jsonl').write_text('\n'.join(lines) + '\n' + tail)


def train_records(steps, loss0: float, lr: float = 1e-4) -> list[dict]:
    return [{'step': s, 'loss': loss0 - 0.1 * s, 'learning_rate': lr, 'grad_norm': 1.0} for s in steps]


def test_resumed_runs_join_into_one_curve(tmp_path):
    run = tmp_path / 'run'
    # v0 logged steps 1-5 and was killed after saving checkpoint-4; v1 resumed from checkpoint-4 (steps 5-8).
    write_log(run / 'v0-20260101-000000', train_records(range(1, 6), 5.0) + [{'step': 4, 'eval_loss': 4.7}], 10,
              tail='{"loss": 3.')   # a line cut by the kill
    write_log(run / 'v1-20260102-000000', train_records(range(5, 9), 4.0, lr=5e-5) + [{'step': 8, 'eval_loss': 3.1}],
              10)
    (run / 'v2-20260103-000000').mkdir()   # a run that died before logging anything
    curves, restarts = run_curves(run)
    assert [s for s, _ in curves['loss']] == list(range(1, 9))
    assert dict(curves['loss'])[5] == 3.5 and dict(curves['loss'])[4] == 4.6   # step 5 from v1, step 4 from v0
    assert curves['eval_loss'] == [(4, 4.7), (8, 3.1)] and restarts == [5]
    assert dict(curves['learning_rate'])[8] == 5e-5

    png = write_curve(run)
    assert png == run / CURVE_FILE and Image.open(png).format == 'PNG'


def test_versions_sort_by_number_not_by_name(tmp_path):
    run = tmp_path / 'run'
    for v in range(11):   # v10 sorts before v2 as text
        write_log(run / f'v{v}-2026010{v % 10}-000000', train_records([v + 1], 10.0 - v), 11)
    curves, _ = run_curves(run)
    assert [s for s, _ in curves['loss']] == list(range(1, 12))


def test_cli_without_logs_is_a_one_line_error(tmp_path):
    proc = run_module('training.curves', '--run', tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f'error: {tmp_path}: no v*/logging.jsonl yet (train first: make sft)'
    assert not (tmp_path / CURVE_FILE).exists()


def test_sft_downloads_from_hugging_face_unless_modelscope_is_chosen(tmp_path):
    from training.launch import compose
    data = tmp_path / 'data' / 'swift'
    data.mkdir(parents=True)
    for split in ('train', 'val'):
        (data / f'{split}-original.jsonl').write_text('{}\n')
    recipe = 'recipes/qwen2_5_vl/3B_lora.args'   # a hub id: ms-swift would fetch it from ModelScope by default
    _, env = compose(recipe, str(tmp_path / 'data'), str(tmp_path / 'run'), None, [], False, {}, 0)
    assert env['USE_HF'] == '1'
    _, env = compose(recipe, str(tmp_path / 'data'), str(tmp_path / 'run'), None, [], False, {'USE_HF': '0'}, 0)
    assert env['USE_HF'] == '0'
    proc = run_module('training.launch', '--recipe', recipe, '--data', tmp_path / 'data', '--run', tmp_path / 'run',
                      '--dry-run', env={k: v for k, v in __import__('os').environ.items() if k != 'USE_HF'})
    assert 'USE_HF=1 ' in proc.stdout.splitlines()[0]
