"""Serve a model behind an OpenAI-compatible HTTP endpoint with `swift deploy` (`make serve`).

    python -m inference.serve --model RUN/merged [--host 127.0.0.1] [--port 8000] [--backend auto|vllm|transformers]
        [--max-pixels N] [--served-model-name NAME] [--max-model-len 4096] [-- extra swift deploy flags]

The engine is ms-swift's, with the template the model was trained with: vLLM when it is installed and a GPU is
visible, else transformers (--backend overrides). Images are resized with the model's own budget (MAX_PIXELS from
its medico_env.json, written by `make sft` and copied by `make export`). This process becomes the server (exec), so
its pid is the server's pid. Ask it with any OpenAI client, e.g. `make ask URL=http://127.0.0.1:8000/v1 IMAGE=...`:

    client = openai.OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='-')
    client.chat.completions.create(model=client.models.list().data[0].id, messages=[{'role': 'user', 'content': [
        {'type': 'image_url', 'image_url': {'url': 'data:image/jpeg;base64,...'}}, {'type': 'text', 'text': 'Q?'}]}])
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.hub import hub_env
from common.offline import OFFLINE_ENV
from common.qwen_vision import use_image_budget
from common.run_env import image_budget
from inference.backends import choose_backend
from inference.predict import check_model_path, visible_gpus
from training.recipe import check_flags, flags_from_argv

DEFAULT_HOST, DEFAULT_PORT = '127.0.0.1', 8000
LIMIT_MM_PER_PROMPT = '{"image": 1}'


def check_portable(model: str) -> None:
    """A model folder whose args.json names ms-swift plugins that do not exist from here cannot be served: ms-swift
    imports them first. `make export` writes folders without them."""
    args_path = Path(model) / 'args.json'
    if not args_path.is_file():
        return
    plugins = json.loads(args_path.read_text(encoding='utf-8')).get('external_plugins') or []
    missing = [p for p in plugins if not Path(p).is_file()]
    if missing:
        raise InputError(f'external_plugins {missing} do not exist from {os.getcwd()}: run `make export` again (it '
                         'makes the folder self-contained) or serve from the repository root', file=str(args_path))


def check_port_free(host: str, port: int) -> None:
    """ms-swift moves to another port when the asked one is taken; a client would then talk to the wrong server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f'{host}:{port} is not free ({e.strerror}): pick another port', field='--port') from None


def deploy_command(model: str, backend: str, host: str, port: int, served_model_name: str | None,
                   max_model_len: int, extra: list[str]) -> list[str]:
    """`swift deploy` as one process (its module form: `swift deploy` would start a child process)."""
    cmd = [sys.executable, '-m', 'swift.cli.deploy', '--model', model, '--infer_backend', backend,
           '--host', host, '--port', str(port)]
    if Path(model).is_dir() and not {'--model_type', '--template'} & set(extra):
        # as inference.predict: args.json's kind, else config.json's (a bare Qwen2.5-VL folder is ambiguous to
        # ms-swift: qwen2_5_vl or mimo_vl)
        from inference.backends import read_model_kind
        model_type, template = read_model_kind(model, [])
        cmd += (['--model_type', model_type] if model_type else []) + (['--template', template] if template else [])
    if served_model_name:
        cmd += ['--served_model_name', served_model_name]
    if backend == 'vllm':   # as inference.predict: one image per prompt, 4096 tokens of context
        cmd += ['--vllm_max_model_len', str(max_model_len), '--vllm_limit_mm_per_prompt', LIMIT_MM_PER_PROMPT]
    return cmd + extra


def deploy_env(model: str, max_pixels: int | None, base: dict | None = None) -> dict:
    env = hub_env(base)
    use_image_budget(max_pixels, env)
    if Path(model).is_dir():   # a local model: nothing to look up on a hub
        for name, value in OFFLINE_ENV.items():
            env.setdefault(name, value)
    return env


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if '--' in argv:
        cut = argv.index('--')
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(prog='python -m inference.serve', description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', required=True, help='model folder (e.g. RUN/merged) or hub id')
    ap.add_argument('--host', default=DEFAULT_HOST, help='address to listen on (0.0.0.0: every interface)')
    ap.add_argument('--port', type=int, default=DEFAULT_PORT)
    ap.add_argument('--backend', choices=['auto', 'vllm', 'transformers'], default='auto',
                    help='auto: vLLM when installed and a GPU is visible, else ms-swift transformers')
    ap.add_argument('--max-pixels', type=int, default=None, help='image budget (default: the model\'s medico_env.json)')
    ap.add_argument('--served-model-name', default=None, help='the model name clients ask for (default: folder name)')
    ap.add_argument('--max-model-len', type=int, default=4096, help='vLLM context length')
    args = ap.parse_args(argv)

    check_model_path(args.model, '--model')
    check_portable(args.model)
    if extra:
        check_flags(flags_from_argv(extra), 'deploy')
    check_port_free(args.host, args.port)
    backend = choose_backend(args.backend, len(visible_gpus(None)[1]))
    max_pixels = image_budget(args.model, args.max_pixels)
    cmd = deploy_command(args.model, backend, args.host, args.port, args.served_model_name, args.max_model_len, extra)
    env = deploy_env(args.model, max_pixels, dict(os.environ))
    print(f'MAX_PIXELS={max_pixels or "<model default>"} {" ".join(cmd)}', file=sys.stderr)
    print(f'serving {args.model} ({backend}) at http://{args.host}:{args.port}/v1 once the model is loaded (pid '
          f'{os.getpid()}); ask it: make ask URL=http://{args.host}:{args.port}/v1 IMAGE=... Q="..."', file=sys.stderr,
          flush=True)
    os.execve(sys.executable, cmd, env)   # the server keeps this pid: stop it with kill <pid>


if __name__ == '__main__':
    sys.exit(main())
