"""Zero-pad the frozen vision MLP of Qwen2.5-VL to a GEMM-friendly width (exact: same outputs).

Qwen2.5-VL's vision blocks use an MLP width of 3,420, which is not a multiple of 8: a bf16 row of 3,420 values is
not 16-byte aligned, so cuBLAS cannot use the Hopper (sm90) GEMM kernels for gate/up (output width) and down
(reduction width) and falls back to an sm80 CUTLASS kernel running at ~250 TFLOP/s (torch.profiler on an H200,
docs/benchmarks.md). Adding zero rows to gate/up (weights and biases) and zero columns to down changes nothing:
each extra unit computes act(0 + 0) * (0 + 0) = 0 and then contributes 0 * 0.

Only frozen vision MLPs are padded, and only inside a PEFT model (which saves adapters, never these weights),
so no checkpoint ever holds the padded shape. Use: `pad_vision_mlp(model)` after PEFT wrapped the model.
"""
from __future__ import annotations

import torch

from training.vit_attention import vision_tower

MULTIPLE = 64


def _padded(weight: torch.Tensor, dim: int, size: int) -> torch.nn.Parameter:
    shape = list(weight.shape)
    shape[dim] = size - shape[dim]
    zeros = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
    return torch.nn.Parameter(torch.cat([weight.detach(), zeros], dim=dim), requires_grad=False)


def _vision_mlps(tower):
    parts = ('gate_proj', 'up_proj', 'down_proj')
    for name, module in tower.named_modules():
        if all(isinstance(getattr(module, p, None), torch.nn.Linear) for p in parts):
            yield name, module


def pad_vision_mlp(model, multiple: int = MULTIPLE) -> str:
    """Pad every frozen vision MLP of `model` to a multiple of `multiple`; returns what was done, in words."""
    if not hasattr(model, 'peft_config'):
        return 'not a PEFT model (a full checkpoint would save the padded weights): vision MLP unchanged'
    try:
        mlps = list(_vision_mlps(vision_tower(model)))
    except ValueError as e:  # another vision tower (Qwen3-VL, MedGemma): measured only on Qwen2.5-VL's
        return f'{e}: vision MLP unchanged'
    for name, mlp in mlps:
        if any(p.requires_grad or hasattr(p, 'ds_id') for p in mlp.parameters()):  # trained, or split by ZeRO-3
            return f'{name} is trained or partitioned: vision MLP unchanged'
    todo = [mlp for _, mlp in mlps if mlp.gate_proj.out_features % multiple]
    if not todo:
        return 'no vision MLP to pad'
    width = todo[0].gate_proj.out_features
    for mlp in todo:
        size = -(-mlp.gate_proj.out_features // multiple) * multiple
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight = _padded(lin.weight, 0, size)
            if lin.bias is not None:
                lin.bias = _padded(lin.bias, 0, size)
            lin.out_features = size
        mlp.down_proj.weight = _padded(mlp.down_proj.weight, 1, size)
        mlp.down_proj.in_features = size
        mlp.intermediate_size = size
    return f'{len(todo)} vision MLPs padded from {width} to {size} (zeros: same outputs)'
