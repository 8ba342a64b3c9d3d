"""ms-swift plugin for the GPU benchmarks, loaded with `--external_plugins bench/gpu/swift_plugin.py`.

It adds two trainer callbacks (ms-swift's `callbacks_map`, selected with `--callbacks NAME ...`):
- `vit_packed`: registered by training/swift_plugin.py (the vision tower switch); this file only adds `bench_perf`.
- `bench_perf`: per-step wall clock, tokens/patches actually fed (counted on the GPU, no host sync), peak memory,
  and a torch.profiler window (env BENCH_PROFILE=START:STEPS, e.g. 24:3) summarised as GPU-busy fraction, kernels
  and host syncs per step, and the top operators. Writes $BENCH_OUT/perf_$BENCH_NAME.json (+ profile_*.txt).
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time

import torch
from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root
from training import swift_plugin  # noqa: E402,F401  (registers `vit_packed`)
from swift.callbacks import callbacks_map  # noqa: E402


def merged_busy_us(intervals) -> float:
    busy, end = 0.0, float('-inf')
    for s, e in sorted(intervals):
        if e <= end:
            continue
        busy += e - max(s, end)
        end = e
    return busy


class BenchPerf(TrainerCallback):
    def __init__(self, args, trainer):
        self.trainer, self.args = trainer, args
        self.out = os.environ.get('BENCH_OUT', '.')
        self.name = os.environ.get('BENCH_NAME', 'run')
        start, steps = (os.environ.get('BENCH_PROFILE') or '0:0').split(':')
        self.prof_start, self.prof_steps = int(start), int(steps)
        self.prof, self.prof_t0 = None, None
        self.step_end, self.step_begin = {}, {}
        self.counts = None  # [samples, real tokens, padded tokens, label tokens, vit patches] summed on the device
        original = trainer.compute_loss

        def counting_compute_loss(model, inputs, *a, **kw):
            self._count(inputs)
            return original(model, inputs, *a, **kw)

        trainer.compute_loss = counting_compute_loss
        # Python garbage collections longer than 20 ms, with the step they fell in (a candidate for step stalls)
        self.gc_pauses, self._gc_t0, self._step = [], None, 0
        gc.callbacks.append(self._on_gc)
        # Triton kernels compiled (or loaded from the disk cache) after the start, with their step: liger's kernels
        # are JIT-specialised on their integer arguments, so a new batch shape can mean a new compile mid-run
        self.triton_compiles, self._triton_t0 = [], None
        self.shapes = {}  # step -> [padded sequence length, image patches] of the batch (host-side shapes, no sync)
        try:
            from triton import knobs
            knobs.runtime.jit_cache_hook = self._on_triton_start
            knobs.runtime.jit_post_compile_hook = self._on_triton_end
        except (ImportError, AttributeError):  # no Triton (CPU builds) or an older Triton without knobs
            pass

    def _on_triton_start(self, *, fn, **_):
        self._triton_t0 = time.perf_counter()
        return False  # False: go on and compile

    def _on_triton_end(self, *, fn, **_):
        ms = (time.perf_counter() - self._triton_t0) * 1000 if self._triton_t0 else None
        self.triton_compiles.append(dict(step=self._step, kernel=fn.name, ms=round(ms, 1) if ms else None))

    def _on_gc(self, phase, info):
        if phase == 'start':
            self._gc_t0 = time.perf_counter()
        elif self._gc_t0 is not None:
            ms = (time.perf_counter() - self._gc_t0) * 1000
            if ms > 20:
                self.gc_pauses.append(dict(step=self._step, gen=info.get('generation'), ms=round(ms, 1)))

    def _count(self, inputs):
        ids = inputs.get('input_ids')
        if ids is None:
            return
        mask = inputs.get('attention_mask')
        labels = inputs.get('labels')
        grid = inputs.get('image_grid_thw')
        pixels = inputs.get('pixel_values')
        self.shapes[self._step] = [ids.shape[-1], pixels.shape[0] if pixels is not None else 0]
        dev = ids.device
        zero = torch.zeros((), device=dev, dtype=torch.long)
        if grid is not None:      # Qwen-VL: patches listed per image
            patches = grid.to(dev).prod(-1).sum()
        elif pixels is not None and pixels.dim() == 4:   # Gemma 3 (SigLIP): fixed-size images, [images, 3, H, W]
            side = self.trainer.model.config.vision_config.patch_size
            patches = torch.tensor(pixels.shape[0] * (pixels.shape[2] // side) * (pixels.shape[3] // side), device=dev)
        else:
            patches = zero
        row = torch.stack([torch.tensor(ids.shape[0], device=dev),
                           mask.sum() if mask is not None else torch.tensor(ids.numel(), device=dev),
                           torch.tensor(ids.numel(), device=dev),
                           (labels != -100).sum() if labels is not None else zero, patches]).long()
        self.counts = row if self.counts is None else self.counts + row

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        self._step = step
        self.step_begin.setdefault(step, time.perf_counter())
        if self.prof_steps and step == self.prof_start and self.prof is None:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts, record_shapes=True)
            self.prof.__enter__()
            self.prof_t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        self.step_end[step] = time.perf_counter()
        if self.prof is not None and step == self.prof_start + self.prof_steps - 1:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall_us = (time.perf_counter() - self.prof_t0) * 1e6
            self.prof.__exit__(None, None, None)
            self._summarise_profile(wall_us)
            self.prof = None

    def _summarise_profile(self, wall_us):
        from torch.autograd import DeviceType
        events = self.prof.events()
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        busy = merged_busy_us([(e.time_range.start, e.time_range.end) for e in kernels])
        n = self.prof_steps
        names = {}
        for e in events:
            if e.device_type == DeviceType.CPU:
                names[e.name] = names.get(e.name, 0) + 1
        sync_ops = ['cudaStreamSynchronize', 'cudaDeviceSynchronize', 'aten::item', 'aten::_local_scalar_dense',
                    'cudaMemcpyAsync', 'aten::nonzero']
        self.profile = dict(steps=n, wall_ms_per_step=round(wall_us / n / 1000, 1),
                            gpu_busy_ms_per_step=round(busy / n / 1000, 1), gpu_busy_fraction=round(busy / wall_us, 3),
                            kernels_per_step=round(len(kernels) / n),
                            sdpa_calls_per_step=round(names.get('aten::scaled_dot_product_attention', 0) / n),
                            host_sync_like_per_step={k: round(names.get(k, 0) / n) for k in sync_ops})
        ka = self.prof.key_averages()
        path = os.path.join(self.out, f'profile_{self.name}.txt')
        with open(path, 'w') as f:
            f.write(json.dumps(self.profile) + '\n\n')
            for key in ('self_cuda_time_total', 'self_cpu_time_total', 'cpu_time_total'):
                try:
                    f.write(f'== sorted by {key} ({n} steps)\n{ka.table(sort_by=key, row_limit=30)}\n')
                except Exception as e:  # key names differ between torch versions
                    f.write(f'== {key}: {e!r}\n')
            # which tensors the elementwise time goes to (LLM [tokens, width] vs ViT [patches, 1280] ...)
            by_shape = self.prof.key_averages(group_by_input_shape=True)
            f.write(f'== by input shape, sorted by self_cuda_time_total ({n} steps)\n'
                    f'{by_shape.table(sort_by="self_cuda_time_total", row_limit=60, max_shapes_column_width=90)}\n')
        print('[bench] profile', json.dumps(self.profile), flush=True)

    @staticmethod
    def _compile_times():
        """torch.compile's own account (frames compiled, seconds per phase), if anything was compiled."""
        try:
            from torch._dynamo.utils import compile_times, counters
            stats = {k: dict(v) for k, v in counters.items() if v}
            if stats:
                print('[bench] compile times\n' + compile_times(repr='str'), flush=True)
            return stats
        except Exception as e:  # private API: its shape changes between torch versions
            return repr(e)

    def on_train_end(self, args, state, control, **kwargs):
        cuda = torch.cuda.is_available()
        counts = self.counts.tolist() if self.counts is not None else [0] * 5
        samples = max(counts[0], 1)
        steps = sorted(self.step_end)
        world = max(1, int(os.environ.get('WORLD_SIZE', '1')))
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
        prof = set(range(self.prof_start, self.prof_start + self.prof_steps)) if self.prof_steps else set()
        # steady window: from the end of step `first` to the last step before the profiled ones
        first = int(os.environ.get('BENCH_WARMUP', '8'))
        last = max([s for s in steps if s not in prof and s < (self.prof_start or 10 ** 9)] or steps)
        secs = self.step_end[last] - self.step_end[first] if last > first else float('nan')
        res = dict(name=self.name, steps=len(steps), batch_per_step=per_step, world_size=world,
                   steady_steps=f'{first + 1}..{last}', s_per_step=secs / (last - first) if last > first else None,
                   samples_per_s=per_step * (last - first) / secs if last > first else None,
                   tokens_per_sample=counts[1] / samples, padded_tokens_per_sample=counts[2] / samples,
                   label_tokens_per_sample=counts[3] / samples, vit_patches_per_sample=counts[4] / samples,
                   whole_run_s=self.step_end[steps[-1]] - self.step_begin[min(self.step_begin)],
                   peak_allocated_GiB=torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
                   peak_reserved_GiB=torch.cuda.max_memory_reserved() / 2 ** 30 if cuda else None,
                   gaps_ms_mean=1000 * sum(self.step_begin[s + 1] - self.step_end[s] for s in steps
                                           if s + 1 in self.step_begin) / max(1, len(steps) - 1),
                   step_s={s: round(self.step_end[s] - self.step_end[s - 1], 3)  # every step's wall time
                           for s in steps if s - 1 in self.step_end},
                   wait_s={s: round(self.step_begin[s] - self.step_end[s - 1], 3)  # batch fetch before the step
                           for s in steps if s - 1 in self.step_end and s in self.step_begin},
                   shapes=self.shapes, triton_compiles=self.triton_compiles,
                   gc_pauses=self.gc_pauses, compile_times=self._compile_times(),
                   profile=getattr(self, 'profile', None))
        print('[bench] perf', json.dumps(res), flush=True)
        if int(os.environ.get('RANK', '0')) != 0:   # data-parallel: one file, from rank 0 (every rank logs its line)
            return
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, f'perf_{self.name}.json'), 'w') as f:
            json.dump(res, f, indent=1)


callbacks_map['bench_perf'] = BenchPerf
