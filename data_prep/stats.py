"""Stats report of a prepared dataset: markdown + PNG plots (matplotlib Agg, no display needed).

Expected image tokens use Qwen2.5-VL's smart_resize (factor 28, min_pixels 3136): tokens = (h/28) * (w/28)
after resizing, i.e. one token per 2x2 merge of 14-pixel patches. That is what decides --max_length at a given
MAX_PIXELS.
"""
from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from common.io import atomic_open, atomic_path  # noqa: E402

from common.qwen_vision import image_tokens, smart_resize  # noqa: E402,F401  (re-exported for callers)

MAX_BINS = 200


def _summary(values: Sequence[float]) -> str:
    if not values:
        return 'n/a'
    v = sorted(values)
    pct = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return (f'mean {statistics.fmean(v):.1f}, median {statistics.median(v):g}, p90 {pct(0.9):g}, '
            f'p99 {pct(0.99):g}, max {v[-1]:g}')


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]


def _save_plot(path: Path, draw) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    draw(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        # Fixed metadata so reruns write identical bytes.
        fig.savefig(tmp, format='png', dpi=100, metadata={'Software': None})
    plt.close(fig)


def write_report(out_dir: str | os.PathLike, splits: dict[str, Sequence[dict]],
                 image_sizes: dict[str, tuple[int, int]], max_pixels: int, notes: dict | None = None) -> Path:
    """Write out_dir/report.md and its PNG plots; returns the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(splits)
    images = {s: {r['img_id'] for r in rows} for s, rows in splits.items()}
    md = ['# Prepared data: statistics', '']
    md += ['## Rows and images per split', '']
    md += _table(['split', 'rows', 'images'], [[s, len(splits[s]), len(images[s])] for s in names]) + ['']
    if 'train' in images and 'test' in images:
        md += [f"Images shared by train and test: **{len(images['train'] & images['test'])}** "
               f"(the official splits share images; val is disjoint from train by img_id).", '']
    if 'val' in images and 'train' in images:
        md += [f"Images shared by train and val: **{len(images['train'] & images['val'])}**.", '']

    md += ['## Rows per complexity', '']
    levels = sorted({int(r['complexity']) for rows in splits.values() for r in rows if r.get('complexity') is not None})
    md += _table(['split', *map(str, levels)], [[s, *(sum(1 for r in splits[s] if r.get('complexity') == c)
                                                     for c in levels)] for s in names]) + ['']
    md += ['## Rows per question class (a row counts once per class it has)', '']
    per_class = {s: Counter(c for r in splits[s] for c in (r.get('question_class') or [])) for s in names}
    classes = sorted(set().union(*per_class.values()))
    md += _table(['class', *names], [[c, *(per_class[s][c] for s in names)] for c in classes]) + ['']

    md += ['## Answer length (words)', '']
    lengths = {s: [len(str(r.get('answer') or '').split()) for r in splits[s]] for s in names}
    md += _table(['split', 'summary'], [[s, _summary(lengths[s])] for s in names]) + ['']
    md += ['![answer length](answer_length.png)', '']

    all_ids = sorted(set().union(*images.values()))
    tokens = {i: image_tokens(*image_sizes[i], max_pixels) for i in all_ids if i in image_sizes}
    md += [f'## Expected image tokens per sample (Qwen2.5-VL, MAX_PIXELS={max_pixels})', '']
    md += _table(['split', 'image tokens per sample'],
                 [[s, _summary([tokens[r['img_id']] for r in splits[s] if r['img_id'] in tokens])] for s in names])
    sizes = Counter(image_sizes[i] for i in all_ids if i in image_sizes)
    md += ['', 'Most common image sizes (width x height): ' +
           ', '.join(f'{w}x{h} ({n})' for (w, h), n in sorted(sizes.items(), key=lambda x: (-x[1], x[0]))[:5]), '']
    md += ['![image tokens](image_tokens.png)', '']
    if notes:
        md += ['## Run notes', '']
        md += _table(['item', 'value'], sorted(notes.items())) + ['']

    def draw_lengths(ax):
        top = max((max(v) for v in lengths.values() if v), default=1)
        # one bin per word up to 200 words (the real answers); an outlier of 500k words must not make 500k bins
        bins = range(0, top + 2) if top < MAX_BINS else [top * i / MAX_BINS for i in range(MAX_BINS + 1)]
        for s in names:
            if lengths[s]:
                ax.hist(lengths[s], bins=bins, histtype='step', density=True, label=s)
        ax.set_xlabel('answer length (words)'), ax.set_ylabel('fraction of rows'), ax.legend()

    def draw_tokens(ax):
        ax.hist(list(tokens.values()) or [0], bins=30)
        ax.set_xlabel(f'image tokens at MAX_PIXELS={max_pixels}'), ax.set_ylabel('images')

    _save_plot(out_dir / 'answer_length.png', draw_lengths)
    _save_plot(out_dir / 'image_tokens.png', draw_tokens)
    report = out_dir / 'report.md'
    with atomic_open(report, 'w', encoding='utf-8') as f:
        f.write('\n'.join(md) + '\n')
    return report
