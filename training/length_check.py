"""How many training samples are longer than --max_length at the recipe's image budget (`make sft` warns).

ms-swift drops such samples without a word (--truncation_strategy delete, our default) or cuts them (left/right).
The count is made before any model loads: each row's text in the recipe's chat template (ms-swift's own template
definition: system, user and assistant parts) is tokenized with the model's tokenizer, and each image adds the image
tokens Qwen-VL's resizing gives it at MAX_PIXELS (one per 28 x 28 pixels on Qwen2.5-VL, 32 x 32 on Qwen3-VL). On the
tiny Qwen2.5-VL this equals the length of ms-swift's own encoding (tests/test_length_check.py). Templates of other
model families (e.g. Gemma 3's fixed 256 image tokens) are not counted.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from common.qwen_vision import MIN_PIXELS, smart_resize

# ms-swift template -> pixels per image token side; the image becomes <|vision_start|> N x <|image_pad|> <|vision_end|>
IMAGE_TOKEN_SIDE = {'qwen2_vl': 28, 'qwen2_5_vl': 28, 'qwen3_vl': 32}
VISION_WRAP = '<|vision_start|><|vision_end|>'
IMAGE_TAG = '<image>'


def chat_text(messages: list[dict], meta, system: str | None) -> str:
    """The row as ms-swift's template writes it (ChatML pieces of `meta`), each <image> as the two vision tokens."""
    turns = [m for m in messages if m.get('role') != 'system']
    given = [m['content'] for m in messages if m.get('role') == 'system']
    system = given[0] if given else system
    parts = [meta.system_prefix[0].replace('{{SYSTEM}}', system)] if system else list(meta.prefix)
    for i in range(0, len(turns), 2):
        query = turns[i]['content'].replace(IMAGE_TAG, VISION_WRAP)
        answer = turns[i + 1]['content'] if i + 1 < len(turns) else ''
        parts += [meta.prompt[0].replace('{{QUERY}}', query), answer,
                  (meta.suffix if i + 2 >= len(turns) else meta.chat_sep)[0]]
    return ''.join(parts)


def _plain_chatml(meta) -> bool:
    pieces = [meta.prompt, meta.suffix, meta.chat_sep or [''], meta.system_prefix or [''], meta.prefix or ['']]
    return all(len(p) <= 1 and all(isinstance(x, str) for x in p) for p in pieces)


def load_tokenizer(model: str | None):
    """The model's fast tokenizer: its folder, the Hugging Face cache, else the Qwen tokenizer this repository builds
    offline (training.tiny_model: the real Qwen2.5 vocabulary and special tokens)."""
    from tokenizers import Tokenizer
    if model and (Path(model) / 'tokenizer.json').is_file():
        return Tokenizer.from_file(str(Path(model) / 'tokenizer.json'))
    if model:
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(model, 'tokenizer.json')
            if isinstance(cached, str):
                return Tokenizer.from_file(cached)
        except Exception:   # not a hub id, or no cache: fall through
            pass
    from training.tiny_model import build_tokenizer
    return build_tokenizer().backend_tokenizer


def _texts_and_image_tokens(rows: list[dict], template: str, max_pixels: int, system: str | None,
                            min_pixels: int) -> tuple[list[str], list[int]] | None:
    from PIL import Image
    from swift.template import TEMPLATE_MAPPING
    meta = TEMPLATE_MAPPING.get(template)
    if template not in IMAGE_TOKEN_SIDE or meta is None or not _plain_chatml(meta):
        return None
    system = system if system is not None else meta.default_system
    side = IMAGE_TOKEN_SIDE[template]
    per_image: dict[str, int] = {}
    texts, image_tokens = [], []
    for row in rows:
        texts.append(chat_text(row['messages'], meta, system))
        for path in row.get('images') or []:
            if path not in per_image:
                with Image.open(path) as im:   # reads the header only
                    w, h = im.size
                rh, rw = smart_resize(h, w, max_pixels, factor=side, min_pixels=min_pixels)
                per_image[path] = (rh // side) * (rw // side)
        image_tokens.append(sum(per_image[p] for p in row.get('images') or []))
    return texts, image_tokens


def sample_lengths(rows: list[dict], template: str, max_pixels: int, tokenizer, system: str | None = None,
                   min_pixels: int = MIN_PIXELS) -> list[int]:
    """Tokens per row (text in the chat template + image tokens), or [] when the template is not one we count."""
    found = _texts_and_image_tokens(rows, template, max_pixels, system, min_pixels)
    if found is None:
        return []
    texts, image_tokens = found
    encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [len(e.ids) + n for e, n in zip(encoded, image_tokens)]


def _countable(row, exists: dict[str, bool]) -> bool:
    """A row in our ms-swift layout (messages with text content, image files that exist); others are left to
    ms-swift's own checks."""
    messages = row.get('messages') if isinstance(row, dict) else None
    if not (isinstance(messages, list) and messages
            and all(isinstance(m, dict) and isinstance(m.get('content'), str) for m in messages)):
        return False
    images = row.get('images') or []
    for p in images:
        if isinstance(p, str) and p not in exists:
            exists[p] = Path(p).is_file()
    return all(isinstance(p, str) and exists[p] for p in images)


def dataset_rows(values: list[str]) -> list[dict]:
    """Countable rows of the recipe's local --dataset files (`file#N` keeps the first N; ms-swift samples N)."""
    rows, exists = [], {}
    for value in values:
        path, _, n = value.partition('#')
        if not Path(path).is_file():
            continue
        part = []
        with open(path, encoding='utf-8') as f:
            for line in f:
                try:
                    part.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        part = part[:int(n)] if re.fullmatch(r'\d+', n) else part
        rows += [row for row in part if _countable(row, exists)]
    return rows


def overlong(recipe, env: dict, model: str | None) -> dict | None:
    """{'over', 'total', 'longest' (None when every row fits), 'max_length', 'max_pixels'} for the recipe's training
    data, or None when it cannot be counted (no --max_length, no MAX_PIXELS, no local data, a template we do not
    count). Only rows that could be too long are tokenized: a byte-level BPE token covers at least one byte of text,
    so a row whose text bytes plus image tokens fit cannot exceed --max_length. At the default recipe's budget that
    is every row of a 17,505-row Kvasir-VQA-x1 train subset (at most 438 bytes of question + answer), and 150,000
    rows take seconds instead of a minute of tokenizing."""
    max_length, template = recipe.value('max_length'), recipe.value('template') or recipe.value('model_type')
    max_pixels = env.get('MAX_PIXELS')
    dataset = recipe.get('dataset')
    if not (max_length and max_pixels and template in IMAGE_TOKEN_SIDE and dataset):
        return None
    rows = dataset_rows(list(dataset.values))
    found = _texts_and_image_tokens(rows, template, int(max_pixels), recipe.value('system'),
                                    int(env.get('MIN_PIXELS') or MIN_PIXELS)) if rows else None
    if not found:
        return None
    texts, image_tokens = found
    limit = int(max_length)
    candidates = [i for i, (t, n) in enumerate(zip(texts, image_tokens)) if len(t.encode('utf-8')) + n > limit]
    lengths = []
    if candidates:
        encoded = load_tokenizer(model).encode_batch([texts[i] for i in candidates], add_special_tokens=False)
        lengths = [len(e.ids) + image_tokens[i] for e, i in zip(encoded, candidates)]
    over = [n for n in lengths if n > limit]
    return {'over': len(over), 'total': len(rows), 'longest': max(over) if over else None, 'max_length': limit,
            'max_pixels': int(max_pixels)}
