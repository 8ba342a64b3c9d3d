"""The Qwen2.5-VL vision tower's rotary embedding compiled into one fused kernel (same fp32 math).

transformers' `apply_rotary_pos_emb_vision` upcasts q and k to fp32 and runs ~16 separate elementwise kernels
(casts, two muls, a cat for rotate_half, a negation, an add, the cast back) over [patches, 16, 80] tensors in every
one of the 32 vision blocks: at 49,000 patches per batch that is tens of ms of memory traffic per step
(torch.profiler on an H200, docs/benchmarks.md). `torch.compile` fuses the same expression into one kernel per
call that reads bf16 q/k once and writes them once. Shapes vary with the images, so it compiles with dynamic
shapes once. If compiling fails (no Triton, no compiler), the eager function is used and a line says so.
Use: `use_compiled_vision_rope()` (module-level switch; the vision attention looks the function up at call time).
"""
from __future__ import annotations

import torch

_FLAG = '_medico_compiled_rope'


def _compiled_with_fallback(eager):
    compiled = torch.compile(eager, dynamic=True, fullgraph=True)
    state = {'ok': None}

    def rope(q, k, cos, sin):
        if state['ok'] is False:
            return eager(q, k, cos, sin)
        try:
            out = compiled(q, k, cos, sin)
        except Exception as e:  # only the first call may fall back: a later failure is a real error
            if state['ok']:
                raise
            state['ok'] = False
            print(f'[training] vit_rope_compiled: compiling failed ({type(e).__name__}: {str(e)[:200]}); '
                  f'eager rotary embedding', flush=True)
            return eager(q, k, cos, sin)
        state['ok'] = True
        return out

    setattr(rope, _FLAG, eager)
    return rope


def use_compiled_vision_rope() -> str:
    """Switch Qwen2.5-VL's vision rotary embedding to the compiled one; returns what was done, in words."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen
    if hasattr(qwen.apply_rotary_pos_emb_vision, _FLAG):
        return 'vision rotary embedding already compiled'
    qwen.apply_rotary_pos_emb_vision = _compiled_with_fallback(qwen.apply_rotary_pos_emb_vision)
    return 'vision rotary embedding compiled (torch.compile, dynamic shapes)'


def eager_vision_rope():
    """The original transformers function (after or without the switch)."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen
    return getattr(qwen.apply_rotary_pos_emb_vision, _FLAG, qwen.apply_rotary_pos_emb_vision)
