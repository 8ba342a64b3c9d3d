"""ms-swift plugin of this repository, loaded by recipes with `--external_plugins training/swift_plugin.py`.

Adds trainer callbacks (select them with `--callbacks NAME ...`); each changes the model at train begin, after
ms-swift built it, and changes nothing that is saved (docs/benchmarks.md has the H200 measurements):
- `vit_packed`: the Qwen2.5-VL vision tower makes one attention call per layer (training/vit_attention.py)
  instead of one sdpa call per 8x8-patch window. Without flash-attn that loop made the plain 7B LoRA step
  host-bound (3,432 tiny attention calls per step, GPU busy 19 %); packed, the GPU is busy 85-91 % of the time.
- `vit_mlp_pad`: the frozen vision MLP is zero-padded from width 3,420 to 3,456 so its GEMMs run on the Hopper
  kernels (training/vit_mlp_pad.py; exact).
- `vit_rope_compiled`: the vision tower's rotary embedding runs as one compiled kernel (training/vit_rope.py;
  same fp32 math).
- `lora_fused`: each LoRA linear adds its scaled update inside the second adapter GEMM and computes in bf16 with
  fp32 master weights (training/lora_fused.py; same math).
- `time_budget`: saves a checkpoint and stops at the first step that ends after $MEDICO_TRAIN_DEADLINE (Unix
  seconds), so a time-limited job ends on a step that `RESUME=1 make sft` continues from (training/time_budget.py).
Families: the three vision-tower switches target Qwen2.5-VL's tower; on Qwen3-VL and Gemma 3 (MedGemma) they find
none, change nothing and print why. `lora_fused` works on any PEFT LoRA linear, so on every family (measured on
Qwen2.5-VL only).
"""
from __future__ import annotations

import os
import sys

from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # ms-swift loads us by file path
from swift.callbacks import callbacks_map  # noqa: E402

from training import lora_fused, vit_attention, vit_mlp_pad, vit_rope  # noqa: E402
from training.time_budget import TimeBudget  # noqa: E402


class ModelSwitch(TrainerCallback):
    """Applies `switch(model)` once at train begin and prints the line it returns, under the callback's name."""
    name = ''

    def __init__(self, args, trainer):
        self.trainer = trainer

    @staticmethod
    def switch(model) -> str:
        raise NotImplementedError

    def on_train_begin(self, args, state, control, **kwargs):
        print(f'[training] {self.name}: {self.switch(self.trainer.model)}', flush=True)


class PackedVitAttention(ModelSwitch):
    name = 'vit_packed'

    @staticmethod
    def switch(model) -> str:
        try:
            kernel = vit_attention.use_packed_vit_attention(model)
        except ValueError as e:  # not a Qwen2.5-VL (Qwen3-VL, Gemma 3): leave the model as it is, say so once
            return f'{e}; vision attention unchanged'
        return f'vision tower attention {vit_attention.NAME} ({kernel} kernel)'


class PaddedVitMlp(ModelSwitch):
    name = 'vit_mlp_pad'
    switch = staticmethod(vit_mlp_pad.pad_vision_mlp)


class CompiledVitRope(ModelSwitch):
    name = 'vit_rope_compiled'

    @staticmethod
    def switch(model) -> str:  # a module-level switch of Qwen2.5-VL's function: only when that is the model
        try:
            vit_attention.vision_tower(model)
        except ValueError as e:
            return f'{e}; vision rotary embedding unchanged'
        return vit_rope.use_compiled_vision_rope()


class FusedLora(ModelSwitch):
    name = 'lora_fused'

    @staticmethod
    def switch(model) -> str:
        return f'{lora_fused.fuse_lora_linears(model)} LoRA linears use the fused addmm forward'


for _callback in (PackedVitAttention, PaddedVitMlp, CompiledVitRope, FusedLora, TimeBudget):
    callbacks_map[_callback.name] = _callback
