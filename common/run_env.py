"""The environment a model was trained with (today: MAX_PIXELS), carried in its folder as medico_env.json.

`make sft` writes it into the run folder, `make export` copies it into the merged model, and inference and both
submissions read it, so images are resized for inference exactly as they were for training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.io import write_json

RUN_ENV_FILE = 'medico_env.json'


def write_run_env(folder: str | os.PathLike, env: dict[str, str]) -> None:
    write_json(Path(folder) / RUN_ENV_FILE, dict(sorted(env.items())))


def read_run_env(folder: str | os.PathLike | None) -> dict[str, str]:
    """The saved environment of a model or run folder; {} for a hub id or a folder without one."""
    path = Path(folder) / RUN_ENV_FILE if folder else None
    return json.loads(path.read_text()) if path and path.is_file() else {}


def image_budget(model: str | os.PathLike | None, explicit: int | None = None) -> int | None:
    """MAX_PIXELS to use with `model`: the explicit value, else the model's training value, else $MAX_PIXELS."""
    value = explicit or read_run_env(model).get('MAX_PIXELS') or os.environ.get('MAX_PIXELS')
    return int(value) if value else None
