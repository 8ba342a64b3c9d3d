"""`make score` under attack: malformed predictions (one line, exit 2), odd and huge texts scored like the libraries,
no NLTK data, SIGKILL while the report is written, a second report run, a full disk."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from eval import metrics, score
from tests.conftest import run_module
from tests.faults.harness import Trigger, debris, files_mode, fill, one_line_error, run_main, small_disk, tree

ROWS = [{'index': i, 'img_id': f'img{i}', 'question': f'q{i}?', 'prediction': p, 'reference': r, 'setting': 'original'}
        for i, (p, r) in enumerate([('one polyp', 'one polyp is visible'), ('no', 'no instrument'),
                                    ('a red mucosa', 'the mucosa is red'), ('two', 'there are two polyps')])]


def write(path: Path, rows=ROWS, raw: bytes | None = None) -> Path:
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    return path


def score_fails(path: Path, capsys, *parts: str) -> str:
    code, err = run_main(score.main, [path], capsys)
    assert code == 2, err[-2000:]
    return one_line_error(err, *parts)


def score_ok(path: Path, capsys, *extra) -> tuple[dict, str]:
    capsys.readouterr()
    try:
        code = score.main([str(path), *map(str, extra)]) or 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.mark.case('E1')
def test_row_without_prediction(tmp_path, capsys):
    rows = [dict(r) for r in ROWS]
    del rows[2]['prediction']
    score_fails(write(tmp_path / 'p.jsonl', rows), capsys, 'p.jsonl:3: prediction: missing')


@pytest.mark.case('E2')
def test_null_prediction(tmp_path, capsys):
    rows = [dict(r) for r in ROWS]
    rows[1]['prediction'] = None
    score_fails(write(tmp_path / 'p.jsonl', rows), capsys, 'p.jsonl:2: prediction: must be a string, got NoneType')


@pytest.mark.case('E3')
def test_number_prediction_and_null_reference(tmp_path, capsys):
    rows = [dict(r) for r in ROWS]
    rows[1]['prediction'] = 42
    score_fails(write(tmp_path / 'p.jsonl', rows), capsys, ':2: prediction: must be a string, got int')
    rows[1]['prediction'], rows[3]['reference'] = 'x', None
    score_fails(write(tmp_path / 'p.jsonl', rows), capsys, ':4: reference: must be a string, got NoneType')


@pytest.mark.case('E4', 'E5')
def test_empty_or_blank_file(tmp_path, capsys):
    for raw in (b'', b'\n  \n\n'):
        score_fails(write(tmp_path / 'p.jsonl', raw=raw), capsys, 'p.jsonl: no predictions (empty file)')


@pytest.mark.case('E6')
def test_non_json_line(tmp_path, capsys):
    raw = write(tmp_path / 'p.jsonl').read_bytes() + b'{"prediction": "a" "reference": "b"}\n'
    score_fails(write(tmp_path / 'p.jsonl', raw=raw), capsys, 'p.jsonl:5: not valid JSON')


@pytest.mark.case('E7')
def test_array_line(tmp_path, capsys):
    raw = write(tmp_path / 'p.jsonl').read_bytes() + b'["a", "b"]\n'
    score_fails(write(tmp_path / 'p.jsonl', raw=raw), capsys, 'p.jsonl:5: line is not a JSON object')


@pytest.mark.case('E8')
def test_file_not_utf8(tmp_path, capsys):
    """Cause 13: read_jsonl caught JSONDecodeError only; a non-UTF-8 byte was a traceback."""
    raw = b'\xff' + write(tmp_path / 'p.jsonl').read_bytes()
    score_fails(write(tmp_path / 'p.jsonl', raw=raw), capsys, 'p.jsonl:1: not UTF-8 text (byte 0xff at column 1)')


@pytest.mark.case('E9', 'E10')
def test_subset_of_rows_and_compare_with_other_lengths(tmp_path, capsys):
    full, half = write(tmp_path / 'full.jsonl'), write(tmp_path / 'half.jsonl', ROWS[:2])
    got, _ = score_ok(half, capsys)
    assert got == {k: metrics.score([r['prediction'] for r in ROWS[:2]], [r['reference'] for r in ROWS[:2]])[k]
                   for k in metrics.REPORTED}
    _, err = score_ok(full, capsys, '--compare', half)
    assert '| full | 4 |' in err and '| half | 2 |' in err


@pytest.mark.case('E11')
def test_duplicated_index(tmp_path, capsys):
    rows = [dict(r) for r in ROWS]
    rows[1]['index'] = 0
    score_fails(write(tmp_path / 'p.jsonl', rows), capsys, 'p.jsonl:2: index: duplicate id (0,)')


@pytest.mark.case('E12')
def test_empty_prediction_scores_zero(tmp_path, capsys):
    got, _ = score_ok(write(tmp_path / 'p.jsonl', [{**ROWS[0], 'prediction': ''}]), capsys)
    assert got == {k: 0.0 for k in metrics.REPORTED}


@pytest.mark.case('E13')
def test_unicode_scores_equal_the_libraries(tmp_path, capsys):
    """BLEU and ROUGE against sacrebleu and rouge_score here; METEOR against NLTK on such texts: tests/test_metrics.py
    (NLTK's own WordNet reader takes seconds to load)."""
    import sacrebleu
    from rouge_score import rouge_scorer
    pairs = [('Ein Polyp 🙂 ist sichtbar', 'ein polyp ist sichtbar'), ('zero\u200bwidth café', 'zero width cafe'),
             ('ＦＵＬＬ width، عربى', 'full width arabic'), ('naïve façade', 'naive facade'),
             ('polyp', 'polyp')]
    rows = [{'prediction': p, 'reference': r} for p, r in pairs]
    got = metrics.score([p for p, _ in pairs], [r for _, r in pairs])
    assert score_ok(write(tmp_path / 'p.jsonl', rows), capsys)[0] == {k: got[k] for k in metrics.REPORTED}
    bleu = sacrebleu.corpus_bleu([p for p, _ in pairs], [[r for _, r in pairs]], smooth_method='none').score / 100
    assert math.isclose(got['unrounded']['bleu'], bleu, abs_tol=1e-9)
    scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'])
    for key in ('rouge1', 'rouge2', 'rougeL'):
        mean = sum(scorer.score(r, p)[key].fmeasure for p, r in pairs) / len(pairs)
        assert math.isclose(got['rouge_mean'][key], mean, abs_tol=1e-9)


@pytest.mark.case('E14', 'E15')
def test_huge_predictions(tmp_path, capsys):
    """~200k repeated words, and 50k distinct words (the audit's 1M distinct words, scaled to keep the suite short:
    the same code path, one WordNet lookup per distinct word)."""
    repeated = ' '.join(['polyp', 'is', 'visible'] * 66_667)
    distinct = ' '.join(f'w{i}' for i in range(50_000))
    for text in (repeated, distinct):
        got, _ = score_ok(write(tmp_path / 'p.jsonl', [{**ROWS[0], 'prediction': text}]), capsys)
        assert all(0.0 <= got[k] <= 1.0 for k in metrics.REPORTED)


@pytest.mark.case('E16')
def test_no_nltk_data_says_make_setup(tmp_path):
    """Cause 14: a checkout without .nltk_data died with NLTK's LookupError banner."""
    pred = write(tmp_path / 'p.jsonl')
    env = dict(os.environ, NLTK_DATA=str(tmp_path / 'empty'), HOME=str(tmp_path))
    proc = run_module('eval.score', pred, env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    one_line_error(proc.stderr, 'error: meteor: the NLTK data METEOR needs', 'run `make setup`')


# ---- the report under crashes, a second run, a full disk ---------------------------------------------------------

@pytest.fixture(scope='session')
def report(runner, inferred, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp('report') / 'report'
    run = runner.run('eval.score', [inferred, '--report', folder])
    assert run.code == 0, run.err[-3000:]
    return folder, tree(folder)


@pytest.mark.case('B-score-kill', 'B-score-conc', 'X7')
def test_sigkill_while_the_report_is_written_then_rerun(runner, inferred, report, tmp_path, capsys):
    reference, files = report
    folder = tmp_path / 'report'
    shutil.copytree(reference, folder)
    argv = [inferred, '--report', folder]
    runner.killed_at('eval.score', argv, Trigger('os.rename', '*/report.json', 1))      # plots written, json not
    assert tree(folder) == files and debris(tmp_path)                                   # the old report stays whole
    runner.killed_at('eval.score', argv, Trigger('os.rename', str(folder), 2))          # new folder complete, old aside
    with runner.paused_at('eval.score', argv, Trigger('os.rename', str(folder), 1)) as last:
        code, err = run_main(score.main, argv, capsys)
        assert code == 2
        one_line_error(err, f'error: {folder}: another eval report is writing here now')
    assert last.code == 0, last.err[-2000:]
    assert tree(folder) == files and debris(tmp_path) == []
    assert files_mode(folder) == {0o644}


@pytest.mark.case('B-score-disk')
def test_full_disk_keeps_the_previous_report(inferred, report, tmp_path, capsys):
    reference, files = report
    with small_disk(tmp_path / 'disk', 4) as disk:
        folder = disk / 'report'
        shutil.copytree(reference, folder)
        fill(disk)
        code, err = run_main(score.main, [inferred, '--report', folder], capsys)
        assert code == 2
        one_line_error(err, 'No space left on device')
        assert tree(folder) == files and debris(disk) == []
