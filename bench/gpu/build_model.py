"""Random-init model with a real recipe model's architecture, saved as a transformers model folder.

Throughput does not depend on weight values, and no real weights exist offline, so benchmarks train and
generate with this. Usage: python -m bench.gpu.build_model OUT [--arch qwen2_5_vl|qwen3_vl|gemma3] [--device cuda]
                                                               [--tiny | --micro | --small] [--max-pixels N]
  --arch: the shape of Qwen2.5-VL-7B-Instruct (default), Qwen3-VL-8B-Instruct or MedGemma-4B-it (= Gemma-3-4B-it).
  --tiny: 2 decoder layers / 2 vision blocks, same widths, tokenizer and processor (CPU smoke tests).
  --micro: like --tiny with narrow widths (CPU tests of the training/inference flow in seconds).
  --small (Qwen2.5-VL only): the ~132 M-parameter model that bench/gpu/learned.sh trains from scratch on an H200
    (recipes/qwen2_5_vl/132M_full_scratch.args), saved in fp32 (its master weights; training autocasts to bf16):
    text 8 x 512 (MLP 2,048, 8 heads / 4 KV heads of 64, tied 151,936-row embedding), vision 8 x 384 (MLP 1,536,
    6 heads of 64, full attention in blocks 4 and 8, 112 px windows), 2 x 2 merger -> 512. SMALL_WHY says why.
Also writes OUT/param_count.json: the matmul weight counts the MFU formula in docs/benchmarks.md uses.
Architecture numbers, from the models' public config.json files (docs/benchmarks.md, "Model shapes"):
- Qwen/Qwen2.5-VL-7B-Instruct: as it was measured in runs 1-12.
- Qwen/Qwen3-VL-8B-Instruct: text 36 x 4096 (MLP 12,288, 32 heads / 8 KV heads of 128, rope theta 5e6, interleaved
  mrope [24, 20, 20], untied lm_head), vision 27 x 1152 (MLP 4,304, 16 heads, 16 px patches, 2,304 position
  embeddings, deepstack from blocks 8/16/24, out 4096).
- google/medgemma-4b-it: Gemma3ForConditionalGeneration with gemma-3-4b-it's shape: text 34 x 2560 (MLP 10,240,
  8 heads / 4 KV heads of 256, query_pre_attn_scalar 256, sliding window 1024 on 5 of 6 layers, linear rope x8 on
  the global ones, 262,208 embedding rows, tied), SigLIP 27 x 1152 (MLP 4,304, 16 heads, 896 px, 14 px patches),
  256 image tokens (boi 255999, eoi 256000, image 262144).
Tokenizers: the real Qwen one for both Qwen shapes; for the Gemma shape the offline-built one of
training/tiny_model.py (Gemma's special-token ids; its text pieces are Qwen's, so tokens per sample differ a little
from the real MedGemma tokenizer's).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

# The real Qwen tokenizer and chat template, built exactly as for the tiny CPU model (one implementation).
from training.tiny_model import (CHAT_TEMPLATE, GEMMA3_CHAT_TEMPLATE, build_gemma_tokenizer,  # noqa: E402
                                 build_tokenizer, build_qwen3_processor)

ARCHS = ('qwen2_5_vl', 'qwen3_vl', 'gemma3')
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]
QWEN_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)

# The small Qwen2.5-VL of bench/gpu/learned.sh, and why these numbers (docs/benchmarks.md, "A model that learned"):
# - The real tokenizer fixes 151,936 embedding rows (Qwen2.5-VL-3B's; every id up to 151,664 stays valid). Tied to
#   the lm_head they are 78 M of the parameters, but cost little compute: a lookup, and ms-swift computes logits
#   only at the ~20 answer tokens of a sample.
# - What has to be learned from nothing: to see coloured blobs, count them, place them on a 3 x 3 grid, read their
#   size, and write templated sentences and box coordinates. 8 layers x 512 (31 M) for the text and 8 blocks x 384
#   (19 M) for the 14 px patches are small for that, and make each step cheap: ~100 GFLOP per ~200-token sample
#   (6 x the 54 M non-embedding parameters per token, the vision tower per patch), so the H200 spends its minutes
#   on many optimizer steps (~1,500 of 128 samples) rather than on width; the 7B LoRA ran ~12,000 tokens/s, this
#   model is bounded by the data loader, not the GPU (docs/benchmarks.md).
# - Head size 64 everywhere (FlashAttention and vLLM's kernels take it; the tiny model's 16 did not start in vLLM),
#   widths multiples of 64 (Hopper GEMM kernels, no vit_mlp_pad), GQA and mrope as in the real model.
SMALL_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4, max_position_embeddings=32768, vocab_size=151936, tie_word_embeddings=True,
                  rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [8, 12, 12]})
SMALL_VISION = dict(depth=8, hidden_size=384, intermediate_size=1536, num_heads=6, out_hidden_size=512,
                    fullatt_block_indexes=[3, 7])


def build_processor(tok, max_pixels: int = 12845056):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    image = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=max_pixels, patch_size=14, merge_size=2,
                                  temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    video = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN,
                                  image_std=CLIP_STD)  # transformers 5 requires one
    return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                               chat_template=CHAT_TEMPLATE)


def build_config(tiny: bool, micro: bool = False, small: bool = False):
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
    if small:
        text.update(SMALL_TEXT, max_window_layers=SMALL_TEXT['num_hidden_layers'])
        vision.update(SMALL_VISION)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=small, **QWEN_IDS)
    cfg.architectures = ['Qwen2_5_VLForConditionalGeneration']
    return cfg


def build_qwen3_config(tiny: bool, micro: bool = False):
    from transformers import Qwen3VLConfig
    layers, blocks = (2, 2) if tiny or micro else (36, 27)
    text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=layers,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act='silu',
                max_position_embeddings=262144, rms_norm_eps=1e-6, attention_bias=False, initializer_range=0.02,
                rope_parameters={'rope_type': 'default', 'rope_theta': 5e6, 'mrope_section': [24, 20, 20],
                                 'mrope_interleaved': True},
                bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    vision = dict(depth=blocks, hidden_size=1152, hidden_act='gelu_pytorch_tanh', intermediate_size=4304,
                  num_heads=16, in_channels=3, out_hidden_size=4096, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[0, 1] if tiny or micro else [8, 16, 24], initializer_range=0.02)
    if micro:
        text.update(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                    rope_parameters={'rope_type': 'default', 'rope_theta': 5e6, 'mrope_section': [12, 10, 10],
                                     'mrope_interleaved': True})
        vision.update(hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256)
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **QWEN_IDS)
    cfg.architectures = ['Qwen3VLForConditionalGeneration']
    return cfg


def build_gemma3_config(tiny: bool, micro: bool = False):
    from transformers import Gemma3Config
    layers, blocks = (2, 2) if tiny or micro else (34, 27)
    text = dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=layers,
                num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                hidden_activation='gelu_pytorch_tanh', max_position_embeddings=131072, rms_norm_eps=1e-6,
                sliding_window=1024, sliding_window_pattern=6,
                rope_parameters={'full_attention': {'rope_type': 'linear', 'factor': 8.0, 'rope_theta': 1e6},
                                 'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}},
                pad_token_id=0, bos_token_id=2, eos_token_id=[1, 106])
    vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=blocks, num_attention_heads=16,
                  image_size=896, patch_size=14, num_channels=3, vision_use_head=False, layer_norm_eps=1e-6,
                  hidden_act='gelu_pytorch_tanh')
    if micro:
        text.update(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                    query_pre_attn_scalar=64)
        vision.update(hidden_size=128, intermediate_size=256, num_attention_heads=2)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256, boi_token_index=255999,
                       eoi_token_index=256000, image_token_index=262144, tie_word_embeddings=True)
    cfg.architectures = ['Gemma3ForConditionalGeneration']
    return cfg


def build_gemma3_processor(tok):
    from transformers import Gemma3ImageProcessor, Gemma3Processor
    image = Gemma3ImageProcessor(size={'height': 896, 'width': 896}, image_mean=HALF, image_std=HALF,
                                 do_pan_and_scan=False)
    return Gemma3Processor(image_processor=image, tokenizer=tok, chat_template=GEMMA3_CHAT_TEMPLATE,
                           image_seq_length=256)


def matmul_weights(module) -> int:
    return sum(m.weight.numel() for m in module.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)))


def param_counts(model, arch: str) -> dict:
    """Matmul weights per part, and how many projector tokens one ViT patch becomes (the merger's share of P)."""
    lm = model.model.language_model
    counts = dict(total=sum(p.numel() for p in model.parameters()),
                  llm_linear=matmul_weights(lm) + model.lm_head.weight.numel())  # lm_head runs on every position
    if arch == 'gemma3':   # SigLIP blocks; the projector (one weight matrix) runs on 256 pooled tokens of 4,096
        tower = model.model.vision_tower   # transformers 5: SiglipVisionModel holds embeddings/encoder itself
        projector = model.model.multi_modal_projector
        return dict(counts, vit_blocks_linear=matmul_weights(tower.encoder),
                    vit_patch_embed=matmul_weights(tower.embeddings),
                    vit_merger_linear=projector.mm_input_projection_weight.numel(), merger_tokens_per_patch=1 / 16)
    vit = model.model.visual
    merger = matmul_weights(vit.merger) + sum(matmul_weights(m) for m in getattr(vit, 'deepstack_merger_list', []))
    return dict(counts, vit_blocks_linear=matmul_weights(vit.blocks), vit_patch_embed=matmul_weights(vit.patch_embed),
                vit_merger_linear=merger, merger_tokens_per_patch=1 / 4)   # 2 x 2 patches merge into one token


def build(arch: str, tiny: bool, micro: bool, small: bool = False, max_pixels: int | None = None):
    """(model class, config, processor, generation ids) of one architecture."""
    from transformers import (Gemma3ForConditionalGeneration, Qwen2_5_VLForConditionalGeneration,
                              Qwen3VLForConditionalGeneration)
    if small and arch != 'qwen2_5_vl':
        raise ValueError('--small is a Qwen2.5-VL size')
    if arch == 'qwen2_5_vl':
        processor = build_processor(build_tokenizer(), *([max_pixels] if max_pixels else []))
        return (Qwen2_5_VLForConditionalGeneration, build_config(tiny, micro, small), processor,
                dict(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643))
    if arch == 'qwen3_vl':
        processor = build_qwen3_processor(build_tokenizer(qwen3=True), 65536, 16777216)   # the 8B's pixel limits
        return (Qwen3VLForConditionalGeneration, build_qwen3_config(tiny, micro), processor,
                dict(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643))
    return (Gemma3ForConditionalGeneration, build_gemma3_config(tiny, micro),
            build_gemma3_processor(build_gemma_tokenizer()), dict(bos_token_id=2, eos_token_id=[1, 106],
                                                                  pad_token_id=0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out')
    ap.add_argument('--arch', choices=ARCHS, default='qwen2_5_vl', help='architecture shape (default %(default)s)')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    size = ap.add_mutually_exclusive_group()
    size.add_argument('--tiny', action='store_true')
    size.add_argument('--micro', action='store_true', help='2 layers and narrow widths (CPU flow tests only)')
    size.add_argument('--small', action='store_true',
                      help='the ~132 M Qwen2.5-VL trained from scratch by bench/gpu/learned.sh (fp32)')
    ap.add_argument('--max-pixels', type=int, default=None,
                    help='the processor\'s image budget (default 12845056, as the real models): the recipe\'s '
                         'MAX_PIXELS')
    ap.add_argument('--dtype', choices=('bfloat16', 'float32'), default=None,
                    help='weights as saved (default: float32 for --small, the master weights of training from '
                         'scratch; bfloat16 otherwise)')
    a = ap.parse_args(argv)
    if a.small and a.arch != 'qwen2_5_vl':
        ap.error('--small is a Qwen2.5-VL size (--arch qwen2_5_vl)')
    if a.max_pixels is not None and (a.arch != 'qwen2_5_vl' or a.max_pixels < 3136):
        ap.error('--max-pixels: a Qwen2.5-VL budget of at least 3136 pixels')
    from transformers import GenerationConfig
    t0 = time.time()
    torch.manual_seed(0)
    model_cls, config, processor, ids = build(a.arch, a.tiny, a.micro, a.small, a.max_pixels)
    # bf16 straight on the device: no fp32 copy, no host round trip. The small model is trained from these weights
    # (fp32 master weights, bf16 autocast), so it keeps fp32.
    dtype = getattr(torch, a.dtype or ('float32' if a.small else 'bfloat16'))
    with torch.device(a.device):
        model = model_cls._from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(do_sample=False, max_new_tokens=64, **ids)
    counts = param_counts(model, a.arch)
    model.save_pretrained(a.out, max_shard_size='5GB')
    processor.save_pretrained(a.out)
    with open(os.path.join(a.out, 'param_count.json'), 'w') as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(dict(out=a.out, arch=a.arch, params=counts, device=a.device, seconds=round(time.time() - t0, 1))))


if __name__ == '__main__':
    main()
