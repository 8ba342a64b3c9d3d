"""Turn a run's checkpoint into a standalone model folder, check it, and (optionally) push it to the hub.

    python -m training.export --run runs/7B_lora --out runs/7B_lora/merged [--checkpoint CK] \
        [--check-data data/prepared/swift/val-original.jsonl] [--hub-model-id user/name]

LoRA checkpoints are merged with `swift export --merge_lora true`; full fine-tunes are copied (weights, config and
processor files, without optimizer states). With --check-data, a few samples are answered greedily by the merged
model and by base model + adapter: any difference exits non-zero. The hub push happens only after the check, only
with a hub id and a token (HF_TOKEN or `huggingface-cli login`).
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
from common.hub import hub_env, hub_token, use_hub_defaults
from common.io import read_jsonl, write_json
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


def partial_dir(out: Path) -> Path:
    """Where a model folder is assembled and checked before it is renamed onto `out`."""
    tmp = out.with_name(f'.{out.name}.partial')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


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


def push(out: Path, repo_id: str) -> bool:
    token = hub_token()
    if not token:
        print(f'no Hugging Face token (HF_TOKEN or `hf auth login`): not pushing to {repo_id}')
        return False
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=True, repo_type='model')
    api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type='model',
                      commit_message='Medico 2026 fine-tuned model (training.export)')
    print(f'pushed {out} to https://huggingface.co/{repo_id} (private)')
    return True


def export(run: str, out: str, checkpoint: str | None = None, check_data: str | None = None, check_n: int = 4,
           hub_model_id: str | None = None) -> Path:
    ck = find_checkpoint(Path(run), checkpoint).resolve()
    use_hub_defaults()   # the check loads a hub base model in this process: from Hugging Face unless USE_HF=0
    run_env = read_run_env(run)
    for name, value in run_env.items():       # e.g. MAX_PIXELS: the check answers with training's image size
        os.environ.setdefault(name, value)
    out_path = Path(out)
    info_path = out_path / DONE
    if info_path.is_file() and json.loads(info_path.read_text()).get('checkpoint') == str(ck):
        print(f'{out_path} already holds {ck}: not exporting again')
        for change in make_self_contained(out_path, run_env):   # folders exported before this step existed
            print(f'{out_path}: {change}')
    else:
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
        write_json(tmp / DONE, {'checkpoint': str(ck), 'lora_merged': is_lora(ck),
                                'checked_samples': check_n if check_data and is_lora(ck) else 0})
        shutil.rmtree(out_path, ignore_errors=True)
        tmp.rename(out_path)
    if hub_model_id:
        push(out_path, hub_model_id)
    return out_path


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
