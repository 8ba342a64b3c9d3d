"""The Subtask 2 validator under attack (V1-V50, X3): every mutation of a valid folder is one line naming the line
and field; visuals may not leave the folder (symlinks resolved) and must decode."""
from __future__ import annotations

import json
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from common.errors import InputError, cli_main
from submission.task2 import submission_script
from submission.validate_task2 import JSONL, main, validate_folder
from tests.conftest import REPO
from tests.faults.harness import one_line_error, run_main

TEAM = json.loads((REPO / 'submission' / 'team.demo.json').read_text())
W, H = 48, 40
VAL = [{'val_id': i, 'img_id': f'clval{i:021d}', 'question': f'Is there a polyp in frame {i}?', 'width': W, 'height': H}
       for i in range(6)]
ANSWERS = {r['val_id']: f'answer {r["val_id"]}' for r in VAL}


def line(r: dict) -> dict:
    return {'val_id': r['val_id'], 'img_id': r['img_id'], 'question': r['question'], 'answer': ANSWERS[r['val_id']],
            'textual_explanation': 'The model answers from the polyp it sees.',
            'visual_explanation': [{'type': 'heatmap', 'data': f'visuals/{r["val_id"]}_heatmap.png',
                                    'description': 'occlusion heatmap'},
                                   {'type': 'bounding_box', 'data': [[1, 2, 30, 20]], 'description': 'polyp'}],
            'confidence_score': 0.5}


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / 'sub'
    (root / 'visuals').mkdir(parents=True)
    for r in VAL:
        Image.new('L', (W, H), 10 * r['val_id']).save(root / 'visuals' / f'{r["val_id"]}_heatmap.png')
    write(root, [line(r) for r in VAL])
    (root / 'submission_task2.py').write_text(submission_script(TEAM))
    assert validate_folder(root, VAL, ANSWERS) == len(VAL)   # the control: the unmodified folder passes
    return root


def write(root: Path, lines: list, raw: bytes | None = None) -> None:
    path = root / JSONL
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(''.join(json.dumps(x, allow_nan=True) + '\n' for x in lines))


def refused(root: Path, *parts: str, answers=ANSWERS) -> str:
    with pytest.raises(InputError) as e:
        validate_folder(root, VAL, answers)
    text = str(e.value)
    assert '\n' not in text
    for part in parts:
        assert part in text, (part, text)
    return text


def mutate(root: Path, row: int, **changes) -> None:
    lines = [line(r) for r in VAL]
    lines[row].update(changes)
    write(root, lines)


def visual(root: Path, row: int, data, kind='heatmap', description='d') -> None:
    mutate(root, row, visual_explanation=[{'type': kind, 'data': data, 'description': description}])


@pytest.mark.case('V1')
def test_duplicated_val_id(folder):
    lines = [line(r) for r in VAL]
    lines[4] = {**line(VAL[3])}
    write(folder, lines)
    refused(folder, f'{JSONL}:5: val_id: duplicate val_id 3')


@pytest.mark.case('V2')
def test_duplicated_line(folder):
    write(folder, [line(r) for r in VAL] + [line(VAL[0])])
    refused(folder, f'{JSONL}:7: val_id: duplicate val_id 0')


@pytest.mark.case('V3')
def test_missing_val_id(folder):
    write(folder, [line(r) for r in VAL[:-1]])
    refused(folder, 'val_id: 1 val_id(s) missing, first 5')


@pytest.mark.case('V4', 'V5', 'V6')
@pytest.mark.parametrize('value', ['2', 2.0, 1500])
def test_val_id_of_the_wrong_type_or_range(folder, value):
    mutate(folder, 2, val_id=value)
    refused(folder, f':3: val_id: val_id {value!r} is not in 0..5')


@pytest.mark.case('V7', 'V8', 'V9', 'V10', 'V11', 'V12')
@pytest.mark.parametrize('value', [float('nan'), float('inf'), 1.5, -0.01, '0.9', True])
def test_confidence_outside_0_1(folder, value):
    mutate(folder, 3, confidence_score=value)
    refused(folder, ':4: confidence_score: confidence_score must be a finite number in [0, 1]')


@pytest.mark.case('V13')
def test_confidence_missing(folder):
    lines = [line(r) for r in VAL]
    del lines[3]['confidence_score']
    write(folder, lines)
    refused(folder, ':4: confidence_score: missing field')


@pytest.mark.case('V14', 'V16', 'V17', 'V18', 'X3')
def test_visual_paths_that_escape(folder):
    for data in ('../../etc/passwd', '/etc/passwd', str(folder / 'visuals' / '3_heatmap.png'),
                 'visuals\\3_heatmap.png'):
        visual(folder, 3, data)
        refused(folder, f':4: visual_explanation[0]: path escapes the submission folder: {data}')


@pytest.mark.case('V15', 'V19', 'V20', 'X3')
def test_visuals_outside_through_dot_dot_or_symlinks(folder, tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    for r in VAL:
        Image.new('L', (W, H)).save(outside / f'{r["val_id"]}_heatmap.png')
    visual(folder, 3, '../outside/3_heatmap.png')
    refused(folder, 'path escapes the submission folder: ../outside/3_heatmap.png')
    write(folder, [line(r) for r in VAL])
    target = folder / 'visuals' / '3_heatmap.png'
    target.unlink()
    target.symlink_to(outside / '3_heatmap.png')
    refused(folder, ':4: visual_explanation[0]: path escapes the submission folder: visuals/3_heatmap.png')
    target.unlink()
    os.rename(folder / 'visuals', tmp_path / 'visuals-real')
    (folder / 'visuals').symlink_to(outside)
    refused(folder, ':1: visual_explanation[0]: path escapes the submission folder: visuals/0_heatmap.png')


@pytest.mark.case('V21')
def test_symlink_inside_the_folder_is_accepted(folder):
    target = folder / 'visuals' / '3_heatmap.png'
    target.rename(folder / 'kept.png')
    target.symlink_to(folder / 'kept.png')
    assert validate_folder(folder, VAL, ANSWERS) == len(VAL)


@pytest.mark.case('V22')
def test_heatmap_of_the_wrong_size(folder):
    Image.new('L', (W // 2, H // 2)).save(folder / 'visuals' / '3_heatmap.png')
    refused(folder, f'visuals/3_heatmap.png is {W // 2}x{H // 2}, the image is {W}x{H}')


@pytest.mark.case('V23', 'V24', 'V26')
def test_unreadable_or_foreign_images(folder):
    png = folder / 'visuals' / '3_heatmap.png'
    good = png.read_bytes()
    png.write_bytes(good[:len(good) // 2])
    refused(folder, 'not a readable image: visuals/3_heatmap.png')
    png.write_bytes(b'\x89PNG\r\n\x1a\n' + random.Random(0).randbytes(200))
    refused(folder, 'not a readable image: visuals/3_heatmap.png (UnidentifiedImageError)')
    Image.new('RGB', (W, H)).save(png, format='JPEG')
    refused(folder, 'not a PNG (JPEG): visuals/3_heatmap.png')


def scramble_idat(path: Path) -> None:
    """Random IDAT bytes with correct CRCs: every chunk is well formed, the pixels cannot be decompressed."""
    data = path.read_bytes()
    out, pos, rng = [data[:8]], 8, random.Random(1)
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b'IDAT':
            body = b'\x78\x9c' + rng.randbytes(length - 2)   # a zlib header, then garbage
        out.append(struct.pack('>I4s', length, kind) + body + struct.pack('>I', zlib.crc32(kind + body)))
        pos += 12 + length
    path.write_bytes(b''.join(out))


@pytest.mark.case('V25')
def test_png_with_valid_chunks_but_undecodable_pixels(folder):
    """Cause 16: im.verify() checks chunks and CRCs only; this PNG passed."""
    scramble_idat(folder / 'visuals' / '3_heatmap.png')
    with Image.open(folder / 'visuals' / '3_heatmap.png') as im:
        im.verify()   # what the validator used to stop at
    refused(folder, ':4: visual_explanation[0]: not a readable image: visuals/3_heatmap.png')


@pytest.mark.case('V27', 'V28')
def test_heatmap_missing_or_a_folder(folder):
    png = folder / 'visuals' / '3_heatmap.png'
    png.unlink()
    refused(folder, 'file not found: visuals/3_heatmap.png')
    png.mkdir()
    refused(folder, 'file not found: visuals/3_heatmap.png')


@pytest.mark.case('V29', 'V30', 'V31')
@pytest.mark.parametrize('box', [[0, 0, 99999, 10], [-5, 0, 10, 10], [20, 20, 10, 10]])
def test_box_outside_or_inverted(folder, box):
    visual(folder, 3, [box], 'bounding_box')
    refused(folder, f'box {box} is not inside the {W}x{H} image')


@pytest.mark.case('V32', 'V33', 'V35')
@pytest.mark.parametrize('box', [[1, 2, 3], [0, 0, float('nan'), 10], ['0', '0', '10', '10']])
def test_not_a_box(folder, box):
    visual(folder, 3, [box], 'bounding_box')
    refused(folder, 'not a box [x1, y1, x2, y2]')


@pytest.mark.case('V34')
def test_empty_box_list(folder):
    visual(folder, 3, [], 'bounding_box')
    refused(folder, 'data must be a non-empty list of [x1, y1, x2, y2]')


@pytest.mark.case('V36', 'V37', 'V38')
def test_visual_type_description_and_list(folder):
    visual(folder, 3, 'visuals/3_heatmap.png', 'saliency')
    refused(folder, "type must be one of heatmap, segmentation_mask, bounding_box, got 'saliency'")
    visual(folder, 3, 'visuals/3_heatmap.png', description=' ')
    refused(folder, 'empty description')
    mutate(folder, 3, visual_explanation={'type': 'heatmap'})
    refused(folder, 'visual_explanation must be a list')


@pytest.mark.case('V39', 'V40', 'V41')
def test_answers(folder):
    mutate(folder, 3, answer='something else')
    refused(folder, ":4: answer: answer differs from the Task 1 prediction 'answer 3' (val_id 3)")
    assert validate_folder(folder, VAL, None) == len(VAL)   # no Task 1 predictions given: nothing to compare
    mutate(folder, 3, answer=None)
    refused(folder, 'answer must be a string')


@pytest.mark.case('V42', 'V43')
@pytest.mark.parametrize('text', ['', ' \n\t '])
def test_empty_explanation(folder, text):
    mutate(folder, 3, textual_explanation=text)
    refused(folder, ':4: textual_explanation: empty textual_explanation')


@pytest.mark.case('V44', 'V45')
def test_img_id_or_question_differ(folder):
    mutate(folder, 3, img_id='cl000000000000000000000000')
    refused(folder, f":4: img_id: 'cl000000000000000000000000' differs from the val set's '{VAL[3]['img_id']}'")
    mutate(folder, 3, question=VAL[3]['question'] + ' ')
    refused(folder, ':4: question:', 'differs from the val set')


@pytest.mark.case('V46', 'V47')
def test_script(folder):
    script = folder / 'submission_task2.py'
    script.write_text(submission_script(TEAM) + 'import os\nos.system("id")\n')
    refused(folder, 'submission_task2.py: must contain only the assignment SUBMISSION_INFO = {...}')
    script.unlink()
    refused(folder, 'submission_task2.py: file not found')


@pytest.mark.case('V48')
def test_non_utf8_byte(folder):
    """Cause 13: read_jsonl caught JSONDecodeError only; a non-UTF-8 byte was an 8-frame traceback."""
    raw = (folder / JSONL).read_bytes()
    cut = raw.index(b'\n', len(raw) // 2) + 1
    write(folder, [], raw[:cut + 10] + b'\xff' + raw[cut + 10:])
    line_no = raw[:cut].count(b'\n') + 1
    refused(folder, f'{JSONL}:{line_no}: not UTF-8 text (byte 0xff at column 11)')


@pytest.mark.case('V49', 'V50')
def test_malformed_or_empty(folder):
    write(folder, [], (folder / JSONL).read_bytes() + b'{bad json\n')
    refused(folder, f'{JSONL}:7: not valid JSON')
    write(folder, [], b'')
    refused(folder, 'val_id: 6 val_id(s) missing, first 0')


@pytest.mark.case('V44')
def test_cli_prints_one_line_and_exits_2(folder, synthetic_dataset, capsys):
    """The same checks through the command line (val set from the synthetic copy: other img_ids)."""
    code, err = run_main(cli_main(main), [folder, '--dataset', synthetic_dataset, '--limit', 6], capsys)
    assert code == 2
    one_line_error(err, f'{folder / JSONL}:1: img_id:')
