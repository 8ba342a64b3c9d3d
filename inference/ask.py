"""Ask one question about one image and print the model's answer (`make ask IMAGE=path.jpg Q="..."`).

    python -m inference.ask --image IMG --question Q [--model RUN/merged | --url http://127.0.0.1:8000/v1]
        [--max-new-tokens 64] [--backend auto|vllm|transformers] [--max-pixels N]

With --model the model is loaded here, exactly as `make infer` loads it (same engine, template, image budget and
greedy decoding). With --url the question goes over HTTP to a running OpenAI-compatible server (`make serve`) with
the `openai` client. stdout holds the answer and nothing else. The answer with its Subtask 2 explanation (`make ask
EXPLAIN=1`) is explain.ask.
"""
from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.hub import use_hub_defaults
from common.procs import die_with_spawning_parent, mark_parent
from common.qwen_vision import use_image_budget
from common.run_env import image_budget
from inference.predict import check_model_path, visible_gpus

if __name__ == '__mp_main__':   # a child spawned by this module (vLLM's engine core): dies with it, no orphan
    die_with_spawning_parent()


def check_image(path: str) -> Path:
    from PIL import Image, UnidentifiedImageError
    image = Path(path)
    if not image.is_file():
        raise InputError('image not found', file=path, field='--image')
    try:
        with Image.open(image) as im:
            im.verify()
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f'not a readable image ({e})', file=path, field='--image') from None
    return image


def check_request(image: str, question: str, max_new_tokens: int) -> Path:
    """The image file, once the image, question and token cap are usable (also explain.ask's checks)."""
    path = check_image(image)
    if not question.strip():
        raise InputError('empty question', field='--question')
    if max_new_tokens < 1:
        raise InputError(f'must be >= 1, got {max_new_tokens}', field='--max-new-tokens')
    return path


def image_url(image: Path) -> str:
    """The image inline as a data URL: the server need not see this machine's files."""
    mime = mimetypes.guess_type(image.name)[0] or 'image/jpeg'
    return f'data:{mime};base64,{base64.b64encode(image.read_bytes()).decode()}'


def ask_server(url: str, image: Path, question: str, max_new_tokens: int) -> str:
    """One chat completion from an OpenAI-compatible server: image first, then the question (as in training rows)."""
    import openai
    client = openai.OpenAI(base_url=url, api_key=os.environ.get('OPENAI_API_KEY') or '-')   # a server's --api_key
    try:
        model = client.models.list().data[0].id
    except openai.APIConnectionError:
        raise InputError(f'no server answers at {url} (start one with `make serve`)', field='--url') from None
    response = client.chat.completions.create(
        model=model, max_tokens=max_new_tokens, temperature=0,
        messages=[{'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': image_url(image)}},
                                               {'type': 'text', 'text': question}]}])
    return response.choices[0].message.content or ''


def ask_model(model: str, image: Path, question: str, max_new_tokens: int, backend: str,
              max_pixels: int | None) -> str:
    """One greedy answer from the model loaded in this process (inference.backends, as `make infer`)."""
    from inference.backends import choose_backend, load_backend
    use_hub_defaults()
    use_image_budget(image_budget(model, max_pixels))
    name = choose_backend(backend, len(visible_gpus(None)[1]))
    engine = load_backend(name, model, [], max_new_tokens=max_new_tokens, logprobs=False, batch_size=1)
    prompt = {'messages': [{'role': 'user', 'content': '<image>' + question}], 'images': [str(image.resolve())]}
    return engine.answer([prompt])[0]['prediction']


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m inference.ask', description=__doc__.split('\n\n')[0])
    ap.add_argument('--image', required=True, help='image file (jpg, png, ...)')
    ap.add_argument('--question', required=True, help='the question, as the dataset words them')
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument('--model', help='model folder (e.g. RUN/merged) or hub id, loaded here')
    where.add_argument('--url', help='base URL of a running server (make serve), e.g. http://127.0.0.1:8000/v1')
    ap.add_argument('--max-new-tokens', type=int, default=64)
    ap.add_argument('--backend', choices=['auto', 'vllm', 'transformers'], default='auto', help='with --model')
    ap.add_argument('--max-pixels', type=int, default=None, help='with --model: image budget (default: the model\'s)')
    args = ap.parse_args(argv)
    mark_parent()   # children started from here on die with this process (common.procs)
    image = check_request(args.image, args.question, args.max_new_tokens)
    if args.url:
        answer = ask_server(args.url, image, args.question, args.max_new_tokens)
    else:
        check_model_path(args.model, '--model')
        answer = ask_model(args.model, image, args.question, args.max_new_tokens, args.backend, args.max_pixels)
    print(answer, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
