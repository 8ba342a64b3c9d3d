"""Turn a run's checkpoint into a standalone model folder, check it, and (optionally) push it to the hub.

    python -m training.export --run runs/7B_lora --out runs/7B_lora/merged [--checkpoint CK] \
        [--check-data data/prepared/swift/val-original.jsonl] [--hub-model-id user/name]

LoRA checkpoints are merged with `swift export --merge_lora true`; full fine-tunes are copied (weights, config and
processor files, without optimizer states). With --check-data, a few samples are answered greedily by the merged
model and by base model + adapter: any difference exits non-zero. The hub push happens only after the check, only
with a hub id and a token (HF_TOKEN or `huggingface-cli login`); with a token, the id and the hub are checked before
the merge, so an unreachable hub is one line at once, not a traceback after the work.

The model is assembled and checked in RUN/.merged.partial and renamed onto --out when complete; a rerun after a crash
reuses a complete partial folder (its EXPORT_INFO.json is written last) and redoes an incomplete one. One export per
--out at a time (a lock file next to it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.hub import check_repo_id, hub_env, hub_error, hub_token, use_hub_defaults, why_not_online
from common.io import exclusive_lock, honour_umask, read_jsonl, write_json
from common.offline import offline_env
from common.run_env import read_run_env, write_run_env
from training.launch import latest_checkpoint, swift_command
from training.model_folder import make_self_contained

# Files of a full-weights checkpoint that a model folder does not need.
TRAINING_STATE = ('optimizer.pt', 'scheduler.pt', 'trainer_state.json', 'training_args.bin', 'rng_state*.pth',
                  'global_step*', 'zero_to_fp32.py', 'latest')
DONE = 'EXPORT_INFO.json'
MAX_CHECK_TOKENS = 32


def find_checkpoint(run: Path, checkpoint: str | None) -> Path:
    if checkpoint:
        ck = Path(checkpoint)
        if not ck.is_dir():
            raise InputError('checkpoint folder not found', file=str(ck))
        return ck
    ck = latest_checkpoint(run)
    if ck is None:
        raise InputError('no v*/checkpoint-* folder with trainer_state.json (train first: make sft)', file=str(run))
    return ck


def is_lora(ck: Path) -> bool:
    return (ck / 'adapter_config.json').is_file()


def partial_path(out: Path) -> Path:
    return out.with_name(f'.{out.name}.partial')


def partial_dir(out: Path) -> Path:
    """Where a model folder is assembled and checked before it is renamed onto `out` (emptied first)."""
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def read_info(folder: Path) -> dict | None:
    try:
        return json.loads((folder / DONE).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None


def weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for pattern in ('*.safetensors', '*.bin') for p in folder.glob(pattern))


def check_free_space(ck: Path, out: Path) -> None:
    """The merged model is about as large as the base model (a full fine-tune: as its checkpoint): refuse at once,
    in one line, when the disk cannot hold it, instead of failing inside `swift export` after the load."""
    source = ck
    if is_lora(ck):
        try:
            base = json.loads((ck / 'args.json').read_text(encoding='utf-8'))['model']
        except (OSError, ValueError, KeyError):
            return
        if not Path(base).is_dir():
            return   # a hub model: its size is not known here
        source = Path(base)
    need = int(weights_size(source) * 1.05) + (1 << 20)
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise InputError(f'needs about {need / 2**20:.1f} MiB free for the merged model, {free / 2**20:.1f} MiB free '
                         'here', file=str(out.parent), field='--out')


def merge_lora(ck: Path, dest: Path) -> None:
    cmd = [*swift_command(), 'export', '--adapters', str(ck), '--merge_lora', 'true', '--output_dir', str(dest)]
    print(' '.join(cmd), flush=True)
    env = offline_env() if Path(json.loads((ck / 'args.json').read_text())['model']).is_dir() else hub_env()
    if subprocess.run(cmd, env=env).returncode != 0:
        raise SystemExit('error: swift export failed (see above)')


def copy_full(ck: Path, dest: Path) -> None:
    shutil.copytree(ck, dest, ignore=shutil.ignore_patterns(*TRAINING_STATE))


def check_samples(path: str, n: int) -> list[dict]:
    """The first n rows of an ms-swift JSONL as prompts (the final assistant answer removed)."""
    rows = read_jsonl(path)[:n]
    prompts = []
    for i, row in enumerate(rows, 1):
        messages = row.get('messages')
        if not isinstance(messages, list) or not messages:
            raise InputError('no messages list', file=path, row=i, field='messages')
        if messages[-1].get('role') == 'assistant':
            messages = messages[:-1]
        prompts.append({'messages': messages, 'images': row.get('images') or []})
    return prompts


def greedy_answers(prompts: list[dict], model: str, adapters: list[str] | None = None,
                   **kw) -> list[tuple[str, list[float]]]:
    """(answer, log-probability of each generated token) per prompt, greedy decoding."""
    import gc

    from swift import InferRequest, RequestConfig, TransformersEngine

    engine = TransformersEngine(model, adapters=adapters, max_batch_size=1, **kw)
    config = RequestConfig(max_tokens=MAX_CHECK_TOKENS, temperature=0, logprobs=True)
    responses = engine.infer([InferRequest(messages=p['messages'], images=p['images']) for p in prompts], config,
                             use_tqdm=False)
    out = [(r.choices[0].message.content, [t['logprob'] for t in (r.choices[0].logprobs or {}).get('content', [])])
           for r in responses]
    del engine
    gc.collect()
    return out


def compare_with_adapter(ck: Path, model: Path | str, data: str, n: int) -> list[dict]:
    """Greedy answers of `model` (the merged folder) vs base model + adapter `ck`, one dict per sample:
    `same` (identical answer text) and `logprob_gap` (largest difference of the chosen tokens' log-probabilities
    over the common prefix; ~1e-6 in fp32, up to ~0.1 in bf16)."""
    args = json.loads((ck / 'args.json').read_text(encoding='utf-8'))
    prompts = check_samples(data, n)
    kw = {'model_type': args.get('model_type'), 'template_type': args.get('template')}
    with_adapter = greedy_answers(prompts, args['model'], [str(ck)], **kw)
    from_model = greedy_answers(prompts, str(model), **kw)
    results = []
    for i, ((a, a_lp), (m, m_lp)) in enumerate(zip(with_adapter, from_model), 1):
        gap = max((abs(x - y) for x, y in zip(a_lp, m_lp)), default=0.0)
        results.append({'sample': i, 'same': a == m, 'logprob_gap': gap, 'adapter': a, 'merged': m})
        print(f'check {i}: {"same" if a == m else "DIFFERENT"} (max log-prob gap {gap:.2e}): '
              f'adapter={a[:60]!r} merged={m[:60]!r}')
    return results


def check_push(repo_id: str) -> str | None:
    """Before any work: a valid repo id, and with a token, the hub reachable with it. Returns the token (None: no
    token, so nothing will be pushed, as documented)."""
    check_repo_id(repo_id, '--hub-model-id')
    token = hub_token()
    if token:
        reason = why_not_online(token)
        if reason:
            raise InputError(f'cannot push to {repo_id}: {reason}; nothing exported (unset HUB_MODEL_ID to export '
                             'without pushing)', field='--hub-model-id')
    return token


def push(out: Path, repo_id: str, token: str | None = None) -> bool:
    token = token or hub_token()
    if not token:
        print(f'no Hugging Face token (HF_TOKEN or `hf auth login`): not pushing to {repo_id}')
        return False
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, private=True, repo_type='model')
        api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type='model',
                          commit_message='Medico 2026 fine-tuned model (training.export)')
    except Exception as e:  # network, permissions, quota: one line; the merged model stays
        raise hub_error(f'pushing {out} to {repo_id} (the merged model is kept; rerun to retry)', e, token,
                        '--hub-model-id') from None
    print(f'pushed {out} to https://huggingface.co/{repo_id} (private)')
    return True


def export(run: str, out: str, checkpoint: str | None = None, check_data: str | None = None, check_n: int = 4,
           hub_model_id: str | None = None) -> Path:
    token = check_push(hub_model_id) if hub_model_id else None
    ck = find_checkpoint(Path(run), checkpoint).resolve()
    use_hub_defaults()   # the check loads a hub base model in this process: from Hugging Face unless USE_HF=0
    out_path = Path(out)
    with exclusive_lock(out_path.with_name(f'.{out_path.name}.lock'), 'training.export run', out_path):
        _export(ck, Path(run), out_path, check_data, check_n)
    if hub_model_id:
        push(out_path, hub_model_id, token)
    return out_path


def _export(ck: Path, run: Path, out_path: Path, check_data: str | None, check_n: int) -> None:
    run_env = read_run_env(run)
    for name, value in run_env.items():       # e.g. MAX_PIXELS: the check answers with training's image size
        os.environ.setdefault(name, value)
    info = {'checkpoint': str(ck), 'lora_merged': is_lora(ck),
            'checked_samples': check_n if check_data and is_lora(ck) else 0}
    done = read_info(out_path)
    if done and done.get('checkpoint') == str(ck):
        print(f'{out_path} already holds {ck}: not exporting again')
        for change in make_self_contained(out_path, run_env):   # folders exported before this step existed
            print(f'{out_path}: {change}')
        return
    if read_info(partial_path(out_path)) == info:   # merged and checked before a crash, not yet renamed
        tmp = partial_path(out_path)
        print(f'{tmp} holds a complete, checked export of {ck}: using it')
    else:
        check_free_space(ck, out_path)
        tmp = partial_dir(out_path)   # merged and checked aside: a failed check leaves no model at `out`
        if is_lora(ck):
            merge_lora(ck, tmp)
            if check_data:
                results = compare_with_adapter(ck, tmp, check_data, check_n)
                bad = sum(not r['same'] for r in results)
                if bad:
                    raise SystemExit(f'error: {bad} of {len(results)} check answers differ between the merged model '
                                     f'and the adapter (kept for inspection in {tmp})')
        else:
            copy_full(ck, tmp)
            if check_data:
                print('full fine-tune: the model folder is the checkpoint itself, nothing to compare')
        if run_env:
            write_run_env(tmp, run_env)
        for change in make_self_contained(tmp, run_env):   # serves from any directory, resizes like training
            print(f'{out_path}: {change}')
        honour_umask(tmp)   # swift export leaves model.safetensors 0600
        write_json(tmp / DONE, info)   # last: it marks the folder complete
    shutil.rmtree(out_path, ignore_errors=True)
    tmp.rename(out_path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--run', required=True, help='run folder written by training.launch')
    ap.add_argument('--checkpoint', help='checkpoint folder (default: the latest under --run)')
    ap.add_argument('--out', required=True, help='model folder to write, e.g. RUN/merged')
    ap.add_argument('--check-data', help='ms-swift JSONL: compare merged vs adapter greedy answers on a few rows')
    ap.add_argument('--check-samples', type=int, default=4, help='rows of --check-data to compare (default 4)')
    ap.add_argument('--hub-model-id', default=os.environ.get('HUB_MODEL_ID') or None,
                    help='push the checked model to this private hub repo (needs a token)')
    args = ap.parse_args(argv)
    print(export(args.run, args.out, args.checkpoint, args.check_data, args.check_samples, args.hub_model_id))
    return 0


if __name__ == '__main__':
    sys.exit(main())
