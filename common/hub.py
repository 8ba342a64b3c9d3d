"""The Hugging Face token (environment or `hf auth login`), whether the hub can be reached with it, and repo ids.

The token is never printed: error text from the hub is passed through `redact` before it reaches the user.
"""
from __future__ import annotations

import os

from common.errors import InputError


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


def why_not_online(token: str | None) -> str | None:
    """None when we can upload; else the reason, as one line for the user."""
    if os.environ.get('HF_HUB_OFFLINE', '0').lower() in ('1', 'true', 'yes'):
        return 'HF_HUB_OFFLINE is set'
    if not token:
        return 'no Hugging Face token (set HF_TOKEN or run `hf auth login`)'
    try:
        from huggingface_hub import HfApi
        HfApi(token=token).whoami()
    except Exception as e:  # network down, token revoked: both mean "not now"
        return f'the hub is not reachable with this token ({type(e).__name__})'
    return None


def check_repo_id(repo_id: str, field: str) -> str:
    """`user/name` as the hub accepts it (huggingface_hub's own rules: no '--' or '..', no leading '-' or '.', no
    '.git' ending, at most 96 characters, ...), else an InputError before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    if not isinstance(repo_id, str) or repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise InputError(f'not a hub repo id (user/name): {repo_id!r}', field=field)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = str(e).splitlines()[0].split(': ')[0].rstrip('.')
        raise InputError(f'not a hub repo id the hub accepts ({reason}): {repo_id!r}', field=field) from None
    return repo_id


def is_repo_id(value: str) -> bool:
    try:
        check_repo_id(value, 'repo id')
        return True
    except InputError:
        return False


def redact(text: str, token: str | None) -> str:
    """`text` without the token in it (hub errors may echo request details)."""
    return text.replace(token, '***') if token else text


def hub_error(action: str, e: BaseException, token: str | None, field: str) -> InputError:
    """A failed hub call as one line: what was being done and the error's first line, without the token."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    return InputError(redact(f'{action} failed ({type(e).__name__}: {first})'[:400], token), field=field)
