"""explain.stages and explain.scoring on the tiny real Qwen2.5-VL: teacher-forced scores equal the engine's own
generation log-probs, batching with padding changes nothing beyond float noise, and recorded grounding outputs map to
the same boxes as the per-row path of 88f43d9 (tests/golden/grounding_boxes.json). Also the work folder's resume
rules, on files alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.qwen_vision import use_image_budget
from explain import stages
from explain.work import KEY, LINE, StageFile
from tests.conftest import REPO, run_module

GOLDEN = json.loads((REPO / 'tests' / 'golden' / 'grounding_boxes.json').read_text())
MAX_NEW = 6


# ---------------------------------------------------------------- the work folder (files only)
def test_stage_file_keeps_matching_rows_and_redoes_the_rest(tmp_path):
    out = StageFile(tmp_path, 'probes')
    keys = ['a', 'b', 'c', 'd']
    out.append(0, [{LINE: 0, KEY: 'a', 'v': 0}, {LINE: 1, KEY: 'b', 'v': 1}])
    out.append(1, [{LINE: 2, KEY: 'old', 'v': 2}])                       # another setting: redone
    with open(out.partial(1), 'a') as f:
        f.write('{"_line": 3, "_key": "d", "v"')                          # cut by a kill: redone
    done = out.finished(keys)
    assert sorted(done) == [0, 1]
    out.compact(done)
    assert [p.name for p in tmp_path.iterdir()] == ['probes.jsonl.partial']
    out.append(None, [{LINE: 3, KEY: 'd', 'v': 3}, {LINE: 2, KEY: 'c', 'v': 2}])
    with pytest.raises(RuntimeError, match='not done'):
        out.merge(out.finished(keys), 5)
    out.merge(out.finished(keys), 4)
    assert [r['v'] for r in out.rows()] == [0, 1, 2, 3] and [p.name for p in tmp_path.iterdir()] == ['probes.jsonl']
    # the merged file is itself the cache: a changed row key (another answer) redoes that row only
    assert sorted(out.finished(['a', 'b', 'changed', 'd'])) == [0, 1, 3]


def test_stage_keys_follow_settings_and_rows():
    rows = [{'val_id': i, 'img_id': f'i{i}', 'question': 'Is there a polyp?', 'answer': a, 'image': f'/x/{i}.jpg'}
            for i, a in enumerate(['Yes, one polyp.', 'No polyp is visible.'])]
    s = stages.Settings(model='/m', backend='transformers')
    base = {st: stages.stage_keys(st, s, rows) for st in stages.MODEL_STAGES}
    assert stages._grounding_prompt(rows[1]) is None            # a denying answer asks for no box
    changed = stages.Settings(model='/m', backend='transformers', grid=4)
    assert stages.stage_keys('occlusion', changed, rows) != base['occlusion']
    assert stages.stage_keys('probes', changed, rows) == base['probes']   # the grid does not redo the probes
    other = [dict(rows[0], answer='Yes.'), rows[1]]
    assert [a == b for a, b in zip(stages.stage_keys('grounding', s, other), base['grounding'])] == [False, True]


def test_engines_group_by_kind():
    assert stages._groups(stages.Settings(model='m', backend='transformers')) == [['probes', 'grounding',
                                                                                  'occlusion']]
    assert stages._groups(stages.Settings(model='m', backend='vllm', scorer='transformers')) == \
        [['probes', 'grounding'], ['occlusion']]
    assert stages._groups(stages.Settings(model='m', backend='vllm', scorer='vllm')) == \
        [['probes', 'grounding', 'occlusion']]
    assert stages._groups(stages.Settings(model='m', backend='transformers', rewrite=True)) == \
        [['probes', 'rewrite', 'grounding', 'occlusion']]              # the rewrite runs on the probes' engine


# ---------------------------------------------------------------- the tiny model
CHECK = r"""
import json, sys
from PIL import Image
from swift import InferRequest
from explain import pipeline, stages
from explain.scoring import ScoreItem
model, preds, golden, folder = sys.argv[1:5]
s = stages.Settings(model=model, backend='transformers', attention='stock')
engines = stages.Engines(s)
scorer = engines.scorer()
rows = [json.loads(l) for l in open(preds)]
items = [ScoreItem(r['image'], r['question'], r['prediction'], top_k=20) for r in rows]
single = [scorer.score([it])[0] for it in items]
scorer.batch_size = len(items)        # one padded batch of different lengths
batched = scorer.score(items)
template = engines.generator().engine.template
out = {'scored': [], 'grounding': []}
for r, a, b in zip(rows, single, batched):
    ids = scorer.tokenizer(r['prediction'], add_special_tokens=False)['input_ids']
    out['scored'].append({'n': len(ids), 'single': a.token_logprobs, 'batched': b.token_logprobs,
                          'first': a.first_top, 'greedy': a.greedy, 'answer_logprob': a.answer_logprob})
for i, case in enumerate(json.load(open(golden))['cases']):
    w, h = case['size']
    path = f'{folder}/{w}x{h}.png'
    Image.new('RGB', (w, h), (180, 90, 80)).save(path)
    row = {'val_id': i, 'question': case['question'], 'answer': case['answer'], 'width': w, 'height': h}
    asked = stages._grounding_prompt(row) is not None
    resized = engines.resized_size(path, (w, h)) if asked else None
    rec = stages.grounding_record(row, case['output'] if asked else None, resized)
    enc = template.encode(InferRequest(messages=[{'role': 'user', 'content': '<image>'}],
                                       images=[Image.open(path).convert('RGB')]))
    _, gh, gw = [int(v) for v in enc['image_grid_thw'][0]]
    patch = template.processor.image_processor.patch_size
    out['grounding'].append({**rec, 'visual': pipeline.box_visual(rec['boxes'], rec['target']),
                             'template_size': [gw * patch, gh * patch]})
# VllmScorer's prompt: in vLLM mode the template ends the prompt with the answer's ids and <|im_end|>
from explain.scoring import EOS_TOKEN, answer_ids, messages_for
template.set_mode('vllm')
out['vllm_tail'] = []
for r in rows:
    messages = messages_for(r['question'], None) + [{'role': 'assistant', 'content': r['prediction'] + EOS_TOKEN}]
    ids = answer_ids(scorer.tokenizer, r['prediction']) + [scorer.eos_id]
    enc = template.encode(InferRequest(messages=messages, images=[Image.open(r['image']).convert('RGB')]))
    out['vllm_tail'].append(list(enc['input_ids'][-len(ids):]) == ids)
template.set_mode('transformers')
print(json.dumps(out))
"""


@pytest.fixture(scope='module')
def checked(tiny_model_dir, synthetic_dataset, tmp_path_factory) -> tuple[list[dict], dict]:
    """Predictions with log-probs from inference.predict, then both checks in one fresh process under the golden's
    MAX_PIXELS (ms-swift reads it when it loads the processor)."""
    import pyarrow.parquet as pq
    folder = tmp_path_factory.mktemp('stages')
    test = pq.read_table(synthetic_dataset / 'data' / 'test-00000-of-00001.parquet').to_pylist()[:5]
    data, preds = folder / 'val.jsonl', folder / 'val.pred.jsonl'
    with open(data, 'w') as f, open(folder / 'val.meta.jsonl', 'w') as meta:
        for r in test:
            image = str(synthetic_dataset / r['image'])
            f.write(json.dumps({'messages': [{'role': 'user', 'content': '<image>' + r['question']},
                                             {'role': 'assistant', 'content': r['answer']}], 'images': [image]}) + '\n')
            meta.write(json.dumps({'img_id': r['img_id'], 'question': r['question'], 'reference': r['answer'],
                                   'image': image}) + '\n')
    env = dict(os.environ)
    use_image_budget(GOLDEN['max_pixels'], env)
    run_module('inference.predict', '--model', tiny_model_dir, '--data', data, '--out', preds, '--backend',
               'transformers', '--batch-size', 1, '--max-new-tokens', MAX_NEW, '--logprobs', '--attention', 'stock',
               env=env)
    golden = folder / 'golden.json'
    golden.write_text(json.dumps(GOLDEN))
    proc = subprocess.run([sys.executable, '-c', CHECK, str(tiny_model_dir), str(preds), str(golden), str(folder)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(l) for l in preds.read_text().splitlines()], json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_teacher_forced_scores_are_the_generation_log_probs(checked):
    """The unoccluded pass gives what `make infer --logprobs` wrote for the model's own answer: every token's
    log-prob (<|im_end|> included when the answer was not cut) and the first token's alternatives; the answer is
    the model's top choice at every position; one padded batch of different lengths equals one row at a time."""
    preds, out = checked
    compared = 0
    for pred, got in zip(preds, out['scored']):
        assert got['batched'] == pytest.approx(got['single'], abs=1e-4)
        assert got['answer_logprob'] == pytest.approx(sum(got['single'][:-1]) if got['n'] else got['single'][-1])
        generated = pred['token_logprobs']
        if len(generated) not in (got['n'], got['n'] + 1):
            continue   # the text re-tokenizes differently from how it was generated
        compared += 1
        assert got['single'][:len(generated)] == pytest.approx(generated, abs=1e-4)
        assert all(got['greedy'][:len(generated)])
        assert set(got['first']) == set(pred['first_top_logprobs'])
        assert [got['first'][k] for k in pred['first_top_logprobs']] == \
            pytest.approx(list(pred['first_top_logprobs'].values()), abs=1e-4)
    assert compared >= 2
    assert out['vllm_tail'] == [True] * len(preds)   # what VllmScorer checks against vLLM's prompt_token_ids


@pytest.mark.slow
def test_grounding_boxes_equal_the_per_row_path(checked):
    """Recorded Qwen2.5-VL grounding outputs -> the same resized size, boxes, counts and bounding_box entry as
    88f43d9's explain_row gave them; the resized size is also the template's own (image_grid_thw x patch)."""
    _, out = checked
    assert len(out['grounding']) == len(GOLDEN['cases'])
    for new, old in zip(out['grounding'], GOLDEN['cases']):
        assert new['output'] == old['grounding_output'] and new['target'] == old['target']
        assert new['box_stats'] == old['box_stats'] and new['visual'] == old['visual'], old['output']
        if new['output'] is not None:
            assert new['resized'] == old['resized'] == new['template_size']
    assert sum(c['visual'] is not None for c in GOLDEN['cases']) >= 20


REWRITE_PROBES = [
    [{'key': 'finding', 'question': 'q', 'answer': 'a sessile polyp'},
     {'key': 'location', 'question': 'q', 'answer': 'upper-left'}],
    [{'key': 'finding', 'question': 'q', 'answer': 'oesophagitis'},
     {'key': 'colour', 'question': 'q', 'answer': 'pink and red'}],
    [{'key': 'finding', 'question': 'q', 'answer': ''}]]           # no fact sentence: nothing to rewrite


@pytest.mark.slow
def test_rewrite_stage_asks_the_model_and_the_check_judges_it(tmp_path, tiny_model_dir, synthetic_dataset):
    """With probe answers on file, the rewrite stage asks the real tiny model (text only) to reword each row's fact
    sentences; rows without facts are not asked; assembly's check gives every rewrite a verdict from its reasons."""
    from explain import narrative
    image = sorted((synthetic_dataset / 'images').glob('*.jpg'))[0]
    rows = [{'val_id': i, 'img_id': f'i{i}', 'question': 'Is there a polyp?', 'image': str(image), 'width': 64,
             'height': 64, 'answer': 'Yes.'} for i in range(3)]
    stages.write_rows(tmp_path, rows)
    s = stages.Settings(model=str(tiny_model_dir), backend='transformers', attention='stock', rewrite=True,
                        rewrite_tokens=8)
    s.save(tmp_path)
    keys = stages.stage_keys('probes', s, rows)
    StageFile(tmp_path, 'probes').append(None, [{LINE: i, KEY: keys[i], 'val_id': i, 'probes': p}
                                                for i, p in enumerate(REWRITE_PROBES)])
    code = ('import sys; from pathlib import Path; from explain import stages; work = Path(sys.argv[1]); '
            'stages.run_model_stages_here(stages.Settings.load(work), work, ["probes", "rewrite"], [0, 1, 2], None)')
    proc = subprocess.run([sys.executable, '-c', code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'probes[0]' not in proc.stderr                          # the probes on file were kept, not redone
    done = StageFile(tmp_path, 'rewrite').rows()
    assert [r['facts'] for r in done] == [['Finding: polyp.', 'Location in the image: upper-left.'],
                                          ['Finding: oesophagitis.', 'Colour: pink, red.'], []]
    assert [isinstance(r['output'], str) for r in done] == [True, True, False]
    for r, probes in zip(done[:2], REWRITE_PROBES):
        verdict = narrative.compose(probes, rewrite=r['output'])['rewrite']
        assert verdict['output'] == r['output'] and (verdict['accepted'] or
                                                     verdict['reason'].startswith(narrative.REJECTIONS))
