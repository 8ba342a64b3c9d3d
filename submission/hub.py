"""Hugging Face side of a submission: token, upload, and the organizers' `medvqa` checks.

Nothing here runs without a token and a reachable hub. The token is read from HF_TOKEN or the stored login
(`huggingface_hub.get_token()`), handed to huggingface_hub and to medvqa through the environment, and never printed
or written anywhere.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from common.errors import InputError
from common.hub import (check_repo_id, hub_error, hub_token, is_repo_id, redact,  # noqa: F401  (task1/2 use hub.*)
                        why_not_online)

COMPETITION = 'medico-2026'
# What medvqa's task scripts print once every check of theirs passed (medvqa 0.15.7, competitions/medico-2026).
MEDVQA_PASSED = {1: 'The submission script ran successfully', 2: 'Validation checks complete'}
MEDVQA_FLAGS = {'validate': {}, 'validate_and_submit': {'_MEDVQA_SUBMIT_FLAG_': 'TRUE'}}


def require_online(token: str | None, repo_id: str) -> None:
    """Before any work of an upload that was asked for: a token, and the hub reachable with it."""
    reason = why_not_online(token)
    if reason:
        raise InputError(f'cannot upload to {repo_id}: {reason}; nothing was built (DRY_RUN=1 / --dry-run builds and '
                         'checks offline)', field='hub-repo')


def upload(repo_id: str, folder: Path, token: str, *, model_dirs: list[Path] = (),
           exclude: tuple[str, ...] = ('predictions_1.json',)) -> str:
    """Create the (private) model repo if needed, upload model folders, then the submission folder last. A hub error
    is one line (without the token) naming the step that failed."""
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    step = f'creating the repo {repo_id}'
    try:
        url = api.create_repo(repo_id, repo_type='model', private=True, exist_ok=True)
        for model_dir in model_dirs:
            step = f'uploading {model_dir} to {repo_id}'
            print(f'uploading model files from {model_dir} to {repo_id}', flush=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(model_dir),
                              commit_message=f'model from {model_dir.name}',
                              ignore_patterns=['*.pt', 'optimizer*', 'rng_state*', 'global_step*', 'runs/*'])
        step = f'uploading {folder} to {repo_id}'
        print(f'uploading the submission files from {folder} to {repo_id}', flush=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                          commit_message=f'submission files from {folder.name}', ignore_patterns=list(exclude))
    except Exception as e:  # network, permissions, quota: the user's to fix, in one line
        raise hub_error(step, e, token, 'upload') from None
    return str(url)


def medvqa_task_script(task: int) -> Path:
    spec = importlib.util.find_spec('medvqa')
    if spec is None or spec.origin is None:
        raise InputError('the medvqa package is not installed (pip install medvqa)', field='medvqa')
    script = Path(spec.origin).parent / 'competitions' / COMPETITION / f'task_{task}.py'
    if not script.is_file():
        raise InputError(f'this medvqa has no {COMPETITION} task {task} ({script}): pip install -U medvqa',
                         field='medvqa')
    return script


def medvqa(command: str, repo_id: str, task: int, token: str) -> None:
    """What `medvqa <command> --competition=medico-2026 --task=N --repo_id=...` runs: medvqa's own task script, with
    the same environment flag its CLI sets, and this interpreter's `python` first on PATH (the script starts
    `python` itself). The CLI drops the script's exit status (it always exits 0, even after a rejection), so the
    script is run here directly: it passed only when it exits 0 AND printed medvqa's success line."""
    script = medvqa_task_script(task)
    env = dict(os.environ, HF_TOKEN=token, **MEDVQA_FLAGS[command])
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    cmd = [sys.executable, '-u', str(script), f'--repo_id={repo_id}']
    print(f'running: medvqa {command} --competition={COMPETITION} --task={task} --repo_id={repo_id}', flush=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding='utf-8', errors='replace')
    seen = []
    for line in proc.stdout:   # shown as it comes (it prints progress), kept to find the verdict
        print(line, end='', flush=True)
        seen.append(line.rstrip())
    returncode = proc.wait()
    passed = any(MEDVQA_PASSED[task] in line for line in seen)
    if returncode != 0 or not passed:
        last = next((line for line in reversed(seen) if line.strip()), '')
        why = f'exit {returncode}' if returncode else 'no success line'
        raise InputError(redact(f'`medvqa {command}` rejected the submission ({why}): {last[:300]}', token),
                         field='medvqa')


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
