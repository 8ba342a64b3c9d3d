"""Collect the benchmark JSON files of one GPU session into a table with MFU.

Usage: python -m bench.gpu.summarize LOG_DIR MODEL_DIR [--peak 989] [--out summary.json]
Reads LOG_DIR/perf_*.json (bench_perf callback), vit.json (vit_check), infer_*.json (infer_bench) and
MODEL_DIR/param_count.json (build_model). Model FLOPs per training sample (LoRA, frozen base and frozen ViT):
    F = T * 4 * N_llm  +  P * (2 * (N_vit_blocks + N_patch_embed) + 2 * N_merger * m)
T = real (unpadded) tokens per sample, P = ViT patches per sample, both as counted during the run; m = projector
tokens per patch: 1/4 for Qwen-VL (2 x 2 patches merge), 1/16 for Gemma 3 (4,096 patches pooled to 256 tokens).
"""
from __future__ import annotations

import argparse
import glob
import json
import os


def flops_per_sample(perf: dict, params: dict) -> float:
    merged = params.get('merger_tokens_per_patch', 1 / 4)   # files written before the Gemma shape: Qwen's 2 x 2
    vit_per_patch = (2 * (params['vit_blocks_linear'] + params['vit_patch_embed'])
                     + 2 * params['vit_merger_linear'] * merged)
    return perf['tokens_per_sample'] * 4 * params['llm_linear'] + perf['vit_patches_per_sample'] * vit_per_patch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('logs')
    ap.add_argument('model')
    ap.add_argument('--peak', type=float, default=989e12, help='dense bf16 FLOP/s of the card (H100/H200 SXM: 989e12)')
    ap.add_argument('--out')
    a = ap.parse_args(argv)
    with open(os.path.join(a.model, 'param_count.json')) as f:
        params = json.load(f)
    res = {'train': [], 'infer': []}
    vit = os.path.join(a.logs, 'vit.json')
    if os.path.exists(vit):
        with open(vit) as f:
            res['vit'] = json.load(f)
    lines = ['| run | batch | s/step | samples/s | tokens/s | TFLOP/s | MFU | peak alloc GiB | GPU busy (profile) |'
             ' kernels/step | sdpa calls/step |', '|' + '---|' * 11]
    for path in sorted(glob.glob(os.path.join(a.logs, 'perf_*.json')), key=os.path.getmtime):
        with open(path) as f:
            perf = json.load(f)
        if not perf.get('samples_per_s'):
            continue
        flops = flops_per_sample(perf, params)
        perf.update(tflop_per_sample=flops / 1e12, tokens_per_s=perf['samples_per_s'] * perf['tokens_per_sample'],
                    model_tflops=perf['samples_per_s'] * flops / 1e12, mfu=perf['samples_per_s'] * flops / a.peak)
        res['train'].append(perf)
        prof = perf.get('profile') or {}
        lines.append(f"| {perf['name']} | {perf['batch_per_step']} | {perf['s_per_step']:.3f} | "
                     f"{perf['samples_per_s']:.2f} | {perf['tokens_per_s']:,.0f} | {perf['model_tflops']:.1f} | "
                     f"{100 * perf['mfu']:.1f} % | {perf['peak_allocated_GiB'] or 0:.1f} | "
                     f"{prof.get('gpu_busy_fraction', float('nan')):.2f} | {prof.get('kernels_per_step', '')} | "
                     f"{prof.get('sdpa_calls_per_step', '')} |")
    for path in sorted(glob.glob(os.path.join(a.logs, 'infer_*.json')), key=os.path.getmtime):
        with open(path) as f:
            res['infer'].append(json.load(f))
    if res['infer']:
        lines += ['', '| inference | mode | batch | packed ViT | items | s | items/s | generated tokens/s |',
                  '|' + '---|' * 8]
        for r in res['infer']:
            lines.append(f"| {r['name']} | {r['mode']} | {r['batch']} | {r['packed_vit']} | {r['items']} | "
                         f"{r['seconds']:.1f} | {r['items_per_s']:.2f} | {r['generated_tokens_per_s']:,.0f} |")
    table = '\n'.join(lines)
    res['table'] = table
    print(json.dumps(res.get('vit')))
    print(table)
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
