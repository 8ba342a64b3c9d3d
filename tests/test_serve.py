"""Trying the trained model: the exported folder is self-contained (serves from any directory, resizes images like
training), `make serve` answers OpenAI clients over real HTTP, `make ask` prints one answer, and a LoRA adapter on a
base model (how the x1 paper's released adapter is scored) answers like the merged model."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from common.qwen_vision import image_tokens, smart_resize
from tests.conftest import REPO, run_module
from tests.test_predict import write_inputs
from tests.conftest import RECIPE, cpu_env, write_vqa_data
from training.model_folder import relative_path

BUDGET = 12544   # training's MAX_PIXELS here: 16 image tokens, below the tiny processor's own cap (50176)
MIN_BUDGET = 6272   # training's MIN_PIXELS here: 8 image tokens, above the tiny processor's own floor (3136)
QUESTION = 'Is there a polyp in the image?'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def exported(tiny_model_dir, tmp_path_factory):
    """(run dir, merged model dir) after 2 LoRA steps at MAX_PIXELS=BUDGET, MIN_PIXELS=MIN_BUDGET and
    `training.export`."""
    root = tmp_path_factory.mktemp('serve')
    data, run = write_vqa_data(root / 'data', n_train=4, n_val=2), root / 'run'
    # the caller's budget wins over the recipe's; MIN_PIXELS is in no recipe, ms-swift reads it from the environment
    env = {**cpu_env(), 'MAX_PIXELS': str(BUDGET), 'MIN_PIXELS': str(MIN_BUDGET)}
    run_module('training.launch', '--recipe', RECIPE, '--data', data, '--run', run, '--model', tiny_model_dir, '--',
               '--max_steps', '2', env=env, timeout=600)
    run_module('training.export', '--run', run, '--out', run / 'merged', env=cpu_env(), timeout=600)
    return run, run / 'merged'


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> dict[str, Path]:
    """A 600 x 500 frame (resized by the budget) and an 84 x 84 one (the same at any budget)."""
    folder = tmp_path_factory.mktemp('images')
    out = {}
    for name, size in (('large', (600, 500)), ('small', (84, 84))):
        out[name] = folder / f'{name}.jpg'
        Image.new('RGB', size, (200, 80, 90)).save(out[name])
    return out


@pytest.mark.slow
def test_exported_folder_is_self_contained(exported):
    run, merged = exported
    args = json.loads((merged / 'args.json').read_text())
    assert 'external_plugins' not in args and 'callbacks' not in args   # the recipe's training/swift_plugin.py
    for key, value in args.items():   # nothing that only resolves from the repository root
        assert not any(relative_path(v, REPO) for v in (value if isinstance(value, list) else [value])), key
    # AutoProcessor (what vLLM and hub users load) resizes like training: the budget, not the base model's cap
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(merged)
    grid = processor.image_processor(images=[Image.new('RGB', (600, 500))], return_tensors='pt')['image_grid_thw']
    assert int(grid.prod()) // 4 == image_tokens(600, 500, BUDGET) == 12
    legacy = json.loads((merged / 'preprocessor_config.json').read_text())
    assert legacy['max_pixels'] == legacy['size']['longest_edge'] == BUDGET
    # and the floor: a 56 x 56 frame (4 tokens at the processor's own floor) is enlarged to MIN_BUDGET's 9
    assert json.loads((merged / 'medico_env.json').read_text())['MIN_PIXELS'] == str(MIN_BUDGET)
    assert legacy['min_pixels'] == legacy['size']['shortest_edge'] == MIN_BUDGET
    grid = processor.image_processor(images=[Image.new('RGB', (56, 56))], return_tensors='pt')['image_grid_thw']
    h, w = smart_resize(56, 56, BUDGET, min_pixels=MIN_BUDGET)
    assert int(grid.prod()) // 4 == (h // 28) * (w // 28) == 9
    # an export of the same checkpoint again changes nothing
    again = run_module('training.export', '--run', run, '--out', merged, env=cpu_env())
    assert 'already holds' in again.stdout and 'args.json' not in again.stdout


def wait_for_server(proc: subprocess.Popen, url: str, timeout: float = 300) -> None:
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'server exited with {proc.returncode}:\n{proc.stdout.read()[-4000:]}')
        try:
            with urllib.request.urlopen(url + '/models', timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError('server did not start in time')


@pytest.mark.slow
def test_serve_answers_openai_clients_over_http_and_ask_prints_the_same(exported, images, tmp_path):
    import openai

    from inference.ask import image_url
    _, merged = exported
    port = free_port()
    url = f'http://127.0.0.1:{port}/v1'
    # Started outside the repository (only the code on PYTHONPATH): the folder must not need the repo root.
    env = {**cpu_env(), 'PYTHONPATH': str(REPO)}
    server = subprocess.Popen([sys.executable, '-m', 'inference.serve', '--model', str(merged), '--port', str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_server(server, url)
        client = openai.OpenAI(base_url=url, api_key='-')
        model = client.models.list().data[0].id

        def chat(image: Path):
            return client.chat.completions.create(model=model, max_tokens=8, temperature=0, messages=[
                {'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': image_url(image)}},
                                             {'type': 'text', 'text': QUESTION}]}])

        large, small = chat(images['large']), chat(images['small'])
        assert large.usage.completion_tokens >= 1 and isinstance(large.choices[0].message.content, str)
        # the model's own image budget: the large frame costs its tokens at MAX_PIXELS=BUDGET, not at the cap
        extra = large.usage.prompt_tokens - small.usage.prompt_tokens
        assert extra == image_tokens(600, 500, BUDGET) - image_tokens(84, 84, BUDGET)

        over_http = run_module('inference.ask', '--url', url, '--image', images['large'], '--question', QUESTION,
                               '--max-new-tokens', '8', env=cpu_env())
        assert over_http.stdout == large.choices[0].message.content + '\n'
    finally:
        server.send_signal(signal.SIGTERM)   # the pid of `python -m inference.serve` is the server's
        server.wait(timeout=60)
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', port), timeout=2)
    # in-process (make ask without URL): same template, budget and greedy decoding as the server
    here = run_module('inference.ask', '--model', merged, '--image', images['large'], '--question', QUESTION,
                      '--max-new-tokens', '8', env=cpu_env(), timeout=300)
    assert here.stdout == large.choices[0].message.content + '\n'


def test_serve_and_ask_input_errors(tmp_path):
    proc = run_module('inference.serve', '--model', tmp_path / 'nope', check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith('--model: model folder not found')
    model = tmp_path / 'model'
    model.mkdir()
    (model / 'args.json').write_text(json.dumps({'external_plugins': ['training/swift_plugin.py']}))
    (model / 'config.json').write_text('{}')       # a model folder by inference.predict's checks (config + weights)
    (model / 'model.safetensors').write_bytes(b'')
    proc = run_module('inference.serve', '--model', model, check=False, cwd=tmp_path,
                      env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert proc.returncode == 2 and 'run `make export` again' in proc.stderr
    plain = tmp_path / 'plain'   # passes the model-folder checks, so each later check is the one that fires
    plain.mkdir()
    (plain / 'config.json').write_text('{}')
    (plain / 'model.safetensors').write_bytes(b'')
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_module('inference.serve', '--model', plain, '--port', port, check=False)
    assert proc.returncode == 2 and f'127.0.0.1:{port} is not free' in proc.stderr
    proc = run_module('inference.serve', '--model', plain, '--', '--vllm_max_model_lenn', '10', check=False)
    assert proc.returncode == 2 and '--vllm_max_model_lenn is not a `swift deploy` argument' in proc.stderr
    (tmp_path / 'bad.jpg').write_text('not an image')
    proc = run_module('inference.ask', '--model', plain, '--image', tmp_path / 'bad.jpg', '--question', 'q',
                      check=False)
    assert proc.returncode == 2 and 'bad.jpg: --image: not a readable image' in proc.stderr
    # make ask EXPLAIN=1 URL=...: refused in one line, nothing loaded, nothing written
    proc = subprocess.run(['make', '--no-print-directory', '-o', '.venv/.medico-setup', 'ask', 'EXPLAIN=1',
                           f'PY={sys.executable}', 'URL=http://127.0.0.1:9/v1', f'IMAGE={tmp_path / "bad.jpg"}',
                           'Q=q'], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert proc.returncode != 0 and errors == ['error: --url: explanations need the model loaded here (they score '
                                               'the answer under occluded images, which a server does not give): '
                                               'leave out URL and use MODEL']


def write_calibration(path: Path) -> Path:
    """Labelled predictions with log-probs, as `make infer SPLIT=val-original INFER_ARGS=--logprobs` writes them."""
    rows = [{'question': QUESTION, 'prediction': said, 'reference': truth, 'token_logprobs': [lp, -0.01],
             'first_top_logprobs': {said: lp, ('no' if said == 'yes' else 'yes'): -2.0}}
            for said, truth, lp in (('yes', 'yes', -0.1), ('yes', 'no', -0.4), ('no', 'no', -0.2),
                                    ('no', 'yes', -0.9), ('yes', 'yes', -0.05), ('no', 'no', -0.3))]
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


@pytest.mark.slow
def test_ask_explain_prints_the_answer_then_its_subtask2_explanation(exported, images, tmp_path):
    """`make ask EXPLAIN=1`: the answer `make ask` prints, then explain.stages' entry for that one row (text,
    calibrated confidence, heatmap and frame pictures), kept in the work folder with its audit."""
    _, merged = exported
    ask = ['--model', merged, '--image', images['large'], '--question', QUESTION, '--max-new-tokens', '8']
    answer = run_module('inference.ask', *ask, env=cpu_env(), timeout=300).stdout
    work = tmp_path / 'ask'
    proc = run_module('explain.ask', *ask, '--out', work, '--grid', '2', '--probe-tokens', '4',
                      '--grounding-tokens', '16', '--calibration-data', write_calibration(tmp_path / 'val.jsonl'),
                      env=cpu_env(), timeout=300)
    assert proc.stdout.startswith(answer + '\nExplanation: ')   # the same answer, first, then the explanation
    result = json.loads((work / 'explanation.json').read_text())
    entry, audit = result['entry'], result['audit']
    assert entry['answer'] + '\n' == answer and entry['question'] == QUESTION and entry['img_id'] == 'large'
    assert entry['textual_explanation'] and 'Explanation: ' + entry['textual_explanation'] in proc.stdout
    assert len(audit['probes']) >= 1 and len(audit['heatmap_cells']) == 2   # the 2 x 2 occlusion grid, probed
    assert 0 <= entry['confidence_score'] <= 1 and result['calibrated_on'] == 6
    assert f'Confidence: {entry["confidence_score"]:.3f} ({audit["certainty"]}; calibrated on 6 held-out ' \
           'answers)' in proc.stdout
    heat = next(v for v in entry['visual_explanation'] if v['type'] == 'heatmap')
    shown = {line.split(': ', 1)[0]: line.split(': ', 1)[1] for line in proc.stdout.splitlines()
             if line.startswith(('Heatmap: ', 'Frame: '))}
    assert shown['Heatmap'].split()[0] == str(work.resolve() / heat['data']) and heat['description'] in proc.stdout
    assert shown['Frame'] == str(work.resolve() / audit['frame'])
    with Image.open(work / heat['data']) as im:   # drawn over the frame at its size, as the validator wants
        assert im.size == (600, 500)
    assert (work / audit['frame']).is_file() and (work / 'visuals' / 'heatmap_scale.png').is_file()
    assert ('Boxes: ' in proc.stdout) and (audit['box_image'] is None or (work / audit['box_image']).is_file())


@pytest.mark.slow
def test_serve_bench_writes_its_table(tmp_path):
    """bench.serve_bench as docs/benchmarks.md runs it (the tiny model it builds), for one request."""
    out = tmp_path / 'serve.md'
    proc = run_module('bench.serve_bench', '--requests', '1', '--out', out, env=cpu_env(), timeout=600)
    text = out.read_text()
    assert proc.stdout.strip() == text.strip()
    assert text.startswith('# `make serve` on tiny random Qwen2.5-VL (MAX_PIXELS 50176)')
    assert 'backend auto; one client, 1 sequential requests' in text
    rows = {line.split(' | ')[0].strip('| '): float(line.split(' | ')[1].strip(' |'))
            for line in text.splitlines() if line.startswith('| ') and not line.startswith('| measure')}
    assert set(rows) == {'start-up (launch -> first 200 on /v1/models)', 'first request', 'later requests (median)'}
    assert all(v > 0 for v in rows.values()) and rows['start-up (launch -> first 200 on /v1/models)'] > rows[
        'first request'] == rows['later requests (median)']   # one request: the median is that request
    prompt_tokens = int(re.search(r'; (\d+) prompt tokens\)', text).group(1))
    assert prompt_tokens > image_tokens(600, 500, 50176)   # the frame at the tiny budget, and the question


def test_vllm_serving_keeps_predicts_limits():
    from inference.serve import deploy_command
    cmd = deploy_command('m', 'vllm', '127.0.0.1', 8000, None, 4096, ['--vllm_gpu_memory_utilization', '0.8'])
    assert cmd[1:3] == ['-m', 'swift.cli.deploy'] and cmd[cmd.index('--infer_backend') + 1] == 'vllm'
    assert cmd[cmd.index('--vllm_limit_mm_per_prompt') + 1] == '{"image": 1}' and cmd[-2:] == [
        '--vllm_gpu_memory_utilization', '0.8']
    assert '--vllm_max_model_len' not in deploy_command('m', 'transformers', 'h', 1, None, 4096, [])


@pytest.mark.slow
def test_adapter_on_a_base_model_scores_like_the_merged_model(exported, tiny_model_dir, tmp_path):
    """`make infer MODEL=<base> ADAPTERS=<LoRA>`: the path that scores the x1 paper's released adapter
    (SimulaMet/Qwen2.5-VL-KvasirVQA-x1-ft on Qwen2.5-VL-7B-Instruct), here with the run's local adapter."""
    run, merged = exported
    adapter = next(run.glob('v0-*/checkpoint-2'))
    write_inputs(tmp_path / 'prepared' / 'swift', n=2)
    common = ['-o', '.venv/.medico-setup', f'DATA={tmp_path / "prepared"}', 'SPLIT=test-original',
              'MAX_NEW_TOKENS=4', 'INFER_ARGS=--logprobs --batch-size 1']
    preds = {}
    runs = (('adapter', [f'MODEL={tiny_model_dir}', f'ADAPTERS={adapter}']), ('merged', [f'MODEL={merged}']))
    for name, model in runs:
        preds[name] = tmp_path / f'{name}.jsonl'
        proc = subprocess.run(['make', '--no-print-directory', 'infer', *common, *model, f'PRED={preds[name]}'],
                              cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in preds.items()}
    assert len(rows['adapter']) == len(rows['merged']) == 2
    for a, m in zip(rows['adapter'], rows['merged']):
        assert a['prediction'] == m['prediction']
        assert max(abs(x - y) for x, y in zip(a['token_logprobs'], m['token_logprobs'])) < 1e-4
    score = subprocess.run(['make', '--no-print-directory', 'score', '-o', '.venv/.medico-setup',
                            f'PRED={preds["adapter"]}', f'REPORT={tmp_path / "report"}'], cwd=REPO, env=cpu_env(),
                           capture_output=True, text=True, timeout=300)
    assert score.returncode == 0 and set(json.loads(score.stdout.splitlines()[-1])) == {
        'bleu', 'rouge1', 'rouge2', 'rougeL', 'meteor'}
