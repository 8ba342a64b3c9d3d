"""Subtask 2 submission: the strict validator (fast, on hand-made folders) and a full build on the tiny model and the
synthetic copy (slow): Task 1 predictions from inference.predict, calibration on a labelled split, validation."""
from __future__ import annotations

import json
import math
import re
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


N_VAL = 4


def _build_args(tiny_model_dir, synthetic_dataset, root, cal, *extra) -> list:
    return ['--model', tiny_model_dir, '--hub-repo', 'someone/medico-task2', '--name', 'tiny', '--build-root', root,
            '--team', REPO / 'submission' / 'team.demo.json', '--dataset', synthetic_dataset,
            '--calibration-data', cal, '--limit', N_VAL, '--grid', 2, '--answer-tokens', 6, '--probe-tokens', 4,
            '--grounding-tokens', 6, '--max-pixels', MAX_PIXELS, '--dry-run', *extra]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture(scope='module')
def task2_inputs(tiny_model_dir, synthetic_dataset, tmp_path_factory) -> dict:
    """Task 1 predictions of the first N_VAL val rows and labelled calibration predictions, both with log-probs,
    from inference.predict (the `make infer` path)."""
    from submission.task2 import load_val_rows
    folder = tmp_path_factory.mktemp('task2')
    val = [dict(r, answer=r['reference']) for r in load_val_rows(str(synthetic_dataset), None, N_VAL)]
    import pyarrow.parquet as pq
    train = pq.read_table(synthetic_dataset / 'data' / 'train-00000-of-00001.parquet').to_pylist()[:6]
    out = {'val': val}
    for name, rows, with_id in (('task1', val, True), ('calibration', [
            dict(r, val_id=None, image=synthetic_dataset / r['image']) for r in train], False)):
        data = _swift_jsonl(rows, folder / f'{name}.jsonl', with_val_id=with_id)
        out[name] = folder / f'{name}.pred.jsonl'
        run_module('inference.predict', '--model', tiny_model_dir, '--data', data, '--out', out[name],
                   '--backend', 'transformers', '--max-new-tokens', 6, '--max-pixels', MAX_PIXELS, '--logprobs')
    return out


@pytest.mark.slow
def test_full_build_on_the_tiny_model(tmp_path, tiny_model_dir, synthetic_dataset, task2_inputs):
    """Without a Task 1 file the build answers through inference.predict first (and says so): the same answers as
    `make infer`; every stage's output reaches the submission; a rerun does no model work."""
    root = tmp_path / 'build'
    args = _build_args(tiny_model_dir, synthetic_dataset, root, task2_inputs['calibration'], '--rewrite',
                       '--rewrite-tokens', 12)
    proc = run_module('submission.task2', *args)
    assert 'no --task1-predictions given: answering the 4 val rows now with inference.predict' in proc.stderr
    assert 'dry run: nothing uploaded' in proc.stdout
    out, work = root / 'tiny', root / '.work-tiny'
    lines = _jsonl(out / 'submission_task2.jsonl')
    preds = _jsonl(task2_inputs['task1'])
    assert [l['val_id'] for l in lines] == list(range(N_VAL))
    assert [l['answer'] for l in lines] == [p['prediction'] for p in preds]   # the make infer path's answers
    for l, r in zip(lines, task2_inputs['val']):
        heat = [v for v in l['visual_explanation'] if v['type'] == 'heatmap']
        assert len(heat) == 1 and heat[0]['description'].startswith('Occlusion heatmap (2x2 cells): ')
        assert 'Occlusion: ' in l['textual_explanation'] and 'The model answers' not in l['textual_explanation']
        boxes = [v for v in l['visual_explanation'] if v['type'] == 'bounding_box']
        pictures = [heat[0]['data'], f'visuals/{l["val_id"]}_box.png'] if boxes else [heat[0]['data']]
        assert boxes == [] or f'visuals/{l["val_id"]}_box.png' in boxes[0]['description']
        assert (out / f'visuals/{l["val_id"]}_box.png').is_file() == bool(boxes)
        for picture in pictures:
            with Image.open(out / picture) as im:
                assert (im.format, im.size) == ('PNG', (r['width'], r['height']))
        with Image.open(out / f'visuals/{l["val_id"]}_frame.jpg') as im:
            assert im.size == (r['width'], r['height'])
        assert 0.0 <= l['confidence_score'] <= 1.0
    report = json.loads((out / 'report' / 'report.json').read_text())
    assert report['confidence_sources'] == {'task1 log-probs': N_VAL}
    assert report['calibration']['sample'] == {'rows': 6, 'of': 6, 'cap': 2000, 'seed': 0,
                                               'strata': report['calibration']['sample']['strata']}
    assert report['calibration']['before']['n'] == 6 and (out / 'report' / 'reliability.png').is_file()
    assert 0 <= report['greedy_consistent'] <= N_VAL
    audit = _jsonl(out / 'report' / 'explanations_audit.jsonl')
    assert report['boxes']['outputs'] == sum(a['grounding_output'] is not None for a in audit)
    assert report['boxes']['kept'] == sum(len(v['data']) for l in lines for v in l['visual_explanation']
                                          if v['type'] == 'bounding_box')
    assert all(a['probes'] and all(p['question'] for p in a['probes']) for a in audit)
    assert all(len(a['heatmap_cells']) == 2 for a in audit)
    for a, l in zip(audit, lines):   # every sentence of the text is a claim with its source
        assert ' '.join(c['sentence'] for c in a['claims']) == l['textual_explanation']
        assert all(c['source'] in ('rewrite', 'confidence', 'visual:heatmap', 'visual:bounding_box', 'probes') or
                   c['source'].startswith(('probe:', 'answer+probe:')) for c in a['claims'])
    assert report['rewrite']['asked'] == sum(a['rewrite'] is not None for a in audit)   # rows with fact sentences
    assert report['rewrite']['accepted'] + report['rewrite']['rejected'] == report['rewrite']['asked']
    assert report['heatmap']['scale_nats'] >= 2 * report['heatmap']['min_nats'] and \
        report['heatmap']['rows_with_box'] == sum(a['box_image'] is not None for a in audit)
    assert (out / 'visuals' / 'heatmap_scale.png').is_file()
    readme = (out / 'README.md').read_text()
    assert 'heatmap mass inside' in readme and 'a sample of 6 of its 6 predictions' in readme
    geo = report['geometry']   # the synthetic set's true geometry: per row and per emitted box
    assert geo['emitted_boxes'] == report['boxes']['kept'] and '| emitted boxes | of them IoU >= 0.5 |' in readme
    assert 'Calibration measured on 6 held-out labelled rows' in readme and 'Rewrite check: ' in readme
    assert f'## Gallery: {N_VAL} of {N_VAL} rows' in readme and '](report/index.html)' in readme
    for ref in re.findall(r'!\[[^\]]*\]\(([^)]+)\)', readme):   # every picture the hub would render is there
        assert (out / ref).is_file(), ref
    from tests.browser import find_chromium, load_report
    executable, why = find_chromium()
    if executable:   # the tiny model's page in the browser (the fast browser test skips with `why` otherwise)
        page = load_report(executable, out / 'report' / 'index.html', 'task2_tiny_index.png')
        assert page['rows'] == N_VAL and [s for s, w in page['images'] if w <= 0] == []
        assert lines[0]['textual_explanation'] in ' '.join(page['text'].split())
    # the script is importable and only defines SUBMISSION_INFO
    ns: dict = {}
    exec(compile((out / 'submission_task2.py').read_text(), 'submission_task2.py', 'exec'), ns)
    assert ns['SUBMISSION_INFO'] == TEAM | {'Participant_Names': 'Medico Recipes Demo',
                                            'Affiliations': 'medico2026-recipes (offline demo run)'}
    # the stand-alone validator agrees; a wrong Task 1 file is refused
    run_module('submission.validate_task2', out, '--dataset', synthetic_dataset, '--limit', N_VAL,
               '--task1-predictions', task2_inputs['task1'])
    bad = tmp_path / 'bad.pred.jsonl'
    bad.write_text(''.join(json.dumps(dict(p, prediction='changed')) + '\n' for p in preds))
    proc = run_module('submission.validate_task2', out, '--dataset', synthetic_dataset, '--limit', N_VAL,
                      '--task1-predictions', bad, check=False)
    assert proc.returncode == 2 and 'differs from the Task 1 prediction' in proc.stderr
    # a rerun finds every stage done (no model is loaded) and rebuilds the same folder; no temp folder is left
    before = (out / 'submission_task2.jsonl').read_text()
    timings = (work / 'timings.jsonl').read_text().splitlines()
    proc = run_module('submission.task2', *args)
    assert 'using the answers made earlier by inference.predict' in proc.stderr
    assert (out / 'submission_task2.jsonl').read_text() == before
    assert sorted(p.name for p in root.iterdir()) == ['.work-tiny', 'tiny']
    again = [json.loads(t)['stage'] for t in (work / 'timings.jsonl').read_text().splitlines()[len(timings):]]
    assert not set(again) & set(stages_mod().MODEL_STAGES) and 'Loading weights' not in proc.stderr


def stages_mod():
    from explain import stages
    return stages


@pytest.mark.slow
def test_killed_build_resumes_with_two_workers(tmp_path, tiny_model_dir, synthetic_dataset, task2_inputs):
    """SIGKILL in the middle of the occlusion stage, then a rerun with two worker processes: the finished stages and
    rows are kept, only the rest is scored, and the submission equals an uninterrupted build's."""
    import signal
    import subprocess
    import sys
    import time
    ref_root, root = tmp_path / 'ref', tmp_path / 'build'
    extra = ('--task1-predictions', task2_inputs['task1'], '--score-batch', 1)
    run_module('submission.task2', *_build_args(tiny_model_dir, synthetic_dataset, ref_root,
                                                task2_inputs['calibration'], *extra))
    args = _build_args(tiny_model_dir, synthetic_dataset, root, task2_inputs['calibration'], *extra)
    partial = root / '.work-tiny' / 'occlusion.jsonl.partial'
    proc = subprocess.Popen([sys.executable, '-m', 'submission.task2', *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if partial.is_file() and len(partial.read_text().splitlines()) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    scored = len([l for l in partial.read_text().splitlines() if l.endswith('}')])
    assert proc.returncode == -signal.SIGKILL and 1 <= scored < N_VAL, 'the build finished before it was killed'
    work = root / '.work-tiny'
    assert (work / 'probes.jsonl').is_file() and (work / 'grounding.jsonl').is_file()
    timings = len((work / 'timings.jsonl').read_text().splitlines())
    proc = run_module('submission.task2', *args, '--workers', 2)
    assert f'probes/grounding/occlusion: {scored} of {N_VAL} rows done, {N_VAL - scored} to do' in proc.stderr
    again = [json.loads(t) for t in (work / 'timings.jsonl').read_text().splitlines()[timings:]]
    assert {t['stage'] for t in again if t['rank'] is not None} == {'occlusion'}          # workers: occlusion only
    assert sum(t['rows'] for t in again if t['rank'] is not None) == N_VAL - scored
    assert not list(work.glob('*.partial*'))
    new, ref = (_jsonl(r / 'tiny' / 'submission_task2.jsonl') for r in (root, ref_root))
    assert new == ref
    cells = [(a['heatmap_cells'], b['heatmap_cells']) for a, b in zip(
        _jsonl(root / 'tiny' / 'report' / 'explanations_audit.jsonl'),
        _jsonl(ref_root / 'tiny' / 'report' / 'explanations_audit.jsonl'))]
    assert all(a == pytest.approx(b, abs=1e-4) for x, y in cells for a, b in zip(x, y))


@pytest.mark.slow
def test_answers_are_taken_as_they_are(tmp_path, tiny_model_dir, synthetic_dataset, task2_inputs):
    """A Task 1 file with answers this model would not give is submitted as it is (the answers must equal Task 1's):
    the teacher-forced check reports them, it does not stop the build. A given file that does not exist, or a
    calibration file without log-probs, is a one-line error before any model work."""
    changed = tmp_path / 'changed.pred.jsonl'
    changed.write_text(''.join(json.dumps({k: v for k, v in dict(p, prediction=f'changed {i}').items()
                                           if k not in ('token_logprobs', 'first_top_logprobs', 'tokens')}) + '\n'
                               for i, p in enumerate(_jsonl(task2_inputs['task1']))))
    root = tmp_path / 'build'
    args = _build_args(tiny_model_dir, synthetic_dataset, root, task2_inputs['calibration'], '--grid', 1)
    run_module('submission.task2', *args, '--task1-predictions', changed)
    lines = _jsonl(root / 'tiny' / 'submission_task2.jsonl')
    assert [l['answer'] for l in lines] == [f'changed {i}' for i in range(N_VAL)]
    report = json.loads((root / 'tiny' / 'report' / 'report.json').read_text())
    assert report['greedy_consistent'] == 0 and report['confidence_sources'] == {'teacher-forced': N_VAL}
    for bad_args, message in (
            (['--task1-predictions', tmp_path / 'missing.jsonl'], 'missing.jsonl: --task1-predictions: file not found'),
            (['--calibration-data', task2_inputs['calibration'].with_name('calibration.jsonl')],
             'an ms-swift JSONL, not predictions')):
        proc = run_module('submission.task2', *args, *bad_args, check=False)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and err[-1].startswith('error: ') and message in err[-1], proc.stderr
        assert 'Loading weights' not in proc.stderr
