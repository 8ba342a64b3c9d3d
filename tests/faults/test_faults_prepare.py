"""`make prepare` under attack: broken rows, images and files (one line, exit 2, nothing written), odd images, paths
chosen by the data, SIGKILL at every phase, two runs at once, a changed source, a full disk."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from common.io import write_jsonl
from data_prep import prepare
from data_prep.schema import ARROW_SCHEMA
from tests.conftest import REPO
from tests.faults.conftest import ODD, PREPARE_ARGS
from tests.faults.harness import Trigger, debris, files_mode, fill, one_line_error, run_main, small_disk, tree

TRAIN = 'data/train-00000-of-00001.parquet'
TEST = 'data/test-00000-of-00001.parquet'


def rows(copy: Path, part: str = TRAIN) -> list[dict]:
    return pq.read_table(copy / part).to_pylist()


def write(copy: Path, part: str, table_rows: list[dict], **types) -> None:
    """Write rows with the official types, except the columns given as name=pyarrow type."""
    schema = pa.schema([(f.name, types.get(f.name, f.type)) for f in ARROW_SCHEMA])
    pq.write_table(pa.Table.from_pylist(table_rows, schema=schema), copy / part)


def edit(copy: Path, part: str, row: int, **values) -> None:
    table_rows = rows(copy, part)
    table_rows[row - 1].update(values)
    write(copy, part, table_rows)


def first_image(copy: Path) -> Path:
    return copy / rows(copy)[0]['image']


def prepare_fails(copy: Path, out: Path, capsys, *parts: str, extra=()) -> str:
    """prepare must stop with one `error:` line naming `parts`, exit 2, and write nothing."""
    code, err = run_main(prepare.main, ['--dataset', copy, '--out', out, '--aug-k', '1', '--workers', '1', *extra],
                         capsys)
    assert code == 2, err[-2000:]
    line = one_line_error(err, *parts)
    assert not out.exists() or not any(p.is_file() for p in out.rglob('*')), sorted(out.rglob('*'))
    return line


def prepare_ok(copy: Path, out: Path, capsys, extra=()) -> dict:
    code, err = run_main(prepare.main, ['--dataset', copy, '--out', out, '--aug-k', '1', '--workers', '1', *extra],
                         capsys)
    assert code == 0, err[-3000:]
    return json.loads((out / 'manifest.json').read_text())


def meta(out: Path, name: str) -> list[dict]:   # lines end at \n only: U+2028 inside a line is text
    return [json.loads(line) for line in (out / 'swift' / f'{name}.meta.jsonl').read_text().split('\n') if line]


# ---- images -----------------------------------------------------------------------------------------------------

@pytest.mark.case('P1')
def test_truncated_jpeg(copy, tmp_path, capsys):
    image = first_image(copy)
    image.write_bytes(image.read_bytes()[:len(image.read_bytes()) // 2])
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy}[train]:1: image: unreadable image', str(image))


@pytest.mark.case('P2')
def test_corrupt_jpeg(copy, tmp_path, capsys):
    image = copy / 'images' / 'cl98pm13dtesb8sv22ock5ugw.jpg'
    data = bytearray(image.read_bytes())
    data[600:4000] = b'\0' * 3400
    image.write_bytes(bytes(data))
    prepare_fails(copy, tmp_path / 'out', capsys, ': image: unreadable image (OSError')


@pytest.mark.case('P3')
def test_jpeg_magic_and_junk(copy, tmp_path, capsys):
    first_image(copy).write_bytes(b'\xff\xd8\xff' + b'not a jpeg at all' * 20)
    prepare_fails(copy, tmp_path / 'out', capsys, '[train]:1: image: unreadable image (UnidentifiedImageError')


@pytest.mark.case('P4')
def test_image_missing(copy, tmp_path, capsys):
    img_id = rows(copy)[0]['img_id']
    first_image(copy).unlink()
    prepare_fails(copy, tmp_path / 'out', capsys, f'[train]:1: image: no image for img_id {img_id}')


@pytest.mark.case('P5')
def test_image_missing_lenient_skips_and_counts(copy, tmp_path, capsys):
    img_id = rows(copy)[0]['img_id']
    first_image(copy).unlink()
    manifest = prepare_ok(copy, tmp_path / 'out', capsys, ['--lenient'])
    skipped = manifest['counts']['skipped']
    assert skipped.get('train: bad image') == sum(r['img_id'] == img_id for r in rows(copy)), skipped
    assert not (tmp_path / 'out' / 'images' / 'original' / f'{img_id}.jpg').exists()


@pytest.mark.case('P22', 'P23', 'P24', 'P27', 'X7')
def test_odd_images_in_the_reference_run(prepared, fault_copy):
    out, _ = prepared
    for img_id, kind in ODD.items():
        src, original = fault_copy / 'images' / f'{img_id}.jpg', out / 'images' / 'original' / f'{img_id}.jpg'
        with Image.open(original) as im:
            assert im.format == 'JPEG'
            if kind in ('CMYK', 'L', '1x1'):   # JPEG sources are kept byte for byte
                assert original.read_bytes() == src.read_bytes() and im.mode == ('RGB' if kind == '1x1' else kind)
            else:                             # PNG bytes (RGB or RGBA) become an RGB JPEG
                assert im.mode == 'RGB'
        for k in range(2):
            with Image.open(out / 'images' / 'augmented' / f'{img_id}_aug{k}.jpg') as im:
                assert im.mode == 'RGB' and im.size == Image.open(src).size
    assert files_mode(out) == {0o644}   # umask 0022: readable by the other users of a shared data folder


@pytest.mark.case('P25')
def test_decompression_bomb_is_refused_from_its_header(copy, tmp_path, capsys):
    image = first_image(copy)
    Image.new('RGB', (64, 48), (200, 100, 90)).save(image, format='JPEG')
    data = bytearray(image.read_bytes())
    sof = data.index(b'\xff\xc0')   # baseline SOF0: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 9] = (20000).to_bytes(2, 'big') * 2
    image.write_bytes(bytes(data))
    prepare_fails(copy, tmp_path / 'out', capsys, 'unreadable image (DecompressionBombError')


@pytest.mark.case('P26')
def test_large_image_below_the_hard_limit(copy, tmp_path, capsys):
    """~92 million pixels: PIL warns, prepare works (the hard limit is twice that)."""
    table_rows = [r for r in rows(copy) if r['img_id'] == rows(copy)[0]['img_id']][:1]
    write(copy, TRAIN, table_rows)
    (copy / TEST).unlink()
    Image.new('L', (9600, 9600), 128).save(copy / table_rows[0]['image'], format='JPEG', quality=50)
    out = tmp_path / 'out'
    prepare_ok(copy, out, capsys)
    with Image.open(out / 'images' / 'augmented' / f'{table_rows[0]["img_id"]}_aug0.jpg') as im:
        assert im.size == (9600, 9600)


# ---- rows and columns -------------------------------------------------------------------------------------------

@pytest.mark.case('P6')
def test_missing_column(copy, tmp_path, capsys):
    table = pq.read_table(copy / TRAIN).drop_columns(['answer'])
    pq.write_table(table, copy / TRAIN)
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy / TRAIN}: answer: missing required column')


def _complexity_as_strings(copy: Path, part: str) -> None:
    write(copy, part, [{**r, 'complexity': str(r['complexity'])} for r in rows(copy, part)], complexity=pa.string())


@pytest.mark.case('P7')
def test_complexity_strings_in_train(copy, tmp_path, capsys):
    _complexity_as_strings(copy, TRAIN)
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy / TRAIN}:1: complexity: complexity must be 1, 2 or 3')


@pytest.mark.case('P8')
def test_complexity_strings_one_split(copy, tmp_path, capsys):
    _complexity_as_strings(copy, TRAIN)
    (copy / TEST).unlink()
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy / TRAIN}:1: complexity: complexity must be 1, 2 or 3')


@pytest.mark.case('P9')
def test_complexity_strings_in_test_are_blamed_on_test(copy, tmp_path, capsys):
    """Cause 1: one load of both files cast train to test's schema and blamed train row 1."""
    _complexity_as_strings(copy, TEST)
    prepare_fails(copy, tmp_path / 'out', capsys, f"{copy / TEST}:1: complexity: complexity must be 1, 2 or 3, got '")


@pytest.mark.case('P10')
def test_complexity_word(copy, tmp_path, capsys):
    """Cause 2: 'high' among the strings of train's column failed inside `datasets` (30-frame traceback) while
    casting to test's int64; the column itself is the problem, and its file is named."""
    table_rows = [{**r, 'complexity': str(r['complexity'])} for r in rows(copy)]
    table_rows[4]['complexity'] = 'high'
    write(copy, TRAIN, table_rows, complexity=pa.string())
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy / TRAIN}:1: complexity: complexity must be 1, 2 or 3')


@pytest.mark.case('P11')
def test_complexity_fraction(copy, tmp_path, capsys):
    """Cause 2: 1.5 in a float column could not be cast to test's int64 (ArrowInvalid traceback)."""
    values = [float(r['complexity']) for r in rows(copy)]
    values[3] = 1.5
    table = pq.read_table(copy / TRAIN)
    table = table.set_column(table.schema.get_field_index('complexity'), 'complexity', pa.array(values))
    pq.write_table(table, copy / TRAIN)
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy / TRAIN}:4: complexity: complexity must be 1, 2 or 3, '
                                                  'got 1.5')


@pytest.mark.case('P12')
def test_question_class_as_one_string(copy, tmp_path, capsys):
    """Cause 2: a string column where a list is expected failed inside `datasets` (TypeError traceback)."""
    write(copy, TRAIN, [{**r, 'question_class': ','.join(r['question_class'])} for r in rows(copy)],
          question_class=pa.string())
    prepare_fails(copy, tmp_path / 'out', capsys, f'{copy / TRAIN}:1: question_class: question_class must be a '
                                                  'non-empty list of strings')


@pytest.mark.case('P13')
def test_empty_answer(copy, tmp_path, capsys):
    edit(copy, TRAIN, 4, answer='')
    prepare_fails(copy, tmp_path / 'out', capsys, '[train]:4: answer: empty answer')


@pytest.mark.case('P14')
def test_blank_or_null_answer(copy, tmp_path, capsys):
    for value in ('   ', None):
        edit(copy, TRAIN, 4, answer=value)
        prepare_fails(copy, tmp_path / 'out', capsys, '[train]:4: answer: empty answer')


@pytest.mark.case('P15')
def test_empty_question(copy, tmp_path, capsys):
    edit(copy, TRAIN, 6, question='')
    prepare_fails(copy, tmp_path / 'out', capsys, '[train]:6: question: empty question')


def _duplicate_row_3(copy):
    table_rows = rows(copy)
    write(copy, TRAIN, table_rows + [table_rows[2]])
    return len(table_rows) + 1


@pytest.mark.case('P16')
def test_duplicate_pair_kept_and_counted(copy, tmp_path, capsys):
    _duplicate_row_3(copy)
    manifest = prepare_ok(copy, tmp_path / 'out', capsys)
    assert manifest['counts']['skipped'] == {'train: duplicate (img_id, question) kept': 1}


@pytest.mark.case('P17')
def test_duplicate_pair_is_an_error_when_asked(copy, tmp_path, capsys):
    n = _duplicate_row_3(copy)
    prepare_fails(copy, tmp_path / 'out', capsys, f'[train]:{n}: question: duplicate (img_id, question) of row 3',
                  extra=['--duplicates', 'error'])


def _invalid_utf8_question(copy: Path, row: int) -> None:
    table_rows = rows(copy)
    texts = [r['question'].encode() for r in table_rows]
    texts[row - 1] = b'What is \xff\xfe this \xe9?'
    offsets = [0]
    for t in texts:
        offsets.append(offsets[-1] + len(t))
    column = pa.Array.from_buffers(pa.string(), len(texts), [None, pa.py_buffer(pa.array(offsets, pa.int32())
                                                                                   .buffers()[1]),
                                                          pa.py_buffer(b''.join(texts))])
    table = pa.Table.from_pylist(table_rows, schema=ARROW_SCHEMA)
    pq.write_table(table.set_column(ARROW_SCHEMA.get_field_index('question'), 'question', column), copy / TRAIN)


@pytest.mark.case('P18')
def test_invalid_utf8_in_a_text_column(copy, tmp_path, capsys):
    """Cause 3: the bytes reached Python's decoder in prepare (UnicodeDecodeError traceback)."""
    _invalid_utf8_question(copy, 8)
    prepare_fails(copy, tmp_path / 'out', capsys, '[train]:8: question: text is not valid UTF-8')
    manifest = prepare_ok(copy, tmp_path / 'lenient', capsys, ['--lenient'])
    assert manifest['counts']['skipped'] == {'train: bad question': 1}
    assert sum(manifest['counts']['rows'][s] for s in ('train', 'val')) == pq.read_metadata(copy / TRAIN).num_rows - 1


@pytest.mark.case('P19')
def test_control_and_bidi_characters_are_kept(copy, tmp_path, capsys):
    question, answer = 'Is there a polyp\0 here\u2028now \u202eevil?', 'Yes,\r\none.'
    edit(copy, TRAIN, 2, question=question, answer=answer)
    out = tmp_path / 'out'
    prepare_ok(copy, out, capsys)
    found = [m for name in ('train-original', 'val-original') for m in meta(out, name) if m['question'] == question]
    assert len(found) == 1 and found[0]['reference'] == answer
    lines = (out / 'swift' / f'{found[0]["split"]}-original.jsonl').read_text(encoding='utf-8').split('\n')[:-1]
    assert len(lines) == len(meta(out, f'{found[0]["split"]}-original'))


@pytest.mark.case('P20')
def test_huge_text(copy, tmp_path, capsys):
    """10 MB question, 500k-word answer: output right, and the answer-length plot no longer has a bin per word."""
    question, answer = 'Is there a polyp? ' + 'x' * (10 << 20), ' '.join(['word'] * 500_000)
    edit(copy, TRAIN, 1, question=question, answer=answer)
    out = tmp_path / 'out'
    prepare_ok(copy, out, capsys)
    found = [m for name in ('train-original', 'val-original') for m in meta(out, name) if m['question'] == question]
    assert len(found) == 1 and found[0]['reference'] == answer


@pytest.mark.case('P21')
def test_dataset_that_does_not_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for dataset, part in ((tmp_path / 'does' / 'not' / 'exist', 'no such file or folder'),
                          ('relative/missing/copy', 'no such file or folder'),
                          ('someorg/nosuchdataset', 'loading it from the hub failed (HF_HUB_OFFLINE=1 is set)')):
        code, err = run_main(prepare.main, ['--dataset', dataset, '--out', tmp_path / 'out'], capsys)
        assert code == 2
        one_line_error(err, str(dataset), part)
        assert not (tmp_path / 'out').exists()


# ---- paths chosen by the data -------------------------------------------------------------------------------------

@pytest.mark.case('X1')
def test_image_paths_outside_the_copy_are_not_read(copy, tmp_path, capsys):
    """Cause 7: the rows could make prepare copy any local image into OUT."""
    secret = tmp_path / 'outside' / 'secret.jpg'
    secret.parent.mkdir()
    Image.new('RGB', (32, 32), (1, 2, 3)).save(secret)
    img_id = rows(copy)[0]['img_id']
    for value in (str(secret), '../outside/secret.jpg', 'images/../../outside/secret.jpg'):
        table_rows = rows(copy)
        for r in table_rows:
            if r['img_id'] == img_id:
                r['image'] = value
        write(copy, TRAIN, table_rows)
        prepare_fails(copy, tmp_path / 'out', capsys, f'[train]:1: image: image path {value!r} leads outside the '
                                                      'dataset folder')


@pytest.mark.case('X2')
def test_img_ids_that_are_paths_are_refused(copy, tmp_path, capsys):
    """Cause 8: img_id became a file name, so ../../../x or an absolute id wrote files outside OUT."""
    out = tmp_path / 'deep' / 'er' / 'out'
    for bad in ('../../../WRITTEN_OUTSIDE_OUT', str(tmp_path / 'WRITTEN_BY_ABS_IMG_ID'), '.hidden', 'a/b'):
        edit(copy, TRAIN, 2, img_id=bad)
        prepare_fails(copy, out, capsys, '[train]:2: img_id: img_id must be a plain file name')
    assert not list(tmp_path.rglob('WRITTEN_*'))


# ---- crashes, concurrency, changed sources, full disks -------------------------------------------------------------

@contextlib.contextmanager
def reference_aside(out: Path):
    """Run into the reference's own OUT (the JSONL and manifest hold OUT's path): the reference is moved aside for
    the block and put back after it."""
    aside = out.with_name(out.name + '-aside')
    os.rename(out, aside)
    try:
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)
        os.rename(aside, out)


KILL_POINTS = [   # each rerun is killed at the next point; the last rerun finishes
    Trigger('os.rename', '*/images/original/*.jpg', 2),            # an original written, the next one complete
    Trigger('os.rename', '*/images/original/.sources.json', 1),    # all originals written, their record not yet
    Trigger('open', '*/images/augmented/.*_aug*.tmp', 2),           # a variant's temp file just created (0 bytes)
    Trigger('os.rename', '*/swift/*.jsonl', 5),                    # 4 of the 20 JSONL files written
    Trigger('os.rename', '*/stats/*', 1),                          # JSONL done, the plots being saved
    Trigger('os.rename', '*/manifest.json', 1),                    # everything but the manifest
]


@pytest.mark.case('P28')
def test_a_killed_writers_temp_file_is_swept_by_the_next_writer(tmp_path):
    """Cause 4: atomic_path removed its temp file only when Python saw an exception; after SIGKILL it stayed forever."""
    target = tmp_path / 'out' / 'train-original.jsonl'
    code = ('import os, signal, sys; from common.io import atomic_open\n'
            f'cm = atomic_open({str(target)!r}); f = cm.__enter__(); f.write("half a line"); f.flush()\n'
            'os.kill(os.getpid(), signal.SIGKILL)')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO)
    assert proc.returncode == -9 and len(list(target.parent.iterdir())) == 1   # the half-written temp file
    write_jsonl(target, [{'a': 1}])
    assert [p.name for p in target.parent.iterdir()] == [target.name]


@pytest.mark.case('P28')
def test_sigkill_at_every_phase_then_rerun_is_byte_identical(runner, prepared, fault_copy):
    out, reference = prepared
    argv = ['--dataset', fault_copy, '--out', out, *PREPARE_ARGS]
    with reference_aside(out):
        for point in KILL_POINTS:
            runner.killed_at('data_prep.prepare', argv, point)
        assert debris(out)   # the kills did leave temp files: the final rerun must sweep them
        run = runner.run('data_prep.prepare', argv)
        assert run.code == 0, run.err[-3000:]
        assert tree(out) == reference
        assert debris(out) == []


@pytest.mark.case('P29')
def test_second_run_same_options_is_refused_while_one_runs(runner, prepared, fault_copy, capsys):
    out, reference = prepared
    argv = ['--dataset', fault_copy, '--out', out, *PREPARE_ARGS]
    with reference_aside(out):
        with runner.paused_at('data_prep.prepare', argv, Trigger('os.rename', '*/images/original/*.jpg', 1)) as first:
            code, err = run_main(prepare.main, argv, capsys)
            assert code == 2
            one_line_error(err, f'error: {out}: another data_prep.prepare run is writing here now')
        assert first.code == 0, first.err[-2000:]
        assert tree(out) == reference and debris(out) == []


@pytest.mark.case('P30', 'P31')
def test_second_run_other_options_is_refused_while_one_runs(runner, prepared, fault_copy, capsys):
    out, reference = prepared
    argv = ['--dataset', fault_copy, '--out', out, *PREPARE_ARGS]
    with reference_aside(out):
        with runner.paused_at('data_prep.prepare', argv, Trigger('open', '*/images/augmented/.*_aug*.tmp', 1)) as first:
            for other in (['--seed', '7'], ['--val-fraction', '0.3']):
                code, err = run_main(prepare.main, [*argv, *other], capsys)
                assert code == 2
                one_line_error(err, 'another data_prep.prepare run is writing here now')
        assert first.code == 0, first.err[-2000:]
        assert tree(out) == reference


@pytest.mark.case('P32')
def test_second_run_between_two_jsonl_writes_is_refused(runner, prepared, fault_copy, capsys):
    """Cause 5: without a lock, B's files landed between A's and OUT mixed both runs' prompts."""
    out, reference = prepared
    argv = ['--dataset', fault_copy, '--out', out, *PREPARE_ARGS]
    with reference_aside(out):
        with runner.paused_at('data_prep.prepare', argv, Trigger('os.rename', '*/swift/val-augmented.meta.jsonl', 1)) \
                as first:
            code, err = run_main(prepare.main, [*argv, '--val-fraction', '0.3', '--system-prompt', 'B'], capsys)
            assert code == 2
            one_line_error(err, 'another data_prep.prepare run is writing here now')
        assert first.code == 0
        assert tree(out) == reference


@pytest.mark.case('P33')
def test_changed_source_image_is_redone_with_its_variants(copy, tmp_path, capsys):
    """Cause 6: a rerun kept the old original and variants of a changed source."""
    out, fresh = tmp_path / 'out', tmp_path / 'fresh'
    argv = ['--aug-k', '2', '--workers', '1']
    code, err = run_main(prepare.main, ['--dataset', copy, '--out', out, *argv], capsys)
    assert code == 0, err
    image = copy / 'images' / 'cl98pm13dtesb8sv22ock5ugw.jpg'
    with Image.open(image) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image, format='JPEG', quality=90)
    code, err = run_main(prepare.main, ['--dataset', copy, '--out', out, *argv], capsys)
    assert code == 0, err
    code, err = run_main(prepare.main, ['--dataset', copy, '--out', fresh, *argv], capsys)
    assert code == 0, err
    images = lambda root: {k: v for k, v in tree(root).items() if k.startswith('images/')}  # noqa: E731
    assert images(out) == images(fresh)
    assert (out / 'images' / 'original' / image.name).read_bytes() == image.read_bytes()


@pytest.mark.case('B-prepare-disk')
def test_full_disk_is_one_line_and_keeps_the_previous_output(fault_copy, tmp_path, capsys):
    with small_disk(tmp_path / 'disk', 16) as disk:
        out = disk / 'prepared'
        argv = ['--dataset', fault_copy, '--out', out, '--aug-k', '2', '--workers', '1']
        code, err = run_main(prepare.main, argv, capsys)
        assert code == 0, err
        before = tree(out)
        fill(disk)
        code, err = run_main(prepare.main, [*argv, '--system-prompt', 'Answer briefly.'], capsys)
        assert code == 2
        one_line_error(err, 'No space left on device')
        assert tree(out) == before and debris(out) == []
