"""Inference engines behind one small interface: ms-swift's TransformersEngine, or ms-swift's VllmEngine.

Why ms-swift's VllmEngine rather than plain `vllm.LLM`: both engines then take the same `InferRequest` (so the
request building below is shared and unit-tested on CPU), encode prompts with the same ms-swift template the model
was fine-tuned with (system prompt, `<image>` expansion, qwen_vl_utils resizing under MAX_PIXELS), and answer in the
same `ChatCompletionResponse` format (incl. logprobs). Plain vLLM would use the HF chat template and its own image
processor, a second path that can drift from training. vllm and swift are imported lazily (swift's import is slow;
vllm is absent on CPU).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

from common.model_family import family_of_config

TRANSFORMERS_BATCH = 16       # requests per forward pass on the transformers engine (CPU)
TRANSFORMERS_BATCH_GPU = 128  # on a GPU: 128 + fast attention ran 3.2x the medvqa template (batch 16) on an H200
VLLM_CHUNK = 512          # Backend.answer with VllmEngine: requests handed over at once (predict streams instead)
TOP_LOGPROBS = 20         # alternatives kept at the first answer token (the Subtask 2 yes/no confidence reads them)


def choose_backend(name: str, n_gpus: int) -> str:
    """'auto' -> 'vllm' when vllm is importable and a GPU is visible, else 'transformers'."""
    if name != 'auto':
        return name
    return 'vllm' if n_gpus > 0 and importlib.util.find_spec('vllm') is not None else 'transformers'


def prompt_of(line: dict) -> tuple[dict, str | None]:
    """An ms-swift line -> ({'messages', 'images'} without the final assistant turn, that turn's content or None)."""
    messages = list(line['messages'])
    reference = None
    if messages and messages[-1].get('role') == 'assistant':
        reference = messages.pop()['content']
    return {'messages': messages, 'images': list(line.get('images') or [])}, reference


def swift_request(prompt: dict):
    from swift import InferRequest
    return InferRequest(messages=prompt['messages'], images=prompt['images'])


def request_config(max_new_tokens: int, logprobs: bool):
    """Greedy decoding (temperature 0); with logprobs, the chosen token's and the top alternatives at each step."""
    from swift import RequestConfig
    return RequestConfig(max_tokens=max_new_tokens, temperature=0, logprobs=logprobs,
                         top_logprobs=TOP_LOGPROBS if logprobs else None)


def parse_response(response: Any, logprobs: bool) -> dict:
    """A ChatCompletionResponse -> {'prediction'} (+ 'tokens', 'token_logprobs': one entry per generated token, and
    'first_top_logprobs': the first token's top alternatives, token text -> log-prob, the largest per text)."""
    if isinstance(response, Exception):
        raise response
    choice = response.choices[0]
    out = {'prediction': choice.message.content or ''}
    if logprobs:
        content = (choice.logprobs or {}).get('content') or []
        out['tokens'] = [str(t['token']) for t in content]
        out['token_logprobs'] = [float(t['logprob']) for t in content]
        if not all(math.isfinite(x) for x in out['token_logprobs']):
            raise RuntimeError(f'non-finite token log-probability in {out["token_logprobs"]}')
        first: dict[str, float] = {}
        for alt in (content[0].get('top_logprobs') or []) if content else []:
            first[str(alt['token'])] = max(first.get(str(alt['token']), -math.inf), float(alt['logprob']))
        out['first_top_logprobs'] = first
    return out


def read_model_kind(model: str, adapters: list[str]) -> tuple[str | None, str | None]:
    """(model_type, template) for ms-swift: from an args.json that ms-swift wrote next to the adapter / model, else
    from the config's model_type: a family of ours (common.model_family: config "gemma3" is ms-swift's
    gemma3_vision), or a name ms-swift has a template of (a local Qwen2.5-VL folder is otherwise ambiguous to
    ms-swift: qwen2_5_vl or mimo_vl)."""
    for folder in [*adapters, model]:
        args = Path(folder) / 'args.json'
        if args.is_file():
            data = json.loads(args.read_text(encoding='utf-8'))
            if data.get('model_type') or data.get('template'):
                return data.get('model_type'), data.get('template')
    known = family_of_config(model)
    if known:
        return known.swift_model_type, known.swift_template
    config = Path(model) / 'config.json'
    if config.is_file():
        from swift.model import MODEL_MAPPING
        from swift.template import TEMPLATE_MAPPING
        kind = json.loads(config.read_text(encoding='utf-8')).get('model_type')
        if kind in TEMPLATE_MAPPING:
            return (kind if kind in MODEL_MAPPING else None), kind
    return None, None


def lora_rank(adapters: list[str]) -> int:
    """vLLM must be told the largest LoRA rank up front (ms-swift's default 16 rejects r=32/64 adapters)."""
    ranks = [16]
    for folder in adapters:
        config = Path(folder) / 'adapter_config.json'
        if config.is_file():
            ranks.append(int(json.loads(config.read_text(encoding='utf-8')).get('r') or 16))
    return max(ranks)


class Backend:
    """Answers a chunk of prompts; `chunk_size` is how many it takes at once (and how often results are saved)."""

    def __init__(self, engine, chunk_size: int, max_new_tokens: int, logprobs: bool):
        self.engine, self.chunk_size = engine, chunk_size
        self.max_new_tokens, self.logprobs = max_new_tokens, logprobs

    def answer(self, prompts: list[dict]) -> list[dict]:
        responses = self.engine.infer([swift_request(p) for p in prompts],
                                      request_config(self.max_new_tokens, self.logprobs), use_tqdm=False)
        if len(responses) != len(prompts):
            raise RuntimeError(f'engine returned {len(responses)} answers for {len(prompts)} requests')
        return [parse_response(r, self.logprobs) for r in responses]


class BatchAdapter:
    """A Backend as the stream's engine adapter (inference.stream): takes prompts until a batch is full, then answers
    the batch; the last, partial batch runs once no more prompts are coming."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.batch: list[tuple[int, dict]] = []

    def capacity(self) -> int:
        return self.backend.chunk_size - len(self.batch)

    def pending(self) -> int:
        return len(self.batch)

    def ready(self, more_coming: bool) -> bool:
        return len(self.batch) >= self.backend.chunk_size or (bool(self.batch) and not more_coming)

    def submit(self, key: int, prompt: dict) -> None:
        self.batch.append((key, prompt))

    def step(self) -> list[tuple[int, dict]]:
        keys, prompts = zip(*self.batch)
        self.batch = []
        return list(zip(keys, self.backend.answer(list(prompts))))


def load_backend(name: str, model: str, adapters: list[str], *, max_new_tokens: int, logprobs: bool,
                 batch_size: int | None = None, model_type: str | None = None, template: str | None = None,
                 max_model_len: int | None = None, limit_mm_per_prompt: dict | None = None,
                 tensor_parallel: int = 1, attention: str = 'auto') -> Backend:
    """Build the engine named `name` ('transformers' or 'vllm'). MAX_PIXELS must already be in os.environ.
    `attention` (transformers only): inference.fast_attention's choice (auto = fast on a GPU)."""
    if not (model_type or template):
        model_type, template = read_model_kind(model, adapters)
    kinds = {'model_type': model_type, 'template_type': template}
    if name == 'transformers':
        from swift import TransformersEngine
        import torch
        batch = batch_size or (TRANSFORMERS_BATCH_GPU if torch.cuda.is_available() else TRANSFORMERS_BATCH)
        engine = TransformersEngine(model, adapters=adapters or None, max_batch_size=batch, **kinds)
        from inference.fast_attention import use_attention
        use_attention(engine.model, attention)
        return Backend(engine, batch, max_new_tokens, logprobs)
    if name == 'vllm':  # chunked VllmEngine.infer (inference.predict streams instead: inference.vllm_engine)
        from inference import vllm_engine as ve
        ve.spawn_engine_processes()   # the engine core must run the main module's die-with-parent guard
        import torch
        from swift.infer_engine.vllm_engine import VllmEngine

        kwargs = ve.vllm_engine_kwargs(ve.read_config(model), max_model_len=max_model_len or 4096,
                                       max_num_seqs=batch_size, limit_mm_per_prompt=limit_mm_per_prompt,
                                       tensor_parallel=tensor_parallel,
                                       max_lora_rank=lora_rank(adapters) if adapters else None,
                                       big_gpu=ve.device_memory_bytes() >= ve.BIG_GPU_BYTES,
                                       max_pixels=int(os.environ['MAX_PIXELS']) if os.environ.get('MAX_PIXELS')
                                       else None)
        kwargs['torch_dtype'] = getattr(torch, kwargs['torch_dtype'])
        engine = VllmEngine(model, adapters=adapters or None, **kinds, **kwargs)
        return Backend(engine, VLLM_CHUNK, max_new_tokens, logprobs)
    raise ValueError(f'unknown backend {name!r}')
