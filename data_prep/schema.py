"""The Kvasir-VQA-x1 row schema: column names, Arrow types, and one-row validation with one-line errors."""
from __future__ import annotations

import numbers
from collections import defaultdict
from typing import Any, Iterable, Mapping

import pyarrow as pa

from common.errors import InputError

# Every stage needs these; `original` and `image` are optional (subsets and scoring work without them).
REQUIRED_COLUMNS = ('img_id', 'complexity', 'question', 'answer', 'question_class')
OPTIONAL_COLUMNS = ('original', 'image')
COLUMNS = ('img_id', 'complexity', 'question', 'answer', 'original', 'question_class', 'image')

# The official parquet's types (image is a URL / relative path string there, not a datasets Image feature).
ARROW_SCHEMA = pa.schema([
    ('img_id', pa.string()), ('complexity', pa.int64()), ('question', pa.string()), ('answer', pa.string()),
    ('original', pa.string()), ('question_class', pa.list_(pa.string())), ('image', pa.string()),
])

ATOMIC_CLASSES = (
    'procedure_type', 'text_presence', 'polyp_removal_status', 'box_artifact_presence', 'instrument_count',
    'finding_count', 'polyp_type', 'polyp_size', 'instrument_location', 'instrument_presence',
    'abnormality_location', 'polyp_count', 'abnormality_color', 'abnormality_presence', 'landmark_location',
    'landmark_presence', 'finding_presence', 'landmark_color',
)


def validate_row(row: Mapping[str, Any], file: str, row_number: int) -> None:
    """Raise InputError (file:row: field: why) for the first problem in one dataset row."""
    for col in REQUIRED_COLUMNS:
        if col not in row:
            raise InputError('missing column', file=file, row=row_number, field=col)
    if not isinstance(row['img_id'], str) or not row['img_id'].strip():
        raise InputError('empty img_id', file=file, row=row_number, field='img_id')
    for col in ('question', 'answer'):
        if not isinstance(row[col], str) or not row[col].strip():
            raise InputError(f'empty {col}', file=file, row=row_number, field=col)
    cx = row['complexity']
    if isinstance(cx, bool) or not isinstance(cx, numbers.Integral) or not 1 <= cx <= 3:  # numpy ints too
        raise InputError(f'complexity must be 1, 2 or 3, got {cx!r}', file=file, row=row_number, field='complexity')
    qc = row['question_class']
    if isinstance(qc, (str, bytes, dict)) or not hasattr(qc, '__len__') or not len(qc) or \
            not all(isinstance(c, str) and c for c in qc):  # list, tuple, or pandas' numpy array
        raise InputError(f'question_class must be a non-empty list of strings, got {qc!r}', file=file,
                         row=row_number, field='question_class')


def find_duplicates(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """{(img_id, question): [0-based row positions]} for every pair seen more than once.

    The official train split has a few such pairs (39 in the 17,505-row shared sample), so this reports, not raises.
    """
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        seen[(row['img_id'], row['question'])].append(i)
    return {k: v for k, v in seen.items() if len(v) > 1}
