"""The Hugging Face token, when the user has one (environment or `huggingface-cli login`). Never printed."""
from __future__ import annotations

import os


def hub_token() -> str | None:
    token = os.environ.get('HF_TOKEN') or os.environ.get('HUGGING_FACE_HUB_TOKEN')
    if token:
        return token
    try:
        from huggingface_hub import get_token
        return get_token()
    except Exception:
        return None


# ms-swift downloads models, adapters and datasets from ModelScope unless USE_HF=1 (its own variable). The hub ids in
# this repository are Hugging Face ids, so every stage that starts ms-swift defaults to the Hugging Face hub;
# USE_HF=0 in the environment chooses ModelScope.
HUB_DEFAULTS = {'USE_HF': '1'}


def hub_env(base: dict | None = None) -> dict:
    """A copy of `base` (default os.environ) with USE_HF=1 unless the caller set USE_HF."""
    env = dict(os.environ if base is None else base)
    for name, value in HUB_DEFAULTS.items():
        env.setdefault(name, value)
    return env


def use_hub_defaults() -> None:
    """The same defaults in this process's environment (for ms-swift engines built in-process)."""
    for name, value in HUB_DEFAULTS.items():
        os.environ.setdefault(name, value)
