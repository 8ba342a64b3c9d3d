"""`make infer` (transformers backend, the tiny model) under attack: bad inputs and models (one line, exit 2, before any
model loads), SIGKILL at several points and with two workers, cut partial lines, a second run, a full disk."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inference import predict, shards
from tests.faults.conftest import ODD, infer_argv
from tests.faults.harness import Trigger, debris, files_mode, fill, one_line_error, run_main, small_disk



def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding='utf-8').split('\n') if line]


def inputs_copy(split: Path, folder: Path) -> Path:
    """The prepared split and its sidecar, copied to break (image paths still point into the prepared data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in (split, predict.sidecar_path(split)):
        shutil.copy(src, folder / src.name)
    return folder / split.name


def infer_fails(model, data, out, capsys, *parts, extra=()) -> str:
    code, err = run_main(predict.main, infer_argv(model, data, out, *extra), capsys)
    assert code == 2, err[-3000:]
    line = one_line_error(err, *parts)
    assert not Path(out).exists() and not shards.partial_paths(out)
    return line


def partial_rows(reference: Path, argv: list, n: int) -> list[str]:
    """The first n rows of the reference as a killed run of `argv` leaves them in PRED.partial."""
    rid = predict.run_id(predict.parse_args([str(a) for a in argv]))
    return [json.dumps({**row, shards.LINE: i, shards.RUN: rid}, ensure_ascii=False)
            for i, row in enumerate(lines(reference)[:n])]


# ---- the reference run ------------------------------------------------------------------------------------------

@pytest.mark.case('I17', 'X7')
def test_odd_images_are_answered(inferred, split):
    rows = lines(inferred)
    assert len(rows) == len(lines(split)) == 7
    assert {r['img_id'] for r in rows} == {'cl0euj1rqu63v0j2ahfe1040o', 'clumi9b1206tnwilyqmjkx9to',
                                          'clin9mrdgzszdoynuopev4kpu'} <= set(ODD)   # CMYK, greyscale, 1x1
    assert all(isinstance(r['prediction'], str) for r in rows)
    assert files_mode(inferred.parent) == {0o644}


# ---- crashes and a second run -------------------------------------------------------------------------------------

@pytest.mark.case('I1', 'I2', 'B-infer-kill', 'B-infer-conc')
def test_sigkill_at_two_points_then_rerun_is_byte_identical(runner, tiny_model_dir, split, inferred, tmp_path,
                                                            capsys):
    out = tmp_path / 'pred.jsonl'
    argv = infer_argv(tiny_model_dir, split, out)
    partial = shards.worker_partial(out, None)
    # the stream keeps the partial file open and appends each finished batch (no audit event per write): kill as soon
    # as the first batch is on disk, while later ones are still being answered
    runner.killed_when('inference.predict', argv, lambda: partial.is_file() and len(lines(partial)) >= 2)
    assert 2 <= len(lines(partial)) < 7
    runner.killed_at('inference.predict', argv, Trigger('os.rename', str(out), 1))  # resumed to the end, PRED not
    assert not out.exists() and len(lines(partial)) == 7 and debris(tmp_path)      # renamed yet
    # the last rerun only merges; a second run on the same PRED meanwhile is refused at once
    with runner.paused_at('inference.predict', argv, Trigger('os.rename', str(out), 1)) as last:
        code, err = run_main(predict.main, argv, capsys)
        assert code == 2
        one_line_error(err, f'error: {out}: another inference.predict run is writing here now')
    assert last.code == 0, last.err[-3000:]
    assert '7 rows: 7 already answered, 0 to do' in last.err
    assert out.read_bytes() == inferred.read_bytes()
    assert debris(tmp_path) == []


@pytest.mark.case('I3')
def test_sigkill_with_two_workers_then_rerun_is_byte_identical(runner, tiny_model_dir, split, inferred, tmp_path):
    out = tmp_path / 'pred.jsonl'
    argv = infer_argv(tiny_model_dir, split, out, '--workers', '2')
    per_worker = [shards.worker_partial(out, rank) for rank in (0, 1)]
    runner.killed_when('inference.predict', argv, lambda: all(p.is_file() and p.stat().st_size for p in per_worker))
    run = runner.run('inference.predict', infer_argv(tiny_model_dir, split, out))
    assert run.code == 0, run.err[-3000:]
    assert out.read_bytes() == inferred.read_bytes() and debris(tmp_path) == []


@pytest.mark.case('I4')
def test_partial_of_another_run_is_refused(tiny_model_dir, split, inferred, tmp_path, capsys):
    out = tmp_path / 'pred.jsonl'
    shards.worker_partial(out, None).write_text('\n'.join(partial_rows(inferred, infer_argv(tiny_model_dir, split,
                                                                                            out), 3)) + '\n')
    code, err = run_main(predict.main, infer_argv(tiny_model_dir, split, out, '--max-new-tokens', '3'), capsys)
    assert code == 2
    one_line_error(err, 'pred.jsonl.partial: written by a different run')


@pytest.mark.case('I5')
def test_last_partial_line_cut_inside_a_utf8_character(tiny_model_dir, split, inferred, tmp_path, capsys):
    """Cause 10: a partial whose last line ends inside a multi-byte character made every resume die with
    UnicodeDecodeError. Here every row is finished, then comes the cut line of a row being appended."""
    out = tmp_path / 'pred.jsonl'
    argv = infer_argv(tiny_model_dir, split, out)
    finished = partial_rows(inferred, argv, 7)
    cut = finished[3].replace('"prediction": "', '"prediction": "é', 1).encode()
    cut = cut[:cut.index('é'.encode()) + 1]   # the first byte of é only
    shards.worker_partial(out, None).write_bytes(('\n'.join(finished) + '\n').encode() + cut)
    code, err = run_main(predict.main, argv, capsys)
    assert code == 0, err[-3000:]
    assert out.read_bytes() == inferred.read_bytes() and debris(tmp_path) == []


@pytest.mark.case('B-infer-disk')
def test_full_disk_is_one_line_and_keeps_the_previous_predictions(tiny_model_dir, split, inferred, tmp_path, capsys):
    """A run with other options was killed after some rows; its resume finds the disk full (the partial file is
    rewritten first): one line, the previous PRED and the partial rows kept."""
    with small_disk(tmp_path / 'disk', 4) as disk:
        out = disk / 'pred.jsonl'
        shutil.copy(inferred, out)
        argv = infer_argv(tiny_model_dir, split, out, '--max-new-tokens', '3')
        partial = shards.worker_partial(out, None)
        partial.write_text('\n'.join(partial_rows(inferred, argv, 3)) + '\n')
        before = partial.read_bytes()
        fill(disk)
        code, err = run_main(predict.main, argv, capsys)
        assert code == 2
        one_line_error(err, f'error: {partial}: No space left on device')
        assert out.read_bytes() == inferred.read_bytes() and partial.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == sorted(['filler.bin', 'pred.jsonl', partial.name])


# ---- bad inputs ----------------------------------------------------------------------------------------------------

def _rewrite(path: Path, fn) -> None:
    text = path.read_text(encoding='utf-8').split('\n')[:-1]
    path.write_text(''.join(line + '\n' for line in fn(text)), encoding='utf-8')


@pytest.mark.case('I6')
def test_malformed_line(tiny_model_dir, split, tmp_path, capsys):
    data = inputs_copy(split, tmp_path / 'in')
    _rewrite(data, lambda t: [t[0], t[1][:40], *t[2:]])
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, f'{data}:2: not valid JSON')


@pytest.mark.case('I7')
def test_non_json_line(tiny_model_dir, split, tmp_path, capsys):
    data = inputs_copy(split, tmp_path / 'in')
    _rewrite(data, lambda t: ['this is not json', *t[1:]])
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, f'{data}:1: not valid JSON')


@pytest.mark.case('I8')
def test_image_that_no_longer_exists(tiny_model_dir, split, tmp_path, capsys):
    data = inputs_copy(split, tmp_path / 'in')
    image = tmp_path / 'gone.jpg'
    _rewrite(data, lambda t: [*t[:2], json.dumps({**json.loads(t[2]), 'images': [str(image)]}), *t[3:]])
    _rewrite(predict.sidecar_path(data), lambda t: [*t[:2], json.dumps({**json.loads(t[2]), 'image': str(image)}),
                                                    *t[3:]])
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, f'{data}:3: images: image not found: {image}')


@pytest.mark.case('I9')
def test_truncated_image_is_named_before_the_model_loads(tiny_model_dir, split, tmp_path, capsys):
    """Cause 11: only os.path.isfile was checked; the decoder failed inside ms-swift after the model loaded."""
    data = inputs_copy(split, tmp_path / 'in')
    first = json.loads(split.read_text().split('\n')[2])['images'][0]
    image = tmp_path / 'cut.jpg'
    image.write_bytes(Path(first).read_bytes()[:-200])
    _rewrite(data, lambda t: [*t[:2], json.dumps({**json.loads(t[2]), 'images': [str(image)]}), *t[3:]])
    _rewrite(predict.sidecar_path(data), lambda t: [*t[:2], json.dumps({**json.loads(t[2]), 'image': str(image)}),
                                                    *t[3:]])
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, f'{data}:3: images: unreadable image (OSError',
                str(image))


@pytest.mark.case('I10')
def test_empty_input(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / 'empty.jsonl'
    data.write_text('')
    predict.sidecar_path(data).write_text('')
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, f'{data}: no input lines')


@pytest.mark.case('I11')
def test_sidecar_missing(tiny_model_dir, split, tmp_path, capsys):
    data = inputs_copy(split, tmp_path / 'in')
    predict.sidecar_path(data).unlink()
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, 'sidecar not found')


@pytest.mark.case('I12')
def test_sidecar_one_line_short(tiny_model_dir, split, tmp_path, capsys):
    data = inputs_copy(split, tmp_path / 'in')
    _rewrite(predict.sidecar_path(data), lambda t: t[:-1])
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, '6 lines, but', 'must match line by line')


@pytest.mark.case('I13')
def test_model_folder_missing(split, tmp_path, capsys):
    model = tmp_path / 'nope' / 'merged'
    infer_fails(model, split, tmp_path / 'p.jsonl', capsys, f'{model}: --model: model folder not found')


@pytest.mark.case('I14')
def test_model_folder_without_weights(tiny_model_dir, split, tmp_path, capsys):
    """Cause 12: configs only gave a transformers traceback after the model started loading."""
    model = tmp_path / 'noweights'
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns('*.safetensors'))
    infer_fails(model, split, tmp_path / 'p.jsonl', capsys, f'{model}: --model: no weight files')


@pytest.mark.case('I15')
def test_mistyped_hub_id(split, tmp_path, capsys):
    """Cause 12: ms-swift looked the id up on ModelScope (39-frame traceback offline); hub ids now come from the
    Hugging Face hub by default (USE_HF=1), whose cache is checked before any model loads."""
    infer_fails('nosuchuser/nosuchmodel', split, tmp_path / 'p.jsonl', capsys,
                'nosuchuser/nosuchmodel: --model: no such folder, and not in the local cache of the Hugging Face hub')


@pytest.mark.case('I16')
def test_split_that_does_not_exist(tiny_model_dir, prepared, tmp_path, capsys):
    data = prepared[0] / 'swift' / 'nosuch-split.jsonl'
    infer_fails(tiny_model_dir, data, tmp_path / 'p.jsonl', capsys, f'{data}: file not found')
