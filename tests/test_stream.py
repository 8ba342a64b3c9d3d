"""The streaming feeder (inference.stream) on CPU: through the real TransformersEngine for order, resume after SIGKILL
(of the parent alone and of its whole process group) and no lost or duplicated rows; the vLLM encoder (ms-swift's
template in vLLM mode) in worker processes, whose image tokens must equal training's; children that die with their
parent (common.procs)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from common.errors import InputError
from inference import shards
from tests.conftest import REPO, run_module
from tests.test_predict import read_rows, write_inputs

N_ROWS = 16
MAX_NEW = 3


# ---- processes ----------------------------------------------------------------------------------------------------

def process_state(pid: int) -> str | None:
    """The kernel's state letter of a process (None when gone; 'Z' = exited, not yet reaped)."""
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid`, from /proc."""
    parent_of = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent_of.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def command_of(pid: int) -> str:
    """A process's command line ('' when gone): tells a started command from a child not yet past exec."""
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode()
    except OSError:
        return ''


def wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    """The pids still alive after `timeout` seconds (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if process_state(p) not in (None, 'Z')]
        time.sleep(0.1)
    return alive


SPAWNER = '''
import multiprocessing, sys, time
sys.path.insert(0, {repo!r})
from common.procs import die_with_spawning_parent, mark_parent
if __name__ == '__mp_main__' and {guard}:
    die_with_spawning_parent()

def sleep():
    time.sleep(120)

if __name__ == '__main__':
    mark_parent()
    child = multiprocessing.get_context('spawn').Process(target=sleep)
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
'''


@pytest.mark.parametrize('guard', [True, False])
def test_spawned_child_dies_with_its_parent(tmp_path, guard):
    """SIGKILL of the parent alone: with the guard the kernel kills the child; without it the child is an orphan
    (the case of vLLM's engine core holding GPU memory). Linux only."""
    script = tmp_path / 'spawner.py'
    script.write_text(SPAWNER.format(repo=str(REPO), guard=guard))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.kill()
    parent.wait()
    alive = wait_gone([child], timeout=10 if guard else 3)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert bool(alive) != guard


def test_popen_child_dies_with_its_parent(tmp_path):
    """A command started with preexec_fn=die_with_parent (inference.predict's data-parallel workers)."""
    code = textwrap.dedent(f'''
        import subprocess, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from common.procs import die_with_parent
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], preexec_fn=die_with_parent)
        print(child.pid, flush=True)
        time.sleep(120)
    ''')
    parent = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert wait_gone([child], timeout=10) == []


VLLM_LIKE = '''
import multiprocessing, os, sys, time
sys.path.insert(0, {repo!r})
from common.procs import die_with_spawning_parent, mark_parent
if __name__ == '__mp_main__':
    die_with_spawning_parent()

def engine_core():
    time.sleep(120)

if __name__ == '__main__':
    mark_parent()
    if {ours}:
        from inference.vllm_engine import spawn_engine_processes
        spawn_engine_processes()
    # as vLLM 0.26 starts its engine core (vllm/utils/system_utils.py get_mp_context): with the start method named by
    # VLLM_WORKER_MULTIPROC_METHOD, fork when unset (_maybe_force_spawn forces spawn only once CUDA is initialised)
    method = os.environ.get('VLLM_WORKER_MULTIPROC_METHOD', 'fork')
    child = multiprocessing.get_context(method).Process(target=engine_core)
    child.start()
    print(method, child.pid, flush=True)
    time.sleep(120)
'''


@pytest.mark.parametrize('ours', [True, False])
def test_engine_core_dies_with_its_parent_only_when_spawned(tmp_path, ours):
    """A child started the way vLLM starts its engine core, from a main module with the guard: with our setting
    (inference.vllm_engine.spawn_engine_processes) it is spawned and dies when its parent alone is SIGKILLed; with
    vLLM's default it is forked, runs none of our code and outlives the parent (an orphan holding the GPU)."""
    script = tmp_path / 'launcher.py'
    script.write_text(VLLM_LIKE.format(repo=str(REPO), ours=ours))
    env = {k: v for k, v in os.environ.items() if k != 'VLLM_WORKER_MULTIPROC_METHOD'}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    method, child = parent.stdout.readline().split()
    time.sleep(0.5)
    parent.kill()
    parent.wait()
    alive = wait_gone([int(child)], timeout=10 if ours else 3)
    if alive:
        os.kill(int(child), signal.SIGKILL)
    assert (method, bool(alive)) == (('spawn', False) if ours else ('fork', True))


@pytest.mark.parametrize('module', ['inference.predict', 'inference.ask', 'explain.ask', 'explain.stages',
                                    'bench.gpu.vllm_bench'])
def test_main_modules_that_start_vllm_tie_their_spawned_children_to_them(module):
    """Every main module that builds a vLLM engine in its own process, imported as `__mp_main__` (what a spawned
    child, e.g. vLLM's engine core, does first): the kernel will SIGKILL it when its parent exits (PR_GET_PDEATHSIG)."""
    code = (f'import ctypes, runpy; runpy.run_module({module!r}, run_name="__mp_main__"); sig = ctypes.c_int(); '
            'ctypes.CDLL(None).prctl(2, ctypes.byref(sig)); print(sig.value)')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'MEDICO_PARENT_PID': str(os.getpid())})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == str(int(signal.SIGKILL))


WORKER_STARTER = '''
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
sys.executable = {sleeper!r}   # the worker command's interpreter: a process that just stays
work = Path({work!r})
work.mkdir()
if {starter!r} == 'explain.stages':
    from explain.stages import spawn_workers
    spawn_workers(work, ['probes'], [[]], [[0]])
elif {starter!r} == 'inference.predict':
    from inference.predict import spawn_workers
    spawn_workers([], 'transformers', [[]], [[0]], str(work))
else:   # submission.task2 answering the val rows through inference.predict
    from types import SimpleNamespace
    from submission.task2 import make_task1_predictions
    args = SimpleNamespace(model=str(work), max_pixels=None, system=None, backend='transformers', answer_tokens=4,
                           gpus=None)
    make_task1_predictions(args, [{{'val_id': 0, 'img_id': 'a', 'question': 'q?', 'image': 'a.jpg'}}], work)
'''


@pytest.mark.parametrize('starter', ['explain.stages', 'inference.predict', 'submission.task2'])
def test_worker_processes_die_with_their_parent(tmp_path, starter):
    """The worker processes of explain.stages and inference.predict (one per GPU) and submission.task2's
    inference.predict: SIGKILL of the parent alone takes them too. The worker command runs a process that only
    sleeps (its pid found under the parent's)."""
    sleeper = tmp_path / 'sleeper'
    sleeper.write_text('#!/bin/sh\nexec sleep 120\n')
    sleeper.chmod(0o755)
    script = tmp_path / 'starter.py'
    script.write_text(WORKER_STARTER.format(repo=str(REPO), sleeper=str(sleeper), starter=starter,
                                            work=str(tmp_path / 'work')))
    parent = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (children := [c for c in descendants(parent.pid) if command_of(c).startswith('sleep')]):
        assert parent.poll() is None and time.monotonic() < deadline, 'no worker started'
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    alive = wait_gone(children, timeout=10)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert alive == []


# ---- the feeder through the real transformers engine ----------------------------------------------------------------

@pytest.fixture(scope='module')
def inputs(tmp_path_factory) -> Path:
    return write_inputs(tmp_path_factory.mktemp('stream') / 'swift', n=N_ROWS)


def predict_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    # batch size 1: each row's answer and log-probs are independent of the other rows in its batch (padding)
    return ['--model', str(model), '--data', str(data), '--out', str(out), '--max-new-tokens', str(MAX_NEW),
            '--batch-size', '1', '--logprobs', '--max-pixels', str(28 * 28 * 16), '--backend', 'transformers', *extra]


@pytest.fixture(scope='module')
def uninterrupted(tiny_model_dir, inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('uninterrupted') / 'pred.jsonl'
    run_module('inference.predict', *predict_args(tiny_model_dir, inputs, out), timeout=300)
    return out


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b'\n') if path.exists() else 0


def start_and_kill(argv: list[str], partial: Path, log: Path, *, group: bool, after_rows: int = 3):
    """Start inference.predict, SIGKILL it (alone, or its whole process group) once `after_rows` rows are saved;
    returns the processes it had started."""
    with open(log, 'w') as err:
        proc = subprocess.Popen([sys.executable, '-m', 'inference.predict', *argv], cwd=REPO, stdout=err, stderr=err,
                                start_new_session=group)
    deadline = time.monotonic() + 240
    while complete_lines(partial) < after_rows:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, 'no rows saved in time'
        time.sleep(0.02)
    children = descendants(proc.pid)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait()
    return children


@pytest.mark.slow
def test_sigkill_mid_run_twice_then_rerun_equals_uninterrupted(uninterrupted, tiny_model_dir, inputs, tmp_path):
    """Killed once alone (SIGKILL of the parent: its encode worker must not outlive it), then, resumed, killed with
    its whole process group; the third run finishes: the same bytes as a run never interrupted."""
    out = tmp_path / 'pred.jsonl'
    argv = predict_args(tiny_model_dir, inputs, out, '--encode-workers', '1')
    partial = shards.worker_partial(out, None)
    saved = 0
    for group in (False, True):
        children = start_and_kill(argv, partial, tmp_path / f'killed-{group}.log', group=group, after_rows=saved + 3)
        assert children, 'the encode worker should have been running'
        assert wait_gone(children) == [], 'a child outlived the killed inference.predict'
        assert saved + 3 <= complete_lines(partial) < N_ROWS and not out.exists()
        saved = complete_lines(partial)
    proc = run_module('inference.predict', *argv, timeout=300)
    assert f'{N_ROWS} rows: {saved} already answered, {N_ROWS - saved} to do' in proc.stderr
    assert out.read_bytes() == uninterrupted.read_bytes()      # nothing lost, nothing twice, input order
    assert shards.partial_paths(out) == []


@pytest.mark.slow
def test_uninterrupted_run_streams_in_order_with_timing(uninterrupted):
    rows = read_rows(uninterrupted)
    assert [r['img_id'] for r in rows] == [f'id{i}' for i in range(N_ROWS)]
    timing = json.loads(uninterrupted.with_name('pred.timing.json').read_text())
    assert timing['backend'] == 'transformers' and timing['rows'] == timing['rows_answered_now'] == N_ROWS
    run = timing['stream']
    assert run['rows'] == N_ROWS and run['steps'] == N_ROWS   # batch size 1: one engine step per row
    assert sum(run['timeline']['finished']) == N_ROWS
    assert 0 <= run['first_handover_s'] <= run['parent_s']['submit'] + 0.01   # the first hand-over, on its own
    assert 0 < timing['startup_s'] <= timing['answered_s'] <= timing['end_to_end_s']


# ---- the vLLM encoder: ms-swift's template in vLLM mode, in worker processes ---------------------------------------

@pytest.fixture(scope='module')
def model_with_budget(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as `make export` leaves it: with the training MAX_PIXELS in medico_env.json."""
    folder = tmp_path_factory.mktemp('budget') / 'merged'
    folder.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        (folder / f.name).symlink_to(f)
    (folder / 'medico_env.json').write_text(json.dumps({'MAX_PIXELS': str(28 * 28 * 64)}))
    return folder


@pytest.mark.slow
def test_vllm_encoding_in_workers_equals_training_image_tokens(model_with_budget, tmp_path, monkeypatch):
    from PIL import Image

    from common.qwen_vision import DERIVED_TOKEN_VARS, use_image_budget
    for name in ('MAX_PIXELS', *DERIVED_TOKEN_VARS):   # put back after the test: the budget set below is this test's
        monkeypatch.delenv(name, raising=False)
    from common.run_env import image_budget
    from inference.predict import load_inputs
    from inference.stream import Prefetcher
    from inference.vllm_engine import build_template, encode_for_vllm

    data = write_inputs(tmp_path / 'swift', n=3)
    Image.new('RGB', (600, 500), (180, 90, 80)).save(tmp_path / 'swift' / 'img2.jpg')   # larger than the budget
    prompts, _, _ = load_inputs(str(data))
    budget = image_budget(str(model_with_budget))              # what predict uses: the model's training value
    assert budget == 28 * 28 * 64
    # no model_type/template given: the worker reads them as inference.predict does (config.json here)
    setup = {'model': str(model_with_budget), 'adapters': [], 'model_type': None, 'template_type': None,
             'max_pixels': budget, 'torch_dtype': 'bfloat16'}
    pool = Prefetcher(1, 'vllm', setup)
    try:
        encoded = [f.result() for f in [pool.submit(p) for p in prompts]]
    finally:
        pool.close()

    use_image_budget(budget)
    template = build_template(str(model_with_budget), [], 'qwen2_5_vl', 'qwen2_5_vl')
    for prompt, got in zip(prompts, encoded):
        here = encode_for_vllm(template, prompt)                 # the same template, built in this process
        assert (got['prompt_tokens'], got['image_sizes']) == (here['prompt_tokens'], here['image_sizes'])
        assert got['request']['prompt_token_ids'] == here['request']['prompt_token_ids']
        assert got['request']['multi_modal_data']['image'].tobytes() == \
            here['request']['multi_modal_data']['image'].tobytes()
        assert got['request']['mm_processor_kwargs'] == {'do_resize': False}   # vLLM keeps the template's size
        image_pad = template.processor.tokenizer.convert_tokens_to_ids('<|image_pad|>')
        assert got['request']['prompt_token_ids'].count(image_pad) == 1        # vLLM expands the placeholder
        (width, height), = got['image_sizes']
        assert width * height <= budget and width % 28 == height % 28 == 0
        # the training encode (ms-swift template, train mode) of the same line: same image tokens, same prompt
        template.set_mode('train')
        train = template.encode({'messages': prompt['messages'] + [{'role': 'assistant', 'content': 'one'}],
                                 'images': prompt['images']})
        template.set_mode('transformers')
        prompt_only = template.encode({'messages': prompt['messages'], 'images': prompt['images']})
        template.set_mode('vllm')
        assert train['input_ids'].count(image_pad) == (width // 28) * (height // 28)
        assert got['prompt_tokens'] == len(prompt_only['input_ids'])
    assert encoded[2]['image_sizes'] != [[600, 500]]            # the big image was resized under the budget


@pytest.mark.slow
def test_prompt_longer_than_max_model_len_is_one_line_naming_the_knob(tiny_model_dir, tmp_path):
    from inference.backends import Backend, BatchAdapter
    from inference.predict import load_inputs
    from inference.stream import Prefetcher, stream

    data = write_inputs(tmp_path / 'swift', n=2)
    prompts, _, _ = load_inputs(str(data))
    setup = {'model': str(tiny_model_dir), 'adapters': [], 'model_type': 'qwen2_5_vl', 'template_type': 'qwen2_5_vl',
             'max_pixels': 28 * 28 * 16, 'max_model_len': 20}
    prefetcher = Prefetcher(0, 'vllm', setup)
    adapter = BatchAdapter(Backend(None, 4, MAX_NEW, False))   # never reached: the first prompt is refused
    with pytest.raises(InputError) as e:
        stream([0, 1], prompts, prefetcher, adapter, lambda answers: None, lookahead=4, data=str(data))
    assert (e.value.file, e.value.row, e.value.field) == (str(data), 1, '--max-model-len')
    assert 'raise --max-model-len' in str(e.value) and '\n' not in str(e.value)


def test_image_budget_of_a_lora_run_reaches_inference(tmp_path, monkeypatch):
    """--adapters RUN/v0-x/checkpoint-4 on a base model without medico_env.json: the run's MAX_PIXELS is used."""
    from inference.predict import training_budget
    monkeypatch.setenv('MAX_PIXELS', '999')
    base, run = tmp_path / 'base', tmp_path / 'run'
    checkpoint = run / 'v0-20261203' / 'checkpoint-4'
    checkpoint.mkdir(parents=True)
    base.mkdir()
    assert training_budget(str(base), [str(checkpoint)], None) == 999            # nothing saved: $MAX_PIXELS
    (run / 'medico_env.json').write_text(json.dumps({'MAX_PIXELS': '640000'}))
    assert training_budget(str(base), [str(checkpoint)], None) == 640000         # the run's training value
    (base / 'medico_env.json').write_text(json.dumps({'MAX_PIXELS': '50176'}))
    assert training_budget(str(base), [], None) == 50176                          # a merged model's own
    assert training_budget(str(base), [str(checkpoint)], 12544) == 12544          # --max-pixels wins
