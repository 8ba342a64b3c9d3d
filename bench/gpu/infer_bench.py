"""Inference throughput with the transformers backend: items/s and generated tokens/s.

Usage: python -m bench.gpu.infer_bench MODEL DATA_DIR --mode MODE [--n 1500] [--batch 64] [--max-new-tokens 32]
                                      [--packed-vit] [--profile FILE] [--out result.json] [--split train-original]
Questions and images: the first N lines of DATA_DIR/swift/<split>.jsonl (the assistant turn is dropped).
The model's family (Qwen2.5-VL, Qwen3-VL, Gemma 3 / MedGemma) comes from its config.json (common.model_family).
Modes:
  engine  ms-swift's TransformersEngine(max_batch_size=--batch).infer(all requests) — the medvqa Task-1 template's
          loop (its default: --batch 16) and what inference/backends.py uses today;
  ours    the `make infer` code path: inference.backends.load_backend('transformers', batch --batch, attention
          --attention) answering chunks of --batch prompts (Backend.answer), as inference.predict does;
  hf      plain transformers: prompts + images prepared by DataLoader workers, left padding, batches of --batch,
          model.generate(greedy), bf16, sdpa.
--packed-vit switches the vision tower to one attention call per layer (training/vit_attention.py; Qwen2.5-VL only).
The model is random-init, so it rarely emits EOS: almost every item generates exactly --max-new-tokens tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from common.model_family import family_of_config

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def sync():
    if DEVICE == 'cuda':
        torch.cuda.synchronize()


def load_rows(data: str, n: int, split: str = 'train-original') -> list[dict]:
    rows = []
    with open(os.path.join(data, 'swift', f'{split}.jsonl'), encoding='utf-8') as f:
        for line in f:
            row = json.loads(line)
            rows.append({'question': row['messages'][0]['content'].replace('<image>', ''), 'image': row['images'][0]})
            if len(rows) == n:
                break
    return rows


def swift_kinds(model: str) -> tuple[str | None, str | None]:
    """ms-swift (model_type, template) of the model folder, as `make infer` finds them."""
    from inference.backends import read_model_kind
    return read_model_kind(model, [])


def run_engine(a, rows) -> dict:
    from swift.infer_engine import InferRequest, RequestConfig, TransformersEngine
    model_type, template = swift_kinds(a.model)
    engine = TransformersEngine(a.model, model_type=model_type, template_type=template, max_batch_size=a.batch,
                                torch_dtype=torch.bfloat16, attn_impl='sdpa')
    if a.packed_vit:
        from training.vit_attention import use_packed_vit_attention
        use_packed_vit_attention(engine.model)
    requests = [InferRequest(messages=[{'role': 'user', 'content': f"<image> {r['question']}"}], images=[r['image']])
                for r in rows]
    config = RequestConfig(max_tokens=a.max_new_tokens, temperature=0)
    engine.infer(requests[:a.batch], config, use_tqdm=False)  # warm-up: kernels, allocator
    sync()
    t0 = time.perf_counter()
    responses = engine.infer(requests, config, use_tqdm=True)
    sync()
    seconds = time.perf_counter() - t0
    generated = sum(r.usage.completion_tokens for r in responses)
    profile(a, lambda: engine.infer(requests[:2 * a.batch], config, use_tqdm=False))
    return dict(seconds=seconds, generated_tokens=generated)


def profile(a, fn):
    """--profile FILE: torch.profiler over fn() (two batches), top ops by GPU and by host time, GPU-busy share."""
    if not a.profile:
        return
    from torch.profiler import ProfilerActivity, profile as torch_profile
    sync()
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type.name == 'CPU')
    with open(a.profile, 'w') as f:
        f.write(f'wall {wall:.3f} s, summed self GPU time {gpu_us / 1e6:.3f} s (busy <= {gpu_us / 1e6 / wall:.2f})\n')
        f.write(events.table(sort_by='self_device_time_total', row_limit=30) + '\n')
        f.write(events.table(sort_by='self_cpu_time_total', row_limit=30) + '\n')


def run_ours(a, rows) -> dict:
    from inference.backends import load_backend
    model_type, template = swift_kinds(a.model)
    backend = load_backend('transformers', a.model, [], max_new_tokens=a.max_new_tokens, logprobs=False,
                           batch_size=a.batch, model_type=model_type, template=template, attention=a.attention)
    prompts = [{'messages': [{'role': 'user', 'content': '<image>' + r['question']}], 'images': [r['image']]}
               for r in rows]

    def answer_all(subset):
        out = []
        for start in range(0, len(subset), backend.chunk_size):
            out += backend.answer(subset[start:start + backend.chunk_size])
        return out

    answer_all(prompts[:a.batch])  # warm-up
    sync()
    t0 = time.perf_counter()
    answers = answer_all(prompts)
    sync()
    seconds = time.perf_counter() - t0
    profile(a, lambda: answer_all(prompts[:2 * a.batch]))
    tokenizer = backend.engine.template.processor.tokenizer
    generated = sum(len(tokenizer.encode(x['prediction'], add_special_tokens=False)) for x in answers)
    return dict(seconds=seconds, generated_tokens=generated, attention=a.attention)


class Prompts(torch.utils.data.Dataset):
    def __init__(self, rows, processor):
        self.rows, self.processor = rows, processor

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        from PIL import Image
        row = self.rows[i]
        messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': row['question']}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, Image.open(row['image']).convert('RGB')


def run_hf(a, rows) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    processor = AutoProcessor.from_pretrained(a.model)
    processor.tokenizer.padding_side = 'left'  # generation appends on the right: prompts must end aligned
    dtype = torch.bfloat16 if DEVICE == 'cuda' else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(a.model, dtype=dtype, attn_implementation='sdpa',
                                                        device_map=DEVICE).eval()
    if a.packed_vit:
        from training.vit_attention import use_packed_vit_attention
        use_packed_vit_attention(model)
    pad = processor.tokenizer.pad_token_id
    stop = set(model.generation_config.eos_token_id or []) | {pad}

    def collate(items):
        texts, images = zip(*items)   # one image per prompt, nested as Gemma 3's processor wants it
        return processor(text=list(texts), images=[[im] for im in images], padding=True, return_tensors='pt')

    def batches(subset):
        return torch.utils.data.DataLoader(Prompts(subset, processor), batch_size=a.batch, num_workers=a.workers,
                                           collate_fn=collate, pin_memory=DEVICE == 'cuda',
                                           prefetch_factor=4 if a.workers else None)

    def generate(batch):
        batch = batch.to(DEVICE, non_blocking=True)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=pad)
        new = out[:, batch['input_ids'].shape[1]:].tolist()
        # tokens up to and including the first stop token
        return sum(next((i + 1 for i, t in enumerate(seq) if t in stop), len(seq)) for seq in new)

    for batch in batches(rows[:a.batch]):  # warm-up
        generate(batch)
    sync()
    t0 = time.perf_counter()
    generated = sum(generate(b) for b in batches(rows))
    sync()
    seconds = time.perf_counter() - t0
    profile(a, lambda: [generate(b) for b in batches(rows[:2 * a.batch])])
    return dict(seconds=seconds, generated_tokens=generated)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model')
    ap.add_argument('data')
    ap.add_argument('--mode', choices=['engine', 'ours', 'hf'], required=True)
    ap.add_argument('--attention', default='fast', help="ours: inference.fast_attention choice (auto|fast|stock)")
    ap.add_argument('--n', type=int, default=1500)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--max-new-tokens', type=int, default=32)
    ap.add_argument('--workers', type=int, default=8)
    ap.add_argument('--packed-vit', action='store_true')
    ap.add_argument('--profile', help='write a torch.profiler table of two extra batches to this file')
    ap.add_argument('--name', default=None)
    ap.add_argument('--split', default='train-original', help='prepared split to read (bench.gpu.make_data)')
    ap.add_argument('--out')
    a = ap.parse_args(argv)
    rows = load_rows(a.data, a.n, a.split)
    res = {'engine': run_engine, 'ours': run_ours, 'hf': run_hf}[a.mode](a, rows)
    res.update(name=a.name or a.mode, mode=a.mode, items=len(rows), batch=a.batch, max_new_tokens=a.max_new_tokens,
               packed_vit=a.packed_vit, items_per_s=len(rows) / res['seconds'],
               generated_tokens_per_s=res['generated_tokens'] / res['seconds'],
               peak_allocated_GiB=torch.cuda.max_memory_allocated() / 2 ** 30 if DEVICE == 'cuda' else None,
               family=family_of_config(a.model).name if family_of_config(a.model) else None,
               device=torch.cuda.get_device_name(0) if DEVICE == 'cuda' else 'cpu')
    print('[bench] infer', json.dumps(res), flush=True)
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
