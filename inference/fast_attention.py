"""Faster attention for generation with Qwen2.5-VL on the transformers backend, same math as sdpa.

Two host/GPU costs dominate `generate` there (torch.profiler on an H200, docs/benchmarks.md):
- the vision tower calls attention once per 8x8-patch window (fixed by training/vit_attention.py: one packed call);
- grouped-query attention in the LLM (28 query heads share 4 key/value heads): with a padding mask, transformers'
  sdpa path copies the whole KV cache 7 times per layer and decode step (`repeat_kv`), because PyTorch's masked
  kernels do not take `enable_gqa`. At batch 128 those copies were 20 % of all GPU time.
`gqa_folded_attention` avoids the copy while a step has few query tokens (decoding): the 7 query heads of a group
become 7 query rows against that group's single key/value head. Softmax is per query row and the padding mask is the
same for every head, so each row sees exactly the keys it saw before: the result is the same attention, only the
kernel's summation order can differ (bf16 rounding). Longer steps (the prefill) keep transformers' own sdpa.
Use: `use_fast_attention(model)`, or `use_attention(model, choice)` for an --attention choice. torch/transformers
are imported where used (the CLI starts fast).
"""
from __future__ import annotations

NAME = 'sdpa_gqa_folded'
MAX_FOLDED_QUERY = 16  # fold up to this many query tokens per step (decode steps have 1); longer steps use sdpa


def gqa_folded_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                         **kwargs):
    """AttentionInterface function. query [B, Hq, q, D], key/value [B, Hkv, L, D]; returns ([B, q, Hq, D], None)."""
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    batch, heads, q_len, dim = query.shape
    groups = heads // key.shape[1]
    causal_needed = q_len > 1 and attention_mask is None
    if groups == 1 or q_len > MAX_FOLDED_QUERY or causal_needed or kwargs.get('position_bias') is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    kv_heads = key.shape[1]
    # head h = kv * groups + g (repeat_kv's order) -> row g * q_len + i of kv head `kv`
    folded = query.reshape(batch, kv_heads, groups * q_len, dim)
    mask = attention_mask
    if mask is not None and q_len > 1:
        mask = mask.expand(-1, -1, q_len, -1).repeat(1, 1, groups, 1)  # row g * q_len + i -> mask row i
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    out = out.reshape(batch, heads, q_len, dim).transpose(1, 2).contiguous()
    return out, None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, gqa_folded_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as sdpa


def text_models(model) -> list:
    """The language model(s) inside a Qwen-VL model (plain or wrapped); the vision tower is not one of them."""
    found = [m for m in model.modules() if type(m).__name__.endswith('TextModel')]
    if not found:
        raise ValueError(f'no language model inside {type(model).__name__}')
    return found


def use_folded_gqa_attention(model) -> None:
    """Switch only the language model's attention to `gqa_folded_attention`."""
    register()
    for text_model in text_models(model):
        text_model.config._attn_implementation_internal = NAME  # read by each attention layer
        text_model._attn_implementation = NAME                   # the copy the text model took at init


def use_fast_attention(model) -> str:
    """Packed ViT attention (Qwen2.5-VL) + folded-GQA decode attention; returns what is in use."""
    from training.vit_attention import use_packed_vit_attention
    try:
        vit = use_packed_vit_attention(model)
    except ValueError:  # another vision tower (Qwen3-VL, MedGemma): only the LLM part applies
        vit = 'unchanged'
    use_folded_gqa_attention(model)
    return f'vit={vit}, llm={NAME}'


ATTENTION_CHOICES = ('auto', 'fast', 'stock')


def wants_fast(choice: str) -> bool:
    """'auto' -> fast on a GPU (where both fixes pay off: the costs they remove are kernel launches and copies),
    stock on CPU; 'fast'/'stock' force it."""
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f'attention must be one of {ATTENTION_CHOICES}, got {choice!r}')
    import torch
    return choice == 'fast' or (choice == 'auto' and torch.cuda.is_available())


def use_attention(model, choice: str) -> str:
    """Apply an --attention choice to a loaded model (inference.backends loads every engine this way)."""
    return use_fast_attention(model) if wants_fast(choice) else 'stock'
