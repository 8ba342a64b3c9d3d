"""data_prep.prepare end to end: layout, JSONL/sidecar alignment, byte-identical reruns, and every bad input."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep import prepare
from data_prep.to_swift import swift_line, variant_index, write_split
from tests.conftest import run_module

SPLIT_NAMES = ('train', 'val', 'test', 'task1_public', 'task2_val')
SETTINGS = ('original', 'augmented')


def _tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob('*')) if p.is_file()}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]


@pytest.fixture(scope='module')
def tiny_copy_template(shared_dir, tmp_path_factory) -> Path:
    """A local copy in the design-doc layout: 12 real x1 img_ids, their real rows, generated stand-in images."""
    df = pd.read_parquet(shared_dir / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet')
    ids = sorted(df.img_id.unique())[:12]
    df = df[df.img_id.isin(ids)].drop_duplicates(['img_id', 'question']).reset_index(drop=True)
    df['image'] = 'images/' + df.img_id + '.jpg'
    root = tmp_path_factory.mktemp('tiny_copy') / 'copy'
    (root / 'data').mkdir(parents=True)
    (root / 'images').mkdir()
    rs = np.random.RandomState(0)
    is_test = rs.rand(len(df)) < 0.25
    df[~is_test].to_parquet(root / 'data' / 'train-00000-of-00001.parquet', index=False)
    df[is_test].to_parquet(root / 'data' / 'test-00000-of-00001.parquet', index=False)
    for i in ids:
        Image.fromarray((rs.rand(40, 56, 3) * 255).astype('uint8')).save(root / 'images' / f'{i}.jpg')
    return root


@pytest.fixture
def tiny_copy(tiny_copy_template, tmp_path) -> Path:
    root = tmp_path / 'copy'
    shutil.copytree(tiny_copy_template, root)
    return root


def _edit_train(root: Path, fn) -> None:
    path = root / 'data' / 'train-00000-of-00001.parquet'
    df = pd.read_parquet(path)
    fn(df).to_parquet(path, index=False)


def test_full_prepare_on_synthetic_layout_alignment_and_rerun(synthetic_dataset, tmp_path):
    out = tmp_path / 'prepared'
    args = ['--dataset', synthetic_dataset, '--out', out, '--aug-k', '2', '--workers', '2',
            '--system-prompt', 'Answer briefly.', '--prompt-template', 'Q: {question}']
    run_module('data_prep.prepare', *args)
    manifest = json.loads((out / 'manifest.json').read_text())
    for split in SPLIT_NAMES:
        for setting in SETTINGS:
            data, meta = _lines(out / 'swift' / f'{split}-{setting}.jsonl'), \
                _lines(out / 'swift' / f'{split}-{setting}.meta.jsonl')
            assert len(data) == len(meta) == manifest['counts']['rows'][split] > 0, (split, setting)
            for d, m in zip(data, meta):
                assert [x['role'] for x in d['messages']] == ['system', 'user', 'assistant']
                assert d['messages'][1]['content'] == '<image>Q: ' + m['question']
                assert d['messages'][2]['content'] == m['reference']
                assert d['images'] == [m['image']] and Path(m['image']).is_absolute() and Path(m['image']).is_file()
                assert m['split'] == split and m['setting'] == setting
                assert {'img_id', 'question', 'question_class', 'complexity', 'reference'} <= m.keys()
                if setting == 'augmented':
                    k = variant_index(m['img_id'], m['question'], 2)
                    assert Path(m['image']).name == f"{m['img_id']}_aug{k}.jpg"
                else:
                    assert Path(m['image']).name == f"{m['img_id']}.jpg"
    t1 = _lines(out / 'swift' / 'task1_public-original.meta.jsonl')
    assert sorted(m['index'] for m in t1) == list(range(len(t1)))
    t2 = _lines(out / 'swift' / 'task2_val-original.meta.jsonl')
    assert sorted(m['val_id'] for m in t2) == list(range(len(t2)))
    assert all(m['complexity'] == 1 and m['reference'] for m in t2)  # answers joined back from test
    train_ids = {m['img_id'] for m in _lines(out / 'swift' / 'train-original.meta.jsonl')}
    val_ids = {m['img_id'] for m in _lines(out / 'swift' / 'val-original.meta.jsonl')}
    assert val_ids and not train_ids & val_ids
    assert (out / 'subsets' / 'task1_public.jsonl').is_file() and (out / 'subsets' / 'task2_val.jsonl').is_file()
    assert (out / 'stats' / 'report.md').read_text().count('|') > 20
    assert (out / 'stats' / 'image_tokens.png').stat().st_size > 1000
    for rel, digest in manifest['sha256'].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest

    before = _tree_hashes(out)
    prepare.main([str(a) for a in (*args[:-4], '--workers', '1', *args[-4:])])  # in-process: same code, faster
    after = _tree_hashes(out)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # byte-identical
    images = [k for k in before if k.startswith('images/')]
    assert images and all(after[k][1] == before[k][1] for k in images)  # images were skipped, not rewritten


def test_real_rows_with_stand_in_images(shared_dir, tmp_path):
    """The 17,505 real train rows (464 images; hub-URL image column) with tiny images from --images."""
    parquet = shared_dir / 'data' / 'kvasir-vqa-x1' / 'train-subset.parquet'
    ids = sorted(set(pd.read_parquet(parquet, columns=['img_id']).img_id))
    images = tmp_path / 'images'
    images.mkdir()
    for n, i in enumerate(ids):
        Image.new('RGB', (24 + n % 5, 20), (n % 255, 80, 120)).save(images / f'{i}.jpg')
    out = tmp_path / 'out'
    prepare.main(['--dataset', str(parquet), '--images', str(images), '--out', str(out), '--aug-k', '1',
                  '--workers', '2', '--max-pixels', '640000'])
    manifest = json.loads((out / 'manifest.json').read_text())
    rows = manifest['counts']['rows']
    assert rows['train'] + rows['val'] == 17505 and rows['test'] == rows['task1_public'] == 0
    assert manifest['counts']['skipped'] == {'train: duplicate (img_id, question) kept': 39}
    assert manifest['counts']['images']['original'] == 464
    val = _lines(out / 'swift' / 'val-original.meta.jsonl')
    assert len({m['img_id'] for m in val}) == round(0.05 * 464)
    assert 'MAX_PIXELS=640000' in (out / 'stats' / 'report.md').read_text()


def test_curriculum_and_train_on_test(tiny_copy, tmp_path, capsys):
    out = tmp_path / 'out'
    prepare.main(['--dataset', str(tiny_copy), '--out', str(out), '--aug-k', '1', '--workers', '1',
                  '--curriculum', '--train-on-test'])
    assert 'contaminated' in capsys.readouterr().err
    train = _lines(out / 'swift' / 'train-original.meta.jsonl')
    levels = [m['complexity'] for m in train]
    assert levels == sorted(levels) and len(set(levels)) == 3
    test_q = {(m['img_id'], m['question']) for m in _lines(out / 'swift' / 'test-original.meta.jsonl')}
    assert test_q & {(m['img_id'], m['question']) for m in train}  # test rows were added
    val_ids = {m['img_id'] for m in _lines(out / 'swift' / 'val-original.meta.jsonl')}
    assert val_ids and not val_ids & {m['img_id'] for m in train}  # still leak-free


def test_swift_line_and_sidecar_alignment_unit(tmp_path):
    rows = [{'img_id': f'i{n % 3}', 'question': f'q{n}?', 'answer': f'a{n}', 'question_class': ['c'],
             'complexity': 1 + n % 3, 'index': n} for n in range(7)]
    data, meta = write_split(tmp_path, 'task1_public', 'augmented', rows, tmp_path / 'images', k=4)
    d, m = _lines(data), _lines(meta)
    assert [x['question'] for x in m] == [r['question'] for r in rows] and [x['index'] for x in m] == list(range(7))
    assert [x['images'] for x in d] == [[x['image']] for x in m]
    assert swift_line(rows[0], '/x.jpg') == {
        'messages': [{'role': 'user', 'content': '<image>q0?'}, {'role': 'assistant', 'content': 'a0'}],
        'images': ['/x.jpg']}
    ks = [variant_index(f'img{n}', 'same question?', 10) for n in range(200)]
    assert set(ks) == set(range(10))  # variants spread over all K


BAD_CASES = {
    'missing_column': (lambda root: _edit_train(root, lambda df: df.drop(columns=['answer'])), 'answer'),
    'empty_question': (lambda root: _edit_train(root, lambda df: df.assign(
        question=[q if i != 3 else '  ' for i, q in enumerate(df.question)])), 'question'),
    'empty_answer': (lambda root: _edit_train(root, lambda df: df.assign(
        answer=[a if i != 3 else '' for i, a in enumerate(df.answer)])), 'answer'),
    'image_missing': (lambda root: sorted((root / 'images').iterdir())[0].unlink(), 'image'),
    'image_unreadable': (lambda root: sorted((root / 'images').iterdir())[0].write_bytes(b'\xff\xd8\xffnot a jpeg'),
                         'image'),
    'duplicate': (lambda root: _edit_train(root, lambda df: pd.concat([df, df.iloc[[2]]], ignore_index=True)),
                  'question'),
}


@pytest.mark.parametrize('case', sorted(BAD_CASES))
def test_bad_input_strict_exits_2_with_one_line_and_no_output(case, tiny_copy, tmp_path, capsys):
    breaker, field = BAD_CASES[case]
    breaker(tiny_copy)
    out = tmp_path / 'out'
    extra = ['--duplicates', 'error'] if case == 'duplicate' else []
    with pytest.raises(SystemExit) as exc:
        prepare.main(['--dataset', str(tiny_copy), '--out', str(out), '--aug-k', '1', '--workers', '1', *extra])
    assert exc.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(err_lines) == 1, err_lines
    assert str(tiny_copy) in err_lines[0] and f': {field}:' in err_lines[0], err_lines[0]
    if case not in ('missing_column', 'image_unreadable', 'image_missing'):
        assert ':4: ' in err_lines[0] or case == 'duplicate'  # the 4th data row was broken
    assert not out.exists() or not any(p.is_file() for p in out.rglob('*'))


@pytest.mark.parametrize('case', ['empty_question', 'image_unreadable', 'image_missing'])
def test_bad_input_lenient_skips_and_counts(case, tiny_copy, tmp_path):
    BAD_CASES[case][0](tiny_copy)
    out = tmp_path / 'out'
    prepare.main(['--dataset', str(tiny_copy), '--out', str(out), '--aug-k', '1', '--workers', '1', '--lenient'])
    skipped = json.loads((out / 'manifest.json').read_text())['counts']['skipped']
    assert sum(skipped.values()) > 0, skipped
    assert 'skipped' in (out / 'stats' / 'report.md').read_text()


def test_duplicates_drop_policy(tiny_copy, tmp_path):
    BAD_CASES['duplicate'][0](tiny_copy)
    out = tmp_path / 'out'
    prepare.main(['--dataset', str(tiny_copy), '--out', str(out), '--aug-k', '1', '--workers', '1',
                  '--duplicates', 'drop'])
    keys = [(m['img_id'], m['question']) for split in ('train', 'val')
            for m in _lines(out / 'swift' / f'{split}-original.meta.jsonl')]
    assert len(keys) == len(set(keys))


def test_cli_exit_code_is_2(tiny_copy, tmp_path):
    BAD_CASES['empty_answer'][0](tiny_copy)
    proc = run_module('data_prep.prepare', '--dataset', tiny_copy, '--out', tmp_path / 'o', check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith('error: ')


def test_image_token_count_matches_qwen_vl_utils():
    from qwen_vl_utils.vision_process import smart_resize as reference

    from data_prep.stats import image_tokens, smart_resize
    rs = np.random.RandomState(0)
    for _ in range(3000):
        h, w = (int(x) for x in rs.randint(28, 3000, size=2))
        if max(h, w) / min(h, w) > 20:
            continue
        max_pixels = int(rs.choice([3136 * 4, 200704, 640000, 1003520, 12845056]))
        expected = reference(h, w, 28, 3136, max_pixels)
        if 0 in expected:  # qwen_vl_utils floors a thin side to 0 at tiny budgets; we keep one 28-pixel row
            assert smart_resize(h, w, max_pixels) == tuple(v or 28 for v in expected)
            continue
        assert smart_resize(h, w, max_pixels) == expected, (h, w, max_pixels)
    assert image_tokens(600, 500, 1003520) == (504 // 28) * (588 // 28)  # a typical Kvasir frame: 378 tokens
    assert image_tokens(1920, 1080, 640000) <= 640000 // 784
