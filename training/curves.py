"""Loss curve of a run: train loss, eval loss and learning rate per optimizer step, as one PNG in the run folder.

    python -m training.curves --run runs/7B_lora [--out runs/7B_lora/loss_curve.png]

Built from ms-swift's `logging.jsonl` (one JSON object per logging step, written whatever --report_to says), so it
needs neither TensorBoard nor an account. `RESUME=1 make sft` writes a new `v<N>-<time>/` folder per run; the curve
joins them in version order into one line: where a resumed run repeats steps (it restarts at its checkpoint, which
can be older than the last logged step), the later run's points replace the earlier ones. `make sft` writes it after
every run; rerun this module to draw it while training is still going.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from common.errors import InputError, cli_main
from common.io import atomic_path

CURVE_FILE = 'loss_curve.png'
SERIES = ('loss', 'eval_loss', 'learning_rate')


def version_dirs(run: Path) -> list[Path]:
    """`v<N>-<time>` folders holding a logging.jsonl, by N."""
    found = []
    for d in run.glob('v*-*'):
        m = re.match(r'v(\d+)-', d.name)
        if m and (d / 'logging.jsonl').is_file():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def _step(record: dict) -> int | None:
    """The optimizer step of a logging.jsonl record: ms-swift writes 'global_step/max_steps': 'k/N'."""
    value = record.get('global_step/max_steps')
    if isinstance(value, str) and re.fullmatch(r'\d+/\d+', value):
        return int(value.split('/')[0])
    return record.get('step') if isinstance(record.get('step'), int) else None


def read_log(path: Path) -> dict[str, dict[int, float]]:
    """{series: {step: value}} of one logging.jsonl; an unreadable line (a run killed mid-write) ends the file."""
    series: dict[str, dict[int, float]] = {name: {} for name in SERIES}
    for line in path.read_text(encoding='utf-8').splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        step = _step(record) if isinstance(record, dict) else None
        if step is None:
            continue
        for name in SERIES:
            if isinstance(record.get(name), (int, float)):
                series[name][step] = float(record[name])
    return series


def run_curves(run: str | Path) -> tuple[dict[str, list[tuple[int, float]]], list[int]]:
    """({series: [(step, value), ...]}, steps where a resumed run took over): one continuous line per series over
    every version of the run."""
    run = Path(run)
    logs = [read_log(d / 'logging.jsonl') for d in version_dirs(run)]
    if not logs:
        raise InputError('no v*/logging.jsonl yet (train first: make sft)', file=str(run))
    merged: dict[str, dict[int, float]] = {name: {} for name in SERIES}
    restarts = []
    for log in logs:
        steps = [s for points in log.values() for s in points]
        if not steps:
            continue
        restart = min(steps)   # a resumed run owns every step from where it restarted
        if any(merged.values()):
            restarts.append(restart)
        for name in SERIES:
            merged[name] = {s: v for s, v in merged[name].items() if s < restart}
            merged[name].update(log[name])
    return {name: sorted(points.items()) for name, points in merged.items()}, restarts


def write_curve(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw the curves of `run` into `out` (default RUN/loss_curve.png); returns the path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run = Path(run)
    out = Path(out) if out else run / CURVE_FILE
    curves, restarts = run_curves(run)
    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(2, 1))
    for name, label, style in (('loss', 'train loss', '-'), ('eval_loss', 'eval loss', 'o-')):
        if curves[name]:
            steps, values = zip(*curves[name])
            loss_ax.plot(steps, values, style, label=label, markersize=4)
    loss_ax.set_ylabel('loss')
    loss_ax.set_title(f'{run.name}: {len(version_dirs(run))} run(s), last step '
                      f'{max((s for points in curves.values() for s, _ in points), default=0)}')
    loss_ax.grid(alpha=0.3)
    if curves['loss'] or curves['eval_loss']:
        loss_ax.legend()
    if curves['learning_rate']:
        steps, values = zip(*curves['learning_rate'])
        lr_ax.plot(steps, values, color='tab:green')
    lr_ax.set_ylabel('learning rate')
    lr_ax.set_xlabel('optimizer step')
    lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_ax.grid(alpha=0.3)
    for step in restarts:   # RESUME=1: where the next v<N> run took over
        for ax in (loss_ax, lr_ax):
            ax.axvline(step - 0.5, color='grey', linestyle=':', linewidth=1)
        loss_ax.annotate('resumed', (step - 0.5, 1), xycoords=('data', 'axes fraction'), fontsize=8, color='grey',
                         ha='left', va='top')
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m training.curves', description=__doc__.split('\n\n')[0])
    ap.add_argument('--run', required=True, help='run folder of `make sft` (holds v<N>-<time>/logging.jsonl)')
    ap.add_argument('--out', help=f'PNG to write (default RUN/{CURVE_FILE})')
    args = ap.parse_args(argv)
    print(write_curve(args.run, args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
