"""The organizers' hidden-set patch check (submission.patch_check) against their exact regexes and templates."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from common.errors import InputError
from submission.patch_check import CHALLENGE_PATCHES, EXPECTED_LINES, FULL_EVALUATE_PATCH, check_file, check_script
from tests.conftest import REPO, run_module

TEMPLATE = REPO / 'submission' / 'templates' / 'submission_task1.py'


def _medvqa_dir() -> Path:
    spec = importlib.util.find_spec('medvqa')
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('medvqa not installed')
    return Path(list(spec.submodule_search_locations)[0])


def _organizer_patterns() -> tuple[list[tuple[str, str]], str]:
    """The `patches` list and the full-evaluate `pattern` literal, read from medvqa's own task_1.py."""
    tree = ast.parse((_medvqa_dir() / 'competitions' / 'medico-2026' / 'task_1.py').read_text(encoding='utf-8'))
    patches, full = None, None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == 'patches':
                patches = [tuple(ast.literal_eval(e)) for e in node.value.elts]
            elif node.targets[0].id == 'pattern':
                full = ast.literal_eval(node.value)
    assert patches and full
    return patches, full


def _three_lines_script(*lines: str) -> str:
    body = '\n'.join(lines)
    return f'from datasets import load_dataset\n{body}\nprint(len(val_dataset))\n'


def test_patterns_are_the_organizers_exact_strings():
    patches, full = _organizer_patterns()
    assert list(CHALLENGE_PATCHES) == patches
    assert FULL_EVALUATE_PATCH[0] == full


def test_our_template_and_the_organizers_pytorch_template_pass():
    patched = check_file(TEMPLATE)
    assert 'load_dataset("SimulaMet/Kvasir-VQA-x1-private")["test"]' in patched
    assert 'ds_shuffled' not in patched
    check_file(_medvqa_dir() / 'submission_samples' / 'medico-2026' / 'submission_task1.py')


def test_organizers_swift_template_with_chained_call_is_rejected():
    swift = _medvqa_dir() / 'submission_samples' / 'medico-2026' / 'submission_task1_swift.py'
    with pytest.raises(InputError, match='chained load_dataset') as e:
        check_file(swift)
    assert e.value.row is not None and 'load_dataset' in swift.read_text().splitlines()[e.value.row - 1]
    # and indeed none of the organizers' regexes would have matched it
    code = swift.read_text(encoding='utf-8')
    assert [len(re.findall(p, code)) for p, _ in CHALLENGE_PATCHES] == [0, 0, 0]


@pytest.mark.parametrize('missing', [0, 1, 2])
def test_a_script_missing_one_line_is_rejected(missing):
    lines = list(EXPECTED_LINES)
    lines[missing] = {0: 'ds = load_dataset("SimulaMet/Kvasir-VQA-x1", split="test")',
                      1: 'ds_shuffled = ds.shuffle(seed=0)',
                      2: 'val_dataset = ds_shuffled.select(range(100))'}[missing]
    with pytest.raises(InputError, match=f'organizer patch {missing + 1} matched 0 times'):
        check_script(_three_lines_script(*lines))


def test_complete_script_passes_and_a_duplicated_line_is_rejected():
    check_script(_three_lines_script(*EXPECTED_LINES))
    with pytest.raises(InputError, match='patch 2 matched 2 times'):
        check_script(_three_lines_script(*EXPECTED_LINES, '# ' + EXPECTED_LINES[1]))


def test_reading_ds_after_the_patch_is_rejected():
    with pytest.raises(InputError, match='`ds` is still read'):
        check_script(_three_lines_script(*EXPECTED_LINES, 'n = len(ds)'))


def test_syntax_error_is_reported_with_its_line():
    with pytest.raises(InputError, match='does not compile') as e:
        check_script(_three_lines_script(*EXPECTED_LINES) + 'def broken(:\n')
    assert e.value.row == 6


def test_cli_one_line_and_exit_2(tmp_path):
    swift = _medvqa_dir() / 'submission_samples' / 'medico-2026' / 'submission_task1_swift.py'
    proc = run_module('submission.patch_check', swift, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count('\n') == 0 and proc.stderr.startswith('error: ')
    ok = run_module('submission.patch_check', TEMPLATE)
    assert ok.stdout.startswith('ok: ')
