"""Make an exported model folder self-contained: it serves and loads the same way from any directory and any machine.

Two things of the training run would otherwise leak into the folder:
- ms-swift's `args.json` keeps the recipe's repo-relative `external_plugins` (training/swift_plugin.py) and its
  `callbacks`; `swift deploy/infer --model FOLDER` re-imports those plugins and fails outside the repository root.
  They only speed up training, so they are dropped; any other relative path that exists is made absolute.
- the processor files keep the base model's image budget (Qwen2.5-VL: 12.8 M pixels), not the one training used
  (MAX_PIXELS). `vllm serve`, `AutoProcessor` and a hub user would resize images differently from training, so
  `processor_config.json` (transformers 5, nested) and `preprocessor_config.json` (the layout older transformers and
  other tools read) get the training budget as min/max pixels.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.io import write_json

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY_ARGS = ('external_plugins', 'callbacks')   # loaded by `swift deploy` from args.json, needed by nobody
PROCESSOR_FILE, PREPROCESSOR_FILE = 'processor_config.json', 'preprocessor_config.json'
# Image processors whose budget is size = {shortest_edge: min pixels, longest_edge: max pixels} (Qwen2-VL family,
# also used by Qwen2.5-VL and Qwen3-VL); others (e.g. Gemma 3's fixed 896 x 896) have no pixel budget to carry.
PIXEL_BUDGET_PROCESSORS = ('Qwen2VLImageProcessor', 'Qwen2VLImageProcessorFast')


def relative_path(value, base: Path) -> Path | None:
    """`base / value` when `value` is a relative path to something that exists there, else None."""
    if not isinstance(value, str) or '/' not in value or os.path.isabs(value):
        return None
    try:
        candidate = base / value
        return candidate if candidate.exists() else None
    except (OSError, ValueError):   # not a path at all (ms-swift also stores long reprs of its objects)
        return None


def _absolute(value, base: Path):
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    path = relative_path(value, base)
    return str(path.resolve()) if path else value


def portable_args(args: dict, base: Path = REPO) -> dict:
    """ms-swift args without the training-only plugin entries and with relative paths made absolute against `base`
    (the directory `make sft` ran in)."""
    return {key: _absolute(value, base) for key, value in args.items() if key not in TRAINING_ONLY_ARGS}


def _with_budget(image_processor: dict, max_pixels: int, min_pixels: int | None) -> dict:
    size = dict(image_processor.get('size') or {})
    size['longest_edge'] = max_pixels
    if min_pixels:
        size['shortest_edge'] = min_pixels
    out = {**image_processor, 'size': size, 'max_pixels': max_pixels}
    if size.get('shortest_edge'):
        out['min_pixels'] = size['shortest_edge']
    return out


def carry_image_budget(folder: str | os.PathLike, max_pixels: int, min_pixels: int | None = None) -> list[str]:
    """Write the training image budget into the folder's processor files; returns the names of the files changed
    (none when they already carry it, or when the folder's image processor has no pixel budget)."""
    folder = Path(folder)
    nested_path, legacy_path = folder / PROCESSOR_FILE, folder / PREPROCESSOR_FILE
    nested = json.loads(nested_path.read_text(encoding='utf-8')) if nested_path.is_file() else {}
    legacy = json.loads(legacy_path.read_text(encoding='utf-8')) if legacy_path.is_file() else None
    image_processor = nested.get('image_processor') if isinstance(nested.get('image_processor'), dict) else legacy
    if not image_processor or image_processor.get('image_processor_type') not in PIXEL_BUDGET_PROCESSORS:
        return []
    written = []
    if 'image_processor' in nested:
        budgeted = {**nested, 'image_processor': _with_budget(nested['image_processor'], max_pixels, min_pixels)}
        if budgeted != nested:
            write_json(nested_path, budgeted)
            written.append(PROCESSOR_FILE)
    # The legacy file, written even where transformers 5 saved only the nested one: vLLM, transformers 4 and
    # qwen_vl_utils users look here. transformers 5 prefers the nested copy, which says the same.
    budgeted = _with_budget(legacy if legacy is not None else image_processor, max_pixels, min_pixels)
    if nested.get('processor_class'):
        budgeted.setdefault('processor_class', nested['processor_class'])
    if budgeted != legacy:
        write_json(legacy_path, budgeted)
        written.append(PREPROCESSOR_FILE)
    return written


def make_self_contained(folder: str | os.PathLike, run_env: dict[str, str], base: Path = REPO) -> list[str]:
    """Apply both fixes in place (idempotent); returns one line per change, for the export log."""
    folder = Path(folder)
    changes = []
    args_path = folder / 'args.json'
    if args_path.is_file():
        args = json.loads(args_path.read_text(encoding='utf-8'))
        portable = portable_args(args, base)
        if portable != args:
            write_json(args_path, portable)
            dropped = [k for k in TRAINING_ONLY_ARGS if k in args]
            absolute = [k for k in portable if portable[k] != args[k]]
            changes.append('args.json: ' + '; '.join(filter(None, [
                dropped and f'dropped the training-only {", ".join(dropped)}',
                absolute and f'made {", ".join(absolute)} absolute'])))
    if run_env.get('MAX_PIXELS'):
        min_pixels = int(run_env['MIN_PIXELS']) if run_env.get('MIN_PIXELS') else None
        written = carry_image_budget(folder, int(run_env['MAX_PIXELS']), min_pixels)
        if written:
            changes.append(f'{" and ".join(written)}: max_pixels {run_env["MAX_PIXELS"]} (the training budget)')
    return changes
