"""Leak-free val split (disjoint by img_id, stratified) and curriculum order, on the 17,505 real x1 train rows."""
from __future__ import annotations

import warnings
from collections import Counter

import pandas as pd
import pytest

from data_prep.splits import choose_val_images, curriculum_order, make_splits


@pytest.fixture(scope='module')
def real_rows(shared_dir):
    df = pd.read_parquet(shared_dir / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet',
                         columns=['img_id', 'complexity', 'question', 'answer', 'question_class'])
    rows = df.to_dict('records')
    for r in rows:
        r['question_class'] = list(r['question_class'])
    assert len(rows) == 17505 and len({r['img_id'] for r in rows}) == 464
    return rows


def _shares(rows, key):
    counts = Counter(v for r in rows for v in key(r))
    return {k: n / sum(counts.values()) for k, n in counts.items()}


def test_val_is_disjoint_by_image_and_stratified(real_rows):
    # Pretend the last ~10 % of images are "test" to check the overlap counts too.
    ids = sorted({r['img_id'] for r in real_rows})
    test_ids = set(ids[-46:])
    test = [r for r in real_rows if r['img_id'] in test_ids][:2000]
    s = make_splits(real_rows, test, val_fraction=0.1, seed=42)
    train_ids, val_ids = {r['img_id'] for r in s.train}, {r['img_id'] for r in s.val}
    assert not train_ids & val_ids
    assert len(s.train) + len(s.val) == len(real_rows)
    assert len(val_ids) == round(0.1 * 464) == s.info['val_images']
    assert 0.07 < len(s.val) / len(real_rows) < 0.13
    assert s.info['official_train_test_shared_images'] == len({r['img_id'] for r in test})
    for key, tol in [(lambda r: [r['complexity']], 0.01), (lambda r: r['question_class'], 0.012)]:
        full, val = _shares(real_rows, key), _shares(s.val, key)
        assert set(val) == set(full)
        assert max(abs(full[k] - val[k]) for k in full) < tol, (full, val)


def test_split_is_seeded_and_seed_matters(real_rows):
    a = choose_val_images(real_rows, 0.05, seed=42)
    assert a == choose_val_images(list(reversed(real_rows)), 0.05, seed=42)  # row order does not matter
    assert a != choose_val_images(real_rows, 0.05, seed=43)
    assert choose_val_images(real_rows, 0.0) == set()
    with pytest.raises(ValueError):
        choose_val_images(real_rows, 1.0)


def test_curriculum_orders_by_complexity_and_is_stable(real_rows):
    ordered = curriculum_order(real_rows)
    levels = [r['complexity'] for r in ordered]
    assert levels == sorted(levels) and set(levels) == {1, 2, 3}
    for level in (1, 2, 3):  # within a level the original order is kept
        assert [id(r) for r in ordered if r['complexity'] == level] == \
               [id(r) for r in real_rows if r['complexity'] == level]
    s = make_splits(real_rows, [], val_fraction=0.05, curriculum=True)
    assert [r['complexity'] for r in s.train] == sorted(r['complexity'] for r in s.train)


def test_train_on_test_warns_and_keeps_val_clean(real_rows):
    test = [dict(r, question=r['question'] + ' (test copy)') for r in real_rows[:3000]]
    with pytest.warns(UserWarning, match='contaminated'):
        s = make_splits(real_rows, test, val_fraction=0.05, seed=1, train_on_test=True)
    val_ids = {r['img_id'] for r in s.val}
    assert not val_ids & {r['img_id'] for r in s.train}
    added = s.info['test_rows_added_to_train']
    assert added + s.info['test_rows_dropped_for_val_images'] == len(test)
    assert len(s.train) == len(real_rows) - len(s.val) + added
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        make_splits(real_rows, test, val_fraction=0.05)  # no warning without train_on_test
