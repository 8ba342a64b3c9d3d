"""Hugging Face side of a submission: token, upload, and the organizers' `medvqa` checks.

Nothing here runs without a token and a reachable hub. The token is read from HF_TOKEN or the stored login
(`huggingface_hub.get_token()`), handed to huggingface_hub and to medvqa through the environment, and never printed
or written anywhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from common.errors import InputError
from common.hub import hub_token  # noqa: F401  (submission.task1/task2 call hub.hub_token)

COMPETITION = 'medico-2026'


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


def upload(repo_id: str, folder: Path, token: str, *, model_dirs: list[Path] = (),
           exclude: tuple[str, ...] = ('predictions_1.json',)) -> str:
    """Create the (private) model repo if needed, upload model folders, then the submission folder last."""
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type='model', private=True, exist_ok=True)
    for model_dir in model_dirs:
        print(f'uploading model files from {model_dir} to {repo_id}', flush=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message=f'model from {model_dir.name}',
                          ignore_patterns=['*.pt', 'optimizer*', 'rng_state*', 'global_step*', 'runs/*'])
    print(f'uploading the submission files from {folder} to {repo_id}', flush=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f'submission files from {folder.name}',
                      ignore_patterns=list(exclude))
    return str(url)


def medvqa(command: str, repo_id: str, task: int, token: str) -> None:
    """`medvqa <command> --competition=medico-2026 --task=N --repo_id=...` with this interpreter's `python` first on
    PATH (medvqa starts the task script with the bare `python`)."""
    exe = shutil.which('medvqa', path=str(Path(sys.executable).parent)) or shutil.which('medvqa')
    if exe is None:
        raise InputError('the `medvqa` command is not installed (pip install medvqa)', field='medvqa')
    env = dict(os.environ, HF_TOKEN=token)
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    cmd = [exe, command, f'--competition={COMPETITION}', f'--task={task}', f'--repo_id={repo_id}']
    print('running: ' + ' '.join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise InputError(f'`medvqa {command}` failed (exit {proc.returncode}); see its output above', field='medvqa')


def confirm(prompt: str, expected: str) -> bool:
    """Ask on the terminal; True only if the user types `expected` exactly. No terminal: no."""
    if not sys.stdin.isatty():
        print('not a terminal: submission needs an interactive confirmation; nothing submitted')
        return False
    try:
        return input(prompt).strip() == expected
    except EOFError:
        return False


def submit_after_confirmation(repo_id: str, task: int, token: str) -> None:
    """`medvqa validate_and_submit` once the user has typed the repo id; otherwise say what was (not) done."""
    print('Submitting makes the repo public (gated) and shares it with the organizers; '
          'keep it unchanged until the results are out.')
    if confirm(f'Type the repo id ({repo_id}) to submit: ', repo_id):
        medvqa('validate_and_submit', repo_id, task, token)
    else:
        print('not confirmed: validated, not submitted')
