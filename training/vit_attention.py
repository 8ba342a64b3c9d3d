"""One attention call per vision layer for Qwen2.5-VL's ViT, instead of one per window.

Without flash-attn, transformers' `Qwen2_5_VLVisionAttention` splits q/k/v by `cu_seqlens` (a `.tolist()`
host sync per layer) and calls sdpa once per 8x8-patch window: ~30 windows per ~600x500 image, so a batch of 16
images makes ~480 tiny sdpa calls in each of the 28 window layers. The vision attention takes its one-call
`cu_seqlens` branch when the vision config's attention implementation has "flash" in its name; this module
registers such an implementation (transformers' documented `AttentionInterface`) that runs either
- `varlen`: PyTorch's own flash-attention varlen kernel (`torch.nn.attention.varlen.varlen_attn`, CUDA, half
  precision; fp32 inputs take the padded path), or
- `padded`: one sdpa over the windows gathered into a padded [windows, heads, max_len, dim] batch with a key mask
  (any device; CPUs and the tests use it).
Use: `use_packed_vit_attention(model)` on a loaded Qwen2.5-VL model (only the vision tower changes).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

NAME = 'packed_flash_vit'  # "flash" in the name selects the ViT's cu_seqlens branch (transformers 5.17-5.19)
HALF = (torch.float16, torch.bfloat16)


def _kernel() -> str:
    choice = os.environ.get('MEDICO_VIT_KERNEL', 'auto')
    if choice != 'auto':
        return choice
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (torch >= 2.10)
    except ImportError:
        return 'padded'
    return 'varlen' if torch.cuda.is_available() else 'padded'


def _padded(q, k, v, cu, max_len, scaling):
    """q/k/v: [T, H, D] packed; windows are contiguous runs given by cu (int, [n+1]). Returns [T, H, D]."""
    total = q.shape[0]
    lengths = cu[1:] - cu[:-1]
    offsets = torch.arange(max_len, device=q.device)
    valid = offsets[None, :] < lengths[:, None]                           # [n, L]
    index = (cu[:-1, None] + offsets[None, :]).clamp(max=total - 1)       # [n, L] rows of the packed tensors
    qp, kp, vp = (t[index].transpose(1, 2) for t in (q, k, v))            # [n, H, L, D]
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=valid[:, None, None, :], scale=scaling)
    return out.transpose(1, 2)[valid]                                     # back to packed token order


def packed_vision_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """AttentionInterface function: query/key/value [1, H, T, D]; returns ([1, T, H, D], None) like flash."""
    cu = kwargs.get('cu_seq_lens_q')
    if cu is None:  # not a packed call (never the case for the ViT): behave like sdpa
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    cu = cu.to(torch.int32)
    max_len = kwargs.get('max_length_q') or int((cu[1:] - cu[:-1]).max())
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [T, H, D]
    if _kernel() == 'varlen' and q.dtype in HALF:   # flash kernels take half precision only: an fp32 model
        from torch.nn.attention.varlen import varlen_attn   # (e.g. one trained from scratch) runs padded
        # default scale 1/sqrt(head_dim) is the ViT's own scaling
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len)
    else:
        out = _padded(q, k, v, cu, max_len, scaling)
    return out.unsqueeze(0), None


def register() -> None:
    from transformers import AttentionInterface
    AttentionInterface.register(NAME, packed_vision_attention)


def vision_tower(model):
    """The Qwen2.5-VL vision transformer inside `model` (plain, PEFT-wrapped or DDP-wrapped). Qwen3-VL's tower
    (Qwen3VLVisionModel: no windows, 16 px patches) and Gemma 3's SigLIP are other modules: ValueError, naming them."""
    for module in model.modules():
        if type(module).__name__.endswith('VisionTransformerPretrainedModel'):
            return module
    kind = getattr(getattr(model, 'config', None), 'model_type', None)
    raise ValueError(f'no Qwen2.5-VL vision tower in {f"this {kind} model" if kind else type(model).__name__}')


def use_packed_vit_attention(model) -> str:
    """Switch only the vision tower to the packed implementation; returns the kernel in use."""
    register()
    vit = vision_tower(model)
    vit.config._attn_implementation_internal = NAME  # the vision sub-config only; the LLM keeps its own
    return _kernel()
