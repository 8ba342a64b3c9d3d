"""eval.baseline on real Kvasir-VQA-x1 questions/answers (train-subset, read in place), split by image."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from eval import baseline, metrics
from tests.conftest import run_module


@pytest.fixture(scope='module')
def split_files(shared_dir, tmp_path_factory) -> tuple[Path, Path, Path]:
    """train/eval sidecars (disjoint images) + the same train as ms-swift lines; a few thousand rows only."""
    df = pd.read_parquet(shared_dir / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet',
                         columns=['img_id', 'complexity', 'question', 'answer', 'question_class'])
    images = sorted(df['img_id'].unique())
    eval_ids, train_ids = set(images[:20]), set(images[20:120])
    out = tmp_path_factory.mktemp('baseline')
    meta = lambda r, split: {'img_id': r.img_id, 'question': r.question,  # noqa: E731
                             'question_class': list(r.question_class), 'complexity': int(r.complexity),
                             'split': split, 'setting': 'original', 'reference': r.answer,
                             'image': f'/x/{r.img_id}.jpg'}
    train = [meta(r, 'train') for r in df.itertuples() if r.img_id in train_ids]
    evals = [meta(r, 'val') for r in df.itertuples() if r.img_id in eval_ids]
    paths = out / 'train.meta.jsonl', out / 'eval.meta.jsonl', out / 'train.jsonl'
    paths[0].write_text(''.join(json.dumps(r) + '\n' for r in train))
    paths[1].write_text(''.join(json.dumps(r) + '\n' for r in evals))
    paths[2].write_text(''.join(json.dumps({'messages': [
        {'role': 'user', 'content': '<image>' + r['question']}, {'role': 'assistant', 'content': r['reference']}],
        'images': [r['image']]}) + '\n' for r in train))
    return paths


def test_cli_writes_scored_prediction_files(split_files, tmp_path):
    train, evals, _ = split_files
    proc = run_module('eval.baseline', '--train', train, '--eval', evals, '--out', tmp_path / 'b')
    printed = json.loads(proc.stdout)
    assert set(printed) == set(baseline.BASELINES)
    eval_rows = [json.loads(x) for x in evals.read_text().splitlines()]
    for name in baseline.BASELINES:
        rows = [json.loads(x) for x in (tmp_path / 'b' / f'{name}.jsonl').read_text().splitlines()]
        assert len(rows) == len(eval_rows)
        assert all({**e, 'prediction': r['prediction']} == r for e, r in zip(eval_rows, rows))  # sidecar + prediction
        want = metrics.score([r['prediction'] for r in rows], [r['reference'] for r in rows])
        assert printed[name] == {**{k: want[k] for k in metrics.REPORTED}, 'n': len(rows)}
        assert 0.1 < printed[name]['rouge1'] < 0.9  # a prior: far from nothing, far from perfect
    saved = json.loads((tmp_path / 'b' / 'scores.json').read_text())
    assert saved['scores'] == printed and (tmp_path / 'b' / 'report' / 'runs.png').is_file()


def test_class_prior_is_most_frequent_answer_of_the_class_combination(split_files):
    train_path, eval_path, _ = split_files
    train, evals = baseline.load_train(train_path), baseline.load_eval(eval_path)
    preds = baseline.class_prior(train, evals)
    for row, pred in zip(evals, preds):
        combo = tuple(row['question_class'])
        answers = Counter(t['answer'] for t in train if t['question_class'] == combo)
        if answers:
            assert answers[pred] == max(answers.values())


def test_nearest_question_finds_identical_questions(split_files):
    train_path, _, swift_path = split_files
    train = baseline.load_train(train_path)
    probe = [{'question': t['question'], 'reference': 'x'} for t in train[:40]]
    preds = baseline.nearest_question(train, probe)
    for p, t in zip(preds, probe):
        answers = Counter(r['answer'] for r in train if r['question'] == t['question'])
        assert answers[p] == max(answers.values())
    # the ms-swift form of the same training data gives the same neighbours
    assert baseline.nearest_question(baseline.load_train(swift_path), probe) == preds
    # no known word: the most frequent answer overall
    fallback = Counter(r['answer'] for r in train).most_common(1)[0][0]
    assert baseline.nearest_question(train, [{'question': 'zzzz qqqq', 'reference': 'x'}]) == [fallback]


def test_tfidf_index_cosine():
    index = baseline.TfidfIndex(['is there a polyp', 'what color is the lesion', 'how many instruments'])
    assert list(index.nearest(['What COLOR is the lesion?', 'how many', 'unknown words'])) == [1, 2, -1]


def test_bad_training_line_is_one_line_error(tmp_path, split_files):
    _, evals, _ = split_files
    bad = tmp_path / 'bad.jsonl'
    bad.write_text(json.dumps({'question': 'q?', 'reference': 'a'}) + '\n' + json.dumps({'question': 'q?'}) + '\n')
    proc = run_module('eval.baseline', '--train', bad, '--eval', evals, '--out', tmp_path / 'o', check=False)
    assert proc.returncode == 2 and ':2: reference: missing' in proc.stderr
