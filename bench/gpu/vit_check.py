"""Check and time the Qwen2.5-VL vision tower alone: per-window sdpa loop (transformers' default without
flash-attn) vs the packed implementations of training/vit_attention.py. Same weights, same images.

Usage: python -m bench.gpu.vit_check MODEL_DIR DATA_DIR [--images 16] [--repeat 5] [--out result.json]
Loads only the vision tower (random init from MODEL_DIR's config; weights do not change the timing), encodes
`--images` generated images with the model's processor, and reports per-forward ms and the relative error
‖packed - loop‖ / ‖loop‖ of the merged vision features.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from PIL import Image

from training import vit_attention


def time_forward(vit, pixels, grid, repeat: int) -> tuple[float, torch.Tensor]:
    sync = torch.cuda.synchronize if pixels.is_cuda else (lambda: None)
    with torch.no_grad():
        out = vit(pixels, grid_thw=grid).pooler_output  # warm-up (and the output to compare)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            vit(pixels, grid_thw=grid)
        sync()
    return (time.perf_counter() - t0) / repeat * 1000, out.float()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model')
    ap.add_argument('data')
    ap.add_argument('--images', type=int, default=16)
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--out')
    a = ap.parse_args(argv)
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    dtype = torch.bfloat16 if device == 'cuda' else torch.float32
    cfg = AutoConfig.from_pretrained(a.model).vision_config
    cfg._attn_implementation_internal = 'sdpa'
    torch.manual_seed(0)
    with torch.device(device):
        vit = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg, dtype=dtype).eval()
    rows = [json.loads(line) for line in open(os.path.join(a.data, 'swift', 'train-original.jsonl'))][:a.images]
    images = [Image.open(r['images'][0]).convert('RGB') for r in rows]
    enc = AutoProcessor.from_pretrained(a.model).image_processor(images=images, return_tensors='pt')
    pixels, grid = enc['pixel_values'].to(device, dtype), enc['image_grid_thw'].to(device)
    res = dict(device=torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu', images=len(images),
               patches=int(grid.prod(-1).sum()), dtype=str(dtype))
    ms_loop, ref = time_forward(vit, pixels, grid, a.repeat)
    res['sdpa_window_loop_ms'] = round(ms_loop, 2)
    vit_attention.register()
    kernels = ['padded'] + (['varlen'] if vit_attention._kernel() == 'varlen' else [])
    for kernel in kernels:
        os.environ['MEDICO_VIT_KERNEL'] = kernel
        cfg._attn_implementation_internal = vit_attention.NAME
        ms, out = time_forward(vit, pixels, grid, a.repeat)
        cfg._attn_implementation_internal = 'sdpa'
        err = float((out - ref).norm() / ref.norm())
        res[f'{kernel}_ms'] = round(ms, 2)
        res[f'{kernel}_rel_err'] = err
        res[f'{kernel}_speedup'] = round(ms_loop / ms, 2)
        assert torch.isfinite(out).all() and err < (2e-2 if dtype == torch.bfloat16 else 1e-4), (kernel, err)
    os.environ.pop('MEDICO_VIT_KERNEL', None)
    print(json.dumps(res))
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
