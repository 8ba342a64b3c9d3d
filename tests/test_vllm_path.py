"""`make infer`'s vLLM path on CPU, through `inference.predict`'s real command line: what the flags make of the
engine's settings (open_vllm -> ms-swift's VllmEngine), VllmAdapter feeding a continuously batching engine through
the stream (hand-over while others run, capacity, input order, resume, row checks, lost requests), and the engine
started by our vLLM paths being spawned, not forked (common.procs: only a spawned child dies with its parent).

vLLM needs a GPU and is not installed here, so three stand-ins replace it and nothing else:
- `swift.infer_engine.vllm_engine` (ms-swift's module imports vllm at its top): its VllmEngine records the arguments
  it was built with and holds a minimal LLMEngine (add_request / step / has_unfinished_requests) whose requests
  finish after 1-4 steps depending on their number, so they finish out of order; the answer to a prompt is made from
  the prompt itself (its image number), so a row given another line's answer shows;
- `vllm.sampling_params.RequestOutputKind` and `vllm.platforms.current_platform` (an H200's memory), the two vllm
  names our code imports.
Everything else is real: the argument parser, the tiny model's config and ms-swift template (prompts are encoded
for vLLM by it), inference.stream, the partial file, the resume and the merge."""
from __future__ import annotations

import importlib.machinery
import json
import os
import re
import sys
import types
from types import SimpleNamespace

import pytest

from inference import predict, shards
from inference import vllm_engine as ve
from tests.test_predict import read_rows, write_inputs

N_ROWS = 8
H200_BYTES = 143_771 * 2 ** 20
# what our vLLM path sets in this process's environment (restored after each test)
ENV_SET = ('VLLM_WORKER_MULTIPROC_METHOD', 'VLLM_NO_USAGE_STATS', 'VLLM_USE_FLASHINFER_SAMPLER', 'VLLM_CACHE_ROOT',
           'TRITON_CACHE_DIR', 'TORCHINDUCTOR_CACHE_DIR', 'VLLM_LOGGING_CONFIG_PATH', 'VLLM_CONFIGURE_LOGGING',
           'VLLM_LOGGING_LEVEL', 'MAX_PIXELS', 'USE_HF', 'MEDICO_PARENT_PID')


class StandInLLMEngine:
    """vLLM's LLMEngine as VllmAdapter drives it. Request `n` finishes after 1 + (5n mod 4) steps (out of order); the
    ids in `lose` are accepted and then dropped, as a request vLLM lost would be."""

    def __init__(self, template, lose: set[str]):
        self.tokenizer, self.lose = template.processor.tokenizer, lose
        self.running: dict[str, int] = {}
        self.prompts: dict[str, list[int]] = {}
        self.added: list[tuple[str, int]] = []   # (request id, requests running when it was added)
        self.finished: list[str] = []
        self.peak = 0

    def add_request(self, request_id, prompt, params, lora_request=None):
        assert params.output_kind == 'FINAL_ONLY' and lora_request is None
        assert prompt['multi_modal_data']['image'].size and prompt['mm_processor_kwargs'] == {'do_resize': False}
        self.added.append((request_id, len(self.running)))
        if request_id in self.lose:
            return
        self.running[request_id] = 1 + 5 * int(request_id) % 4
        self.prompts[request_id] = prompt['prompt_token_ids']
        self.peak = max(self.peak, len(self.running))

    def has_unfinished_requests(self) -> bool:
        return bool(self.running)

    def step(self):
        assert self.running, 'step() with no request running would wait for ever'
        for request_id in self.running:
            self.running[request_id] -= 1
        done = sorted((r for r, left in self.running.items() if left == 0), key=int, reverse=True)
        for request_id in done:
            del self.running[request_id]
        self.finished += done
        return [SimpleNamespace(request_id=r, finished=False) for r in self.running] + \
            [SimpleNamespace(request_id=r, finished=True, prompt_token_ids=self.prompts.pop(r)) for r in done]


class StandInVllm:
    """Installs the stand-ins; `built` holds (model, kwargs, start method in the environment) of each VllmEngine."""

    def __init__(self, monkeypatch):
        # ms-swift's modules and trl (which they import) look at import time for an installed vllm: imported while
        # there is none, so that the stand-in changes nothing beyond the test
        import swift.infer_engine.infer_engine, swift.infer_engine.protocol, swift.model, swift.template  # noqa: F401
        self.built: list[tuple[str, dict, str | None]] = []
        self.lose: set[str] = set()
        self.engines: list[StandInLLMEngine] = []
        stand_in = self

        class VllmEngine:
            def __init__(self, model, **kwargs):
                stand_in.built.append((model, kwargs, os.environ.get('VLLM_WORKER_MULTIPROC_METHOD')))
                self.template = kwargs.get('template')   # (load_backend: ms-swift builds its own)
                self.engine = StandInLLMEngine(self.template, set(stand_in.lose)) if self.template else None
                stand_in.engines.append(self.engine)
                self.default_adapter_request = None

            def _prepare_generation_config(self, request_config):
                return SimpleNamespace(max_tokens=request_config.max_tokens, output_kind=None)

            def _add_stop_words(self, params, request_config):
                pass

            def _create_chat_completion_response(self, output, inputs, request_config, request_id):
                from swift.infer_engine.protocol import (ChatCompletionResponse, ChatCompletionResponseChoice,
                                                         ChatMessage, UsageInfo)
                asked = self.engine.tokenizer.decode(output.prompt_token_ids)
                number = re.search(r'image (\d+)\?', asked).group(1)
                choice = ChatCompletionResponseChoice(0, ChatMessage('assistant', f'{number} polyps'), 'stop')
                return ChatCompletionResponse('stand-in', [choice], UsageInfo(1, 1, 2))

        def module(name: str, **names) -> types.ModuleType:
            m = types.ModuleType(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            m.__dict__.update(names)
            monkeypatch.setitem(sys.modules, name, m)
            return m

        module('swift.infer_engine.vllm_engine', VllmEngine=VllmEngine)
        module('vllm')
        module('vllm.sampling_params', RequestOutputKind=SimpleNamespace(FINAL_ONLY='FINAL_ONLY'))
        module('vllm.platforms', current_platform=SimpleNamespace(get_device_total_memory=lambda: H200_BYTES))
        for name in ENV_SET:   # whatever the path sets is undone after the test
            monkeypatch.setenv(name, '')
            monkeypatch.delenv(name)


@pytest.fixture
def stand_in(monkeypatch) -> StandInVllm:
    return StandInVllm(monkeypatch)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp('vllm_path') / 'swift', n=N_ROWS)


def predict_argv(model, data, out, *extra: str) -> list[str]:
    return ['--model', str(model), '--data', str(data), '--out', str(out), '--backend', 'vllm',
            '--encode-workers', '0', *extra]


def answered(out) -> list[tuple[str, str]]:
    return [(r['img_id'], r['prediction']) for r in read_rows(out)]


EXPECTED = [(f'id{i}', f'{i} polyps') for i in range(N_ROWS)]


# ---------------------------------------------------------------- flags -> what reaches ms-swift's VllmEngine
def test_flags_reach_the_engine(stand_in, tiny_model_dir, inputs, tmp_path):
    out = tmp_path / 'pred.jsonl'
    extra = json.dumps({'attention_backend': 'TRITON_ATTN', 'enable_prefix_caching': False})
    assert predict.main(predict_argv(
        tiny_model_dir, inputs, out, '--gpu-memory-utilization', '0.5', '--dtype', 'float16', '--enforce-eager',
        '--batch-size', '4', '--max-model-len', '8192', '--limit-mm-per-prompt', '{"image": 2}',
        '--max-pixels', '50176', '--engine-args', extra, '--limit', '6')) == 0
    import torch
    (model, kwargs, start_method), = stand_in.built
    template = kwargs.pop('template')
    assert model == str(tiny_model_dir) and template.mode == 'vllm'
    assert kwargs == {
        'adapters': None, 'model_type': 'qwen2_5_vl', 'template_type': 'qwen2_5_vl',
        'torch_dtype': torch.float16, 'gpu_memory_utilization': 0.5, 'max_model_len': 8192, 'max_num_seqs': 4,
        'enforce_eager': True, 'limit_mm_per_prompt': {'video': 0, 'image': 2}, 'tensor_parallel_size': 1,
        'seed': 0, 'enable_prefix_caching': False,    # a VllmEngine parameter: top level
        'engine_kwargs': {'max_num_batched_tokens': 16384,     # an H200: vLLM's LLM-class step budget
                          'num_gpu_blocks_override': 4 * 8192 // 16,   # the tiny model: 4 sequences at full length
                          'mm_processor_kwargs': {'max_pixels': 50176}, 'attention_backend': 'TRITON_ATTN'}}
    assert start_method == 'spawn'   # the engine core runs predict's die-with-parent guard (inference.vllm_engine)
    assert answered(out) == EXPECTED[:6]                       # --limit 6
    timing = json.loads(out.with_name('pred.timing.json').read_text())
    assert timing['backend'] == 'vllm' and timing['engine_kwargs']['max_num_seqs'] == 4
    assert stand_in.engines[0].peak == ve.in_flight(4) == 6    # running + a queue of half as many


def test_defaults_follow_the_model_and_the_rows_to_do(stand_in, tiny_model_dir, inputs, tmp_path):
    """No flags: the tiny fp32 checkpoint runs in bf16, at vLLM's memory share, compiled, with the concurrent
    sequences (and its exact KV cache) capped by the rows --limit leaves; MAX_PIXELS travels with the model."""
    model = tmp_path / 'merged'
    model.mkdir()
    for f in tiny_model_dir.iterdir():
        (model / f.name).symlink_to(f)
    (model / 'medico_env.json').write_text(json.dumps({'MAX_PIXELS': str(28 * 28 * 16)}))
    out = tmp_path / 'pred.jsonl'
    assert predict.main(predict_argv(model, inputs, out, '--limit', '3')) == 0
    import torch
    (_, kwargs, _), = stand_in.built
    assert (kwargs['torch_dtype'], kwargs['gpu_memory_utilization'], kwargs['enforce_eager'], kwargs['max_num_seqs'],
            kwargs['max_model_len']) == (torch.bfloat16, 0.9, False, 3, 4096)
    assert kwargs['engine_kwargs'] == {'max_num_batched_tokens': 16384, 'num_gpu_blocks_override': 3 * 4096 // 16,
                                       'mm_processor_kwargs': {'max_pixels': 28 * 28 * 16}}
    assert os.environ['VLLM_CACHE_ROOT'] == str(tmp_path / '.vllm-cache')   # the compile cache beside the model
    assert answered(out) == EXPECTED[:3]


def test_load_backend_spawns_the_engine_too(stand_in, tiny_model_dir):
    """explain.stages' and inference.ask's engine (inference.backends, ms-swift's chunked VllmEngine)."""
    from inference.backends import load_backend
    load_backend('vllm', str(tiny_model_dir), [], max_new_tokens=4, logprobs=False)
    (_, kwargs, start_method), = stand_in.built
    assert start_method == 'spawn' and kwargs['max_num_seqs'] == 1024   # an H200's default sequences


# ---------------------------------------------------------------- VllmAdapter driven by the stream
def test_requests_stream_in_without_draining_and_rows_come_out_in_input_order(stand_in, tiny_model_dir, inputs,
                                                                               tmp_path):
    out = tmp_path / 'pred.jsonl'
    assert predict.main(predict_argv(tiny_model_dir, inputs, out, '--batch-size', '2')) == 0
    engine, capacity = stand_in.engines[0], ve.in_flight(2)
    assert [r for r, _ in engine.added] == [str(i) for i in range(N_ROWS)]   # handed over in input order
    assert engine.peak == capacity == 3                                       # never more than the capacity
    # after the first fill every request was handed over while others were still running: no drain
    assert all(running > 0 for _, running in engine.added[capacity:]), engine.added
    assert engine.finished != sorted(engine.finished, key=int)                # they finished out of order
    assert answered(out) == EXPECTED                                          # written in input order
    assert shards.partial_paths(out) == []


def test_lost_requests_are_an_error_and_a_rerun_answers_only_them(stand_in, tiny_model_dir, inputs, tmp_path,
                                                                 capsys):
    out = tmp_path / 'pred.jsonl'
    argv = predict_argv(tiny_model_dir, inputs, out, '--batch-size', '2')
    stand_in.lose = {'2', '5'}
    with pytest.raises(RuntimeError, match=r'vLLM has no request left but 2 answers are missing \(input lines '
                                           r'\[3, 6\]'):
        predict.main(argv)
    assert not out.exists()
    saved = [json.loads(line) for line in shards.worker_partial(out, None).read_text().splitlines()]
    assert sorted(r[shards.LINE] for r in saved) == [0, 1, 3, 4, 6, 7]       # the others were kept
    # a row of another run's settings is refused, not mixed in
    with pytest.raises(SystemExit) as refused:
        predict.main(predict_argv(tiny_model_dir, inputs, out, '--batch-size', '2', '--max-new-tokens', '8'))
    assert refused.value.code == 2 and 'written by a different run' in capsys.readouterr().err
    stand_in.lose = set()
    assert predict.main(argv) == 0
    assert f'{N_ROWS} rows: 6 already answered, 2 to do' in capsys.readouterr().err
    assert [r for r, _ in stand_in.engines[-1].added] == ['2', '5']           # only the missing lines
    assert answered(out) == EXPECTED                                          # each row once, in input order
