"""ms-swift plugin of this repository, loaded by recipes with `--external_plugins training/swift_plugin.py`.

Adds the trainer callback `vit_packed` (select it with `--callbacks vit_packed`): at train begin the Qwen2.5-VL
vision tower switches to one attention call per layer (training/vit_attention.py) instead of one sdpa call per
8x8-patch window. Without flash-attn that loop made the plain 7B LoRA step host-bound (docs/benchmarks.md:
3,432 tiny attention calls per step, GPU busy 19 %); packed, the GPU is busy 85-91 % of the time.
"""
from __future__ import annotations

import os
import sys

from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # ms-swift loads us by file path
from swift.callbacks import callbacks_map  # noqa: E402

from training import vit_attention  # noqa: E402


class PackedVitAttention(TrainerCallback):
    def __init__(self, args, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            kernel = vit_attention.use_packed_vit_attention(self.trainer.model)
        except ValueError as e:  # not a Qwen2.5-VL: leave the model as it is, say so once
            print(f'[training] vit_packed: {e}; vision attention unchanged', flush=True)
            return
        print(f'[training] vision tower attention: {vit_attention.NAME} ({kernel} kernel)', flush=True)


callbacks_map['vit_packed'] = PackedVitAttention
