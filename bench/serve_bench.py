"""Benchmark: `make serve` start-up time and request latency (OpenAI client, real HTTP on 127.0.0.1).

    python -m bench.serve_bench [--model DIR] [--backend auto] [--requests 10] [--max-new-tokens 8]
        [--out bench/results/serve.md]

Without --model the tiny random Qwen2.5-VL is built (training.tiny_model) with a medico_env.json at the tiny recipe's
budget, so the numbers measure the serving path (process start, ms-swift and model load, template, image resizing,
HTTP), not a real model's compute. Start-up = from launching `python -m inference.serve` to the first 200 on
/v1/models; each request = one chat completion with a 600 x 500 JPEG (data URL) and a question, greedy, timed in the
client. The server is stopped by its pid.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common.io import atomic_open
from common.run_env import write_run_env

REPO = Path(__file__).resolve().parents[1]
QUESTION = 'Are there any polyps in the image, and where are they?'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tiny_model(folder: Path) -> Path:
    model = folder / 'tiny-qwen2.5-vl'
    subprocess.run([sys.executable, '-m', 'training.tiny_model', '--out', str(model)], cwd=REPO, check=True,
                   capture_output=True)
    write_run_env(model, {'MAX_PIXELS': '50176'})   # the tiny recipe's budget, as make export would carry it
    return model


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f'error: the server exited with {proc.returncode}')
        try:
            with urllib.request.urlopen(url + '/models', timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit('error: the server did not start in time')


def measure(model: str, backend: str, requests: int, max_new_tokens: int, image: Path) -> dict:
    import openai

    from inference.ask import image_url
    port = free_port()
    url = f'http://127.0.0.1:{port}/v1'
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, '-m', 'inference.serve', '--model', model, '--port', str(port),
                               '--backend', backend], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until_up(server, url, timeout=900)
        startup = time.perf_counter() - start
        client = openai.OpenAI(base_url=url, api_key='-')
        name = client.models.list().data[0].id
        messages = [{'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': image_url(image)}},
                                                 {'type': 'text', 'text': QUESTION}]}]
        latencies, tokens = [], []
        for _ in range(requests):
            t0 = time.perf_counter()
            r = client.chat.completions.create(model=name, messages=messages, max_tokens=max_new_tokens,
                                               temperature=0)
            latencies.append(time.perf_counter() - t0)
            tokens.append((r.usage.prompt_tokens, r.usage.completion_tokens))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    return {'startup_s': startup, 'first_s': latencies[0], 'median_s': statistics.median(latencies[1:] or latencies),
            'prompt_tokens': tokens[0][0], 'completion_tokens': tokens[0][1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m bench.serve_bench', description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', help='model folder (default: the tiny model, built here)')
    ap.add_argument('--backend', default='auto', choices=['auto', 'vllm', 'transformers'])
    ap.add_argument('--requests', type=int, default=10)
    ap.add_argument('--max-new-tokens', type=int, default=8)
    ap.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'serve.md'))
    args = ap.parse_args(argv)
    from PIL import Image
    load_before = os.getloadavg()[0]   # other work on the machine slows the start-up: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / 'frame.jpg'
        Image.new('RGB', (600, 500), (190, 80, 90)).save(image)
        model = args.model or str(tiny_model(Path(tmp)))
        r = measure(model, args.backend, args.requests, args.max_new_tokens, image)
    label = 'tiny random Qwen2.5-VL (MAX_PIXELS 50176)' if not args.model else args.model
    lines = [f'# `make serve` on {label}', '',
             f'Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()} (load average '
             f'{load_before:.1f} before the run); backend '
             f'{args.backend}; one client, {args.requests} sequential requests (600 x 500 JPEG + question, greedy, '
             f'max {args.max_new_tokens} new tokens; {r["prompt_tokens"]} prompt tokens).', '',
             '| measure | seconds |', '|---|---|',
             f'| start-up (launch -> first 200 on /v1/models) | {r["startup_s"]:.1f} |',
             f'| first request | {r["first_s"]:.3f} |',
             f'| later requests (median) | {r["median_s"]:.3f} |']
    text = '\n'.join(lines) + '\n'
    print(text)
    with atomic_open(args.out, 'w', encoding='utf-8') as f:
        f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
