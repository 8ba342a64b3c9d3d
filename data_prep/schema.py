"""The Kvasir-VQA-x1 row schema: column names, Arrow types, and one-row validation with one-line errors."""
from __future__ import annotations

import numbers
import re
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


# img_id becomes a file name (<img_id>.jpg, <img_id>_aug<k>.jpg): letters, digits, '.', '_', '-' only, no leading dot.
# The real ids are 25 lowercase alphanumerics.
IMG_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')


def validate_row(row: Mapping[str, Any], file: str, row_number: int) -> None:
    """Raise InputError (file:row: field: why) for the first problem in one dataset row."""
    for col in REQUIRED_COLUMNS:
        if col not in row:
            raise InputError('missing column', file=file, row=row_number, field=col)
    if not isinstance(row['img_id'], str) or not row['img_id'].strip():
        raise InputError('empty img_id', file=file, row=row_number, field='img_id')
    if not IMG_ID.match(row['img_id']):
        raise InputError(f'img_id must be a plain file name (letters, digits, ".", "_", "-"; at most 128), got '
                         f'{row["img_id"][:80]!r}', file=file, row=row_number, field='img_id')
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


# ---- column types, per file ------------------------------------------------------------------------------------

TYPED_COLUMNS = ('img_id', 'complexity', 'question', 'answer', 'original', 'question_class')


def _fits(have: pa.DataType, want: pa.DataType) -> bool:
    """Values of type `have` convert to `want` without loss or parsing (int32 -> int64, large_string -> string)."""
    if have == want or pa.types.is_null(have):
        return True
    if pa.types.is_string(want):
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)
    if pa.types.is_list(want):
        return (pa.types.is_list(have) or pa.types.is_large_list(have)) and _fits(have.value_type, want.value_type)
    return False


def value_problem(column: str, value: Any) -> str | None:
    """Why one value cannot be stored in the official type of `column` (None: it can). Nulls are left to
    validate_row, which names what is empty."""
    if value is None:
        return None
    if column == 'complexity':
        whole = (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
        return None if whole else f'complexity must be 1, 2 or 3, got {value!r}'
    if column == 'question_class':
        ok = isinstance(value, list) and all(isinstance(c, str) for c in value)
        return None if ok else f'question_class must be a non-empty list of strings, got {value!r}'[:300]
    return None if isinstance(value, str) else f'{column} must be text, got {type(value).__name__} {value!r}'[:300]


def check_column_types(path, columns: Iterable[str]) -> None:
    """Each parquet file on its own: a typed column whose Arrow type is not the official one must still hold only
    values of that type (whole-number floats for complexity, say); the first value that is not is an InputError naming
    this file, its row and the column. (One load of several files would cast all of them to the first file's types
    and blame another file's rows.)"""
    import pyarrow.parquet as pq
    schema = pq.read_schema(path)
    for name in columns:
        if name not in TYPED_COLUMNS or name not in schema.names:
            continue
        if _fits(schema.field(name).type, ARROW_SCHEMA.field(name).type):
            continue
        values = pq.read_table(path, columns=[name]).column(name)
        try:
            values = values.to_pylist()
        except UnicodeDecodeError:
            values = pa.compute.cast(values, pa.binary()).to_pylist()   # reported as "must be text, got bytes"
        for number, value in enumerate(values, 1):
            problem = value_problem(name, value)
            if problem:
                raise InputError(problem, file=str(path), row=number, field=name)


# ---- text encoding ---------------------------------------------------------------------------------------------

def _as_binary(array: pa.Array) -> pa.Array:
    if pa.types.is_large_string(array.type):
        return array.view(pa.large_binary())
    return array.view(pa.binary())


def _text_columns(table: pa.Table) -> list[str]:
    def text(t):
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    return [f.name for f in table.schema if text(f.type) or
            ((pa.types.is_list(f.type) or pa.types.is_large_list(f.type)) and text(f.type.value_type))]


def invalid_utf8_rows(table: pa.Table) -> dict[int, str]:
    """{0-based row: first column} of the rows holding text that is not valid UTF-8 (Arrow does not check it on read;
    Python's conversion would raise UnicodeDecodeError later)."""
    bad: dict[int, str] = {}
    for name in _text_columns(table):
        start = 0
        for chunk in table.column(name).chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid:
                nested = not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type))
                values = _as_binary(chunk.flatten() if nested else chunk).to_pylist()
                parents = chunk.value_parent_indices().to_pylist() if nested else range(len(values))
                for parent, value in zip(parents, values):
                    try:
                        if value is not None:
                            value.decode('utf-8')
                    except UnicodeDecodeError:
                        bad.setdefault(start + parent, name)
            start += len(chunk)
    return dict(sorted(bad.items()))


def replace_invalid_utf8(table: pa.Table, columns: Iterable[str]) -> pa.Table:
    """The table with undecodable bytes of these text columns replaced by U+FFFD (for --lenient, whose skipped rows
    must still count in the organizers' subsets)."""
    def fix(value):
        if isinstance(value, bytes):
            return value.decode('utf-8', 'replace')
        return [fix(v) for v in value] if isinstance(value, list) else value
    for name in set(columns):
        column = table.column(name)
        nested = not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))
        binary = pa.compute.cast(column, pa.list_(pa.binary()) if nested else pa.binary())
        fixed = pa.array([fix(v) for v in binary.to_pylist()], type=column.type)
        table = table.set_column(table.schema.get_field_index(name), name, fixed)
    return table
