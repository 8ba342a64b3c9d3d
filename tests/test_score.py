"""eval.score CLI/API and eval.report on the golden pairs (real answers) and on broken files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import metrics, score
from tests.conftest import run_module

GOLDEN = Path(__file__).parent / 'golden' / 'pairs.jsonl'


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')
    return path


@pytest.fixture(scope='module')
def rows() -> list[dict]:
    return [json.loads(line) for line in GOLDEN.read_text(encoding='utf-8').splitlines()]


def test_cli_prints_one_json_object_equal_to_api(rows):
    proc = run_module('eval.score', GOLDEN)
    out = json.loads(proc.stdout)  # exactly one object on stdout
    assert list(out) == list(metrics.REPORTED)
    api = score.score_file(GOLDEN)
    assert out == {k: api[k] for k in metrics.REPORTED}
    assert api == metrics.score([r['prediction'] for r in rows], [r['reference'] for r in rows])
    assert 0.3 < out['bleu'] < 0.6 and 0.5 < out['meteor'] < 0.8  # a mix of right and wrong answers


def test_seed_changes_only_rouge(tmp_path):
    a, b = score.score_file(GOLDEN, seed=42), score.score_file(GOLDEN, seed=1)
    assert a['unrounded']['bleu'] == b['unrounded']['bleu'] and a['unrounded']['meteor'] == b['unrounded']['meteor']
    assert a['unrounded']['rouge1'] != b['unrounded']['rouge1'] and a['rouge_mean'] == b['rouge_mean']


def test_report_breakdowns_and_comparison(tmp_path, rows):
    perfect = _write(tmp_path / 'perfect.jsonl', [{**r, 'prediction': r['reference']} for r in rows])
    out = tmp_path / 'report'
    proc = run_module('eval.score', GOLDEN, '--report', out, '--compare', perfect)
    printed = json.loads(proc.stdout)
    rep = json.loads((out / 'report.json').read_text())
    main = rep['runs'][str(GOLDEN)]
    assert {k: main['overall'][k] for k in metrics.REPORTED} == printed
    # each row counts once per complexity/setting and once in each of its classes
    assert sum(e['n'] for e in main['complexity'].values()) == len(rows)
    assert {k: e['n'] for k, e in main['setting'].items()} == {'augmented': 160, 'original': 160}
    assert sum(e['n'] for e in main['question_class'].values()) == sum(len(set(r['question_class'])) for r in rows)
    polyp = [r for r in rows if 'polyp_count' in r['question_class']]
    want = metrics.score([r['prediction'] for r in polyp], [r['reference'] for r in polyp])
    assert main['question_class']['polyp_count']['meteor'] == want['meteor']
    assert rep['runs'][str(perfect)]['overall']['bleu'] == 1.0
    md = (out / 'report.md').read_text()
    assert '## Runs side by side' in md and '| perfect | 320 | 1.0000 |' in md and 'polyp_count' in md
    for png in ('by_complexity.png', 'by_question_class.png', 'by_setting.png', 'runs.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_compare_without_report_prints_table(tmp_path, rows):
    other = _write(tmp_path / 'other.jsonl', [{**r, 'prediction': r['reference'].lower()} for r in rows])
    proc = run_module('eval.score', GOLDEN, '--compare', other)
    assert '| other | 320 |' in proc.stderr and len(proc.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize('case, expect', [
    ('missing_prediction', ':2: prediction: missing'),
    ('reference_not_string', ':1: reference: must be a string'),
    ('empty_file', 'empty file'),
    ('duplicate_index', ':2: index: duplicate id'),
    ('bad_json', ':2: not valid JSON'),
    ('no_file', 'file not found'),
])
def test_bad_input_exits_2_with_one_line(tmp_path, case, expect):
    good = {'img_id': 'a', 'question': 'q?', 'prediction': 'p', 'reference': 'r', 'index': 0, 'setting': 'original'}
    path = tmp_path / f'{case}.jsonl'
    if case == 'missing_prediction':
        _write(path, [good, {k: v for k, v in good.items() if k != 'prediction'} | {'index': 1}])
    elif case == 'reference_not_string':
        _write(path, [{**good, 'reference': 3}])
    elif case == 'empty_file':
        path.write_text('\n')
    elif case == 'duplicate_index':
        _write(path, [good, {**good, 'question': 'other?'}])
    elif case == 'bad_json':
        path.write_text(json.dumps(good) + '\n{"prediction": \n')
    proc = run_module('eval.score', path, check=False)
    assert proc.returncode == 2 and proc.stdout == ''
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and expect in lines[0], proc.stderr


def test_repeated_pairs_are_a_note_unless_strict(tmp_path):
    row = {'img_id': 'a', 'question': 'q?', 'prediction': 'small polyp', 'reference': 'a small polyp'}
    path = _write(tmp_path / 'dup.jsonl', [row, row])  # the real dataset repeats some (img_id, question)
    proc = run_module('eval.score', path)
    assert 'note: 1 rows repeat' in proc.stderr and json.loads(proc.stdout)['rouge1'] == 0.8
    strict = run_module('eval.score', path, '--strict-ids', check=False)
    assert strict.returncode == 2 and ':2: img_id+question: duplicate id' in strict.stderr


def test_original_and_augmented_files_are_scored_side_by_side(tmp_path, rows):
    """`make score` on X-original.jsonl adds X-augmented.jsonl when it exists: the challenge's two settings."""
    original = _write(tmp_path / 'task1_public-original.jsonl', [r for r in rows if r['setting'] == 'original'])
    augmented = [r for r in rows if r['setting'] == 'augmented']
    _write(tmp_path / 'task1_public-augmented.jsonl', [{**r, 'prediction': 'zzz'} for r in augmented])
    out = tmp_path / 'report'
    proc = run_module('eval.score', original, '--report', out)
    assert 'task1_public-augmented.jsonl holds the other image setting' in proc.stderr
    rep = json.loads((out / 'report.json').read_text())
    assert rep['settings']['original']['n'] == rep['settings']['augmented']['n'] == 160
    assert rep['settings']['augmented']['bleu'] == 0.0 < rep['settings']['original']['bleu']
    md = (out / 'report.md').read_text()
    assert '## Original vs augmented images' in md and '| bleu | ' in md and 'settings.png' in rep['plots']
    assert (out / 'settings.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert json.loads(proc.stdout) == {k: score.score_file(original)[k] for k in metrics.REPORTED}   # still PRED's
    alone = run_module('eval.score', original, '--report', tmp_path / 'alone', '--no-pair')
    assert 'other image setting' not in alone.stderr
    assert '## Original vs augmented images' not in (tmp_path / 'alone' / 'report.md').read_text()


def test_bars_carry_their_values_and_a_zero_bar_shows_0():
    from eval.report import bar_figure
    groups = {'original': {'n': 3, **dict.fromkeys(metrics.REPORTED, 0.5)},
              'augmented': {'n': 3, **dict.fromkeys(metrics.REPORTED, 0.5), 'bleu': 0.0}}
    for horizontal in (False, True):
        fig = bar_figure(groups, 'title', horizontal)
        labels = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert sorted(labels) == sorted(['0'] + ['0.500'] * (2 * len(metrics.REPORTED) - 1))


def test_report_shows_the_best_and_worst_rows_per_question_class(tmp_path, rows):
    out = tmp_path / 'report'
    run_module('eval.score', GOLDEN, '--report', out)
    rep = json.loads((out / 'report.json').read_text())
    examples = rep['examples']
    assert list(examples) == list(rep['runs'][str(GOLDEN)]['question_class'])   # every class, largest first
    scorer = metrics.Scorer()
    for key, parts in examples.items():
        members = [r for r in rows if key in r['question_class']]
        rouge_l = sorted(scorer.rouge_pair(r['reference'], r['prediction'])[2].fmeasure for r in members)
        assert [e['rougeL'] for e in parts['best']] == [round(x, 4) for x in rouge_l[::-1][:len(parts['best'])]]
        assert [e['rougeL'] for e in parts['worst']] == [round(x, 4) for x in rouge_l[:len(parts['worst'])]]
        assert len(parts['best']) + len(parts['worst']) == min(4, len(members))
    md = (out / 'report.md').read_text()
    worst = examples['polyp_count']['worst'][0]
    assert '## Examples per question class (best and worst by ROUGE-L)' in md
    assert f'| polyp_count | worst | {worst["rougeL"]:.3f} |' in md
