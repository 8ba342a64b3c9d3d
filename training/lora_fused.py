"""LoRA forward with the adapter's scale-and-add folded into one GEMM, computing in the activations' dtype.

PEFT's vanilla LoRA linear computes `result + lora_B(lora_A(x)) * scaling`: the scaled product and the sum are two
extra passes over the layer's whole output ([tokens, out_features]) in the forward and one more in the backward,
for each of the 7 adapted matrices of every decoder layer. With fp32 adapters on a bf16 model it also casts every
input to fp32 first (PEFT's `_cast_input_dtype`), although bf16 autocast casts it straight back for the matmul.
Here the second LoRA matmul is `result.baddbmm_(x @ A^T, B^T, alpha=scaling)`: the GEMM epilogue adds the
scaled product to the base output in place (out of place where the base output is a view), and the small adapter
weights are cast to the activations' dtype instead of the large activations to the weights' dtype. The adapters
keep their own dtype (fp32 master weights stay fp32; their gradients arrive in fp32 through the cast), so this is
the same mixed-precision training, with the rounding of one fused GEMM instead of three separate bf16 ops
(tests/test_lora_fused.py: equal in fp32).

It plugs into PEFT's LoRA-variant hook (`LoraLayer.lora_variant`, the mechanism DoRA uses) and changes nothing
that is saved: the adapter files are ordinary LoRA. Use: `fuse_lora_linears(model)` after PEFT wrapped it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import LoraVariant


class FusedAddmmLora(LoraVariant):
    """Vanilla LoRA math; only the forward is arranged differently (merging is PEFT's usual delta weight)."""

    @staticmethod
    def init(module, adapter_name, **kwargs) -> None:
        pass

    @staticmethod
    def merge_safe(module, active_adapter, orig_weight):
        return orig_weight + module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module, active_adapter, orig_weight) -> None:
        orig_weight.data += module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module, active_adapter, orig_weight):
        return orig_weight - module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def forward(module, active_adapter, x, result, **kwargs):
        a = module.lora_A[active_adapter].weight
        b = module.lora_B[active_adapter].weight
        scaling = module.scaling[active_adapter]
        h = F.linear(module.lora_dropout[active_adapter](x), a.to(x.dtype)).to(result.dtype)   # [..., r]
        bt = b.to(result.dtype).t()
        if result._is_view() or result.dim() not in (2, 3):
            # a biased linear returns a view of its 2-D GEMM: updating it in place would make autograd copy
            # the whole output in the backward, so these (q/k/v) take the out-of-place GEMM
            out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), bt, alpha=scaling)
            return out.view(result.shape)
        # in place: the base GEMM's backward does not need its output (autograd checks that it is not saved)
        if result.dim() == 2:
            return result.addmm_(h, bt, alpha=scaling)
        return result.baddbmm_(h, bt.expand(result.shape[0], *bt.shape), alpha=scaling)


def fuse_lora_linears(model) -> int:
    """Install the fused forward on every vanilla LoRA linear of `model`; returns how many adapters use it.

    Layers that already run a variant (DoRA, aLoRA, ...) and adapters partitioned by DeepSpeed ZeRO-3 are left
    alone. Idempotent."""
    fused = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear) or not isinstance(module.get_base_layer(), torch.nn.Linear):
            continue
        names = list(module.lora_A)
        if any(not isinstance(module.lora_variant.get(n), (FusedAddmmLora, type(None))) for n in names):
            continue
        # ZeRO-3 gathers a partitioned weight only when its own module runs; the fused forward reads the weights
        # directly, so partitioned adapters keep PEFT's forward
        if any(hasattr(p, 'ds_id') for n in names for p in (module.lora_A[n].weight, module.lora_B[n].weight)):
            continue
        for name in names:
            module.lora_variant[name] = FusedAddmmLora()
        # the input stays in the activations' dtype: the forward above casts the (small) weights instead
        module.cast_input_dtype_enabled = False
        fused += len(names)
    return fused
