"""inference.vllm_engine on CPU: exactly what reaches ms-swift's VllmEngine (and through it vLLM's EngineArgs) for the
tiny test model and a 7B-shaped config, vLLM's log read back into a start-up breakdown, and its errors as one line.

vLLM itself cannot run here (no GPU); the engine adapter runs on the H200 (docs/benchmarks.md). The argument names are
checked against the installed ms-swift's source (its vllm_engine module imports vllm, so it is parsed, not imported).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from common.errors import InputError
from inference import vllm_engine as ve

SEVEN_B_KV_BYTES = 28 * 2 * 4 * 128 * 2   # layers x (K, V) x kv heads x head dim x bf16 bytes


@pytest.fixture(scope='module')
def seven_b_config(tmp_path_factory) -> dict:
    """config.json of the random-init 7B shape the GPU benchmarks build (bench.gpu.build_model), as saved (bf16)."""
    import torch

    from bench.gpu.build_model import build_config
    cfg = build_config(tiny=False)
    cfg.dtype = torch.bfloat16
    folder = tmp_path_factory.mktemp('seven_b')
    cfg.save_pretrained(folder)
    return ve.read_config(str(folder))


@pytest.fixture(scope='module')
def tiny_config(tiny_model_dir) -> dict:
    return ve.read_config(str(tiny_model_dir))


def test_tiny_model_gets_bf16_and_a_kv_cache_sized_to_its_sequences(tiny_config):
    assert ve.saved_dtype(tiny_config) == 'float32'   # how the tiny test model is saved
    kwargs = ve.vllm_engine_kwargs(tiny_config, max_model_len=4096, big_gpu=True, max_pixels=640000)
    assert kwargs == {
        'torch_dtype': 'bfloat16',   # FlashAttention needs fp16/bf16; the fp32 fallback ran out of memory
        'gpu_memory_utilization': 0.9, 'max_model_len': 4096, 'max_num_seqs': 1024, 'enforce_eager': False,
        'limit_mm_per_prompt': {'video': 0, 'image': 1}, 'tensor_parallel_size': 1, 'seed': 0,
        'engine_kwargs': {'max_num_batched_tokens': 16384,
                          # every one of the 1024 sequences at full length, not millions of blocks from the share
                          'num_gpu_blocks_override': 1024 * 4096 // 16,
                          'mm_processor_kwargs': {'max_pixels': 640000}}}
    per_token = ve.kv_bytes_per_token(tiny_config, 'bfloat16')
    assert per_token == 2 * 2 * 2 * (64 // 4) * 2
    assert kwargs['engine_kwargs']['num_gpu_blocks_override'] * 16 * per_token <= ve.KV_OVERRIDE_MAX_BYTES


def test_seven_b_shape_keeps_the_memory_share(seven_b_config):
    assert ve.kv_bytes_per_token(seven_b_config, 'bfloat16') == SEVEN_B_KV_BYTES
    kwargs = ve.vllm_engine_kwargs(seven_b_config, big_gpu=True)
    assert kwargs['torch_dtype'] == 'bfloat16'
    assert kwargs['gpu_memory_utilization'] == 0.9 and kwargs['max_num_seqs'] == 1024
    assert kwargs['engine_kwargs'] == {'max_num_batched_tokens': 16384}   # KV cache: whatever the share leaves
    small_gpu = ve.vllm_engine_kwargs(seven_b_config, big_gpu=False)
    assert small_gpu['max_num_seqs'] == 256 and small_gpu['engine_kwargs']['max_num_batched_tokens'] == 8192


def test_knobs_reach_the_engine(seven_b_config, tiny_config):
    kwargs = ve.vllm_engine_kwargs(seven_b_config, max_model_len=32768, max_num_seqs=64, gpu_memory_utilization=0.5,
                                   enforce_eager=True, limit_mm_per_prompt={'image': 2}, tensor_parallel=2,
                                   max_lora_rank=64, dtype='float16', seed=3)
    assert {k: kwargs[k] for k in ('torch_dtype', 'gpu_memory_utilization', 'max_model_len', 'max_num_seqs',
                                   'enforce_eager', 'limit_mm_per_prompt', 'tensor_parallel_size', 'max_lora_rank',
                                   'seed')} == {
        'torch_dtype': 'float16', 'gpu_memory_utilization': 0.5, 'max_model_len': 32768, 'max_num_seqs': 64,
        'enforce_eager': True, 'limit_mm_per_prompt': {'video': 0, 'image': 2}, 'tensor_parallel_size': 2,
        'max_lora_rank': 64, 'seed': 3}
    # a step must hold one whole prompt of max_model_len tokens
    assert kwargs['engine_kwargs']['max_num_batched_tokens'] == 32768
    # fewer sequences -> a smaller exact KV cache for the tiny model
    assert ve.vllm_engine_kwargs(tiny_config, max_num_seqs=64)['engine_kwargs']['num_gpu_blocks_override'] == \
        64 * 4096 // 16
    # --engine-args: vLLM EngineArgs go into engine_kwargs, VllmEngine's own parameters to the top level
    extra = ve.vllm_engine_kwargs(tiny_config, extra={'attention_backend': 'TRITON_ATTN', 'max_num_seqs': 8,
                                                      'num_gpu_blocks_override': 100})
    assert extra['max_num_seqs'] == 8 and extra['engine_kwargs']['attention_backend'] == 'TRITON_ATTN'
    assert extra['engine_kwargs']['num_gpu_blocks_override'] == 100


def test_a_small_job_caps_the_sequences_and_the_tiny_models_kv_cache(tiny_config, seven_b_config):
    """Run 13 (an H200): `make infer MODEL=<tiny> BACKEND=vllm INFER_ARGS=--limit 300` started vLLM with 1,024
    sequences and 262,144 KV blocks for 300 rows. vLLM 0.26's start-up warm-up runs max_num_seqs dummy requests
    (v1/worker/gpu/warmup.py) and the tiny model's KV cache was sized by them: both now follow the job."""
    job = ve.vllm_engine_kwargs(tiny_config, big_gpu=True, rows=300)
    assert job['max_num_seqs'] == 300
    assert job['engine_kwargs']['num_gpu_blocks_override'] == 300 * 4096 // 16   # 76,800 blocks, 300 MiB
    assert ve.in_flight(job['max_num_seqs']) >= 300                              # every row can be handed over
    whole = ve.vllm_engine_kwargs(tiny_config, big_gpu=True, rows=5000)         # more rows than sequences
    assert whole['max_num_seqs'] == 1024 and whole['engine_kwargs']['num_gpu_blocks_override'] == 1024 * 4096 // 16
    assert ve.vllm_engine_kwargs(tiny_config, big_gpu=False, rows=300)['max_num_seqs'] == 256
    assert ve.vllm_engine_kwargs(tiny_config, rows=0)['max_num_seqs'] == 1
    # an explicit --batch-size is what reaches the engine, rows or not
    assert ve.vllm_engine_kwargs(tiny_config, max_num_seqs=512, rows=300)['max_num_seqs'] == 512
    # the 7B shape: fewer sequences for a small job, and still the memory share (vLLM does not check an override
    # against free memory, and its KV cache took ~1 s of the 52 s "init engine" in run 13)
    seven = ve.vllm_engine_kwargs(seven_b_config, big_gpu=True, rows=10)
    assert seven['max_num_seqs'] == 10 and 'num_gpu_blocks_override' not in seven['engine_kwargs']
    assert seven['gpu_memory_utilization'] == 0.9


def test_dtype_rules(tiny_config, seven_b_config):
    half = {**seven_b_config, 'dtype': 'float16'}
    assert ve.engine_dtype(half) == 'float16'          # a half-precision checkpoint runs as saved
    assert ve.engine_dtype(seven_b_config) == 'bfloat16'
    assert ve.engine_dtype(tiny_config) == 'bfloat16'  # fp32 checkpoint
    assert ve.engine_dtype({}) == 'bfloat16'           # hub id: no config here
    assert ve.engine_dtype(tiny_config, 'float32') == 'float32'


def _swift_vllm_engine_source() -> ast.Module:
    import swift
    return ast.parse((Path(swift.__file__).parent / 'infer_engine' / 'vllm_engine.py').read_text())


def test_kwargs_are_vllm_engine_parameters_and_engine_kwargs_do_not_collide(tiny_config):
    """Against the installed ms-swift: every top-level key is a VllmEngine.__init__ parameter, and no engine_kwargs
    key is one that ms-swift already passes to EngineArgs by name (that would be 'multiple values for keyword')."""
    tree = _swift_vllm_engine_source()
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == '__init__'
                and any(a.arg == 'model_id_or_path' for a in n.args.args))
    params = {a.arg for a in init.args.args + init.args.kwonlyargs}
    prepare = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == '_prepare_engine_kwargs')
    engine_call = next(n for n in ast.walk(prepare) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') ==
                       'engine_cls')
    explicit = {k.arg for k in engine_call.keywords if k.arg}
    kwargs = ve.vllm_engine_kwargs(tiny_config, max_lora_rank=32, max_pixels=50176,
                                   extra={'attention_backend': 'FLEX_ATTENTION', 'enable_prefix_caching': False})
    assert set(kwargs) - {'engine_kwargs'} <= params, set(kwargs) - params
    assert set(ve.VLLM_ENGINE_PARAMS) <= params
    assert not set(kwargs['engine_kwargs']) & explicit, set(kwargs['engine_kwargs']) & explicit
    assert 'enable_prefix_caching' in kwargs and 'enable_prefix_caching' not in kwargs['engine_kwargs']


def test_in_flight_keeps_a_queue_beyond_the_running_sequences():
    assert ve.in_flight(1024) == 1536 and ve.in_flight(1) == 2


def test_compile_cache_beside_the_model(tmp_path, monkeypatch):
    monkeypatch.delenv('VLLM_CACHE_ROOT', raising=False)
    model = tmp_path / 'run' / 'merged'
    model.mkdir(parents=True)
    assert ve.compile_cache_dir(str(model)) == str(tmp_path / 'run' / '.vllm-cache')
    assert ve.compile_cache_dir('Qwen/Qwen2.5-VL-7B-Instruct') is None
    monkeypatch.setenv('VLLM_CACHE_ROOT', '/somewhere')
    assert ve.compile_cache_dir(str(model)) == '/somewhere'
    for name in ('VLLM_CACHE_ROOT', 'TRITON_CACHE_DIR', 'TORCHINDUCTOR_CACHE_DIR'):
        monkeypatch.delenv(name, raising=False)
    ve.use_compile_cache(str(tmp_path / 'cache'))   # Triton's and Inductor's JIT caches travel with it
    import os
    assert (os.environ['VLLM_CACHE_ROOT'], os.environ['TRITON_CACHE_DIR'], os.environ['TORCHINDUCTOR_CACHE_DIR']) == \
        (str(tmp_path / 'cache'), str(tmp_path / 'cache' / 'triton'), str(tmp_path / 'cache' / 'inductor'))


# vLLM 0.26's own log lines (format strings from its source, filled in as an H200 start-up would)
STARTUP_LOG = """\
INFO 12-03 10:00:01 [gpu_model_runner.py:4000] Loading weights took 9.87 seconds
INFO 12-03 10:00:02 [gpu_model_runner.py:5348] Model loading took 15.6 GiB memory and 11.213400 seconds
INFO 12-03 10:00:14 [backends.py:1156] Dynamo bytecode transform time: 12.05 s
INFO 12-03 10:00:40 [backends.py:394] Compiling a graph for compile range (1, 16384) takes 25.50 s
INFO 12-03 10:00:41 [monitor.py:20] torch.compile took 39.12 s in total
INFO 12-03 10:00:44 [monitor.py:82] Initial profiling/warmup run took 2.75 s
INFO 12-03 10:00:45 [kv_cache_utils.py:2177] GPU KV cache size: 1,786,432 tokens
INFO 12-03 10:00:45 [kv_cache_utils.py:2179] Maximum concurrency for 4,096 tokens per request: 436.14x
INFO 12-03 10:00:49 [gpu_model_runner.py:6845] Graph capturing finished in 4 secs, took 0.52 GiB
INFO 12-03 10:00:50 [core.py:348] init engine (profile, create kv cache, warmup model) took 9.80 s
INFO 12-03 10:00:50 [cuda.py:483] Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN'].
"""


def test_startup_breakdown_from_vllms_log():
    assert ve.parse_startup_log(STARTUP_LOG) == {
        'weights_s': 9.87, 'model_load_s': 11.21, 'dynamo_s': 12.05, 'compile_s': 39.12, 'profile_run_s': 2.75,
        'cuda_graphs_s': 4.0, 'init_engine_s': 9.8, 'warmup_s': 1.0, 'kv_cache_tokens': 1786432,
        'max_concurrency': 436.14,
        'attention_backend': 'FLASH_ATTN', 'compiled_inductor_s': 25.5}
    warm = 'INFO x [backends.py:294] Directly load the compiled graph(s) for compile range (1, 16384) from the ' \
           'cache, took 1.234 s\n'
    assert ve.parse_startup_log(warm) == {'compile_cache_load_s': 1.23}
    assert ve.parse_startup_log('') == {}


def test_warmup_span_from_run_13s_logs():
    """The warm-up after CUDA graphs (graphs -> "init engine") from the H200 logs of run 13: 12 s for the 7B shape;
    the tiny model's log ends inside it (it was stopped there), so no span is claimed."""
    results = Path(__file__).resolve().parent.parent / 'bench' / 'gpu' / 'results' / 'run13'
    seven_b = ve.parse_startup_log((results / 'make_infer_vllm_7b.log').read_text(encoding='utf-8'))
    assert seven_b['warmup_s'] == 12.0 and seven_b['init_engine_s'] == 51.97 and seven_b['cuda_graphs_s'] == 5.0
    tiny = ve.parse_startup_log((results / 'make_infer_vllm_tiny.log').read_text(encoding='utf-8'))
    assert 'warmup_s' not in tiny and 'init_engine_s' not in tiny and tiny['cuda_graphs_s'] == 1.0
    eager = ('INFO 02-29 23:59:58 [gpu_worker.py:857] Free memory on device (139.29/139.8 GiB) on startup.\n'
             'INFO 03-01 00:00:03 [core.py:340] init engine (profile, create kv cache, warmup model) took 9.00 s\n')
    assert ve.parse_startup_log(eager)['warmup_s'] == 5.0   # across midnight (and a leap day)


def test_vllm_log_goes_to_a_file_and_the_users_config_wins(tmp_path, monkeypatch):
    monkeypatch.delenv('VLLM_LOGGING_CONFIG_PATH', raising=False)
    monkeypatch.delenv('VLLM_CONFIGURE_LOGGING', raising=False)
    log_file = tmp_path / 'pred.vllm.log'
    log_file.write_text('an earlier run\n')
    log = ve.VllmLog(log_file)
    config = json.loads(Path(log.config_file).read_text())
    import os
    assert os.environ['VLLM_LOGGING_CONFIG_PATH'] == log.config_file
    assert config['handlers']['file']['filename'] == str(log_file.resolve())
    assert config['loggers']['vllm']['handlers'] == ['stderr', 'file']
    with open(log_file, 'a') as f:
        f.write(STARTUP_LOG)
    assert log.text() == STARTUP_LOG                       # this run's lines only
    log.close()
    assert not Path(log.config_file).exists()
    monkeypatch.setenv('VLLM_LOGGING_CONFIG_PATH', '/users/own.json')
    assert ve.VllmLog(tmp_path / 'other.log').config_file is None


def test_start_and_request_errors_name_the_knob():
    kv = ('ValueError: To serve at least one request with the model\'s max seq len (131072), (7.00 GiB KV cache is '
          'needed, which is larger than the available KV cache memory (3.20 GiB). Based on the available memory, '
          'the estimated maximum model length is 59904.')
    error = ve.start_error(f'RuntimeError: Engine core initialization failed.\n{kv}',
                           {'max_model_len': 131072, 'gpu_memory_utilization': 0.9})
    assert isinstance(error, InputError) and error.field == '--max-model-len'
    assert '131072' in str(error) and '--gpu-memory-utilization' in str(error) and '\n' not in str(error)
    none_left = 'ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`'
    assert ve.start_error(none_left, {'max_model_len': 4096, 'gpu_memory_utilization': 0.05}).field == \
        '--gpu-memory-utilization'
    assert ve.start_error('RuntimeError: something else', {'max_model_len': 1, 'gpu_memory_utilization': 1}) is None
    too_long = ('The decoder prompt (length 5000) is longer than the maximum model length of 4096. Make sure that '
                '`max_model_len` is no smaller than the number of text tokens plus multimodal tokens.')
    error = ve.too_long_error(too_long, 64)
    assert error.field == '--max-model-len' and '5000 tokens' in str(error) and '4096' in str(error)
    assert ve.too_long_error('The decoder prompt (length 4096) plus the number of requested output tokens (at '
                             'least 1) is longer than the maximum model length of 4096.', 64) is not None
    assert ve.too_long_error('something else', 64) is None
