"""inference.predict: input checks, request building, resumable partial files, data-parallel merge, the tiny model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.errors import InputError
from inference import shards
from inference.backends import choose_backend, lora_rank, prompt_of, read_model_kind
from inference.predict import load_inputs, main, parse_args, plan_groups, run_id, visible_gpus
from tests.conftest import run_module

N_ROWS = 5
EOS_TOKENS = ('<|im_end|>', '<|endoftext|>')


def write_inputs(folder: Path, n: int = N_ROWS, system: bool = False) -> Path:
    """A small prepared split: ms-swift JSONL + sidecar, with real (generated) JPEG images."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines, metas = [], []
    for i in range(n):
        image = folder / f'img{i}.jpg'
        Image.new('RGB', (56 + 8 * i, 56), (40 * i, 90, 200 - 30 * i)).save(image)
        question, answer = f'How many polyps are in image {i}?', ['one', 'none', 'two'][i % 3]
        messages = [{'role': 'system', 'content': 'Answer briefly.'}] if system else []
        messages += [{'role': 'user', 'content': '<image>' + question}, {'role': 'assistant', 'content': answer}]
        lines.append({'messages': messages, 'images': [str(image)]})
        metas.append({'img_id': f'id{i}', 'question': question, 'question_class': ['polyp_count'],
                      'complexity': 1 + i % 3, 'split': 'test', 'setting': 'original', 'reference': answer,
                      'image': str(image), 'index': 100 + i})
    data = folder / 'test-original.jsonl'
    data.write_text(''.join(json.dumps(x) + '\n' for x in lines))
    (folder / 'test-original.meta.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in metas))
    return data


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- input checks -------------------------------------------------------------------------------------------------

def test_load_inputs_drops_the_assistant_turn_and_keeps_sidecar_order(tmp_path):
    data = write_inputs(tmp_path, system=True)
    prompts, metas, refs = load_inputs(str(data))
    assert len(prompts) == len(metas) == len(refs) == N_ROWS
    assert [m['img_id'] for m in metas] == [f'id{i}' for i in range(N_ROWS)]
    assert refs == [m['reference'] for m in metas]
    for p in prompts:
        assert [m['role'] for m in p['messages']] == ['system', 'user']
        assert p['images'][0].endswith('.jpg')
    assert len(load_inputs(str(data), limit=2)[0]) == 2


def test_prompt_of_without_assistant_turn():
    prompt, ref = prompt_of({'messages': [{'role': 'user', 'content': '<image>q'}], 'images': ['a.jpg']})
    assert ref is None and prompt == {'messages': [{'role': 'user', 'content': '<image>q'}], 'images': ['a.jpg']}


def test_load_inputs_errors(tmp_path):
    data = write_inputs(tmp_path)
    meta = tmp_path / 'test-original.meta.jsonl'
    metas = meta.read_text().splitlines()
    # sidecar out of step with the data (same count, lines swapped) is caught by the image / reference check
    meta.write_text('\n'.join([metas[1], metas[0], *metas[2:]]) + '\n')
    with pytest.raises(InputError, match='lines out of step') as e:
        load_inputs(str(data))
    assert e.value.row == 1
    meta.write_text('\n'.join(metas[:-1]) + '\n')
    with pytest.raises(InputError, match=f'{N_ROWS - 1} lines'):
        load_inputs(str(data))
    meta.unlink()
    with pytest.raises(InputError, match='sidecar not found') as e:
        load_inputs(str(data))
    assert e.value.file == str(meta)
    meta.write_text('\n'.join(metas) + '\n')
    (tmp_path / 'img3.jpg').unlink()
    with pytest.raises(InputError, match='image not found') as e:
        load_inputs(str(data))
    assert (e.value.row, e.value.field) == (4, 'images')


@pytest.mark.parametrize('case', ['no_sidecar', 'count_mismatch', 'no_model'])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, case):
    data = write_inputs(tmp_path)
    meta = tmp_path / 'test-original.meta.jsonl'
    model = tmp_path / 'model'
    model.mkdir()
    if case == 'no_sidecar':
        meta.unlink()
    elif case == 'count_mismatch':
        meta.write_text(''.join(meta.read_text().splitlines(keepends=True)[:2]))
    else:
        model = tmp_path / 'missing' / 'merged'
    proc = run_module('inference.predict', '--model', model, '--data', data, '--out', tmp_path / 'pred.jsonl',
                      check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    expected = {'no_sidecar': 'sidecar not found', 'count_mismatch': '2 lines', 'no_model': 'model folder not found'}
    assert expected[case] in lines[0]
    assert not (tmp_path / 'pred.jsonl').exists()


def test_option_checks():
    with pytest.raises(InputError, match='>= 1'):
        parse_args(['--model', 'm', '--data', 'd', '--out', 'o', '--max-new-tokens', '0'])
    with pytest.raises(SystemExit):   # argparse: not a JSON object
        parse_args(['--model', 'm', '--data', 'd', '--out', 'o', '--limit-mm-per-prompt', '[1]'])


# ---- devices and the worker plan ----------------------------------------------------------------------------------

def test_visible_gpus_and_groups(monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6,7')
    seen, use = visible_gpus(None)
    assert seen == use == ['4', '5', '6', '7']
    assert plan_groups(use, 1, None) == [['4'], ['5'], ['6'], ['7']]
    assert plan_groups(use, 2, None) == [['4', '5'], ['6', '7']]
    assert plan_groups(use, 1, 2) == [['4'], ['5']]
    assert visible_gpus(3) == (['4', '5', '6', '7'], ['4', '5', '6'])
    with pytest.raises(InputError, match='only 4 GPU'):
        visible_gpus(5)
    with pytest.raises(InputError, match='needs that many GPUs'):
        plan_groups(['0'], 2, None)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    assert visible_gpus(None) == ([], [])
    assert plan_groups([], 1, None) == [[]]
    assert plan_groups([], 1, 3) == [[], [], []]


def test_choose_backend():
    import importlib.util
    assert choose_backend('auto', 0) == 'transformers'
    assert choose_backend('auto', 2) == ('vllm' if importlib.util.find_spec('vllm') else 'transformers')
    assert choose_backend('vllm', 0) == 'vllm'


def test_tensor_parallel_needs_vllm(tmp_path, capsys):
    data = write_inputs(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(['--model', str(tmp_path), '--data', str(data), '--out', str(tmp_path / 'p.jsonl'),
              '--backend', 'transformers', '--tensor-parallel', '2'])
    assert e.value.code == 2 and '--tensor-parallel' in capsys.readouterr().err


def test_model_kind_from_args_json(tmp_path):
    (tmp_path / 'ck').mkdir()
    (tmp_path / 'ck' / 'args.json').write_text(json.dumps({'model_type': 'qwen2_5_vl', 'template': 'qwen2_5_vl'}))
    assert read_model_kind(str(tmp_path / 'base'), [str(tmp_path / 'ck')]) == ('qwen2_5_vl', 'qwen2_5_vl')


def test_lora_rank_for_vllm(tmp_path):
    assert lora_rank([]) == 16
    (tmp_path / 'ck').mkdir()
    (tmp_path / 'ck' / 'adapter_config.json').write_text(json.dumps({'r': 64, 'lora_alpha': 128}))
    assert lora_rank([str(tmp_path / 'ck')]) == 64


# ---- sharding and partial files -----------------------------------------------------------------------------------

@pytest.mark.parametrize('n,k', [(10, 3), (5, 2), (2, 4), (7, 1), (0, 2)])
def test_split_contiguous_covers_everything_once(n, k):
    items = list(range(100, 100 + n))
    chunks = shards.split_contiguous(items, k)
    assert [x for c in chunks for x in c] == items
    assert len(chunks) == min(k, n) and all(chunks)
    assert max(map(len, chunks), default=0) - min(map(len, chunks), default=0) <= 1


def test_line_spec_roundtrip():
    lines = [0, 1, 2, 5, 9, 10, 11, 40]
    assert shards.encode_lines(lines) == '0-2,5-5,9-11,40-40'
    assert shards.decode_lines(shards.encode_lines(lines)) == lines
    assert shards.decode_lines('') == []


def _row(i, rid='r1'):
    return {'img_id': f'id{i}', 'prediction': f'p{i}', shards.LINE: i, shards.RUN: rid}


def test_partials_resume_and_merge(tmp_path):
    out = tmp_path / 'pred.jsonl'
    metas = [{'img_id': f'id{i}'} for i in range(4)]
    shards.append_rows(shards.worker_partial(out, 0), [_row(0), _row(1)])
    shards.append_rows(shards.worker_partial(out, 1), [_row(3), _row(1)])   # a duplicate line is kept once
    with open(shards.worker_partial(out, 1), 'a') as f:
        f.write('{"img_id": "id2", "predic')                                 # cut by a crash: redone
    finished = shards.load_finished(out, metas, 'r1')
    assert sorted(finished) == [0, 1, 3]
    shards.compact(out, finished)
    assert shards.partial_paths(out) == [shards.worker_partial(out, None)]
    shards.append_rows(shards.worker_partial(out, None), [_row(2)])        # appends after a whole line
    with pytest.raises(RuntimeError, match='1 of 5 rows'):
        shards.merge(out, shards.load_finished(out, metas, 'r1'), 5)
    assert shards.merge(out, shards.load_finished(out, metas, 'r1'), 4) == 4
    assert read_rows(out) == [{'img_id': f'id{i}', 'prediction': f'p{i}'} for i in range(4)]
    assert shards.partial_paths(out) == []


def test_partials_of_another_run_or_data_are_refused(tmp_path):
    out = tmp_path / 'pred.jsonl'
    shards.append_rows(shards.worker_partial(out, None), [_row(0, 'old')])
    with pytest.raises(InputError, match='different run'):
        shards.load_finished(out, [{'img_id': 'id0'}], 'new')
    with pytest.raises(InputError, match='does not match the sidecar'):
        shards.load_finished(out, [{'img_id': 'other'}], 'old')
    assert shards.load_finished(out, [], 'old') == {}    # beyond a smaller --limit: ignored


# ---- the real stack: ms-swift + the tiny model --------------------------------------------------------------------

MAX_NEW = 3


@pytest.fixture(scope='module')
def inputs(tmp_path_factory) -> Path:
    return write_inputs(tmp_path_factory.mktemp('infer') / 'swift')


def predict_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    # batch size 1: a row's answer and log-probs then do not depend on which rows share its batch (padding), so
    # resumed / sharded runs must match the uninterrupted one byte for byte
    return ['--model', str(model), '--data', str(data), '--out', str(out), '--max-new-tokens', str(MAX_NEW),
            '--batch-size', '1', '--logprobs', '--max-pixels', str(28 * 28 * 16), *extra]


@pytest.fixture(scope='module')
def baseline(tiny_model_dir, inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('baseline') / 'pred.jsonl'
    run_module('inference.predict', *predict_args(tiny_model_dir, inputs, out), timeout=300)
    return out


@pytest.mark.slow
def test_predictions_one_row_per_input_in_order(baseline, inputs):
    rows = read_rows(baseline)
    _, metas, refs = load_inputs(str(inputs))
    assert len(rows) == N_ROWS
    for row, meta, ref in zip(rows, metas, refs):
        assert {k: row[k] for k in meta if k != 'reference'} == {k: v for k, v in meta.items() if k != 'reference'}
        assert row['reference'] == ref and isinstance(row['prediction'], str)
        assert shards.LINE not in row and shards.RUN not in row
        tokens, logprobs = row['tokens'], row['token_logprobs']
        assert 1 <= len(tokens) == len(logprobs) <= MAX_NEW
        assert all(math.isfinite(x) and x <= 0 for x in logprobs)
        # the first token's alternatives (the Subtask 2 yes/no confidence): greedy chose the most likely one
        first = row['first_top_logprobs']
        assert 1 <= len(first) <= 20 and tokens[0] in first
        assert max(first.values()) == pytest.approx(logprobs[0]) == pytest.approx(first[tokens[0]])
        text = ''.join(tokens)
        for eos in EOS_TOKENS:
            text = text.removesuffix(eos)
        if '\ufffd' not in text:   # per-token decoding can split a multi-byte character
            assert text == row['prediction']
    assert shards.partial_paths(baseline) == []


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted_run(baseline, tiny_model_dir, inputs, tmp_path):
    out = tmp_path / 'pred.jsonl'
    argv = predict_args(tiny_model_dir, inputs, out)
    rid = run_id(parse_args(argv))
    done = read_rows(baseline)[:2]
    partial = shards.worker_partial(out, None)
    partial.write_text(''.join(json.dumps({**r, shards.LINE: i, shards.RUN: rid}) + '\n' for i, r in enumerate(done))
                       + json.dumps({**read_rows(baseline)[2], shards.LINE: 2, shards.RUN: rid})[:40])
    proc = run_module('inference.predict', *argv, timeout=300)
    assert f'{N_ROWS} rows: 2 already answered, {N_ROWS - 2} to do' in proc.stderr
    assert out.read_bytes() == baseline.read_bytes()
    assert not partial.exists()


@pytest.mark.slow
def test_two_workers_equal_one_worker(baseline, tiny_model_dir, inputs, tmp_path):
    out = tmp_path / 'pred.jsonl'
    proc = run_module('inference.predict', *predict_args(tiny_model_dir, inputs, out, '--workers', '2'),
                      timeout=400)
    assert 'worker 0: 3 rows' in proc.stderr and 'worker 1: 2 rows' in proc.stderr
    assert out.read_bytes() == baseline.read_bytes()
    assert shards.partial_paths(out) == []


@pytest.mark.slow
def test_batched_run_with_limit(baseline, tiny_model_dir, inputs, tmp_path):
    out = tmp_path / 'pred.jsonl'
    run_module('inference.predict', '--model', tiny_model_dir, '--data', inputs, '--out', out, '--limit', '3',
               '--batch-size', '2', '--max-new-tokens', MAX_NEW, '--max-pixels', 28 * 28 * 16, timeout=300)
    rows, base = read_rows(out), read_rows(baseline)[:3]
    assert [r['img_id'] for r in rows] == [r['img_id'] for r in base]
    assert [r['prediction'] for r in rows] == [r['prediction'] for r in base]   # greedy text survives padding
    assert all('tokens' not in r and 'token_logprobs' not in r for r in rows)


@pytest.mark.slow
def test_request_building_and_response_parsing_with_swift(tiny_model_dir):
    from swift.infer_engine.protocol import (ChatCompletionResponse, ChatCompletionResponseChoice, ChatMessage,
                                             UsageInfo)

    from inference.backends import parse_response, request_config, swift_request

    prompt, ref = prompt_of({'messages': [{'role': 'user', 'content': '<image>q'},
                                          {'role': 'assistant', 'content': 'yes'}], 'images': ['/x.jpg']})
    request = swift_request(prompt)
    assert ref == 'yes' and request.messages == [{'role': 'user', 'content': '<image>q'}]
    assert request.images == ['/x.jpg']
    assert read_model_kind(str(tiny_model_dir), []) == ('qwen2_5_vl', 'qwen2_5_vl')

    def response(logprobs, top=()):
        content = [{'token': t, 'logprob': lp, 'bytes': []} for t, lp in logprobs]
        if top:
            content[0]['top_logprobs'] = [{'token': t, 'logprob': lp, 'bytes': []} for t, lp in top]
        choice = ChatCompletionResponseChoice(index=0, message=ChatMessage(role='assistant', content='no'),
                                              finish_reason='stop', logprobs={'content': content})
        return ChatCompletionResponse(model='m', choices=[choice], usage=UsageInfo(1, len(content), 1))

    parsed = parse_response(response([('no', -0.5), ('<|im_end|>', -0.1)]), logprobs=True)
    assert parsed == {'prediction': 'no', 'tokens': ['no', '<|im_end|>'], 'token_logprobs': [-0.5, -0.1],
                      'first_top_logprobs': {}}
    # alternatives at the first token: two ids that decode to one text keep the larger log-prob
    parsed = parse_response(response([('no', -0.5)], top=[('no', -0.5), ('yes', -1.2), ('yes', -3.0)]), True)
    assert parsed['first_top_logprobs'] == {'no': -0.5, 'yes': -1.2}
    assert request_config(8, True).top_logprobs == 20 and request_config(8, False).top_logprobs is None
    assert parse_response(response([('no', -0.5)]), logprobs=False) == {'prediction': 'no'}
    with pytest.raises(RuntimeError, match='non-finite'):
        parse_response(response([('no', float('-inf'))]), logprobs=True)


def test_partial_rows_go_to_a_folder_that_does_not_exist_yet(tmp_path):
    partial = shards.worker_partial(tmp_path / 'preds' / 'run1' / 'test.jsonl', None)
    shards.append_rows(partial, [{'prediction': 'yes', shards.LINE: 0}])
    assert shards.read_partial(partial) == [{'prediction': 'yes', shards.LINE: 0}]
