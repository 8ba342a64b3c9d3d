"""Subtask 2 submission: the strict validator (fast, on hand-made folders) and a full build on the tiny model and the
synthetic copy (slow): Task 1 predictions from inference.predict, calibration on a labelled split, validation."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from common.errors import InputError
from common.qwen_vision import use_image_budget
from submission.task2 import submission_script
from submission.validate_task2 import validate_folder
from tests.conftest import REPO, run_module

TEAM = json.loads((REPO / 'submission' / 'team.demo.json').read_text())
VAL = [{'val_id': i, 'img_id': f'img{i}', 'question': f'Is there a polyp {i}?', 'width': 40, 'height': 30}
       for i in range(3)]
ANSWERS = {i: f'answer {i}' for i in range(3)}


def _lines():
    return [{'val_id': r['val_id'], 'img_id': r['img_id'], 'question': r['question'], 'answer': ANSWERS[r['val_id']],
             'textual_explanation': 'The model answers "x".',
             'visual_explanation': [{'type': 'heatmap', 'data': f'visuals/{r["val_id"]}.png', 'description': 'd'},
                                    {'type': 'bounding_box', 'data': [[1, 2, 40, 30]], 'description': 'b'}],
             'confidence_score': 0.5} for r in VAL]


def _folder(tmp_path: Path, lines=None, png_size=(40, 30)) -> Path:
    folder = tmp_path / 'sub'
    (folder / 'visuals').mkdir(parents=True)
    for r in VAL:
        Image.new('RGB', png_size).save(folder / 'visuals' / f'{r["val_id"]}.png')
    with open(folder / 'submission_task2.jsonl', 'w') as f:
        for line in (lines if lines is not None else _lines()):
            f.write(json.dumps(line) + '\n')
    (folder / 'submission_task2.py').write_text(submission_script(TEAM))
    return folder


def test_a_valid_folder_passes(tmp_path):
    assert validate_folder(_folder(tmp_path), VAL, ANSWERS) == 3


def _rejects(tmp_path, edit, match, png_size=(40, 30)):
    lines = _lines()
    lines = edit(lines) or lines
    with pytest.raises(InputError, match=match):
        validate_folder(_folder(tmp_path, lines, png_size), VAL, ANSWERS)


def test_missing_val_id(tmp_path):
    _rejects(tmp_path, lambda ls: ls[:2], r'1 val_id\(s\) missing, first 2')


def test_duplicate_val_id(tmp_path):
    _rejects(tmp_path, lambda ls: ls + [ls[1]], 'duplicate val_id 1')


def test_val_id_out_of_range(tmp_path):
    _rejects(tmp_path, lambda ls: ls[:2] + [dict(ls[2], val_id=7)], r'val_id 7 is not in 0..2')


def test_answer_mismatch(tmp_path):
    _rejects(tmp_path, lambda ls: ls[0].update(answer='other') or ls, 'differs from the Task 1 prediction')


def test_question_or_img_id_mismatch(tmp_path):
    _rejects(tmp_path, lambda ls: ls[1].update(question='changed?') or ls, 'question')


def test_nan_and_out_of_range_confidence(tmp_path):
    _rejects(tmp_path, lambda ls: ls[2].update(confidence_score=math.nan) or ls, 'finite number in')
    (tmp_path / 'sub').rename(tmp_path / 'sub1')
    _rejects(tmp_path, lambda ls: ls[2].update(confidence_score=1.5) or ls, 'finite number in')


def test_escaping_path(tmp_path):
    (tmp_path / 'outside.png').parent.mkdir(exist_ok=True)
    Image.new('RGB', (40, 30)).save(tmp_path / 'outside.png')
    _rejects(tmp_path, lambda ls: ls[0]['visual_explanation'][0].update(data='../outside.png') or ls,
             'escapes the submission folder')


def test_absolute_path(tmp_path):
    _rejects(tmp_path, lambda ls: ls[0]['visual_explanation'][0].update(data=str(tmp_path / 'x.png')) or ls,
             'escapes the submission folder')


def test_png_of_the_wrong_size(tmp_path):
    _rejects(tmp_path, lambda ls: None, 'is 41x30, the image is 40x30', png_size=(41, 30))


def test_box_outside_the_image(tmp_path):
    _rejects(tmp_path, lambda ls: ls[0]['visual_explanation'][1].update(data=[[0, 0, 41, 10]]) or ls,
             'not inside the 40x30 image')


def test_empty_explanation(tmp_path):
    _rejects(tmp_path, lambda ls: ls[0].update(textual_explanation='  ') or ls, 'empty textual_explanation')


def test_script_with_side_effects(tmp_path):
    folder = _folder(tmp_path)
    (folder / 'submission_task2.py').write_text(submission_script(TEAM) + 'import os\n')
    with pytest.raises(InputError, match='only the assignment SUBMISSION_INFO'):
        validate_folder(folder, VAL, ANSWERS)


def test_cli_one_line_and_exit_2(tmp_path, synthetic_dataset):
    folder = _folder(tmp_path)
    proc = run_module('submission.validate_task2', folder, '--dataset', synthetic_dataset, '--limit', 3, check=False)
    assert proc.returncode == 2
    err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert [l for l in err if l.startswith('error: ')] == [err[-1]] and 'img_id' in err[-1], proc.stderr


def test_calibration_rows_from_both_formats(tmp_path):
    from submission.task2 import load_calibration_rows
    img = tmp_path / 'a.jpg'
    Image.new('RGB', (8, 8)).save(img)
    swift = tmp_path / 'val.jsonl'
    swift.write_text(json.dumps({'messages': [{'role': 'user', 'content': '<image>Is it red?'},
                                              {'role': 'assistant', 'content': 'yes'}], 'images': [str(img)]}) + '\n')
    assert load_calibration_rows(str(swift), None, None) == \
        [{'question': 'Is it red?', 'reference': 'yes', 'prediction': None, 'image': img}]
    pred = tmp_path / 'val.pred.jsonl'
    pred.write_text(json.dumps({'question': 'q?', 'reference': 'r', 'prediction': 'p', 'image': 'a.jpg'}) + '\n')
    assert load_calibration_rows(str(pred), None, None)[0]['image'] == img   # relative to the file
    pred.write_text(json.dumps({'question': 'q?', 'prediction': 'p', 'image': 'a.jpg'}) + '\n')
    with pytest.raises(InputError, match='reference'):
        load_calibration_rows(str(pred), None, None)
    pred.write_text(json.dumps({'question': 'q?', 'reference': 'r', 'prediction': 'p', 'image': 'b.jpg'}) + '\n')
    with pytest.raises(InputError, match='image not found'):
        load_calibration_rows(str(pred), None, None)


# ---------------------------------------------------------------- full build (slow)
MAX_PIXELS = str(28 * 28 * 16)  # small images: quick on CPU


def _swift_jsonl(rows, path: Path, with_val_id: bool) -> Path:
    with open(path, 'w') as f, open(path.with_suffix('.meta.jsonl'), 'w') as meta:
        for r in rows:
            f.write(json.dumps({'messages': [{'role': 'user', 'content': '<image>' + r['question']},
                                             {'role': 'assistant', 'content': r['answer']}],
                                'images': [str(r['image'])]}) + '\n')
            side = {'img_id': r['img_id'], 'question': r['question'], 'reference': r['answer'],
                    'image': str(r['image'])}
            meta.write(json.dumps({'val_id': r['val_id'], **side} if with_val_id else side) + '\n')
    return path


@pytest.mark.slow
def test_full_build_on_the_tiny_model(tmp_path, tiny_model_dir, synthetic_dataset):
    from submission.task2 import load_val_rows
    n = 2
    val = [dict(r, answer=r['reference']) for r in load_val_rows(str(synthetic_dataset), None, n)]
    val_jsonl = _swift_jsonl(val, tmp_path / 'task2_val.jsonl', with_val_id=True)
    preds = tmp_path / 'task2_val.pred.jsonl'
    run_module('inference.predict', '--model', tiny_model_dir, '--data', val_jsonl, '--out', preds,
               '--backend', 'transformers', '--max-new-tokens', 6, '--max-pixels', MAX_PIXELS)
    import pyarrow.parquet as pq
    train = pq.read_table(synthetic_dataset / 'data' / 'train-00000-of-00001.parquet').to_pylist()[:4]
    cal = _swift_jsonl([dict(r, val_id=None, image=synthetic_dataset / r['image']) for r in train],
                       tmp_path / 'val.jsonl', with_val_id=False)

    name, root = 'tiny', tmp_path / 'build'
    args = ['--model', tiny_model_dir, '--hub-repo', 'someone/medico-task2', '--name', name, '--build-root', root,
            '--team', REPO / 'submission' / 'team.demo.json', '--dataset', synthetic_dataset,
            '--task1-predictions', preds, '--calibration-data', cal, '--limit', n, '--grid', 2,
            '--answer-tokens', 6, '--probe-tokens', 4, '--grounding-tokens', 6, '--max-pixels', MAX_PIXELS,
            '--dry-run']
    proc = run_module('submission.task2', *args)
    assert 'dry run: nothing uploaded' in proc.stdout
    out = root / name
    lines = [json.loads(l) for l in (out / 'submission_task2.jsonl').read_text().splitlines()]
    predicted = {json.loads(l)['val_id']: json.loads(l)['prediction'] for l in preds.read_text().splitlines()}
    assert [l['val_id'] for l in lines] == list(range(n))
    assert all(l['answer'] == predicted[l['val_id']] for l in lines)
    for l, r in zip(lines, val):
        heat = [v for v in l['visual_explanation'] if v['type'] == 'heatmap']
        assert len(heat) == 1 and heat[0]['description'] in l['textual_explanation']
        with Image.open(out / heat[0]['data']) as im:
            assert (im.format, im.size) == ('PNG', (r['width'], r['height']))
        assert 0.0 <= l['confidence_score'] <= 1.0
    report = json.loads((out / 'report' / 'report.json').read_text())
    assert report['greedy_consistent'] == n          # re-generated answers == inference.predict's, text for text
    assert report['calibration']['before']['n'] == 4 and (out / 'report' / 'reliability.png').is_file()
    audit = [json.loads(l) for l in (out / 'report' / 'explanations_audit.jsonl').read_text().splitlines()]
    assert report['boxes']['outputs'] == sum(a['grounding_output'] is not None for a in audit)
    assert report['boxes']['kept'] == sum(len(v['data']) for l in lines for v in l['visual_explanation']
                                          if v['type'] == 'bounding_box')
    assert all(a['probes'] and all(p['question'] for p in a['probes']) for a in audit)
    assert 'heatmap mass inside' in (out / 'README.md').read_text()
    # the script is importable and only defines SUBMISSION_INFO
    ns: dict = {}
    exec(compile((out / 'submission_task2.py').read_text(), 'submission_task2.py', 'exec'), ns)
    assert ns['SUBMISSION_INFO'] == TEAM | {'Participant_Names': 'Medico Recipes Demo',
                                            'Affiliations': 'medico2026-recipes (offline demo run)'}
    # the stand-alone validator agrees; a wrong Task 1 file is refused
    run_module('submission.validate_task2', out, '--dataset', synthetic_dataset, '--limit', n,
               '--task1-predictions', preds)
    bad = tmp_path / 'bad.pred.jsonl'
    bad.write_text(''.join(json.dumps(dict(json.loads(l), prediction='changed')) + '\n'
                           for l in preds.read_text().splitlines()))
    proc = run_module('submission.validate_task2', out, '--dataset', synthetic_dataset, '--limit', n,
                      '--task1-predictions', bad, check=False)
    assert proc.returncode == 2 and 'differs from the Task 1 prediction' in proc.stderr
    # a second run resumes from the per-row cache and rebuilds the same folder; no temp folder is left
    assert sorted(p.name for p in (root / f'.work-{name}' / 'rows').iterdir()) == ['0.json', '1.json']
    before = (out / 'submission_task2.jsonl').read_text()
    run_module('submission.task2', *args)
    assert (out / 'submission_task2.jsonl').read_text() == before
    assert sorted(p.name for p in root.iterdir()) == [f'.work-{name}', name]
    # answers this model does not give are refused, and the previous build stays in place
    i = args.index('--task1-predictions')
    proc = run_module('submission.task2', *args[:i + 1], bad, *args[i + 2:], check=False)
    assert proc.returncode == 2 and "not this model's greedy output" in proc.stderr
    assert (out / 'submission_task2.jsonl').read_text() == before


RUNNER_CHECK = """
import json, sys
from PIL import Image
from explain.grounding import smart_resize
from explain.runner import VLRunner
model, images, max_pixels = sys.argv[1], sys.argv[2:-1], int(sys.argv[-1])
runner = VLRunner(model)
out = {'resized': [], 'gens': []}
for path in images:
    im = Image.open(path).convert('RGB')
    out['resized'].append([list(runner.resized_size(im)), list(smart_resize(im.height, im.width, max_pixels=max_pixels))[::-1]])
    for q in ('Is there a polyp?', 'What colour is the abnormality?'):
        gen = runner.answer(im, q, max_new_tokens=1)
        ids = runner.tokenizer(gen.text, add_special_tokens=False)['input_ids']
        batch = runner.answer_logprob_batch([im, im], q, gen.text) if len(ids) == 1 else None
        out['gens'].append({'logprobs': gen.token_logprobs, 'top': max(gen.first_top.values()), 'batch': batch})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_runner_matches_ms_swift_generation(tiny_model_dir, synthetic_dataset):
    """Our scoring path (ms-swift template encode + forward) gives ms-swift's own generation log-probs, and the
    grounding size is Qwen2.5-VL's smart_resize under MAX_PIXELS. Runs in a fresh process: ms-swift reads
    MAX_PIXELS when it is first imported, as `submission.task2` does (it sets it before importing ms-swift)."""
    import os
    import subprocess
    import sys
    images = [str(p) for p in sorted((synthetic_dataset / 'images').glob('*.jpg'))[:3]]
    env = dict(os.environ)
    use_image_budget(int(MAX_PIXELS), env)   # also drops a token count an earlier in-process test left behind
    proc = subprocess.run([sys.executable, '-c', RUNNER_CHECK, str(tiny_model_dir), *images, MAX_PIXELS], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for ours, expected in out['resized']:
        assert ours == expected
    checked = 0
    for gen in out['gens']:
        assert len(gen['logprobs']) == 1   # one token always re-tokenizes to itself (unless a partial UTF-8 byte)
        assert gen['top'] == pytest.approx(gen['logprobs'][0])
        if gen['batch'] is not None:
            assert gen['batch'] == pytest.approx([sum(gen['logprobs'])] * 2, abs=1e-3)
            checked += 1
    assert checked >= 1
