"""Random-init model with the Qwen2.5-VL-7B-Instruct architecture, saved as a transformers model folder.

Throughput does not depend on weight values, and no real weights exist offline, so benchmarks train and
generate with this. Usage: python -m bench.gpu.build_model OUT [--device cuda] [--tiny]
  --tiny: 2 decoder layers / 2 vision blocks, same widths, tokenizer and processor (CPU smoke tests).
  --micro: like --tiny with narrow widths (CPU tests of the training/inference flow in seconds).
Also writes OUT/param_count.json: the matmul weight counts the MFU formula in docs/benchmarks.md uses.
Architecture numbers: the public Qwen/Qwen2.5-VL-7B-Instruct config.json (see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

# The real Qwen tokenizer and chat template, built exactly as for the tiny CPU model (one implementation).
from training.tiny_model import CHAT_TEMPLATE, build_tokenizer  # noqa: E402

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_processor(tok):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    image = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2,
                                  temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    video = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN,
                                  image_std=CLIP_STD)  # transformers 5 requires one
    return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                               chat_template=CHAT_TEMPLATE)


def build_config(tiny: bool, micro: bool = False):
    from transformers import Qwen2_5_VLConfig
    layers, blocks = (2, 2) if tiny or micro else (28, 32)
    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers,
                num_attention_heads=28, num_key_value_heads=4, hidden_act='silu', max_position_embeddings=128000,
                rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=32768, max_window_layers=layers,
                attention_dropout=0.0, initializer_range=0.02, tie_word_embeddings=False,
                rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [16, 24, 24]},
                bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    # hidden_size must be given: transformers 5's vision config defaults it to 3584, the 7B ViT is 1280 wide
    vision = dict(depth=blocks, hidden_size=1280, hidden_act='silu', intermediate_size=3420, num_heads=16,
                  in_channels=3, out_hidden_size=3584, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=112, fullatt_block_indexes=[1] if tiny else [7, 15, 23, 31], tokens_per_second=2,
                  initializer_range=0.02)
    if micro:  # narrow widths too: a CPU test of the training flow in seconds (not the 7B shape)
        text.update(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                    rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [8, 12, 12]})
        vision.update(hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                           vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=False)
    cfg.architectures = ['Qwen2_5_VLForConditionalGeneration']
    return cfg


def matmul_weights(module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d)))


def param_counts(model) -> dict:
    lm, vit = model.model.language_model, model.model.visual
    return dict(total=sum(p.numel() for p in model.parameters()),
                llm_linear=matmul_weights(lm) + model.lm_head.weight.numel(),  # lm_head runs on every position
                vit_blocks_linear=matmul_weights(vit.blocks), vit_patch_embed=matmul_weights(vit.patch_embed),
                vit_merger_linear=matmul_weights(vit.merger))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--micro', action='store_true', help='2 layers and narrow widths (CPU flow tests only)')
    a = ap.parse_args(argv)
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration
    t0 = time.time()
    torch.manual_seed(0)
    processor = build_processor(build_tokenizer())
    with torch.device(a.device):  # bf16 straight on the device: no fp32 copy, no host round trip
        model = Qwen2_5_VLForConditionalGeneration._from_config(build_config(a.tiny, a.micro), dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643],
                                               pad_token_id=151643, do_sample=False, max_new_tokens=64)
    counts = param_counts(model)
    model.save_pretrained(a.out, max_shard_size='5GB')
    processor.save_pretrained(a.out)
    with open(os.path.join(a.out, 'param_count.json'), 'w') as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(dict(out=a.out, params=counts, device=a.device, seconds=round(time.time() - t0, 1))))


if __name__ == '__main__':
    main()
