"""The organizers' subsets: row for row what their `datasets` calls give, pinned by golden hashes on real rows."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from data_prep.sources import load_source
from data_prep.subsets import subset_sha256, task1_subset, task2_subset
from tests.conftest import run_module

# The 17,505 real train rows of ../shared served as a "test" split (the real test split is not available offline).
GOLDEN_TASK1 = '3fa41a9909076527e520b9560b3789e9d059b2f4f3ab643d6940031774cfaf98'
GOLDEN_TASK2 = '2910f32298feb85019d11a66cb66231107df6264e0f5503911c11687b823c925'


@pytest.fixture(scope='module')
def real(shared_dir, tmp_path_factory):
    """A local copy in the hub layout whose test split is the shared parquet (linked, not copied)."""
    parquet = shared_dir / 'data/kvasir-vqa-x1/train-subset.parquet'
    root = tmp_path_factory.mktemp('real')
    (root / 'data').mkdir()
    (root / 'data/test-00000-of-00001.parquet').symlink_to(parquet)
    return {'parquet': parquet, 'root': root, 'test': load_source(str(root))['test']}


def test_task1_equals_the_organizers_code_row_for_row(real):
    ours = task1_subset(real['test'])
    theirs = Dataset.from_parquet(str(real['parquet'])).shuffle(seed=42).select(range(1500))
    assert len(ours) == 1500
    assert ours.to_list() == theirs.to_list()
    assert subset_sha256(ours) == GOLDEN_TASK1


def test_task1_is_numpy_permutation_of_file_rows(real):
    """Independent of datasets' code path: shuffle(seed=42) = np.random.default_rng(42).permutation(n)."""
    rows = pq.read_table(real['parquet'], columns=['img_id', 'question']).to_pylist()
    order = np.random.default_rng(42).permutation(len(rows))[:1500]
    assert subset_sha256([rows[i] for i in order]) == GOLDEN_TASK1
    # Row order matters: the same rows in another order give another subset.
    assert subset_sha256([rows[::-1][i] for i in order]) != GOLDEN_TASK1


def test_task2_equals_the_organizers_code_row_for_row(real):
    ours = task2_subset(real['test'])
    theirs = (Dataset.from_parquet(str(real['parquet'])).filter(lambda x: x['complexity'] == 1)
              .shuffle(seed=42).select(range(1500)))
    assert ours['val_id'] == list(range(1500))
    assert ours.remove_columns('val_id').to_list() == theirs.to_list()
    assert set(ours['complexity']) == {1}
    assert subset_sha256(ours) == GOLDEN_TASK2


def test_cli_on_the_real_rows_prints_the_golden_hashes(real, tmp_path):
    proc = run_module('data_prep.subsets', '--dataset', real['root'], '--out', tmp_path)
    assert f'task1_public: 1500 rows sha256 {GOLDEN_TASK1}' in proc.stdout
    assert f'task2_val: 1500 rows sha256 {GOLDEN_TASK2}' in proc.stdout
    assert 'note:' not in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / 'task1_public.jsonl').read_text().splitlines()]
    assert list(rows[0]) == ['index', 'img_id', 'question', 'complexity', 'question_class', 'answer']
    assert [r['index'] for r in rows] == list(range(1500)) and subset_sha256(rows) == GOLDEN_TASK1


def test_cli_on_small_synthetic_data_takes_every_row(synthetic_dataset, tmp_path):
    proc = run_module('data_prep.subsets', '--dataset', synthetic_dataset, '--out', tmp_path)
    test = pq.read_table(synthetic_dataset / 'data/test-00000-of-00001.parquet').to_pylist()
    t1 = [json.loads(line) for line in (tmp_path / 'task1_public.jsonl').read_text().splitlines()]
    t2 = [json.loads(line) for line in (tmp_path / 'task2_val.jsonl').read_text().splitlines()]
    assert len(t1) == len(test) and sorted((r['img_id'], r['question']) for r in t1) == \
        sorted((r['img_id'], r['question']) for r in test)
    simple = [r for r in test if r['complexity'] == 1]
    assert len(t2) == len(simple) > 0 and {r['complexity'] for r in t2} == {1}
    assert list(t2[0]) == ['val_id', 'img_id', 'question', 'complexity', 'question_class', 'answer']
    assert [r['val_id'] for r in t2] == list(range(len(t2)))
    # order = numpy permutation of the file's (filtered) rows
    assert [(r['img_id'], r['question']) for r in t1] == \
        [(test[i]['img_id'], test[i]['question']) for i in np.random.default_rng(42).permutation(len(test))]
    assert f'task1_public: {len(t1)} rows sha256 {subset_sha256(t1)}' in proc.stdout
    assert f'note: task2_val: only {len(t2)} eligible rows' in proc.stderr


def test_cli_without_test_split_is_one_line_exit_2(synthetic_dataset, tmp_path):
    proc = run_module('data_prep.subsets', '--dataset', synthetic_dataset / 'data/train-00000-of-00001.parquet',
                      '--out', tmp_path / 'out', check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'no "test" split' in lines[0]
