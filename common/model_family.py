"""The model families the recipes train, and the few facts about each that later stages need.

Qwen2.5-VL, Qwen3-VL and Gemma 3 (MedGemma is a Gemma 3) differ after training in: ms-swift's model_type and
template names, the token that ends an assistant turn, and the coordinates a box answer is given in:
- `resized_pixels`: absolute pixels of the image as the processor resized it (Qwen2.5-VL);
- `relative_1000`: integers 0..1000 relative to the image width and height (Qwen3-VL's trained format; Gemma 3 has
  no trained box format, so our grounding prompt and training rows give it this one).
A model folder says which family it is in config.json (`model_type`); ms-swift's args.json says it by model_type or
template name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RESIZED_PIXELS = 'resized_pixels'
RELATIVE_1000 = 'relative_1000'


@dataclass(frozen=True)
class Family:
    name: str               # ARCH in the Makefile, --arch of training.tiny_model
    config_model_type: str  # config.json "model_type"
    swift_model_type: str   # ms-swift --model_type
    swift_template: str     # ms-swift --template
    end_of_turn: str        # the token ms-swift's template closes an assistant turn with
    box_coordinates: str    # RESIZED_PIXELS or RELATIVE_1000
    vllm_module: str        # vllm.model_executor.models.<this>: what vLLM runs the family with


FAMILIES = {f.name: f for f in (
    Family('qwen2_5_vl', 'qwen2_5_vl', 'qwen2_5_vl', 'qwen2_5_vl', '<|im_end|>', RESIZED_PIXELS, 'qwen2_5_vl'),
    Family('qwen3_vl', 'qwen3_vl', 'qwen3_vl', 'qwen3_vl', '<|im_end|>', RELATIVE_1000, 'qwen3_vl'),
    Family('gemma3', 'gemma3', 'gemma3_vision', 'gemma3_vision', '<end_of_turn>', RELATIVE_1000, 'gemma3_mm'),
)}
DEFAULT_FAMILY = 'qwen2_5_vl'


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f'unknown model family {name!r} (known: {", ".join(FAMILIES)})')
    return FAMILIES[name]


def family_of_swift_name(name: str | None) -> Family | None:
    """The family of an ms-swift model_type or template name (qwen2_5_vl, qwen3_vl, gemma3_vision), else None."""
    for f in FAMILIES.values():
        if name in (f.swift_model_type, f.swift_template):
            return f
    return None


def family_of_config(model_dir: str | Path | None) -> Family | None:
    """The family named by a model folder's config.json, else None (a hub id, another architecture)."""
    config = Path(model_dir) / 'config.json' if model_dir else None
    if config is None or not config.is_file():
        return None
    kind = json.loads(config.read_text(encoding='utf-8')).get('model_type')
    return next((f for f in FAMILIES.values() if f.config_model_type == kind), None)
