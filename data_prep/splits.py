"""Leak-free splits: a validation set carved from train by whole images, plus curriculum ordering.

Why whole images: a model that saw an image during training answers other questions about it too well, so val
must not share any img_id with the rows we train on. Rows are grouped by img_id; each image gets a stratum (its
most frequent question_class, ties broken alphabetically, joined with its most frequent complexity), and within
each stratum a seeded shuffle takes that stratum's share of images (largest-remainder rounding so the total is
exact). Images are the sampling unit, so row-level class/complexity proportions are matched approximately.
"""
from __future__ import annotations

import math
import random
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

Row = dict


def image_stratum(rows: Sequence[Row]) -> str:
    """The stratum of one image: its most frequent question_class and complexity (deterministic ties)."""
    classes = Counter(c for r in rows for c in (r.get('question_class') or []))
    complexities = Counter(int(r['complexity']) for r in rows)
    top_class = min(classes, key=lambda c: (-classes[c], c)) if classes else '-'
    top_cx = min(complexities, key=lambda c: (-complexities[c], c))
    return f'{top_class}|{top_cx}'


def _allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` picks over strata proportionally to their sizes (largest remainder, deterministic)."""
    n = sum(sizes.values())
    quotas = {s: total * size / n for s, size in sizes.items()}
    picks = {s: math.floor(q) for s, q in quotas.items()}
    left = total - sum(picks.values())
    for s in sorted(quotas, key=lambda s: (-(quotas[s] - picks[s]), s))[:left]:
        picks[s] += 1
    return picks


def choose_val_images(train_rows: Sequence[Row], fraction: float, seed: int = 42) -> set[str]:
    """img_ids for validation: about `fraction` of the train images, stratified by image stratum."""
    if not 0 <= fraction < 1:
        raise ValueError(f'val fraction must be in [0, 1), got {fraction}')
    by_image: dict[str, list[Row]] = defaultdict(list)
    for r in train_rows:
        by_image[r['img_id']].append(r)
    if fraction == 0 or len(by_image) < 2:
        return set()
    target = min(len(by_image) - 1, max(1, round(fraction * len(by_image))))
    strata: dict[str, list[str]] = defaultdict(list)
    for img_id in sorted(by_image):
        strata[image_stratum(by_image[img_id])].append(img_id)
    picks = _allocate({s: len(ids) for s, ids in strata.items()}, target)
    rng = random.Random(seed)
    chosen: set[str] = set()
    for s in sorted(strata):
        ids = strata[s][:]
        rng.shuffle(ids)
        chosen.update(ids[:picks[s]])
    return chosen


def curriculum_order(rows: Sequence[Row]) -> list[Row]:
    """Complexity 1, then 2, then 3; the original order within a level (sorted() is stable)."""
    return sorted(rows, key=lambda r: int(r['complexity']))


@dataclass
class Splits:
    train: list[Row]
    val: list[Row]
    test: list[Row]
    info: dict = field(default_factory=dict)


def make_splits(train_rows: Sequence[Row], test_rows: Sequence[Row], *, val_fraction: float = 0.05,
                seed: int = 42, curriculum: bool = False, train_on_test: bool = False) -> Splits:
    """train/val/test rows. With train_on_test, test rows join train (minus those on val images, to keep val clean)."""
    val_ids = choose_val_images(train_rows, val_fraction, seed)
    train = [r for r in train_rows if r['img_id'] not in val_ids]
    val = [r for r in train_rows if r['img_id'] in val_ids]
    train_images = {r['img_id'] for r in train_rows}
    test_images = {r['img_id'] for r in test_rows}
    info = {
        'val_images': len(val_ids), 'val_fraction': val_fraction, 'seed': seed,
        'official_train_test_shared_images': len(train_images & test_images),
        'val_test_shared_images': len(val_ids & test_images),
        'train_on_test': train_on_test, 'curriculum': curriculum,
    }
    if train_on_test:
        warnings.warn('--train-on-test: the public task-1 subset and the task-2 val set are drawn from test, so '
                      'their scores are contaminated (optimistic) for this model', stacklevel=2)
        extra = [r for r in test_rows if r['img_id'] not in val_ids]
        info['test_rows_added_to_train'] = len(extra)
        info['test_rows_dropped_for_val_images'] = len(test_rows) - len(extra)
        train = train + extra
    if curriculum:
        train = curriculum_order(train)
    return Splits(train=train, val=val, test=list(test_rows), info=info)
