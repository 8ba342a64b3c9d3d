"""Environment for running without the Hugging Face / ModelScope hubs (CI, air-gapped clusters)."""
import os

OFFLINE_ENV = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
               'MODELSCOPE_OFFLINE': '1'}


def offline_env(base: dict | None = None) -> dict:
    """A copy of `base` (default os.environ) with the hub-offline switches set."""
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    return env
