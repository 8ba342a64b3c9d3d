"""vLLM in `make infer` against plain vLLM, our transformers path and the medvqa template loop: one run, one GPU.

Usage (repository root, GPU machine, the stack importable by python3; data from bench.gpu.make_data):
    python3 -m bench.gpu.vllm_bench MODEL DATA [--n 1500] [--max-new-tokens 64] [--budget 540]
        [--stages ours,plain,tf,ours_warm] [--work /tmp/vllm_bench] [--out bench/gpu/results/vllm_bench.json]
Every stage is a separate process (so each one starts cold and frees the GPU), on the same N items of
DATA/swift/task1_public-original.jsonl, greedy, --max-new-tokens:
  ours        `python -m inference.predict --backend vllm` (the `make infer` path): end to end (command start ->
              predictions written) and its PRED.timing.json (start-up breakdown, rows/s while generating)
  ours_warm   the same again: warm compile cache; its answers against `ours` (same inputs twice)
  plain       `vllm.LLM(...).generate(all N at once)` with the HF chat prompt (the comparison target; the 2026-12-03
              run measured it the same way): engine start, image opening, generation
  tf          `inference.predict --backend transformers --batch-size 128` (fast attention)
  medvqa      ms-swift TransformersEngine batch 16 (the medvqa Task-1 template's loop, bench.gpu.infer_bench) on
              min(N, --medvqa-n) items
  ours_seqs64 `ours` with --batch-size 64 (64 concurrent sequences): greedy answers vs batch composition
  eager_small / compiled_small   `ours` on --small-n items with --enforce-eager / compiled (warm cache): which mode
              is cheaper end to end for a small job
A stage is skipped when the estimate of its time exceeds what is left of --budget seconds; the table and the JSON
(written after every stage) say which ran. Peak GPU memory comes from nvidia-smi sampled every 0.5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.procs import die_with_spawning_parent, mark_parent

if __name__ == '__mp_main__':   # vLLM's engine core of the plain stage: dies with it (no orphan holding the GPU)
    die_with_spawning_parent()

STAGES = ('ours', 'plain', 'tf', 'ours_warm', 'medvqa', 'ours_seqs64', 'eager_small', 'compiled_small')
DEFAULT_STAGES = 'ours,plain,tf,ours_warm'
ESTIMATE_S = {'ours': 200, 'ours_warm': 150, 'plain': 170, 'tf': 130, 'medvqa': 120, 'ours_seqs64': 160,
              'eager_small': 80, 'compiled_small': 100}   # from the 2026-12-03 H200 run, 1,500 items; scaled below
SPLIT = 'task1_public-original'


def qwen_vl_prompt(question: str, system: str = 'You are a helpful assistant.') -> str:
    """Qwen2.5-VL's chat format with one image (what its chat template produces)."""
    return (f'<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>'
            f'{question}<|im_end|>\n<|im_start|>assistant\n')


def read_items(data: str, n: int) -> list[dict]:
    items = []
    with open(Path(data) / 'swift' / f'{SPLIT}.jsonl', encoding='utf-8') as f:
        for line in f:
            row = json.loads(line)
            system = next((m['content'] for m in row['messages'] if m['role'] == 'system'), None)
            user = next(m['content'] for m in row['messages'] if m['role'] == 'user')
            items.append({'question': user.replace('<image>', ''), 'image': row['images'][0], 'system': system})
            if len(items) == n:
                break
    return items


def run_plain(a) -> None:
    """The comparison target, in its own process: plain vllm.LLM.generate on all items at once."""
    from inference.vllm_engine import quiet_offline_env, spawn_engine_processes
    quiet_offline_env()
    spawn_engine_processes()   # vLLM would fork its engine core here (no ms-swift import sets spawn), past the guard
    t0 = time.monotonic()
    from PIL import Image
    from vllm import LLM, SamplingParams
    imported = time.monotonic()
    llm = LLM(model=a.model, limit_mm_per_prompt={'image': 1}, max_model_len=4096, dtype='bfloat16',
              gpu_memory_utilization=0.9, seed=0)
    started = time.monotonic()
    items = read_items(a.data, a.n)
    prompts = []
    for item in items:
        with Image.open(item['image']) as im:
            image = im.convert('RGB')
        prompt = qwen_vl_prompt(item['question'], item['system'] or 'You are a helpful assistant.')
        prompts.append({'prompt': prompt, 'multi_modal_data': {'image': image}})
    opened = time.monotonic()
    outputs = llm.generate(prompts, SamplingParams(max_tokens=a.max_new_tokens, temperature=0), use_tqdm=False)
    done = time.monotonic()
    with open(a.plain_preds, 'w', encoding='utf-8') as f:
        for out in outputs:
            f.write(json.dumps({'prediction': out.outputs[0].text.strip()}) + '\n')
    result = {'import_s': imported - t0, 'engine_s': started - imported, 'open_images_s': opened - started,
              'generate_s': done - opened, 'items': len(outputs),
              'generated_tokens': sum(len(o.outputs[0].token_ids) for o in outputs),
              'prompt_tokens_mean': sum(len(o.prompt_token_ids) for o in outputs) / len(outputs)}
    Path(a.plain_json).write_text(json.dumps(result, indent=1))


class GpuMemory:
    """Peak used GPU memory (MiB) over a stage, from nvidia-smi sampled every 0.5 s (None without nvidia-smi)."""

    def __init__(self, path: Path):
        self.path, self.proc = path, None
        try:
            self.proc = subprocess.Popen(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits',
                                          '-lms', '500'], stdout=open(path, 'w'), stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            pass

    def stop(self) -> float | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait()
        values = [float(x.split(',')[0]) for x in self.path.read_text().split() if x.replace('.', '').isdigit()]
        return max(values) if values else None


def predictions(path: Path) -> list[str]:
    with open(path, encoding='utf-8') as f:
        return [json.loads(line)['prediction'].strip() for line in f]


def same(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b))


AGREEMENT_PAIRS = (('ours', 'ours_warm'), ('ours', 'ours_seqs64'), ('ours', 'plain'), ('ours', 'tf'))


def identical_answers(preds: dict[str, list[str]]) -> dict[str, str]:
    """'x vs y' -> 'identical/compared' greedy answers, line by line, for each pair of stages that both wrote
    predictions (compared over the shorter file)."""
    return {f'{x} vs {y}': f'{same(preds[x], preds[y])}/{min(len(preds[x]), len(preds[y]))}'
            for x, y in AGREEMENT_PAIRS if x in preds and y in preds}


def stage_command(a, name: str, work: Path) -> tuple[list[str], Path | None]:
    data = str(Path(a.data) / 'swift' / f'{SPLIT}.jsonl')

    def predict(out: str, *extra: str, limit: int = a.n) -> list[str]:
        return [sys.executable, '-m', 'inference.predict', '--model', a.model, '--data', data, '--out',
                str(work / out), '--max-new-tokens', str(a.max_new_tokens), '--limit', str(limit), *extra]

    if name in ('ours', 'ours_warm'):
        return predict(f'{name}.jsonl', '--backend', 'vllm'), work / f'{name}.jsonl'
    if name == 'ours_seqs64':
        return predict(f'{name}.jsonl', '--backend', 'vllm', '--batch-size', '64'), work / f'{name}.jsonl'
    if name == 'eager_small':
        return predict(f'{name}.jsonl', '--backend', 'vllm', '--enforce-eager', limit=a.small_n), \
            work / f'{name}.jsonl'
    if name == 'compiled_small':
        return predict(f'{name}.jsonl', '--backend', 'vllm', limit=a.small_n), work / f'{name}.jsonl'
    if name == 'tf':
        return predict('tf.jsonl', '--backend', 'transformers', '--batch-size', '128', '--attention', 'fast'), \
            work / 'tf.jsonl'
    if name == 'plain':
        return [sys.executable, '-m', 'bench.gpu.vllm_bench', a.model, a.data, '--plain', '--n', str(a.n),
                '--max-new-tokens', str(a.max_new_tokens), '--plain-json', str(work / 'plain.json'),
                '--plain-preds', str(work / 'plain.jsonl')], work / 'plain.jsonl'
    if name == 'medvqa':
        return [sys.executable, '-m', 'bench.gpu.infer_bench', a.model, a.data, '--mode', 'engine', '--batch', '16',
                '--n', str(min(a.n, a.medvqa_n)), '--max-new-tokens', str(a.max_new_tokens), '--split', SPLIT,
                '--name', 'medvqa', '--out', str(work / 'medvqa.json')], None
    raise ValueError(name)


def summarize(name: str, wall: float, work: Path, a) -> dict:
    """items/s while generating, start-up and end to end, from what each stage wrote."""
    row: dict = {'stage': name, 'wall_s': round(wall, 1)}
    timing = work / f'{name}.timing.json'
    if timing.is_file():
        t = json.loads(timing.read_text())
        run = t.get('stream') or {}
        row.update(items=run.get('rows'), items_per_s=run.get('items_per_s'), startup_s=t.get('startup_s'),
                   end_to_end_s=t.get('end_to_end_s'), timing=t)
    elif name == 'plain' and (work / 'plain.json').is_file():
        p = json.loads((work / 'plain.json').read_text())
        row.update(items=p['items'], items_per_s=round(p['items'] / p['generate_s'], 2),
                   items_per_s_with_image_opening=round(p['items'] / (p['generate_s'] + p['open_images_s']), 2),
                   startup_s=round(p['import_s'] + p['engine_s'], 1), plain=p)
    elif name == 'medvqa' and (work / 'medvqa.json').is_file():
        m = json.loads((work / 'medvqa.json').read_text())
        row.update(items=m['items'], items_per_s=round(m['items_per_s'], 2), medvqa=m)
    return row


def table(rows: list[dict], agreement: dict) -> str:
    plain = next((r['items_per_s'] for r in rows if r['stage'] == 'plain' and r.get('items_per_s')), None)
    lines = ['| stage | items | items/s while generating | vs plain | start-up s | end to end s | wall s | '
             'peak GPU MiB |', '|' + '---|' * 8]
    for r in rows:
        ratio = f"{r['items_per_s'] / plain:.2f}" if plain and r.get('items_per_s') else ''
        lines.append(f"| {r['stage']} | {r.get('items', '')} | {r.get('items_per_s', '')} | {ratio} | "
                     f"{r.get('startup_s', '')} | {r.get('end_to_end_s', '')} | {r['wall_s']} | "
                     f"{r.get('peak_gpu_mib', '')} |")
    if agreement:
        lines += ['', 'identical greedy answers: ' + ', '.join(f'{k} {v}' for k, v in agreement.items())]
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model')
    ap.add_argument('data')
    ap.add_argument('--n', type=int, default=1500)
    ap.add_argument('--max-new-tokens', type=int, default=64)
    ap.add_argument('--stages', default=DEFAULT_STAGES, help=f'comma-separated, from {",".join(STAGES)}')
    ap.add_argument('--budget', type=float, default=540, help='seconds for all stages (later ones are skipped)')
    ap.add_argument('--medvqa-n', type=int, default=500, help='items for the (slow) medvqa loop')
    ap.add_argument('--small-n', type=int, default=64, help='items of the small-job stages')
    ap.add_argument('--work', default='/tmp/vllm_bench', help='predictions and logs (rerun: delete it first)')
    ap.add_argument('--out', default='bench/gpu/results/vllm_bench.json')
    ap.add_argument('--plain', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--plain-json', help=argparse.SUPPRESS)
    ap.add_argument('--plain-preds', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    mark_parent()
    if a.plain:
        return run_plain(a)
    stages = [s for s in a.stages.split(',') if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f'error: --stages: unknown {sorted(unknown)}; choose from {",".join(STAGES)}')
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    # MAX_PIXELS: the recipe's image budget (what a trained model's medico_env.json gives `make infer`); the bench
    # images (<= 640x512) are not resized under it, so every path sees the same image tokens
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1',
               MODELSCOPE_OFFLINE='1', PYTHONUNBUFFERED='1', MAX_PIXELS=os.environ.get('MAX_PIXELS', '640000'))
    t_start, rows, preds = time.monotonic(), [], {}
    result = {'model': a.model, 'data': a.data, 'items': a.n, 'max_new_tokens': a.max_new_tokens, 'stages': rows}
    for name in stages:
        scale = (a.small_n if name.endswith('_small') else min(a.n, a.medvqa_n) if name == 'medvqa' else a.n) / 1500
        estimate = ESTIMATE_S[name] * max(scale, 0.4)
        left = a.budget - (time.monotonic() - t_start)
        if left < estimate:
            rows.append({'stage': name, 'wall_s': 0, 'skipped': f'budget: {left:.0f} s left, ~{estimate:.0f} s needed'})
            print(f'[vllm_bench] skip {name}: {rows[-1]["skipped"]}', flush=True)
            continue
        cmd, pred_file = stage_command(a, name, work)
        print(f'[vllm_bench] {name}: {" ".join(cmd)}', flush=True)
        memory = GpuMemory(work / f'{name}.smi.csv')
        t0 = time.monotonic()
        with open(work / f'{name}.log', 'w') as log:
            try:
                rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=max(60.0, a.budget - (t0 - t_start))).returncode
            except subprocess.TimeoutExpired:
                rc = 'timeout'
        wall = time.monotonic() - t0
        row = summarize(name, wall, work, a)
        row.update(rc=rc, peak_gpu_mib=memory.stop())
        if rc != 0:
            row['log_tail'] = (work / f'{name}.log').read_text(errors='replace')[-2000:]
        elif pred_file is not None and pred_file.is_file():
            preds[name] = predictions(pred_file)
        rows.append(row)
        print(f'[vllm_bench] {name} rc={rc} wall {wall:.1f} s items/s {row.get("items_per_s")}', flush=True)
        result['identical_answers'] = identical_answers(preds)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    print(table(rows, result.get('identical_answers') or {}), flush=True)
    print(f'[vllm_bench] wrote {a.out}', flush=True)


if __name__ == '__main__':
    main()
