"""vLLM behind `make infer`: the engine's settings for a model of any size, and the request adapter the stream drives.

Why not ms-swift's `VllmEngine.infer` in chunks (what ran first on an H200, at 45 % of plain `vllm.LLM.generate`):
reading both sources (ms-swift 4.6.0, vLLM 0.26.0) shows four differences, each removed here:
- scheduler budget: `LLM` on a >= 70 GiB GPU schedules up to 1024 sequences and 16,384 tokens per step; ms-swift's
  engine gets vLLM's engine-context defaults, 2,048 tokens per step (about 4 new ~430-token prompts per step while
  256 sequences decode) and its own 256 sequences;
- outputs: `LLM` asks for the final output only; ms-swift streams every running request's output at every step;
- chunks: each chunk of 512 was encoded, then generated until the engine drained, then the next one encoded;
- encoding in the parent: the ms-swift template (image loading and resizing) ran serially before generation.
So the engine is still built by ms-swift's `VllmEngine` (its template is the training template, its engine arguments
are checked by vLLM), but prompts are encoded ahead in worker processes (`encode_for_vllm`, same template) and fed
to vLLM's `LLMEngine` with `add_request` / `step` as capacity frees up (`VllmAdapter`).

`vllm_engine_kwargs` is the one place that decides what reaches the engine (unit-tested on CPU): dtype (bf16 for
checkpoints saved in fp32: FlashAttention needs fp16/bf16 and the fp32 fallback ran out of memory), memory share,
concurrent sequences (capped by the job's rows: vLLM warms up with that many dummy requests), tokens per step, eager
mode, and a KV-cache bound for small models (a tiny model given half an H200 gets ~17 M 16-token blocks, one Python
object each in vLLM's block pool, tens of seconds to build; the bound is the job's sequences at full length).
vllm and swift are imported where used (vllm is absent on CPU machines).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from common.errors import InputError

BIG_GPU_BYTES = 70 * 2 ** 30     # vLLM's own threshold for the larger defaults of its `LLM` class (H100/H200)
SCHEDULER = {True: (1024, 16384), False: (256, 8192)}  # big GPU -> (max_num_seqs, max_num_batched_tokens), as `LLM`
MEMORY_SHARE = 0.9               # vLLM's and ms-swift's default gpu_memory_utilization
KV_BLOCK_TOKENS = 16             # vLLM's default block size (FlashAttention)
KV_OVERRIDE_MAX_BYTES = 4 * 2 ** 30  # KV for every sequence at full length below this: size the cache exactly
WAITING_SHARE = 0.5              # requests queued in vLLM beyond the running ones, as a share of max_num_seqs
DTYPE_BYTES = {'bfloat16': 2, 'float16': 2, 'float32': 4}
# ms-swift 4.6 VllmEngine.__init__ parameters that it passes to vLLM itself: --engine-args naming one of them go there
# (in `engine_kwargs` they would collide with ms-swift's own keyword and fail)
VLLM_ENGINE_PARAMS = ('gpu_memory_utilization', 'tensor_parallel_size', 'pipeline_parallel_size', 'max_model_len',
                      'max_num_seqs', 'disable_custom_all_reduce', 'enforce_eager', 'limit_mm_per_prompt', 'seed',
                      'disable_cascade_attn', 'load_format', 'mm_processor_cache_gb', 'logprobs_mode',
                      'speculative_config', 'max_loras', 'max_lora_rank', 'enable_prefix_caching',
                      'enable_sleep_mode', 'distributed_executor_backend', 'quantization', 'enable_expert_parallel')


# ---------------------------------------------------------------- what reaches the engine (pure)
def read_config(model: str) -> dict:
    """The model's config.json ({} for a hub id or a folder without one)."""
    path = Path(model) / 'config.json'
    return json.loads(path.read_text(encoding='utf-8')) if path.is_file() else {}


def text_config(config: dict) -> dict:
    """The language model's part of a config (transformers 5 nests it for vision-language models)."""
    return config.get('text_config') or config


def saved_dtype(config: dict) -> str | None:
    for part in (config, text_config(config)):
        value = part.get('dtype') or part.get('torch_dtype')
        if value:
            return str(value).removeprefix('torch.')
    return None


def kv_bytes_per_token(config: dict, dtype: str) -> int | None:
    """Bytes of K and V cache per token over all layers (None when the config does not say)."""
    t = text_config(config)
    try:
        heads = int(t['num_attention_heads'])
        kv_heads = int(t.get('num_key_value_heads') or heads)
        head_dim = int(t.get('head_dim') or int(t['hidden_size']) // heads)
        layers = int(t['num_hidden_layers'])
    except (KeyError, TypeError, ValueError):
        return None
    return 2 * layers * kv_heads * head_dim * DTYPE_BYTES.get(dtype, 2)


def engine_dtype(config: dict, requested: str = 'auto') -> str:
    """'auto': the checkpoint's half precision, bf16 for fp32 (or unknown) checkpoints; else the requested one."""
    if requested != 'auto':
        return requested
    saved = saved_dtype(config)
    return saved if saved in ('bfloat16', 'float16') else 'bfloat16'


def vllm_engine_kwargs(config: dict, *, max_model_len: int = 4096, max_num_seqs: int | None = None,
                       gpu_memory_utilization: float | None = None, dtype: str = 'auto', enforce_eager: bool = False,
                       limit_mm_per_prompt: dict | None = None, tensor_parallel: int = 1,
                       max_lora_rank: int | None = None, big_gpu: bool = True, max_pixels: int | None = None,
                       seed: int = 0, rows: int | None = None, extra: dict | None = None) -> dict:
    """Keyword arguments for ms-swift's `VllmEngine(model, **kwargs)` (its `engine_kwargs` go to vLLM's EngineArgs).

    config: the model's config.json; big_gpu: the device has >= 70 GiB (vLLM's own rule for its `LLM` defaults);
    max_pixels: the image budget (the engine's profiling run then uses images of that size, not 12.8 M pixels);
    rows: requests this job will make (the default concurrent sequences are capped by it: vLLM's start-up warm-up
    runs max_num_seqs dummy requests and a small model's KV cache is sized by them); extra: EngineArgs given by the
    user (--engine-args), applied last."""
    dtype = engine_dtype(config, dtype)
    default_seqs, batched_tokens = SCHEDULER[bool(big_gpu)]
    asked_seqs = max_num_seqs or default_seqs
    seqs = max_num_seqs or (min(default_seqs, max(1, rows)) if rows is not None else default_seqs)
    # video 0: the model also takes videos, and vLLM would otherwise profile the video encoder at start-up
    mm_limits = {'video': 0, **(limit_mm_per_prompt or {'image': 1})}
    engine_kwargs: dict = {'max_num_batched_tokens': max(batched_tokens, max_model_len)}
    per_token = kv_bytes_per_token(config, dtype)
    # small model (its KV for the full default sequences fits in a few GiB): room for every sequence of this job at
    # full length, nothing more. vLLM then allocates exactly these blocks (the profiled "KV cache memory" it logs is
    # not what it allocates). A larger model keeps the memory share: an override is not checked against free memory.
    if per_token is not None and asked_seqs * max_model_len * per_token <= KV_OVERRIDE_MAX_BYTES:
        engine_kwargs['num_gpu_blocks_override'] = -(-seqs * max_model_len // KV_BLOCK_TOKENS)
    if max_pixels:
        engine_kwargs['mm_processor_kwargs'] = {'max_pixels': int(max_pixels)}
    kwargs = {'torch_dtype': dtype, 'gpu_memory_utilization': gpu_memory_utilization or MEMORY_SHARE,
              'max_model_len': max_model_len, 'max_num_seqs': seqs, 'enforce_eager': bool(enforce_eager),
              'limit_mm_per_prompt': mm_limits, 'tensor_parallel_size': tensor_parallel, 'seed': seed,
              'engine_kwargs': engine_kwargs}
    if max_lora_rank:
        kwargs['max_lora_rank'] = max_lora_rank
    for key, value in (extra or {}).items():
        (kwargs if key in VLLM_ENGINE_PARAMS else engine_kwargs)[key] = value
    return kwargs


def in_flight(max_num_seqs: int) -> int:
    """Requests handed to vLLM at a time: the running ones plus a queue, so the scheduler never waits for us."""
    return max_num_seqs + max(1, int(max_num_seqs * WAITING_SHARE))


def compile_cache_dir(model: str) -> str | None:
    """Where vLLM keeps its torch.compile cache for this model: $VLLM_CACHE_ROOT when set, else `.vllm-cache` beside
    the model folder (RUN/merged -> RUN/.vllm-cache), so a rerun of the same model skips most compilation; None (vLLM's
    own ~/.cache/vllm) for a hub id or a read-only location."""
    if os.environ.get('VLLM_CACHE_ROOT'):
        return os.environ['VLLM_CACHE_ROOT']
    folder = Path(model)
    if not folder.is_dir() or not os.access(folder.resolve().parent, os.W_OK):
        return None
    return str(folder.resolve().parent / '.vllm-cache')


def use_compile_cache(folder: str) -> None:
    """Keep vLLM's torch.compile cache and the JIT caches under it (Triton's and Inductor's default to ~/.triton and
    /tmp, which a fresh machine does not have): a rerun of the same model then loads instead of compiling."""
    os.environ['VLLM_CACHE_ROOT'] = folder
    os.environ.setdefault('TRITON_CACHE_DIR', str(Path(folder) / 'triton'))
    os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', str(Path(folder) / 'inductor'))


# ---------------------------------------------------------------- vLLM's log: start-up breakdown and errors
LOG_TIMES = {   # vLLM 0.26 log lines (engine core process) -> seconds, in the order they happen
    'weights_s': r'Loading weights took ([\d.]+) seconds',
    'model_load_s': r'Model loading took [\d.]+ GiB(?: memory)? and ([\d.]+) seconds',
    'dynamo_s': r'Dynamo bytecode transform time: ([\d.]+) s',
    'compile_s': r'torch\.compile took ([\d.]+) s in total',
    'compile_cache_load_s': r'from the cache, took ([\d.]+) s',
    'profile_run_s': r'Initial profiling/warmup run took ([\d.]+) s',
    'cuda_graphs_s': r'Graph capturing finished in ([\d.]+) secs',
    'init_engine_s': r'init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s',
}
# spans between two timestamped log lines (1-s resolution): the warm-up after CUDA graphs (the V2 model runner runs
# two dummy steps of max_num_seqs requests through every sampling feature, JIT-compiling its Triton kernels)
LOG_SPANS = {
    'warmup_s': (r'Free memory on device|Graph capturing finished', r'init engine \(profile, create kv cache'),
}
LOG_STAMP = r'(\d\d-\d\d \d\d:\d\d:\d\d) \[[^\]]*\] '
LOG_FACTS = {
    'kv_cache_tokens': r'GPU KV cache size: ([\d,]+) tokens',
    'max_concurrency': r'Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x',
    'attention_backend': r'Using (\S+) attention backend',
    'compiled_inductor_s': r'Compiling a graph for compile range .* takes ([\d.]+) s',
}
# vLLM's start-up and request errors (their message text) -> the knob that fixes them
START_ERRORS = (
    (r'KV cache is needed, which is larger than the available KV cache memory', '--max-model-len',
     'one sequence of --max-model-len {max_model_len} tokens does not fit in the KV cache: lower --max-model-len or '
     'raise --gpu-memory-utilization (now {gpu_memory_utilization})'),
    (r'No available memory for the cache blocks', '--gpu-memory-utilization',
     'no GPU memory left for the KV cache after the model: raise --gpu-memory-utilization (now '
     '{gpu_memory_utilization}) or use more GPUs (--tensor-parallel)'),
    (r'is greater than the derived max_model_len', '--max-model-len',
     '--max-model-len {max_model_len} is longer than the model\'s context: lower it'),
    (r'CUDA out of memory|OutOfMemoryError', '--gpu-memory-utilization',
     'out of GPU memory while starting vLLM: lower --gpu-memory-utilization (now {gpu_memory_utilization}), '
     '--batch-size (concurrent sequences) or --max-model-len, or add --enforce-eager'),
)
TOO_LONG = re.compile(r'prompt \(length (\d+)\)(?: plus the number of requested output tokens)?.* longer than the '
                      r'maximum model length of (\d+)')


def parse_startup_log(text: str) -> dict:
    """Seconds and facts from vLLM's start-up log lines (the ones present; summed where a line repeats)."""
    out: dict = {}
    for key, pattern in LOG_TIMES.items():
        found = [float(x) for x in re.findall(pattern, text)]
        if found:
            out[key] = round(sum(found), 2)
    for key, (start, end) in LOG_SPANS.items():
        ends = list(re.finditer(LOG_STAMP + f'(?:{end})', text))
        starts = [m for m in re.finditer(LOG_STAMP + f'(?:{start})', text) if ends and m.start() < ends[-1].start()]
        span = (_log_time(ends[-1].group(1)) - _log_time(starts[-1].group(1))).total_seconds() if starts else -1
        if span >= 0:   # (a run across New Year's Eve gets none)
            out[key] = span
    for key, pattern in LOG_FACTS.items():
        found = re.findall(pattern, text)
        if not found:
            continue
        if key == 'kv_cache_tokens':
            out[key] = int(found[-1].replace(',', ''))
        elif key == 'attention_backend':
            out[key] = found[-1]
        else:
            out[key] = round(sum(float(x) for x in found), 2) if key.endswith('_s') else float(found[-1])
    return out


def _log_time(stamp: str) -> datetime:
    return datetime.strptime(f'2000-{stamp}', '%Y-%m-%d %H:%M:%S')   # a leap year: 02-29 parses


def start_error(text: str, knobs: dict) -> InputError | None:
    """The one-line error for a failed engine start, from vLLM's exception and log text; None if not a known one."""
    for pattern, field, message in START_ERRORS:
        if re.search(pattern, text):
            return InputError(message.format(**knobs), field=field)
    return None


def too_long_error(text: str, max_new_tokens: int) -> InputError | None:
    """vLLM's 'prompt longer than the maximum model length' -> one line naming --max-model-len."""
    m = TOO_LONG.search(text)
    if not m:
        return None
    return InputError(f'the prompt is {m.group(1)} tokens (image included), which does not leave room for '
                      f'{max_new_tokens} new tokens in --max-model-len {m.group(2)}: raise --max-model-len',
                      field='--max-model-len')


class VllmLog:
    """vLLM's log lines (parent and engine core) also go to LOG_FILE, appended: read back for the start-up breakdown
    and to name the knob when the engine fails to start. Set before vllm is imported; a user's own
    VLLM_LOGGING_CONFIG_PATH (or VLLM_CONFIGURE_LOGGING=0) is left alone."""

    def __init__(self, log_file: str | os.PathLike):
        self.path = Path(log_file)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start = self.path.stat().st_size if self.path.exists() else 0
        self.config_file = None
        if os.environ.get('VLLM_LOGGING_CONFIG_PATH') or os.environ.get('VLLM_CONFIGURE_LOGGING') == '0':
            return
        fmt = {'class': 'vllm.logging_utils.NewLineFormatter', 'datefmt': '%m-%d %H:%M:%S',
               'format': '%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s'}
        level = os.environ.get('VLLM_LOGGING_LEVEL', 'INFO')
        config = {'version': 1, 'disable_existing_loggers': False, 'formatters': {'vllm': fmt},
                  'handlers': {'stderr': {'class': 'logging.StreamHandler', 'formatter': 'vllm', 'level': level,
                                          'stream': 'ext://sys.stderr'},
                               'file': {'class': 'logging.FileHandler', 'formatter': 'vllm', 'level': level,
                                        'filename': str(self.path.resolve()), 'mode': 'a', 'encoding': 'utf-8'}},
                  'loggers': {'vllm': {'handlers': ['stderr', 'file'], 'level': level, 'propagate': False}}}
        fd, self.config_file = tempfile.mkstemp(prefix='medico-vllm-logging.', suffix='.json')
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(config, f)
        os.environ['VLLM_LOGGING_CONFIG_PATH'] = self.config_file  # read by vllm.logger at import, in every process

    def text(self) -> str:
        if not self.path.is_file():
            return ''
        with open(self.path, encoding='utf-8', errors='replace') as f:
            f.seek(self.start)
            return f.read()

    def close(self) -> None:
        if self.config_file:
            Path(self.config_file).unlink(missing_ok=True)


# ---------------------------------------------------------------- engine, template, encoding
def quiet_offline_env() -> None:
    """Environment for an offline machine: no usage-stats upload; no flashinfer sampler when flashinfer is absent
    (on CUDA vLLM's top-k/top-p sampler imports it unless told not to, and the engine core dies)."""
    os.environ.setdefault('VLLM_NO_USAGE_STATS', '1')
    if importlib.util.find_spec('flashinfer') is None:
        os.environ.setdefault('VLLM_USE_FLASHINFER_SAMPLER', '0')


def spawn_engine_processes() -> None:
    """Have vLLM spawn its engine core (and its workers with --tensor-parallel), not fork them. vLLM 0.26 starts them
    with VLLM_WORKER_MULTIPROC_METHOD, 'fork' unless set (vllm/utils/system_utils.py `get_mp_context`; its
    `_maybe_force_spawn` switches to spawn only when CUDA is already initialised, which this process avoids). A
    forked child runs none of our code: nothing ties it to this process, and a SIGKILL of the parent alone leaves it
    holding GPU memory (vLLM 0.26's engine core does not watch its parent). A spawned child re-imports the main
    module as `__mp_main__`, whose guard (common.procs.die_with_spawning_parent) makes the kernel kill it with us.
    ms-swift 4.6's vllm_engine module sets the same at import; set here too so it holds without ms-swift (plain
    `vllm.LLM`) and whatever ms-swift does. Before vllm is imported."""
    os.environ['VLLM_WORKER_MULTIPROC_METHOD'] = 'spawn'


def build_template(model: str, adapters: list[str], model_type: str | None, template_type: str | None,
                   torch_dtype: str | None = None):
    """The ms-swift template exactly as `VllmEngine` builds it (processor, then the adapter's args.json template if
    there is one), in vLLM mode: the parent hands it to the engine and every encode worker builds its own the same
    way, so prompts and image tokens are the ones the model was fine-tuned with."""
    import torch
    from swift.infer_engine.infer_engine import InferEngine
    from swift.model import get_processor
    dtype = getattr(torch, torch_dtype) if torch_dtype else None
    processor = get_processor(model, torch_dtype=dtype, download_model=True, model_type=model_type)
    # InferEngine._get_template reads only `self.adapters`: called with a stand-in self, it is ms-swift's own code path
    template = InferEngine._get_template(SimpleNamespace(adapters=adapters or None), processor, template_type)
    template.set_mode('vllm')
    return template


def image_token_factor(template) -> int | None:
    """Pixels per image-token side (28 for Qwen2.5-VL: patch 14 x merge 2); None if the processor does not say."""
    image_processor = getattr(template.processor, 'image_processor', None)
    patch, merge = getattr(image_processor, 'patch_size', None), getattr(image_processor, 'merge_size', None)
    return int(patch) * int(merge) if patch and merge else None


def encode_for_vllm(template, prompt: dict, max_model_len: int | None = None) -> dict:
    """One prompt -> what vLLM's add_request takes (as ms-swift's VllmEngine builds it: token ids with one image
    placeholder per image, the images loaded and resized by the template under MAX_PIXELS, `do_resize: False` so vLLM
    keeps that size) + the prompt's length once vLLM expands the image placeholders, checked against max_model_len
    (vLLM would refuse the request; here it is one line naming the knob, before the engine sees it)."""
    from swift.infer_engine import InferRequest
    encoded = template.encode(InferRequest(messages=prompt['messages'], images=list(prompt['images'])))
    ids = list(encoded['input_ids'])
    request: dict = {'prompt_token_ids': ids}
    images = encoded.get('images') or []
    if images:
        request['multi_modal_data'] = {'image': images[0] if len(images) == 1 else images}
    if encoded.get('mm_processor_kwargs'):
        request['mm_processor_kwargs'] = encoded['mm_processor_kwargs']
    factor = image_token_factor(template)
    tokens = None
    if factor:
        tokens = len(ids) - len(images) + sum((im.height // factor) * (im.width // factor) for im in images)
    if tokens is not None and max_model_len is not None and tokens >= max_model_len:
        raise InputError(f'the prompt is {tokens} tokens (image included), which leaves no room for an answer in '
                         f'--max-model-len {max_model_len}: raise --max-model-len (or lower --max-pixels)',
                         field='--max-model-len')
    return {'request': request, 'prompt_tokens': tokens,
            'image_sizes': [list(im.size) for im in images]}


class VllmAdapter:
    """Feeds encoded prompts to vLLM's LLMEngine and collects finished answers (the stream's engine adapter).

    Answers are built by ms-swift's own response code (`_create_chat_completion_response`: template decoding of the
    token ids, log-probs with their token texts) and parsed by `inference.backends.parse_response`, so rows equal
    ms-swift's `VllmEngine.infer` rows; only how requests reach the engine differs."""

    def __init__(self, engine, *, max_new_tokens: int, logprobs: bool, capacity: int,
                 top_logprobs: int | None = None):
        from vllm.sampling_params import RequestOutputKind

        from inference.backends import request_config
        self.engine, self.llm = engine, engine.engine
        self.config = request_config(max_new_tokens, logprobs)
        if top_logprobs:
            self.config.top_logprobs = top_logprobs
        self.params = engine._prepare_generation_config(self.config)
        engine._add_stop_words(self.params, self.config)
        self.params.output_kind = RequestOutputKind.FINAL_ONLY  # as vllm.LLM: no per-step outputs of every request
        self.lora = engine._add_adapter(engine.default_adapter_request) if engine.default_adapter_request else None
        self.logprobs, self.max_new_tokens = logprobs, max_new_tokens
        self.size = capacity
        self.keys: dict[str, int] = {}
        self.prompt_tokens: list[int] = []

    def capacity(self) -> int:
        return self.size - len(self.keys)

    def pending(self) -> int:
        return len(self.keys)

    def ready(self, more_coming: bool) -> bool:
        return bool(self.keys)

    def submit(self, key: int, payload: dict) -> None:
        tokens = payload.get('prompt_tokens')
        request_id = str(key)
        try:
            self.llm.add_request(request_id, payload['request'], self.params, lora_request=self.lora)
        except ValueError as e:
            error = too_long_error(str(e), self.max_new_tokens)
            if error is None:
                raise
            raise error from None
        self.keys[request_id] = key
        if tokens is not None:
            self.prompt_tokens.append(tokens)

    def step(self) -> list[tuple[int, dict]]:
        from inference.backends import parse_response
        if not self.llm.has_unfinished_requests():   # step() would wait for outputs that never come
            raise RuntimeError(f'vLLM has no request left but {len(self.keys)} answers are missing (input lines '
                               f'{sorted(int(k) + 1 for k in self.keys)[:10]}...); rerun to resume')
        done = []
        for output in self.llm.step():
            if not output.finished:
                continue
            key = self.keys.pop(output.request_id)
            response = self.engine._create_chat_completion_response(output, {'template_inputs': None}, self.config,
                                                                     output.request_id)
            done.append((key, parse_response(response, self.logprobs)))
        return done


def device_memory_bytes() -> int:
    """Total memory of the first visible GPU, read as vLLM reads it (NVML: no CUDA context in this process); 0 when
    it cannot be read (then the smaller defaults apply)."""
    try:
        from vllm.platforms import current_platform
        return int(current_platform.get_device_total_memory())
    except Exception as e:  # an unusual platform: vLLM itself will say more when the engine starts
        print(f'note: GPU memory not readable ({type(e).__name__}: {e}); using the small-GPU defaults',
              file=sys.stderr)
        return 0


def load_vllm(model: str, adapters: list[str], *, model_type: str | None, template_type: str | None, kwargs: dict,
              log: VllmLog, timings: dict):
    """ms-swift's VllmEngine with our template and kwargs; a failed start becomes one line naming the knob."""
    t0 = time.monotonic()
    template = build_template(model, adapters, model_type, template_type, kwargs['torch_dtype'])
    timings['template_s'] = round(time.monotonic() - t0, 2)
    import torch
    from swift.infer_engine.vllm_engine import VllmEngine
    engine_args = {**kwargs, 'torch_dtype': getattr(torch, kwargs['torch_dtype'])}
    t0 = time.monotonic()
    try:
        engine = VllmEngine(model, template=template, adapters=adapters or None, model_type=model_type,
                            template_type=template_type, **engine_args)
    except Exception as e:
        knobs = {'max_model_len': kwargs['max_model_len'], 'gpu_memory_utilization': kwargs['gpu_memory_utilization']}
        error = start_error(f'{e}\n{log.text()}', knobs)
        if error is None:
            raise
        raise error from e
    timings['engine_s'] = round(time.monotonic() - t0, 2)
    return engine
