"""Compare two prediction files of one split (`make infer` outputs): the same rows in the same order, and how many
greedy answers are identical.

    python -m bench.gpu.compare_preds BASE OTHER [--out compare.json] [--label dp2]

BASE is the reference (e.g. the 1-GPU run), OTHER another run over the same input (data-parallel workers,
tensor-parallel 2). A row is identified by its sidecar fields `index` / `val_id`, `img_id` and `question` (those the
rows have). Prints one JSON line and, with --out, writes it: rows, `same_count`, `same_order`, `identical_answers`
(and their share), the first few differing answers. A file that is not prediction JSONL, a different row count or
another order is one line `error: OTHER:row: field: message` and exit 2; the JSON (with the failed check) is still
written, so a results folder records why a run did not count. With random weights the answers may differ where batch
composition does (another GPU count, another kernel); a count or order difference is a bug.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.io import read_jsonl, write_json

ID_FIELDS = ('index', 'val_id', 'img_id', 'question')
EXAMPLES = 5          # differing answers kept in the JSON
EXAMPLE_CHARS = 160   # of each answer


def load_predictions(path: str) -> tuple[list[dict], tuple[str, ...]]:
    """Rows of a prediction file and the id fields every row has; InputError when it is not one."""
    rows = read_jsonl(path)
    if not rows:
        raise InputError('no prediction rows', file=path)
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get('prediction'), str):
            raise InputError('missing or not a string (not a make infer predictions file?)', file=path, row=i,
                             field='prediction')
    fields = tuple(f for f in ID_FIELDS if all(f in row for row in rows))
    if not fields:
        raise InputError(f'no row id: every row needs one of {", ".join(ID_FIELDS)}', file=path)
    return rows, fields


def row_id(row: dict, fields: tuple[str, ...]) -> list:
    return [row.get(f) for f in fields]


def shown(row_id_: list) -> str:
    """A row id for a one-line message (long questions cut)."""
    return '/'.join(str(v) if len(str(v)) <= 40 else str(v)[:37] + '...' for v in row_id_)


def compare(base_path: str, other_path: str, label: str | None = None) -> tuple[dict, InputError | None]:
    """(the comparison, the first failed check as an InputError or None)."""
    base, base_fields = load_predictions(base_path)
    other, other_fields = load_predictions(other_path)
    fields = tuple(f for f in base_fields if f in other_fields)
    if not fields:
        raise InputError(f'no id field in common with {base_path} ({", ".join(base_fields)})', file=other_path)
    result: dict = {'label': label or Path(other_path).stem, 'base': str(base_path), 'other': str(other_path),
                    'id_fields': list(fields), 'rows': len(base), 'other_rows': len(other),
                    'same_count': len(base) == len(other)}
    problem = None
    if not result['same_count']:
        problem = InputError(f'{len(other)} rows, but {base_path} has {len(base)}', file=other_path, field='rows')
    out_of_order = next((i for i, (a, b) in enumerate(zip(base, other)) if row_id(a, fields) != row_id(b, fields)),
                        None)
    result['same_order'] = out_of_order is None and result['same_count']
    if out_of_order is not None:
        result['first_out_of_order'] = {'row': out_of_order + 1, 'base_id': row_id(base[out_of_order], fields),
                                        'other_id': row_id(other[out_of_order], fields)}
        problem = problem or InputError(
            f'{shown(row_id(other[out_of_order], fields))} where {base_path} has '
            f'{shown(row_id(base[out_of_order], fields))} (rows lost, duplicated or out of order)',
            file=other_path, row=out_of_order + 1, field='/'.join(fields))
    same = [a['prediction'] == b['prediction'] for a, b in zip(base, other)]
    result['identical_answers'] = sum(same)
    result['identical_share'] = round(sum(same) / len(same), 4) if same else None
    result['differing_examples'] = [
        {'row': i + 1, 'id': row_id(base[i], fields), 'base': base[i]['prediction'][:EXAMPLE_CHARS],
         'other': other[i]['prediction'][:EXAMPLE_CHARS]} for i, s in enumerate(same) if not s][:EXAMPLES]
    result['ok'] = problem is None
    return result, problem


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m bench.gpu.compare_preds', description=__doc__.split('\n\n')[0])
    ap.add_argument('base', help='reference predictions (e.g. the 1-GPU run)')
    ap.add_argument('other', help='predictions of the same input by another run')
    ap.add_argument('--out', help='write the comparison JSON here')
    ap.add_argument('--label', help='name of the other run in the JSON (default: its file name)')
    a = ap.parse_args(argv)
    result, problem = compare(a.base, a.other, a.label)
    if a.out:
        write_json(a.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != 'differing_examples'}))
    if problem:
        raise problem
    return 0


if __name__ == '__main__':
    sys.exit(main())
