"""load_source on every local layout, image resolution, one-line errors, and row validation."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import DatasetDict

from common.errors import InputError
from data_prep import schema
from data_prep.sources import dataset_folder, load_source, resolve_image
from tests.conftest import run_module


def _parquet_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_folder_layout_keeps_both_splits_in_file_order(synthetic_dataset):
    dd = load_source(str(synthetic_dataset))
    assert set(dd) == {'train', 'test'}
    for split in dd:
        assert dd[split].to_list() == _parquet_rows(synthetic_dataset / f'data/{split}-00000-of-00001.parquet')


def test_single_parquet_file_is_named_by_its_file_name(synthetic_dataset, shared_dir):
    test_file = synthetic_dataset / 'data/test-00000-of-00001.parquet'
    dd = load_source(str(test_file))
    assert list(dd) == ['test'] and dd['test'].to_list() == _parquet_rows(test_file)
    real = shared_dir / 'data/kvasir-vqa-x1/train-subset.parquet'
    dd = load_source(str(real))
    assert list(dd) == ['train'] and len(dd['train']) == 17505
    assert dd['train'].features['question_class'].feature.dtype == 'string'


def test_save_to_disk_folders(synthetic_dataset, tmp_path):
    dd = load_source(str(synthetic_dataset))
    dd.save_to_disk(str(tmp_path / 'dict'))
    again = load_source(str(tmp_path / 'dict'))
    assert isinstance(again, DatasetDict) and set(again) == {'train', 'test'}
    assert again['test'].to_list() == dd['test'].to_list()
    dd['test'].save_to_disk(str(tmp_path / 'kvasir-test'))  # a single Dataset: split from the folder name
    assert list(load_source(str(tmp_path / 'kvasir-test'))) == ['test']


def test_wrong_path_is_one_line_exit_2(tmp_path):
    missing = tmp_path / 'no-such-copy'
    proc = run_module('data_prep.sources', '--dataset', missing, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {missing}: no such file or folder')
    assert 'parquet' in lines[0]


def test_folder_without_splits_and_bad_images_folder(tmp_path, synthetic_dataset):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match='no parquet file'):
        load_source(str(tmp_path / 'empty'))
    with pytest.raises(InputError, match='images folder not found'):
        load_source(str(synthetic_dataset), images=str(tmp_path / 'nope'))


def test_not_parquet_names_the_file(tmp_path):
    bad = tmp_path / 'test.parquet'
    bad.write_text('not parquet')
    with pytest.raises(InputError) as e:
        load_source(str(bad))
    assert e.value.file == str(bad) and 'parquet' in e.value.message


def test_missing_column_names_file_and_column(tmp_path, synthetic_dataset):
    rows = _parquet_rows(synthetic_dataset / 'data/test-00000-of-00001.parquet')
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != 'question'} for r in rows])
    bad = tmp_path / 'copy' / 'data' / 'test-00000-of-00001.parquet'
    bad.parent.mkdir(parents=True)
    pq.write_table(table, bad)
    proc = run_module('data_prep.subsets', '--dataset', tmp_path / 'copy', '--out', tmp_path / 'out', check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {bad}: question: missing required column')
    assert not (tmp_path / 'out').exists()


def test_hub_id_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    with pytest.raises(InputError) as e:
        load_source('SimulaMet/Kvasir-VQA-x1-does-not-exist')
    assert 'local copy' in str(e.value) and e.value.file == 'SimulaMet/Kvasir-VQA-x1-does-not-exist'


def test_resolve_image_every_form(synthetic_dataset, tmp_path):
    row = load_source(str(synthetic_dataset))['test'][0]
    jpg = synthetic_dataset / row['image']
    data = jpg.read_bytes()
    # a path relative to the copy's root, from the folder or from a parquet file inside data/
    assert resolve_image(row['image'], synthetic_dataset) == jpg
    assert resolve_image(row['image'], synthetic_dataset / 'data/test-00000-of-00001.parquet') == jpg
    assert resolve_image(row, dataset=str(synthetic_dataset)) == jpg  # a whole row, keyword form
    assert resolve_image(str(jpg)) == jpg
    assert resolve_image(data) == data
    assert resolve_image({'bytes': data, 'path': None}) == data
    assert resolve_image({'bytes': None, 'path': str(jpg)}) == jpg
    url = f'https://huggingface.co/datasets/SimulaMet/Kvasir-VQA-x1/resolve/main/images/{row["img_id"]}.jpg'
    assert resolve_image(url) == url
    # an images folder wins over a URL (the official parquet holds hub URLs)
    assert resolve_image(url, None, synthetic_dataset / 'images') == jpg
    assert resolve_image({'img_id': row['img_id'], 'image': url}, images=synthetic_dataset / 'images') == jpg
    assert resolve_image('images/missing.jpg', synthetic_dataset) is None
    assert resolve_image(None, synthetic_dataset, tmp_path) is None
    assert dataset_folder(synthetic_dataset / 'data/train-00000-of-00001.parquet') == synthetic_dataset


def test_sources_cli_summary(synthetic_dataset):
    proc = run_module('data_prep.sources', '--dataset', synthetic_dataset)
    assert 'train:' in proc.stdout and 'test:' in proc.stdout and str(synthetic_dataset / 'images') in proc.stdout


GOOD = {'img_id': 'cl8k2u1qa1ekz08324rek2qcv', 'complexity': 2, 'question': 'Q?', 'answer': 'A',
        'question_class': ['polyp_count', 'text_presence']}


@pytest.mark.parametrize('change, field', [
    ({'question': None}, 'question'), ({'question': '  '}, 'question'), ({'answer': ''}, 'answer'),
    ({'complexity': 0}, 'complexity'), ({'complexity': 4}, 'complexity'), ({'complexity': '2'}, 'complexity'),
    ({'question_class': 'polyp_count'}, 'question_class'), ({'question_class': [1]}, 'question_class'),
    ({'question_class': []}, 'question_class'), ({'img_id': ''}, 'img_id'),
])
def test_validate_row_rejects(change, field):
    row = {**GOOD, **change}
    with pytest.raises(InputError) as e:
        schema.validate_row(row, 'f.parquet', 7)
    assert (e.value.file, e.value.row, e.value.field) == ('f.parquet', 7, field)
    assert str(e.value).startswith(f'f.parquet:7: {field}: ')


def test_validate_row_missing_column_and_good_row():
    schema.validate_row(GOOD, 'f', 1)
    with pytest.raises(InputError) as e:
        schema.validate_row({k: v for k, v in GOOD.items() if k != 'answer'}, 'f', 3)
    assert e.value.field == 'answer' and 'missing column' in str(e.value)


def test_find_duplicates_on_the_real_rows(shared_dir):
    rows = pq.read_table(shared_dir / 'data/kvasir-vqa-x1/train-subset.parquet',
                         columns=['img_id', 'question']).to_pylist()
    dups = schema.find_duplicates(rows)
    assert sum(len(v) - 1 for v in dups.values()) == 39  # pandas .duplicated() count on the same file
    key, where = next(iter(dups.items()))
    assert all((rows[i]['img_id'], rows[i]['question']) == key for i in where)
    assert schema.find_duplicates([GOOD, {**GOOD, 'question': 'other'}]) == {}


def _raw_image_rows(tmp_path):
    """A local copy of SimulaMet-HOST/Kvasir-VQA's "raw" split: several QA rows per image, as the hub stores it."""
    import io

    import pandas as pd
    from PIL import Image
    blobs = {}
    for n, img_id in enumerate(['img_a', 'img_b', 'img_c']):
        buf = io.BytesIO()
        Image.new('RGB', (40 + n, 30), (50 * n, 80, 120)).save(buf, format='JPEG')
        blobs[img_id] = buf.getvalue()
    rows = [{'source': 'x', 'question': f'q{q}', 'answer': 'a', 'img_id': img_id,
             'image': {'bytes': blob, 'path': f'{img_id}.jpg'}}
            for img_id, blob in blobs.items() for q in range(3)]
    path = tmp_path / 'raw.parquet'
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path, blobs


def test_download_images_writes_each_image_once_and_resumes(tmp_path):
    from data_prep.sources import download_hub_images
    source, blobs = _raw_image_rows(tmp_path)
    out = tmp_path / 'images'
    assert download_hub_images(out, {'img_a', 'img_c'}, source=str(source)) == 2
    assert sorted(p.name for p in out.iterdir()) == ['img_a.jpg', 'img_c.jpg']
    assert (out / 'img_c.jpg').read_bytes() == blobs['img_c']
    assert download_hub_images(out, {'img_a', 'img_b', 'img_c'}, source=str(source)) == 1   # only the new one
    assert (out / 'img_b.jpg').read_bytes() == blobs['img_b']
    with pytest.raises(InputError, match='1 img_id.*no image there.*img_zz'):
        download_hub_images(out, {'img_a', 'img_zz'}, source=str(source))


def test_download_images_copies_stored_paths(tmp_path):
    """A copy that keeps paths instead of bytes: the file at the path is copied; a row with neither is an error."""
    import pandas as pd
    from data_prep.sources import download_hub_images
    (tmp_path / 'src.jpg').write_bytes(b'\xff\xd8jpeg')
    rows = [{'source': 'x', 'question': 'q', 'answer': 'a', 'img_id': 'p1',
             'image': {'bytes': None, 'path': str(tmp_path / 'src.jpg')}},
            {'source': 'x', 'question': 'q', 'answer': 'a', 'img_id': 'p2',
             'image': {'bytes': None, 'path': str(tmp_path / 'gone.jpg')}}]
    folder = tmp_path / 'raw'
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / 'raw-00000.parquet', index=False)
    assert download_hub_images(tmp_path / 'out', {'p1'}, source=str(folder)) == 1
    assert (tmp_path / 'out' / 'p1.jpg').read_bytes() == b'\xff\xd8jpeg'
    with pytest.raises(InputError, match=r'raw:2: image: no image bytes and no readable path'):
        download_hub_images(tmp_path / 'out', {'p2'}, source=str(folder))


def test_download_images_names_a_missing_column(tmp_path):
    import pandas as pd
    from data_prep.sources import download_hub_images
    path = tmp_path / 'raw.parquet'
    pd.DataFrame([{'img_id': 'a', 'question': 'q'}]).to_parquet(path, index=False)
    with pytest.raises(InputError, match=r'raw\.parquet: image: missing required column'):
        download_hub_images(tmp_path / 'out', {'a'}, source=str(path))
