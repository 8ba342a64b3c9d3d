"""Rows -> ms-swift JSONL lines and their sidecar (.meta.jsonl, same line order).

ms-swift line: {"messages": [{"role": "system", ...}?, {"role": "user", "content": "<image>" + prompt},
{"role": "assistant", "content": answer}], "images": ["/abs/path.jpg"]}. The prompt is the template with
{question} filled in (default: just the question, as the official notebooks do).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from common.errors import InputError
from common.io import atomic_open
from data_prep.augment import stable_hash, variant_name

DEFAULT_TEMPLATE = '{question}'
SETTINGS = ('original', 'augmented')


def check_template(template: str) -> str:
    if '{question}' not in template:
        raise InputError('prompt template must contain {question}', field='--prompt-template')
    return template


def variant_index(img_id: str, question: str, k: int) -> int:
    """Which augmented variant a QA row uses: stable, so every run and every worker picks the same one."""
    return stable_hash(img_id, question) % k


def image_path(images_dir: str | os.PathLike, setting: str, img_id: str, question: str, k: int) -> str:
    root = Path(images_dir).resolve()
    if setting == 'original':
        return str(root / 'original' / f'{img_id}.jpg')
    return str(root / 'augmented' / variant_name(img_id, variant_index(img_id, question, k)))


def swift_line(row: dict, image: str, template: str = DEFAULT_TEMPLATE, system: str | None = None) -> dict:
    messages = [{'role': 'system', 'content': system}] if system else []
    messages += [{'role': 'user', 'content': '<image>' + template.replace('{question}', row['question'])},
                 {'role': 'assistant', 'content': row.get('answer') or ''}]
    return {'messages': messages, 'images': [image]}


def meta_line(row: dict, image: str, split: str, setting: str) -> dict:
    meta = {'img_id': row['img_id'], 'question': row['question'],
            'question_class': list(row['question_class']) if row.get('question_class') is not None else None,
            'complexity': int(row['complexity']) if row.get('complexity') is not None else None,
            'split': split, 'setting': setting, 'reference': row.get('answer'), 'image': image}
    for key in ('index', 'val_id'):  # task1_public / task2_val identifiers
        if row.get(key) is not None:
            meta[key] = int(row[key])
    return meta


def write_split(out_dir: str | os.PathLike, split: str, setting: str, rows: Sequence[dict],
                images_dir: str | os.PathLike, k: int, template: str = DEFAULT_TEMPLATE,
                system: str | None = None) -> tuple[Path, Path]:
    """Write OUT/<split>-<setting>.jsonl and .meta.jsonl (each atomically); returns both paths."""
    out_dir = Path(out_dir)
    data_path, meta_path = out_dir / f'{split}-{setting}.jsonl', out_dir / f'{split}-{setting}.meta.jsonl'
    with atomic_open(data_path, 'w', encoding='utf-8') as fd, atomic_open(meta_path, 'w', encoding='utf-8') as fm:
        for row in rows:
            image = image_path(images_dir, setting, row['img_id'], row['question'], k)
            fd.write(json.dumps(swift_line(row, image, template, system), ensure_ascii=False) + '\n')
            fm.write(json.dumps(meta_line(row, image, split, setting), ensure_ascii=False) + '\n')
    return data_path, meta_path


def write_all(out_dir: str | os.PathLike, splits: dict[str, Sequence[dict]], images_dir: str | os.PathLike,
              k: int, template: str = DEFAULT_TEMPLATE, system: str | None = None,
              settings: Iterable[str] = SETTINGS) -> list[Path]:
    paths = []
    for split, rows in splits.items():
        for setting in settings:
            paths += write_split(out_dir, split, setting, rows, images_dir, k, template, system)
    return paths
