"""Score report of one or more prediction runs: report.md, report.json and PNG plots (matplotlib Agg).

    python -m eval.report PRED.jsonl [OTHER.jsonl ...] --out DIR [--seed 42]

For the first run: overall scores, then per complexity, per question_class (a row counts in each of its classes)
and per setting (original vs augmented). With several runs: a side-by-side table (overall and per setting).
Every group is scored like the leaderboard (corpus BLEU of the group, bootstrap ROUGE under the seed, mean METEOR),
so a group's numbers are what the leaderboard would show for that subset alone.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from common.errors import cli_main  # noqa: E402
from common.io import atomic_dir, atomic_open, atomic_path, exclusive_lock, write_json  # noqa: E402
from eval import metrics  # noqa: E402
from eval.score import load_predictions, run_labels  # noqa: E402

GROUPS = (('complexity', 'per complexity'), ('question_class', 'per question class'),
          ('setting', 'original vs augmented (setting)'))


def group_keys(row: dict, field: str) -> list[str]:
    """The groups a row counts in: each of its question classes, or its single complexity/setting value."""
    value = row.get(field)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in dict.fromkeys(value)]
    return [str(value)]


def _entry(scores: dict) -> dict:
    return {'n': scores['n'], **{k: scores[k] for k in metrics.REPORTED},
            'unrounded': scores['unrounded'], 'rouge_mean': scores['rouge_mean']}


def breakdown(rows: list[dict], scorer: metrics.Scorer, seed: int | None = 42,
              fields: tuple[str, ...] | None = None) -> dict:
    """{'overall': full scores, '<field>': {group: entry}} for those of `fields` (default: all) the rows carry."""
    score = lambda rs: scorer.score([r['prediction'] for r in rs], [r['reference'] for r in rs], seed)  # noqa: E731
    out = {'overall': score(rows)}
    fields = tuple(f for f, _ in GROUPS) if fields is None else fields
    for field in fields:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            for key in group_keys(r, field):
                groups[key].append(r)
        if groups:
            order = sorted(groups, key=lambda k: (-len(groups[k]), k)) if field == 'question_class' else sorted(groups)
            out[field] = {k: _entry(score(groups[k])) for k in order}
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + \
           ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]


def _metric_cells(s: dict) -> list[str]:
    return [f'{s[k]:.4f}' for k in metrics.REPORTED]


def value_label(value: float) -> str:
    """A bar's printed value; a zero bar has no height, so its label is what shows it (as 0)."""
    return f'{value:.3f}' if value else '0'


def bar_figure(groups: dict[str, dict], title: str, horizontal: bool = False, series=metrics.REPORTED):
    """Grouped bars: one group per key of `groups`, one bar per name in `series`, each bar labelled with its value."""
    names = list(groups)
    size = (10, max(3.0, 0.12 * len(names) * len(series) + 1.5)) if horizontal else (max(8, 1.6 * len(names)), 4.5)
    fig, ax = plt.subplots(figsize=size)
    width = 0.8 / len(series)
    for i, m in enumerate(series):
        pos = [j + i * width for j in range(len(names))]
        vals = [groups[g][m] for g in names]
        bars = (ax.barh if horizontal else ax.bar)(pos, vals, width, label=m)
        ax.bar_label(bars, labels=[value_label(v) for v in vals], padding=2, fontsize=6,
                     rotation=0 if horizontal else 90)
    ticks = [j + 0.4 - width / 2 for j in range(len(names))]
    labels = [f'{g} (n={groups[g]["n"]})' if 'n' in groups[g] else g for g in names]
    if horizontal:
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)   # room for the value labels right of a full bar
    else:
        ax.set_xticks(ticks, labels, fontsize=8, rotation=20 if len(names) > 4 else 0)
        ax.set_ylim(0, 1.18)
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=len(series), loc='lower right' if horizontal else 'upper right')
    fig.tight_layout()
    return fig


def _bar_plot(groups: dict[str, dict], title: str, path: Path, horizontal: bool = False,
              series=metrics.REPORTED) -> None:
    fig = bar_figure(groups, title, horizontal, series)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)


SETTINGS = ('original', 'augmented')   # the challenge's two image settings
EXAMPLES = 2                           # best and worst rows shown per question class


def settings_side_by_side(paths: list[str], results: dict, labels: dict) -> dict[str, dict] | None:
    """{setting: entry (+ 'run' label)} for original and augmented when they come from two of the runs (one file per
    setting, as `make infer` writes them), each from the first run that has rows of it; else None (a single file
    with both settings has them in its per-setting breakdown)."""
    found: dict[str, dict] = {}
    for p in paths:
        for setting, entry in results[p].get('setting', {}).items():
            if setting in SETTINGS and setting not in found:
                found[setting] = {**entry, 'run': labels[p]}
    if len(found) < len(SETTINGS) or found['original']['run'] == found['augmented']['run']:
        return None
    return {s: found[s] for s in SETTINGS}


def _cell(text, limit: int = 90) -> str:
    text = ' '.join(str(text).split()).replace('|', '\\|')
    if not text:
        return '(empty)'
    return text if len(text) <= limit else text[:limit - 1] + '…'


def class_examples(rows: list[dict], scorer: metrics.Scorer, n: int = EXAMPLES) -> dict[str, dict[str, list[dict]]]:
    """{question class: {'best': rows, 'worst': rows}} by per-row ROUGE-L F1 (the leaderboard's ROUGE-L before its
    bootstrap), `n` each, a row never in both lists; ties keep file order."""
    by_class: dict[str, list[tuple[float, int, dict]]] = defaultdict(list)
    for i, r in enumerate(rows):
        rouge_l = scorer.rouge_pair(r['reference'], r['prediction'])[2].fmeasure
        for key in group_keys(r, 'question_class'):
            by_class[key].append((rouge_l, i, r))
    out = {}
    for key in sorted(by_class, key=lambda k: (-len(by_class[k]), k)):
        ranked = sorted(by_class[key], key=lambda t: (-t[0], t[1]))
        best = ranked[:n]
        worst = [t for t in sorted(ranked, key=lambda t: (t[0], t[1])) if t not in best][:n]
        out[key] = {name: [{'rougeL': round(score, 4), **{f: r.get(f) for f in ('img_id', 'question', 'reference',
                                                                              'prediction')}} for score, _, r in part]
                    for name, part in (('best', best), ('worst', worst))}
    return out


def write_report(runs: dict[str, list[dict]], out_dir: str | Path, seed: int | None = 42) -> dict:
    """Score every run (the first is the main one) and write out_dir/{report.md, report.json, *.png}.

    The folder is assembled aside and swapped in whole (a crash leaves the previous report, never a mix), one report
    per folder at a time. Returns {'seed', 'runs': {path: breakdown}, 'labels': {path: label}}."""
    out_dir = Path(out_dir)
    with exclusive_lock(out_dir.with_name(f'.{out_dir.name}.lock'), 'eval report', out_dir), \
            atomic_dir(out_dir) as tmp:
        return _write_report(runs, tmp, seed)


def _write_report(runs: dict[str, list[dict]], out_dir: Path, seed: int | None) -> dict:
    scorer = metrics.Scorer()  # shared caches: the runs share their references
    paths = list(runs)
    labels = dict(zip(paths, run_labels(paths)))
    results = {}
    for p in paths:
        print(f'report: scoring {p} ({len(runs[p])} rows)', file=sys.stderr)
        results[p] = breakdown(runs[p], scorer, seed, None if p == paths[0] else ('setting',))
    main = results[paths[0]]

    md = [f'# Scores: {labels[paths[0]]}', '',
          f'File `{paths[0]}`. Scored like the Medico leaderboard (HF evaluate bleu/rouge/meteor, rounded to 4 '
          f'decimals); ROUGE is evaluate\'s bootstrap median under seed {seed}, and the seed-free plain mean is shown '
          f'too. BLEU is corpus-level, so a group\'s BLEU is not an average of row scores.', '', '## Overall', '']
    o = main['overall']
    md += _table(['n', *metrics.REPORTED, 'rouge1 (mean)', 'rougeL (mean)'],
                 [[o['n'], *_metric_cells(o), f'{o["rouge_mean"]["rouge1"]:.4f}', f'{o["rouge_mean"]["rougeL"]:.4f}']])
    b = o['bleu_details']
    md += ['', f'BLEU n-gram precisions {", ".join(f"{p:.4f}" for p in b["precisions"])}; brevity penalty '
               f'{b["brevity_penalty"]:.4f} (length ratio {b["length_ratio"]:.4f}: {b["translation_length"]} / '
               f'{b["reference_length"]} tokens).']
    plots = []
    for field, title in GROUPS:
        if field not in main:
            continue
        md += ['', f'## {title[0].upper() + title[1:]}', '']
        md += _table([field, 'n', *metrics.REPORTED], [[g, e['n'], *_metric_cells(e)] for g, e in main[field].items()])
        png = out_dir / f'by_{field}.png'
        _bar_plot(main[field], f'{labels[paths[0]]}: {title}', png, horizontal=field == 'question_class')
        plots.append(png.name)
        md += ['', f'![{title}]({png.name})']
    pair = settings_side_by_side(paths, results, labels)
    if pair:
        md += ['', '## Original vs augmented images', '',
               'The challenge scores both settings; the gap shows how much the weak augmentation of the hidden '
               'set costs.', '']
        md += _table(['metric', *(f'{s} ({pair[s]["run"]}, n={pair[s]["n"]})' for s in SETTINGS),
                      'augmented - original'],
                     [[m, *(f'{pair[s][m]:.4f}' for s in SETTINGS),
                       f'{pair["augmented"][m] - pair["original"][m]:+.4f}'] for m in metrics.REPORTED])
        png = out_dir / 'settings.png'
        by_metric = {m: {s: pair[s][m] for s in SETTINGS} for m in metrics.REPORTED}
        _bar_plot(by_metric, 'original vs augmented images', png, series=SETTINGS)
        plots.append(png.name)
        md += ['', f'![original vs augmented]({png.name})']
    examples = class_examples(runs[paths[0]], scorer)
    if examples:
        md += ['', '## Examples per question class (best and worst by ROUGE-L)', '']
        md += _table(['class', '', 'ROUGE-L', 'question', 'reference', 'prediction'],
                     [[key, kind, f'{e["rougeL"]:.3f}', _cell(e['question'] or ''), _cell(e['reference']),
                       _cell(e['prediction'])] for key, parts in examples.items() for kind in ('best', 'worst')
                      for e in parts[kind]])
    if len(paths) > 1:
        md += ['', '## Runs side by side', '']
        md += _table(['run', 'n', *metrics.REPORTED], [[labels[p], results[p]['overall']['n'],
                                                        *_metric_cells(results[p]['overall'])] for p in paths])
        settings = sorted({s for p in paths for s in results[p].get('setting', {})})
        if len(settings) > 1:
            md += ['', '### Per setting', '']
            md += _table(['run', 'setting', 'n', *metrics.REPORTED],
                         [[labels[p], s, e['n'], *_metric_cells(e)] for p in paths
                          for s, e in results[p].get('setting', {}).items()])
        png = out_dir / 'runs.png'
        _bar_plot({labels[p]: results[p]['overall'] for p in paths}, 'runs side by side', png)
        plots.append(png.name)
        md += ['', f'![runs side by side]({png.name})']
    report = {'seed': seed, 'labels': labels, 'runs': results, 'plots': plots, 'settings': pair,
              'examples': examples}
    write_json(out_dir / 'report.json', report)
    with atomic_open(out_dir / 'report.md', 'w', encoding='utf-8') as f:
        f.write('\n'.join(md) + '\n')
    return report


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('preds', nargs='+', help='predictions JSONL files; the first gets the breakdowns')
    ap.add_argument('--out', required=True, help='report folder')
    ap.add_argument('--seed', type=int, default=42, help='numpy seed for the ROUGE bootstrap')
    args = ap.parse_args(argv)
    write_report({p: load_predictions(p) for p in args.preds}, args.out, seed=args.seed)
    print(f'{args.out}/report.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
