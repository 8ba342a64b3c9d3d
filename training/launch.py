"""Launch `swift sft` from a recipe: compose, check, derive gradient accumulation, resume, run.

    python -m training.launch --recipe recipes/qwen2_5_vl/7B_lora.args --data data/prepared --run runs/7B_lora \
        [--model M] [--resume] [--dry-run] [-- extra swift flags]

Multi-GPU / multi-node: set NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT as for ms-swift; they pass
through to `swift sft`, which starts torchrun. The recipe's `--global_batch` fixes the samples per optimizer step
whatever the GPU count: gradient_accumulation_steps = global_batch / (per_device_train_batch_size * world size).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.hub import hub_env
from common.io import atomic_open
from common.offline import OFFLINE_ENV
from common.run_env import write_run_env
from training.recipe import Flag, Recipe, check_flags, flags_from_argv, load_recipe

DIST_ENV = ('NPROC_PER_NODE', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT')
# ms-swift's image budget: recorded for export and inference whenever training ran with it, from the recipe's --env
# or the caller's environment (`MIN_PIXELS=6272 make sft` trains with it like the recipe's MAX_PIXELS)
IMAGE_BUDGET_ENV = ('MAX_PIXELS', 'MIN_PIXELS')
DATA_FLAGS = ('dataset', 'val_dataset')
DATA_SUFFIXES = ('.jsonl', '.json', '.csv', '.parquet', '.txt')
FLASH_IMPLS = ('flash_attn', 'flash_attention_2', 'flash_attention_3', 'flash_attention_4')


def _env_int(env: dict, name: str, default: int = 1) -> int:
    raw = env.get(name, '')
    if raw == '':
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f'must be a positive integer, got {raw!r}', field=name)
    return int(raw)


def visible_gpus() -> int:
    """CUDA devices this process can see (0 on a CPU machine or with CUDA_VISIBLE_DEVICES='')."""
    if os.environ.get('CUDA_VISIBLE_DEVICES') == '':   # hidden on purpose: no need to import torch to know
        return 0
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def world_size(env: dict, gpus: int) -> tuple[int, int]:
    """(NPROC_PER_NODE, NNODES); more processes per node than visible GPUs is an error (CPU: one process)."""
    if env.get('NPROC_PER_NODE', '') == '' and gpus > 1:
        # Without NPROC_PER_NODE ms-swift runs ONE process that spreads the model over every visible GPU
        # (device_map auto: model parallel, slow). Data-parallel over all visible GPUs is what a user expects.
        return gpus, _env_int(env, 'NNODES')
    nproc, nnodes = _env_int(env, 'NPROC_PER_NODE'), _env_int(env, 'NNODES')
    if nproc > max(gpus, 1):
        raise InputError(f'NPROC_PER_NODE={nproc} but only {gpus} GPU(s) are visible here '
                         f'(CUDA_VISIBLE_DEVICES={env.get("CUDA_VISIBLE_DEVICES", "<unset>")!r})',
                         field='NPROC_PER_NODE')
    return nproc, nnodes


def grad_accumulation(global_batch: int, per_device: int, nproc: int, nnodes: int) -> int:
    """Steps of accumulation that give exactly `global_batch` samples per optimizer step."""
    per_step = per_device * nproc * nnodes
    if global_batch % per_step:
        raise InputError(f'--global_batch {global_batch} is not a multiple of per_device_train_batch_size '
                         f'{per_device} x {nproc} process(es) x {nnodes} node(s) = {per_step}', field='global_batch')
    return global_batch // per_step


def latest_checkpoint(run: Path) -> Path | None:
    """The newest `v<N>-<time>/checkpoint-<step>` under `run` (highest version, then highest step)."""
    found = []
    for ck in run.glob('v*-*/checkpoint-*'):
        v, s = re.match(r'v(\d+)-', ck.parent.name), re.fullmatch(r'checkpoint-(\d+)', ck.name)
        if v and s and ck.is_dir() and (ck / 'trainer_state.json').is_file():   # only finished saves
            found.append((int(v.group(1)), int(s.group(1)), ck))
    return max(found)[2] if found else None


def check_data_files(recipe: Recipe) -> None:
    for f in recipe.flags:
        if f.name in DATA_FLAGS:
            for value in f.values:
                path = value.split('#', 1)[0]   # `file#N` samples N rows
                if path.endswith(DATA_SUFFIXES) and not Path(path).is_file():
                    raise InputError(f'--{f.name}: {path} not found (run `make prepare` first?)',
                                     file=f.file, row=f.line)


def check_packing(recipe: Recipe) -> None:
    """ms-swift only packs with flash attention; say so before any model loads."""
    on = [n for n in ('packing', 'padding_free') if (recipe.value(n) or 'false').lower() in ('true', '1', 'yes')]
    if not on:
        return
    flag = recipe.get(on[0])
    impl = recipe.value('attn_impl')
    if impl not in FLASH_IMPLS:
        raise InputError(f'--{on[0]} needs --attn_impl flash_attention_2 (got {impl})', file=flag.file, row=flag.line)
    if importlib.util.find_spec('flash_attn') is None:
        raise InputError(f'--{on[0]} needs flash-attn, which is not installed: drop '
                         'swift_args/precision/flash_attn_packing.args or build flash-attn', file=flag.file,
                         row=flag.line)


def swift_command() -> list[str]:
    """`swift` from this interpreter's environment (same packages), else the module form."""
    exe = Path(sys.executable).with_name('swift')
    return [str(exe)] if exe.is_file() else [sys.executable, '-m', 'swift.cli.main']


def compose(recipe_path: str, data: str, run: str, model: str | None, extra: list[str], resume: bool,
            env: dict, gpus: int) -> tuple[Recipe, dict]:
    """The checked recipe (with derived flags) and the environment for `swift sft`."""
    variables = {**env, 'DATA': str(Path(data).resolve()), 'RUN': str(Path(run).resolve())}
    if model:
        variables['MODEL'] = model
    extra_flags = flags_from_argv(extra)
    if model:
        extra_flags.append(Flag('model', (model,), '--model'))
    nproc, nnodes = world_size(env, gpus)      # cheap checks first, ms-swift's parser (slow import) last
    recipe = load_recipe(recipe_path, variables, extra_flags)
    check_data_files(recipe)
    check_packing(recipe)
    check_flags(recipe.flags, 'sft')
    derived = []
    user_set = {f.name for f in extra_flags}
    if recipe.get('global_batch') and 'gradient_accumulation_steps' not in user_set:   # the caller's flag wins
        per_device = int(recipe.value('per_device_train_batch_size', '1'))
        steps = grad_accumulation(int(recipe.value('global_batch')), per_device, nproc, nnodes)
        derived.append(Flag('gradient_accumulation_steps', (str(steps),), '--global_batch'))
    if resume:
        ck = latest_checkpoint(Path(run))
        if ck is None:
            print(f'no checkpoint under {run} yet: starting from scratch', file=sys.stderr)
        else:
            derived.append(Flag('resume_from_checkpoint', (str(ck.resolve()),), '--resume'))
    if derived:
        recipe = load_recipe(recipe_path, variables, extra_flags + derived)

    run_env = hub_env(env)   # base models from Hugging Face, as their ids say; USE_HF=0 chooses ModelScope
    if nproc > 1 and env.get('NPROC_PER_NODE', '') == '':
        run_env['NPROC_PER_NODE'] = str(nproc)
        print(f'{gpus} GPUs visible: NPROC_PER_NODE={nproc} (data-parallel; set NPROC_PER_NODE to change)',
              file=sys.stderr)
    for name, value in recipe.env().items():      # recipe defaults; the caller's environment wins
        run_env.setdefault(name, value)
    if model and Path(model).is_dir():            # a local model: never look it up on a hub
        for name, value in OFFLINE_ENV.items():
            run_env.setdefault(name, value)
    return recipe, run_env


def shown_command(cmd: list[str], env: dict, recipe: Recipe) -> str:
    keys = [k for k in (*DIST_ENV, *recipe.env()) if k in env]
    keys += [k for k in ('CUDA_VISIBLE_DEVICES', 'USE_HF') if k in env]
    prefix = ' '.join(f'{k}={shlex.quote(env[k])}' for k in dict.fromkeys(keys))
    return (prefix + ' ' if prefix else '') + shlex.join(cmd)


def write_composed(recipe: Recipe, path: Path) -> None:
    """The expanded recipe next to the run's output: what produced it, each flag with its source."""
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(f'# composed from {recipe.path}\n')
        for flag in recipe.flags:
            where = f'{flag.file}:{flag.line}' if flag.line else flag.file
            f.write(f'{shlex.join(flag.argv())}  # {where}\n')


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if '--' in argv:
        cut = argv.index('--')
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--recipe', required=True, help='recipe file, e.g. recipes/qwen2_5_vl/7B_lora.args')
    ap.add_argument('--data', required=True, help='prepared data folder (make prepare): ${DATA} in recipes')
    ap.add_argument('--run', required=True, help='output folder for checkpoints: ${RUN} in recipes')
    ap.add_argument('--model', help='base model (hub id or folder): overrides the recipe, ${MODEL} in recipes')
    ap.add_argument('--resume', action='store_true', help='continue from the latest checkpoint under --run')
    ap.add_argument('--dry-run', action='store_true', help='print the command, do not run it')
    args = ap.parse_args(argv)

    recipe, run_env = compose(args.recipe, args.data, args.run, args.model, extra, args.resume, dict(os.environ),
                              visible_gpus())
    cmd = [*swift_command(), 'sft', *recipe.swift_argv()]
    print(shown_command(cmd, run_env, recipe), flush=True)
    report_lengths(recipe, run_env)
    if args.dry_run:
        return 0
    write_composed(recipe, Path(args.run) / 'recipe.args')
    recorded = dict.fromkeys([*recipe.env(), *(k for k in IMAGE_BUDGET_ENV if run_env.get(k))])
    write_run_env(args.run, {k: run_env[k] for k in recorded})   # export copies it next to the model
    returncode = subprocess.run(cmd, env=run_env).returncode
    if run_env.get('NODE_RANK', '0') in ('', '0'):   # one curve per run, from the node that writes the logs
        draw_curve(args.run)
    return returncode


def report_lengths(recipe: Recipe, env: dict) -> None:
    """Say how many training samples exceed --max_length at the run's MAX_PIXELS: ms-swift drops (or cuts) them
    without a word."""
    from training.length_check import overlong
    found = overlong(recipe, env, recipe.value('model'))
    if found is None:
        return
    where = f'--max_length {found["max_length"]} at MAX_PIXELS={found["max_pixels"]}'
    if found['over']:
        strategy = recipe.value('truncation_strategy', 'delete')
        fate = 'drops them' if strategy == 'delete' else f'cuts them (--truncation_strategy {strategy})'
        print(f'warning: {found["over"]:,} of {found["total"]:,} training samples are longer than {where} '
              f'(longest {found["longest"]:,} tokens): ms-swift {fate}; raise --max_length or lower MAX_PIXELS',
              file=sys.stderr, flush=True)
    else:
        print(f'length check: all {found["total"]:,} training samples fit {where}', file=sys.stderr, flush=True)


def draw_curve(run: str) -> None:
    """RUN/loss_curve.png after every run (also a failed or killed one: its logged steps are worth seeing)."""
    from training.curves import write_curve
    try:
        print(f'loss curve: {write_curve(run)}', flush=True)
    except InputError as e:
        print(f'no loss curve: {e}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
