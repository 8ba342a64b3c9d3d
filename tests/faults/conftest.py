"""Fixtures of the reliability suite (built once per session) and the recorder behind docs/reliability.md.

Every test of the suite carries `@pytest.mark.case(ID, ...)` with the case ids of tests/faults/cases.py it tries. With
RELIABILITY_RESULTS=<file> set, the session writes {case: {"outcome", "reason"}} there (worst outcome of its tests);
`python -m tests.faults.report` runs the suite that way and regenerates the table in docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_module
from tests.faults.harness import Runner, tree

RESULTS: dict[str, dict] = {}
RANK = {'passed': 0, 'skipped': 1, 'failed': 2}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    ids = [cid for marker in item.iter_markers('case') for cid in marker.args]
    if not ids or (report.when != 'call' and report.passed):
        return
    status = 'failed' if report.failed else 'skipped' if report.skipped else 'passed'
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ''
    for cid in ids:
        old = RESULTS.get(cid)
        if old is None or RANK[status] > RANK[old['outcome']]:
            RESULTS[cid] = {'outcome': status, 'reason': reason.removeprefix('Skipped: ')}


HEAVY = {'runner', 'tiny_model_dir', 'trained_run'}   # a model, a training run or the fork server: `make test` only


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents and HEAVY & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session):
    path = os.environ.get('RELIABILITY_RESULTS')
    if path and RESULTS:
        Path(path).write_text(json.dumps(RESULTS, indent=1, sort_keys=True))


# ---- the stack ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def runner(tmp_path_factory) -> Runner:
    os.umask(0o022)   # the usual umask: X7 checks that outputs get 0644, not mkstemp's 0600
    return Runner(tmp_path_factory.mktemp('runs'))


# The fault copy: a synthetic Kvasir-VQA-x1 copy (6 images, 11 train + 7 test rows) whose images include the odd
# formats of cases P22-P24 and P27, so every later stage runs over them too (I17).
ODD = {'cl0euj1rqu63v0j2ahfe1040o': 'CMYK', 'clumi9b1206tnwilyqmjkx9to': 'L', 'clin9mrdgzszdoynuopev4kpu': '1x1',
       'clsp8r1kez7y3mkwawow7rx1d': 'PNG', 'clidbfhpw2xjcok9bplicrebw': 'RGBA'}


@pytest.fixture(scope='session')
def fault_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('fault_copy') / 'copy'
    run_module('data_prep.synthetic', '--out', root, '--images', 6, '--qa-per-image', 3, '--seed', 0,
               '--test-fraction', 0.5)
    for img_id, kind in ODD.items():
        path = root / 'images' / f'{img_id}.jpg'
        with Image.open(path) as im:
            rgb = im.convert('RGB')
        if kind in ('CMYK', 'L'):
            rgb.convert(kind).save(path, format='JPEG', quality=90)
        elif kind == '1x1':
            rgb.resize((1, 1)).save(path, format='JPEG', quality=90)
        else:   # PNG bytes under a .jpg name
            (rgb.convert('RGBA') if kind == 'RGBA' else rgb).save(path, format='PNG')
    return root


@pytest.fixture
def copy(fault_copy, tmp_path) -> Path:
    """A private copy of the fault copy to break."""
    return Path(shutil.copytree(fault_copy, tmp_path / 'copy'))


PREPARE_ARGS = ['--aug-k', '2', '--workers', '2']


@pytest.fixture(scope='session')
def prepared(runner, fault_copy, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(OUT, its tree) of one uninterrupted `make prepare` of the fault copy: what every interrupted run must equal."""
    out = tmp_path_factory.mktemp('prepared') / 'prepared'
    run = runner.run('data_prep.prepare', ['--dataset', fault_copy, '--out', out, *PREPARE_ARGS])
    assert run.code == 0, run.err[-3000:]
    return out, tree(out)


INFER_SPLIT = 'test-original'
INFER_ARGS = ['--backend', 'transformers', '--max-new-tokens', '4', '--max-pixels', '12544', '--batch-size', '2']


def infer_argv(model: Path, data: Path, out: Path, *extra) -> list:
    return ['--model', model, '--data', data, '--out', out, *INFER_ARGS, *extra]


@pytest.fixture(scope='session')
def split(prepared) -> Path:
    return prepared[0] / 'swift' / f'{INFER_SPLIT}.jsonl'


@pytest.fixture(scope='session')
def inferred(runner, tiny_model_dir, split, tmp_path_factory) -> Path:
    """PRED of one uninterrupted run: what every interrupted run must equal byte for byte."""
    out = tmp_path_factory.mktemp('inferred') / 'pred.jsonl'
    run = runner.run('inference.predict', infer_argv(tiny_model_dir, split, out))
    assert run.code == 0, run.err[-3000:]
    return out
