"""Golden numbers from the organizers' own metric code.

tests/golden/evaluate_reference.json was produced once, offline, by running the original huggingface/evaluate
metric scripts (metrics/bleu, metrics/rouge with seed=42, metrics/meteor) on tests/golden/pairs.jsonl: 320 pairs made
from real Kvasir-VQA-x1 answers (identical, lower-cased, empty, punctuation, upper case, long, two-line, other answers).
Their code is not in this repository, only the numbers. Our scorer must reproduce them: BLEU and METEOR to 1e-9,
ROUGE exactly for the same seed, and the rounded values the leaderboard shows.
"""
import json
from pathlib import Path

import pytest

from eval.metrics import score

GOLDEN = Path(__file__).parent / 'golden'
PAIRS = [json.loads(line) for line in (GOLDEN / 'pairs.jsonl').read_text().splitlines()]
REFERENCE = json.loads((GOLDEN / 'evaluate_reference.json').read_text())
GROUPS = {'all': PAIRS, 'first_100': PAIRS[:100]}
for kind in REFERENCE['by_kind']:
    GROUPS[f'kind:{kind}'] = [p for p in PAIRS if p['kind'] == kind]


def expected_for(name: str) -> dict:
    return REFERENCE['by_kind'][name[5:]] if name.startswith('kind:') else REFERENCE[name]


@pytest.mark.parametrize('name', sorted(GROUPS))
def test_scores_equal_the_original_evaluate_scripts(name):
    rows, expected = GROUPS[name], expected_for(name)
    assert len(rows) == expected['n']
    got = score([r['prediction'] for r in rows], [r['reference'] for r in rows], rouge_seed=42)
    for metric in ('bleu', 'meteor'):
        assert got['unrounded'][metric] == pytest.approx(expected[metric], abs=1e-9), metric
        assert got[metric] == round(expected[metric], 4)
    for metric in ('rouge1', 'rouge2', 'rougeL', 'rougeLsum'):
        assert got['unrounded'][metric] == pytest.approx(expected[metric], abs=1e-12), metric
        assert got['rouge_mean'][metric] == pytest.approx(expected[f'{metric}_mean'], abs=1e-12), metric
    for metric in ('rouge1', 'rouge2', 'rougeL'):
        assert got[metric] == round(expected[metric], 4)
