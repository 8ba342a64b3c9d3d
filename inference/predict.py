"""Answer a prepared ms-swift JSONL with a model: greedy decoding, one prediction row per input line, resumable.

    python -m inference.predict --model M [--adapters A] --data OUT/swift/test-original.jsonl --out PRED.jsonl \
        [--backend auto|vllm|transformers] [--max-new-tokens 64] [--batch-size N] [--logprobs] [--max-pixels N] \
        [--max-model-len 4096] [--limit-mm-per-prompt '{"image":1}'] [--tensor-parallel 1] [--gpus N] [--limit N] \
        [--attention auto|fast|stock] [--gpu-memory-utilization 0.9] [--dtype auto] [--enforce-eager] \
        [--engine-args JSON] [--encode-workers N]

PRED.jsonl: per input line, in order, the sidecar (.meta.jsonl) fields + `prediction` + `reference` (the input's
assistant turn), and with --logprobs `tokens` + `token_logprobs` (one per generated token) + `first_top_logprobs` (the
first token's top-20 alternatives, token text -> log-prob: what the Subtask 2 confidence reads). Prompts stream through
the engine (inference.stream): with vLLM they are encoded ahead by worker processes (the ms-swift template, so image
tokens equal training's) and handed over as the engine has room; finished rows are appended to PRED.partial* as
they come, in any order; rerunning the same command skips them. With N visible GPUs, N // tensor-parallel worker
processes (each with its own CUDA_VISIBLE_DEVICES) answer disjoint contiguous shards; the merge checks that every
input line has exactly one row. `--workers K` forces K processes (also on CPU).
Beside PRED: PRED.timing.json (start-up breakdown, rows/s, where the parent's time went, rows finished per 5 s) and,
with vLLM, PRED.vllm.log (vLLM's own log lines, read back for the breakdown and to name the knob when it fails).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.errors import InputError, cli_main, require_positive
from common.hub import use_hub_defaults
from common.io import exclusive_lock, read_jsonl, write_json
from common.procs import die_with_parent, die_with_spawning_parent, mark_parent
from common.qwen_vision import use_image_budget
from common.run_env import image_budget, read_run_env
from inference import shards
from inference.backends import choose_backend, prompt_of
from inference.fast_attention import ATTENTION_CHOICES

STARTED = time.monotonic()  # this process's start, for the timing breakdown
if __name__ == '__mp_main__':   # a child spawned by this module (vLLM's engine core, an encode worker): no orphans
    die_with_spawning_parent()


def sidecar_path(data: str | os.PathLike) -> Path:
    data = Path(data)
    stem = data.name[:-len('.jsonl')] if data.name.endswith('.jsonl') else data.stem
    return data.with_name(stem + '.meta.jsonl')


_DECODED: set[tuple[str, int, int]] = set()   # (path, size, mtime) of images this process has decoded


def image_problem(path: str) -> str | None:
    """Why PIL cannot decode this image (None: it can). verify() checks the structure, load() every pixel."""
    from PIL import Image
    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in _DECODED:
            return None
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # any decoder failure: the image is unusable
        return f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    _DECODED.add(key)
    return None


def check_images_decode(first_row: dict[str, int], data: str) -> None:
    """Decode every distinct image once (threads: PIL releases the GIL) before any model loads; the first failure, in
    line order, is an InputError naming the line."""
    from concurrent.futures import ThreadPoolExecutor
    paths = sorted(first_row, key=first_row.get)
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for path, problem in zip(paths, pool.map(image_problem, paths)):
            if problem:
                raise InputError(f'unreadable image ({problem}): {path}', file=data, row=first_row[path],
                                 field='images')


def load_inputs(data: str, limit: int | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """(prompts, sidecar rows, references) for every input line, checked: InputError names file, line and field."""
    meta_file = sidecar_path(data)
    lines = read_jsonl(data)
    if not meta_file.is_file():
        raise InputError('sidecar not found (data_prep writes it next to the data file)', file=str(meta_file))
    metas = read_jsonl(meta_file)
    if len(metas) != len(lines):
        raise InputError(f'{len(metas)} lines, but {data} has {len(lines)}: the sidecar must match line by line',
                         file=str(meta_file))
    if not lines:
        raise InputError('no input lines', file=data)
    prompts, references, first_row = [], [], {}
    for i, (line, meta) in enumerate(zip(lines, metas), 1):
        if not isinstance(line.get('messages'), list) or not line['messages']:
            raise InputError('must be a non-empty list', file=data, row=i, field='messages')
        if any(not isinstance(m, dict) or 'role' not in m or 'content' not in m for m in line['messages']):
            raise InputError('every message needs role and content', file=data, row=i, field='messages')
        prompt, reference = prompt_of(line)
        if not prompt['messages']:
            raise InputError('no prompt before the assistant turn', file=data, row=i, field='messages')
        for image in prompt['images']:
            if not isinstance(image, str) or not os.path.isfile(image):
                raise InputError(f'image not found: {image}', file=data, row=i, field='images')
            first_row.setdefault(image, i)
        if meta.get('image') is not None and prompt['images'] and meta['image'] != prompt['images'][0]:
            raise InputError(f'{meta["image"]} is not the data line\'s image {prompt["images"][0]} (lines out of '
                             'step?)', file=str(meta_file), row=i, field='image')
        if reference is not None and meta.get('reference') is not None and meta['reference'] != reference:
            raise InputError('differs from the data line\'s assistant answer (lines out of step?)',
                             file=str(meta_file), row=i, field='reference')
        prompts.append(prompt)
        references.append(reference if reference is not None else (meta.get('reference') or ''))
    check_images_decode(first_row, data)
    if limit is not None:
        prompts, metas, references = prompts[:limit], metas[:limit], references[:limit]
    return prompts, metas, references


def training_budget(model: str, adapters: list[str], explicit: int | None) -> int | None:
    """MAX_PIXELS for this run: --max-pixels, else the training value saved with the model (merged: its folder) or
    with a LoRA adapter's run (RUN/medico_env.json, above RUN/v<N>-<time>/checkpoint-<step>), else $MAX_PIXELS."""
    if explicit:
        return explicit
    folders = [model] + [c for a in adapters for c in (Path(a), *list(Path(a).parents)[:2])]
    for folder in folders:
        value = read_run_env(folder).get('MAX_PIXELS')
        if value:
            return int(value)
    return image_budget(None)


WEIGHT_FILES = ('*.safetensors', 'pytorch_model*.bin', 'adapter_model.bin', '*.index.json')


def check_model_path(path: str, flag: str) -> None:
    """Before any model loads: a local folder must hold a config and weights (an adapter: adapter_config.json and its
    weights); `org/name` (one slash, not a path on disk) must be a model ms-swift can fetch (check_hub_model)."""
    if os.path.exists(path):
        folder = Path(path)
        config = 'adapter_config.json' if flag == '--adapters' else 'config.json'
        if not folder.is_dir():
            raise InputError(f'not a folder (a model folder holds {config} and weight files)', file=path, field=flag)
        if not (folder / config).is_file():
            raise InputError(f'no {config} in this folder: not a model folder', file=path, field=flag)
        if not any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES):
            raise InputError('no weight files (*.safetensors or *.bin) in this folder: was the export or download '
                             'complete?', file=path, field=flag)
        return
    looks_like_hub_id = path.count('/') == 1 and not path.startswith(('/', '.', '~'))
    if not looks_like_hub_id:
        raise InputError('model folder not found', file=path, field=flag)
    check_hub_model(path, flag)


def _switched_on(name: str) -> bool:
    return os.environ.get(name, '0').strip().lower() in ('1', 'true', 'yes', 'on')


def check_hub_model(model_id: str, flag: str) -> None:
    """A hub id is fetched by ms-swift from ModelScope (from the Hugging Face hub with USE_HF=1): it must be in that
    hub's local cache, or (hubs not switched off) exist there. A typo or an unreachable hub is one line, not a
    traceback after minutes of loading."""
    use_hf = _switched_on('USE_HF')
    hub = 'the Hugging Face hub' if use_hf else 'ModelScope (ms-swift\'s default; USE_HF=1 for the Hugging Face hub)'
    try:
        if use_hf:
            from huggingface_hub import snapshot_download
        else:
            from modelscope import snapshot_download
        snapshot_download(model_id, local_files_only=True)
        return
    except Exception:  # not in the local cache
        pass
    offline = [name for name in ('HF_HUB_OFFLINE', 'MODELSCOPE_OFFLINE') if _switched_on(name)]
    if offline:
        raise InputError(f'no such folder, and not in the local cache of {hub}, which {offline[0]}=1 switches off',
                         file=model_id, field=flag)
    try:
        if use_hf:
            from huggingface_hub import HfApi
            from huggingface_hub.errors import RepositoryNotFoundError
            try:
                HfApi().model_info(model_id, timeout=30)
                exists = True
            except RepositoryNotFoundError:
                exists = False
        else:
            from modelscope.hub.api import HubApi
            exists = HubApi().repo_exists(model_id, re_raise=True)
    except Exception as e:  # network down, proxy, DNS
        raise InputError(f'no such folder, and {hub} cannot be reached to fetch it ({type(e).__name__})',
                         file=model_id, field=flag) from None
    if not exists:
        raise InputError(f'no such folder, and no such model on {hub}', file=model_id, field=flag)


def run_id(args) -> str:
    """Fingerprint of what decides the answers: partial rows of another model/data/options are refused on resume."""
    key = {'model': os.path.abspath(args.model) if os.path.exists(args.model) else args.model,
           'adapters': [os.path.abspath(a) for a in args.adapters], 'data': os.path.abspath(args.data),
           'max_new_tokens': args.max_new_tokens, 'logprobs': args.logprobs, 'max_pixels': args.max_pixels,
           'attention': args.attention}
    if args.dtype != 'auto':   # (auto keeps the key, and so resumable partial files, of earlier versions)
        key['dtype'] = args.dtype
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def visible_gpus(override: int | None) -> tuple[list[str], list[str]]:
    """(all device ids this process sees, the ones to use): CUDA_VISIBLE_DEVICES, else torch's count; --gpus N keeps
    the first N (0 = CPU)."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        seen = [d.strip() for d in env.split(',') if d.strip()]
    elif override == 0:
        seen = []
    else:
        import torch
        seen = [str(i) for i in range(torch.cuda.device_count())]
    if override is not None and override > len(seen):
        raise InputError(f'--gpus {override}, but only {len(seen)} GPU(s) visible', field='--gpus')
    return seen, seen[:override] if override is not None else seen


def plan_groups(gpus: list[str], tensor_parallel: int, workers: int | None) -> list[list[str]]:
    """GPU ids per worker process: groups of `tensor_parallel` GPUs, or `workers` CPU processes when no GPU."""
    if not gpus:
        return [[] for _ in range(workers or 1)]
    n = len(gpus) // tensor_parallel
    if n == 0:
        raise InputError(f'--tensor-parallel {tensor_parallel} needs that many GPUs, {len(gpus)} visible',
                         field='--tensor-parallel')
    n = min(n, workers) if workers else n
    return [gpus[i * tensor_parallel:(i + 1) * tensor_parallel] for i in range(n)]


def sibling(out: str | os.PathLike, suffix: str) -> Path:
    """PRED.jsonl -> PRED<suffix> (e.g. preds/run/test.timing.json): files that belong to a predictions file."""
    out = Path(out)
    stem = out.name[:-len('.jsonl')] if out.name.endswith('.jsonl') else out.name
    return out.with_name(stem + suffix)


def default_encode_workers(backend_name: str) -> int:
    """vLLM: a few processes encode ahead (~10 ms a prompt each, image resizing included; the engine answers ~50 a
    second on an H200); transformers: 0 (its engine encodes each batch itself)."""
    if backend_name != 'vllm':
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 4))


def open_vllm(args, timings: dict, rank: int | None, rows: int):
    """vLLM's engine (ms-swift's VllmEngine with our knobs) + its stream adapter + the encode workers, started first
    so that their start-up overlaps the engine's."""
    from inference import vllm_engine as ve
    from inference.backends import lora_rank, read_model_kind
    from inference.stream import Prefetcher

    ve.quiet_offline_env()
    ve.spawn_engine_processes()   # the engine core then runs the guard above: it dies with this process
    cache = ve.compile_cache_dir(args.model)
    if cache:
        ve.use_compile_cache(cache)
    timings['compile_cache'] = cache or '~/.cache/vllm'
    log = ve.VllmLog(sibling(args.out, '.vllm.log' if rank is None else f'.vllm.{rank}.log'))
    config = ve.read_config(args.model)
    dtype = ve.engine_dtype(config, args.dtype)
    workers = args.encode_workers if args.encode_workers is not None else default_encode_workers('vllm')
    # the workers start first (they resolve model_type/template themselves, as below), so that their imports and
    # template overlap this process's and the engine's start-up
    setup = {'model': args.model, 'adapters': args.adapters, 'model_type': args.model_type,
             'template_type': args.template, 'max_pixels': args.max_pixels, 'torch_dtype': dtype,
             'max_model_len': args.max_model_len}
    prefetcher = Prefetcher(workers, 'vllm', setup) if workers else None
    try:
        if prefetcher:
            prefetcher.warm_up()
        t0 = time.monotonic()
        import swift.infer_engine.vllm_engine  # noqa: F401  (ms-swift + vLLM + torch: timed on their own)
        timings['import_s'] = round(time.monotonic() - t0, 2)
        model_type, template_type = args.model_type, args.template
        if not (model_type or template_type):
            model_type, template_type = read_model_kind(args.model, args.adapters)
        kwargs = ve.vllm_engine_kwargs(
            config, max_model_len=args.max_model_len, max_num_seqs=args.batch_size,
            gpu_memory_utilization=args.gpu_memory_utilization, dtype=dtype, enforce_eager=args.enforce_eager,
            limit_mm_per_prompt=args.limit_mm_per_prompt, tensor_parallel=args.tensor_parallel,
            max_lora_rank=lora_rank(args.adapters) if args.adapters else None,
            big_gpu=ve.device_memory_bytes() >= ve.BIG_GPU_BYTES, max_pixels=args.max_pixels, rows=rows,
            extra=args.engine_args)
        timings['engine_kwargs'] = kwargs
        engine = ve.load_vllm(args.model, args.adapters, model_type=model_type, template_type=template_type,
                              kwargs=kwargs, log=log, timings=timings)
    except BaseException:
        if prefetcher:
            prefetcher.close()
        log.close()
        raise
    timings.update(ve.parse_startup_log(log.text()))
    if prefetcher is None:  # in-process encoding with the engine's own template
        prefetcher = Prefetcher(0, 'vllm', {'template': engine.template, 'max_model_len': args.max_model_len})
    adapter = ve.VllmAdapter(engine, max_new_tokens=args.max_new_tokens, logprobs=args.logprobs,
                             capacity=ve.in_flight(kwargs['max_num_seqs']))
    timings['encode_workers'] = workers
    return adapter, prefetcher, log


def answer_lines(args, backend_name: str, lines: list[int], partial: Path, rank: int | None = None) -> None:
    """Answer the given input lines, streaming them through the engine and appending each row to `partial` as it
    finishes; writes the timing breakdown beside PRED."""
    from tqdm import tqdm

    from inference.backends import BatchAdapter, load_backend
    from inference.stream import PartialWriter, Prefetcher, stream

    if args.max_pixels:
        use_image_budget(args.max_pixels)   # read by ms-swift's Qwen-VL image resizing
    prompts, metas, references = load_inputs(args.data, args.limit)
    timings: dict = {'backend': backend_name, 'rows_to_do': len(lines)}
    log = None
    if backend_name == 'vllm':
        adapter, prefetcher, log = open_vllm(args, timings, rank, len(lines))
    else:
        t0 = time.monotonic()
        backend = load_backend(backend_name, args.model, args.adapters, max_new_tokens=args.max_new_tokens,
                               logprobs=args.logprobs, batch_size=args.batch_size, model_type=args.model_type,
                               template=args.template, attention=args.attention)
        timings['engine_s'] = round(time.monotonic() - t0, 2)
        adapter = BatchAdapter(backend)
        prefetcher = Prefetcher(args.encode_workers or 0, 'identity', {})
    timings['startup_s'] = round(time.monotonic() - STARTED, 2)
    rid = run_id(args)
    writer = PartialWriter(partial)

    def save(answers: list[tuple[int, dict]]) -> None:
        writer.write([{**metas[i], **answer, 'reference': references[i], shards.LINE: i, shards.RUN: rid}
                      for i, answer in answers])

    lookahead = adapter.capacity() + 2 * max(1, prefetcher.workers)
    try:
        with tqdm(total=len(lines), desc=f'infer[{rank or 0}]', position=rank or 0, dynamic_ncols=True) as bar:
            stats = stream(lines, prompts, prefetcher, adapter, save, lookahead=lookahead, data=args.data,
                           progress=bar.update)
    finally:
        writer.close()
        prefetcher.close()
        if log:
            log.close()
    run = stats.summary()
    timings['stream'] = run
    timings['prompt_tokens'] = summarize_tokens(getattr(adapter, 'prompt_tokens', []))
    timings['answered_s'] = round(time.monotonic() - STARTED, 2)
    path = sibling(args.out, '.timing.json' if rank is None else f'.timing.{rank}.json')
    write_json(path, timings)
    print(timing_line(timings), file=sys.stderr)


def summarize_tokens(tokens: list[int]) -> dict | None:
    return {'mean': round(sum(tokens) / len(tokens), 1), 'max': max(tokens)} if tokens else None


def timing_line(t: dict) -> str:
    """One line: where the start-up went and how fast rows came."""
    parts = [f'{k.removesuffix("_s")} {t[k]}' for k in ('import_s', 'template_s', 'engine_s') if k in t]
    inner = [f'{k.removesuffix("_s").replace("_", " ")} {t[k]}' for k in
             ('weights_s', 'dynamo_s', 'compile_s', 'compile_cache_load_s', 'profile_run_s', 'cuda_graphs_s',
              'warmup_s', 'init_engine_s') if k in t]
    run = t.get('stream') or {}
    line = f'timing [{t["backend"]}]: start-up {t["startup_s"]} s ({", ".join(parts)}'
    line += f'; engine: {", ".join(inner)})' if inner else ')'
    if run.get('rows'):
        line += (f'; first row at +{run["first_row_s"]} s, {run["rows"]} rows at {run["items_per_s"]} rows/s '
                 f'while generating; answered at {t["answered_s"]} s')
    return line


def spawn_workers(argv: list[str], backend_name: str, groups: list[list[str]], shard_lines: list[list[int]],
                  out: str) -> None:
    """One `python -m inference.predict` per shard, each seeing only its GPUs; wait for all, fail if any failed."""
    procs = []
    for rank, (group, lines) in enumerate(zip(groups, shard_lines)):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=','.join(group))
        cmd = [sys.executable, '-m', 'inference.predict', *argv, '--backend', backend_name,
               '--worker-rank', str(rank), '--worker-lines', shards.encode_lines(lines)]
        print(f'worker {rank}: {len(lines)} rows, CUDA_VISIBLE_DEVICES={env["CUDA_VISIBLE_DEVICES"]!r}',
              file=sys.stderr)
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent))  # no orphans if we are killed
    failed = [rank for rank, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise SystemExit(f'error: worker(s) {failed} failed; rerun the same command to resume ({out}.partial*)')


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog='python -m inference.predict', description=__doc__.split('\n')[0])
    p.add_argument('--model', required=True, help='model folder (e.g. RUN/merged) or hub id; the base with --adapters')
    p.add_argument('--adapters', nargs='*', default=[], help='LoRA checkpoint folder(s) on top of --model')
    p.add_argument('--data', required=True, help='ms-swift JSONL; its sidecar <name>.meta.jsonl must sit next to it')
    p.add_argument('--out', required=True, help='predictions JSONL to write')
    p.add_argument('--backend', choices=['auto', 'vllm', 'transformers'], default='auto',
                   help='auto: vLLM when installed and a GPU is visible, else ms-swift transformers')
    p.add_argument('--max-new-tokens', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=None,
                   help='transformers: requests per forward pass (16 on CPU, 128 on a GPU); vLLM: concurrent '
                        'sequences (default 1024 on a >= 70 GiB GPU, else 256, as vllm.LLM; at most the rows to do)')
    p.add_argument('--logprobs', action='store_true', help='also write tokens, token_logprobs and first_top_logprobs')
    p.add_argument('--attention', choices=ATTENTION_CHOICES, default='auto',
                   help='transformers backend: fast = packed ViT + folded-GQA decode attention (same math, other '
                        'kernels), stock = as loaded; auto = fast on a GPU')
    p.add_argument('--max-pixels', type=int, default=None, help='image budget (MAX_PIXELS for ms-swift Qwen-VL)')
    p.add_argument('--max-model-len', type=int, default=4096, help='vLLM context length')
    p.add_argument('--limit-mm-per-prompt', type=_json_dict, default={'image': 1}, help='vLLM, JSON')
    p.add_argument('--tensor-parallel', type=int, default=1, help='GPUs per worker (vLLM only)')
    p.add_argument('--gpu-memory-utilization', type=float, default=None,
                   help='vLLM: share of GPU memory for weights + KV cache (default 0.9; small models get a KV cache '
                        'sized to --batch-size sequences of --max-model-len tokens instead)')
    p.add_argument('--dtype', choices=['auto', 'bfloat16', 'float16', 'float32'], default='auto',
                   help='vLLM: weights/activations (auto: the checkpoint\'s half precision, bf16 for fp32 checkpoints)')
    p.add_argument('--enforce-eager', action='store_true',
                   help='vLLM: no torch.compile or CUDA graphs (starts faster, generates slower)')
    p.add_argument('--engine-args', type=_json_dict, default=None,
                   help='vLLM: extra EngineArgs as JSON, applied last (e.g. \'{"attention_backend": "TRITON_ATTN"}\')')
    p.add_argument('--encode-workers', type=int, default=None,
                   help='processes encoding prompts ahead (vLLM: up to 4, CPUs // 4; transformers: 0)')
    p.add_argument('--gpus', type=int, default=None, help='use this many visible GPUs (0 = CPU)')
    p.add_argument('--workers', type=int, default=None, help='worker processes (default: GPUs // tensor-parallel)')
    p.add_argument('--limit', type=int, default=None, help='only the first N input lines')
    p.add_argument('--model-type', default=None, help='ms-swift model_type (default: args.json / config.json)')
    p.add_argument('--template', default=None, help='ms-swift template (default: args.json / config.json)')
    p.add_argument('--worker-rank', type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument('--worker-lines', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    require_positive(args, ('max_new_tokens', 'batch_size', 'max_pixels', 'max_model_len', 'tensor_parallel',
                            'workers', 'limit'))
    if args.encode_workers is not None and args.encode_workers < 0:
        raise InputError(f'must be >= 0, got {args.encode_workers}', field='--encode-workers')
    if args.gpu_memory_utilization is not None and not 0 < args.gpu_memory_utilization <= 1:
        raise InputError(f'must be in (0, 1], got {args.gpu_memory_utilization}', field='--gpu-memory-utilization')
    return args


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f'not JSON: {e.msg}') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object such as {"image": 1}')
    return value


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mark_parent()   # children started from here on die with this process (common.procs)
    args = parse_args(argv)
    use_hub_defaults()   # hub ids (a base model, the x1 paper's adapter) come from Hugging Face unless USE_HF=0
    args.max_pixels = training_budget(args.model, args.adapters, args.max_pixels)   # travels with the model/run
    if args.worker_rank is not None:   # a worker process started by the parent below
        answer_lines(args, args.backend, shards.decode_lines(args.worker_lines),
                     shards.worker_partial(args.out, args.worker_rank), args.worker_rank)
        return 0

    _, metas, _ = load_inputs(args.data, args.limit)
    seen, gpus = visible_gpus(args.gpus)
    if args.gpus == 0:
        os.environ['CUDA_VISIBLE_DEVICES'] = ''   # --gpus 0: CPU even where GPUs exist (set before torch starts CUDA)
    backend_name = choose_backend(args.backend, len(gpus))
    if args.tensor_parallel > 1 and backend_name != 'vllm':
        raise InputError('needs the vLLM backend', field='--tensor-parallel')
    check_model_path(args.model, '--model')   # before any model loads: weights there, hub id fetchable
    for adapter in args.adapters:
        check_model_path(adapter, '--adapters')
    groups = plan_groups(gpus, args.tensor_parallel, args.workers)

    out = Path(args.out)
    with exclusive_lock(out.with_name(f'.{out.name}.lock'), 'inference.predict run', out):  # one run per --out
        finished = shards.load_finished(args.out, metas, run_id(args))
        shards.compact(args.out, finished)
        todo = [i for i in range(len(metas)) if i not in finished]
        print(f'{len(metas)} rows: {len(finished)} already answered, {len(todo)} to do, backend {backend_name}, '
              f'{len(groups)} worker(s)', file=sys.stderr)
        shard_lines = shards.split_contiguous(todo, len(groups))
        if len(shard_lines) == 1 and groups[0] == seen:   # one process on everything visible: no need to spawn
            answer_lines(args, backend_name, shard_lines[0], shards.worker_partial(args.out, None))
        elif shard_lines:
            spawn_workers(argv, backend_name, groups, shard_lines, args.out)

        finished = shards.load_finished(args.out, metas, run_id(args))
        n = shards.merge(args.out, finished, len(metas))
        record_end_to_end(args.out, backend_name, n, len(todo), len(shard_lines))
    print(f'wrote {n} predictions to {args.out}', file=sys.stderr)
    return 0


def record_end_to_end(out: str, backend_name: str, rows: int, answered: int, workers: int) -> None:
    """Command start -> predictions written, added to PRED.timing.json (which a single process already filled)."""
    path = sibling(out, '.timing.json')
    timings = json.loads(path.read_text()) if path.is_file() and workers == 1 else {'backend': backend_name}
    timings.update(rows=rows, rows_answered_now=answered, worker_processes=workers,
                   end_to_end_s=round(time.monotonic() - STARTED, 2))
    write_json(path, timings)


if __name__ == '__main__':
    main()
