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
