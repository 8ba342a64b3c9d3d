"""Recipes and argument fragments: composition, ${VARS}, every flag checked by ms-swift's own parser, the launcher's
gradient-accumulation arithmetic, GPU-count and packing guards, resume and --dry-run (no model is loaded)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from common.errors import InputError
from tests.conftest import REPO, run_module
from training.launch import compose, grad_accumulation, latest_checkpoint
from training.recipe import Flag, check_flags, flags_from_argv, load_recipe

RECIPES = sorted((REPO / 'recipes').rglob('*.args'))
FRAGMENTS = sorted((REPO / 'swift_args').rglob('*.args'))
VARS = {'DATA': '/data', 'RUN': '/run', 'MODEL': '/model'}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    """The two files common.args names (content is not read by the launcher)."""
    for split in ('train', 'val'):
        write(tmp_path / 'data' / 'swift' / f'{split}-original.jsonl', '{}\n')
    write(tmp_path / 'data' / 'swift' / 'grounding.jsonl', '{}\n')   # make grounding-data
    return tmp_path / 'data'


def test_the_expected_recipes_exist():
    names = {p.relative_to(REPO / 'recipes').as_posix() for p in RECIPES}
    assert {'qwen2_5_vl/7B_lora.args', 'qwen2_5_vl/3B_lora.args', 'qwen3_vl/8B_lora.args', 'medgemma/4B_lora.args',
            'qwen2_5_vl/7B_full_zero3.args', 'qwen2_5_vl/7B_lora_curriculum.args',
            'tiny/qwen2_5_vl_lora_cpu.args'} <= names


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_recipe_composes_and_passes_swift_parser(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith('# ') and ('GiB' in first or 'CPU' in first), f'{recipe}: hardware comment first'
    r = load_recipe(recipe, VARS)
    check_flags(r.flags, 'sft')
    names = [f.name for f in r.flags]
    assert len(names) == len(set(names) - {'env'}) + names.count('env'), 'merged: each flag once'
    for needed in ('model', 'dataset', 'val_dataset', 'output_dir', 'tuner_type', 'global_batch',
                   'per_device_train_batch_size', 'check_model'):
        assert needed in names, f'{recipe}: --{needed} missing'
    assert r.value('output_dir') == '/run' and r.value('dataset') == '/data/swift/train-original.jsonl'
    assert 'train_type' not in names


@pytest.mark.parametrize('fragment', FRAGMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_fragment_passes_swift_parser(fragment):
    check_flags(load_recipe(fragment, VARS).flags, 'sft')


def test_curriculum_turns_both_shuffles_off():
    r = load_recipe(REPO / 'recipes/qwen2_5_vl/7B_lora_curriculum.args', VARS)
    assert r.value('dataset_shuffle') == 'false' and r.value('train_dataloader_shuffle') == 'false'
    assert r.value('model') == 'Qwen/Qwen2.5-VL-7B-Instruct'   # inherited from 7B_lora


def test_old_train_type_flag_fails_naming_file_and_line(tmp_path):
    recipe = write(tmp_path / 'old.args', '# 3.x style\n@swift_args/common.args\n--train_type lora\n')
    with pytest.raises(InputError) as e:
        check_flags(load_recipe(recipe, VARS).flags, 'sft')
    assert f'{recipe.resolve()}:3' in str(e.value) and '--train_type' in str(e.value)
    assert '--tuner_type' in str(e.value)


def test_bad_value_fails_naming_file_and_line(tmp_path):
    recipe = write(tmp_path / 'bad.args', '--lora_rank 16\n\n--lora_rank sixteen\n')
    with pytest.raises(InputError) as e:
        check_flags(load_recipe(recipe, VARS).flags, 'sft')
    assert f'{recipe.resolve()}:3' in str(e.value)


def test_unknown_prefix_is_not_accepted(tmp_path):
    """argparse would take `--lora_ran` for `--lora_rank`; recipes must spell flags out."""
    with pytest.raises(InputError, match='--lora_ran is not'):
        check_flags([Flag('lora_ran', ('8',), 'x.args', 1)], 'sft')


def test_missing_fragment_names_file_and_line(tmp_path):
    recipe = write(tmp_path / 'r.args', '--seed 1\n@swift_args/tuner/nope.args\n')
    with pytest.raises(InputError) as e:
        load_recipe(recipe, VARS)
    assert f'{recipe.resolve()}:2' in str(e.value) and 'nope.args' in str(e.value)


def test_unset_variable_names_file_line_and_variable(tmp_path):
    recipe = write(tmp_path / 'r.args', '# c\n--model ${NOT_SET_ANYWHERE}\n')
    with pytest.raises(InputError) as e:
        load_recipe(recipe, VARS)
    assert f'{recipe.resolve()}:2: NOT_SET_ANYWHERE' in str(e.value)


def test_later_flags_override_earlier_and_keep_their_place(tmp_path):
    write(tmp_path / 'base.args', '--seed 1\n--lora_rank 8\n--env A=1\n--env B=2\n')
    recipe = write(tmp_path / 'r.args', '@base.args\n--lora_rank 16   # mine\n--env A=3\n')
    r = load_recipe(recipe, VARS, flags_from_argv(['--seed', '7', '--target_modules', 'q_proj', 'v_proj']))
    assert r.swift_argv() == ['--seed', '7', '--lora_rank', '16', '--target_modules', 'q_proj', 'v_proj']
    assert r.env() == {'A': '3', 'B': '2'}
    assert r.get('lora_rank').line == 2


def test_comments_and_dataset_sampling_suffix(tmp_path):
    recipe = write(tmp_path / 'r.args', '# title\n--dataset ${DATA}/a.jsonl#500 b.jsonl  # two files\n'
                                        '--system "Answer as #1 expert"  # it\'s quoted\n')
    r = load_recipe(recipe, VARS)
    assert r.get('dataset').values == ('/data/a.jsonl#500', 'b.jsonl')
    assert r.value('system') == 'Answer as #1 expert'


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path / 'a.args', '@b.args\n')
    write(tmp_path / 'b.args', '@a.args\n')
    with pytest.raises(InputError, match='include cycle'):
        load_recipe(tmp_path / 'a.args', VARS)


def test_two_flags_on_one_line_is_an_error(tmp_path):
    recipe = write(tmp_path / 'r.args', '--seed 1 --data_seed 2\n')
    with pytest.raises(InputError, match='one `--flag'):
        load_recipe(recipe, VARS)


@pytest.mark.parametrize('global_batch,per_device,nproc,nnodes,expected', [
    (64, 4, 1, 1, 16), (64, 4, 8, 1, 2), (64, 4, 8, 2, 1), (64, 8, 2, 2, 2), (2, 2, 1, 1, 1)])
def test_grad_accumulation(global_batch, per_device, nproc, nnodes, expected):
    assert grad_accumulation(global_batch, per_device, nproc, nnodes) == expected


def test_grad_accumulation_must_divide():
    with pytest.raises(InputError, match='not a multiple'):
        grad_accumulation(64, 4, 8, 4)     # 128 per step > 64
    with pytest.raises(InputError, match='not a multiple'):
        grad_accumulation(64, 3, 1, 1)


def test_compose_derives_accumulation_for_the_gpu_count(data_dir, tmp_path):
    recipe = REPO / 'recipes/qwen2_5_vl/7B_lora.args'
    one, env1 = compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None, [], False, {}, gpus=1)
    eight, env8 = compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None, [],
                          False, {'NPROC_PER_NODE': '8', 'MAX_PIXELS': '1003520'}, gpus=8)
    assert one.value('gradient_accumulation_steps') == '8' and eight.value('gradient_accumulation_steps') == '1'
    assert env1['MAX_PIXELS'] == '640000'          # recipe default
    assert env8['MAX_PIXELS'] == '1003520'         # the caller's environment wins
    assert '--global_batch' not in one.swift_argv() and '--env' not in one.swift_argv()


def test_all_visible_gpus_train_data_parallel_when_nproc_is_unset(data_dir, tmp_path):
    recipe = REPO / 'recipes/qwen2_5_vl/7B_lora.args'
    four, env4 = compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None, [], False, {}, gpus=4)
    assert env4['NPROC_PER_NODE'] == '4' and four.value('gradient_accumulation_steps') == '2'
    _, env1 = compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None, [], False, {}, gpus=1)
    assert 'NPROC_PER_NODE' not in env1


def test_callers_gradient_accumulation_wins_over_the_derived_one(data_dir, tmp_path):
    recipe = REPO / 'recipes/qwen2_5_vl/7B_lora.args'
    r, _ = compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None,
                   ['--gradient_accumulation_steps', '3'], False, {}, gpus=1)
    assert r.value('gradient_accumulation_steps') == '3'


def test_nproc_larger_than_visible_gpus_is_refused(data_dir, tmp_path):
    with pytest.raises(InputError, match='NPROC_PER_NODE=8 but only 4 GPU'):
        compose(str(REPO / 'recipes/qwen2_5_vl/7B_lora.args'), str(data_dir), str(tmp_path / 'run'), None, [],
                False, {'NPROC_PER_NODE': '8'}, gpus=4)


def test_cli_nproc_error_is_one_line_exit_2(data_dir, tmp_path):
    env = {**os.environ, 'NPROC_PER_NODE': '2', 'CUDA_VISIBLE_DEVICES': ''}
    proc = run_module('training.launch', '--recipe', 'recipes/qwen2_5_vl/7B_lora.args', '--data', data_dir,
                      '--run', tmp_path / 'run', '--dry-run', check=False, env=env)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'NPROC_PER_NODE=2 but only 0 GPU' in last
    assert not (tmp_path / 'run').exists()


def test_cli_dry_run_prints_the_swift_command(data_dir, tmp_path):
    proc = run_module('training.launch', '--recipe', 'recipes/tiny/qwen2_5_vl_lora_cpu.args', '--data', data_dir,
                      '--run', tmp_path / 'run', '--model', tmp_path, '--dry-run', '--', '--max_steps', '9')
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith('MAX_PIXELS=50176 ') and ' sft ' in line
    assert f'--model {tmp_path}' in line and '--max_steps 9' in line and '--max_steps 4' not in line
    assert '--gradient_accumulation_steps 1' in line and '--global_batch' not in line
    assert not (tmp_path / 'run').exists()


def test_missing_model_variable_and_missing_data_are_errors(data_dir, tmp_path):
    proc = run_module('training.launch', '--recipe', 'recipes/tiny/qwen2_5_vl_lora_cpu.args', '--data', data_dir,
                      '--run', tmp_path / 'run', '--dry-run', check=False)
    assert proc.returncode == 2 and 'MODEL' in proc.stderr.strip().splitlines()[-1]
    proc = run_module('training.launch', '--recipe', 'recipes/qwen2_5_vl/7B_lora.args', '--data', tmp_path / 'no',
                      '--run', tmp_path / 'run', '--dry-run', check=False)
    assert proc.returncode == 2 and 'train-original.jsonl not found' in proc.stderr


def test_packing_without_flash_attn_is_refused(data_dir, tmp_path):
    pytest.importorskip('torch')
    import importlib.util
    if importlib.util.find_spec('flash_attn') is not None:
        pytest.skip('flash-attn is installed here')
    recipe = write(tmp_path / 'pack.args', '@recipes/qwen2_5_vl/7B_lora.args\n'
                                           '@swift_args/precision/flash_attn_packing.args\n')
    with pytest.raises(InputError, match='needs flash-attn, which is not installed'):
        compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None, [], False, {}, gpus=1)
    recipe = write(tmp_path / 'pack2.args', '@recipes/qwen2_5_vl/7B_lora.args\n--packing true\n')
    with pytest.raises(InputError, match='needs --attn_impl flash'):
        compose(str(recipe), str(data_dir), str(tmp_path / 'run'), None, [], False, {}, gpus=1)


def test_resume_picks_the_newest_finished_checkpoint(data_dir, tmp_path):
    run = tmp_path / 'run'
    for ck in ('v0-20260101-000000/checkpoint-400', 'v1-20260102-000000/checkpoint-200',
               'v1-20260102-000000/checkpoint-1000', 'v2-20260103-000000/checkpoint-50'):
        write(run / ck / 'trainer_state.json', '{}')
    (run / 'v3-20260104-000000' / 'checkpoint-10').mkdir(parents=True)   # half-written: no trainer_state.json
    assert latest_checkpoint(run) == run / 'v2-20260103-000000/checkpoint-50'
    r, _ = compose(str(REPO / 'recipes/qwen2_5_vl/7B_lora.args'), str(data_dir), str(run), None, [], True, {}, 1)
    assert r.value('resume_from_checkpoint') == str((run / 'v2-20260103-000000/checkpoint-50').resolve())
    r, _ = compose(str(REPO / 'recipes/qwen2_5_vl/7B_lora.args'), str(data_dir), str(tmp_path / 'empty'), None, [],
                   True, {}, 1)
    assert r.get('resume_from_checkpoint') is None


def test_slurm_example_is_valid_bash_and_uses_the_launcher():
    sbatch = REPO / 'recipes/slurm/multi_node.sbatch'
    subprocess.run(['bash', '-n', str(sbatch)], check=True)
    text = sbatch.read_text()
    assert 'training.launch' in text and 'NODE_RANK' in text and 'MASTER_ADDR' in text


def test_grounding_recipe_adds_the_box_rows_and_the_json_box_format(data_dir, tmp_path):
    r, env = compose(str(REPO / 'recipes/qwen2_5_vl/7B_lora_grounding.args'), str(data_dir), str(tmp_path / 'run'),
                     None, [], False, {}, gpus=1)
    assert [Path(v).name for v in r.get('dataset').values] == ['train-original.jsonl', 'grounding.jsonl']
    assert env['QWENVL_BBOX_FORMAT'] == 'new'


def test_a_misspelled_flag_gets_a_did_you_mean_from_ms_swift(tmp_path):
    recipe = write(tmp_path / 'typo.args', '@recipes/qwen2_5_vl/7B_lora.args\n--learning_rat 1e-4\n')
    with pytest.raises(InputError, match=r'typo.args:2: --learning_rat is not a `swift sft` argument '
                                         r'\(did you mean --learning_rate\?\)'):
        check_flags(load_recipe(recipe, VARS).flags, 'sft')
    with pytest.raises(InputError, match=r'--zzz_qqq is not a `swift sft` argument$'):   # nothing close: no guess
        check_flags(flags_from_argv(['--zzz_qqq', '1']), 'sft')


def test_recipe_not_found_lists_the_recipes(data_dir, tmp_path):
    proc = run_module('training.launch', '--recipe', 'recipes/qwen2_5_vl/7B_lora_typo.args', '--data', data_dir,
                      '--run', tmp_path / 'run', '--dry-run', check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith('error: recipes/qwen2_5_vl/7B_lora_typo.args: recipe not found')
    assert all(str(p.relative_to(REPO)) in last for p in RECIPES)


def test_make_recipes_lists_every_recipe_from_its_file():
    proc = subprocess.run(['make', '-s', '--no-print-directory', '-o', '.venv/.medico-setup', 'recipes'], cwd=REPO,
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ['recipe', 'model', 'method', 'topology', 'MAX_PIXELS', 'hardware']
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {str(p.relative_to(REPO)) for p in RECIPES}
    for path, line in rows.items():   # the hardware line is the recipe's first comment line
        assert (REPO / path).read_text().splitlines()[0].lstrip('# ') in line
    default = rows['recipes/qwen2_5_vl/7B_lora.args']
    assert '(default)' in default and 'Qwen/Qwen2.5-VL-7B-Instruct' in default and 'lora r16' in default
    assert 'DDP, global batch 128 (16/device)' in default and ' 640000 ' in default
    assert 'DeepSpeed zero3' in rows['recipes/qwen2_5_vl/7B_full_zero3.args']
    assert ' full ' in rows['recipes/qwen2_5_vl/7B_full_zero3.args']
    assert 'google/medgemma-4b-it' in rows['recipes/medgemma/4B_lora.args']


def test_prepare_statistics_use_the_default_recipes_image_budget():
    from data_prep.prepare import DEFAULT_MAX_PIXELS
    from training.recipe import DEFAULT_RECIPE, describe
    makefile = (REPO / 'Makefile').read_text()
    assert f'RECIPE  ?= {DEFAULT_RECIPE}\n' in makefile
    assert DEFAULT_MAX_PIXELS == int(describe(DEFAULT_RECIPE)['MAX_PIXELS'])
