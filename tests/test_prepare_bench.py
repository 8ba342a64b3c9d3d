"""bench.prepare_bench at a tiny scale: both ways run, the table is written, and ours is byte-identical on a rerun."""
from __future__ import annotations

import re

import pytest

from tests.conftest import run_module


@pytest.mark.slow  # four real runs (ours twice, the official datasets.map way twice): ~40 s on 2 cores
def test_tiny_bench_writes_the_table_and_ours_reruns_byte_identically(tmp_path):
    out = tmp_path / 'prepare.md'
    proc = run_module('bench.prepare_bench', '--images', '12', '--rows', '90', '--aug-k', '2', '--workers', '2',
                      '--official-procs', '2', '--work', tmp_path / 'work', '--out', out)
    text = out.read_text()
    assert text in proc.stdout
    assert '90 rows, 12 images x K=2 (24 augmentations)' in text
    rows = [line for line in text.splitlines() if line.startswith('| ours') or line.startswith('| official')]
    assert len(rows) == 2, text
    ours, official = ([c.strip() for c in row.strip('|').split('|')] for row in rows)
    assert ours[7].startswith('yes (') and 'regenerated' in ours[7], ours      # variants of 2 images rebuilt
    assert int(re.search(r'; (\d+) regenerated', ours[7]).group(1)) == 4
    assert official[6] == '1.00x'
    assert float(ours[6].rstrip('x')) > 0 and float(ours[2].replace(',', '')) > 0
    assert re.search(r'mean \d+\.\d kB', text)
    # the generated copy has the design.md layout that `make prepare` reads
    copy = tmp_path / 'work' / 'dataset-12x90'
    assert len(list((copy / 'images').glob('*.jpg'))) == 12
    assert sorted(p.name for p in (copy / 'data').iterdir()) == ['test-00000-of-00001.parquet',
                                                                   'train-00000-of-00001.parquet']
    assert len(list((tmp_path / 'work' / 'ours' / 'images' / 'augmented').glob('*_aug*.jpg'))) == 24
    assert len(list((tmp_path / 'work' / 'official' / 'image_weak_augmented').glob('*_aug*.jpg'))) == 24
