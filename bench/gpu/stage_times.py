"""RESULTS/stage_times.tsv of the GPU bench scripts (bench/gpu/learned.sh, two_gpu.sh, e2e.sh), as
bench/gpu/stages.sh writes it: a header line, then one line per stage run with the columns below (times in Unix
seconds; invocation = the invocation's start; fresh 1 = the stage started from scratch, 0 = it continued a run an
earlier invocation began and did not finish). Read by bench.gpu.learned_numbers and bench.gpu.two_gpu_summary."""
from __future__ import annotations

from pathlib import Path

from common.errors import InputError

COLUMNS = ('stage', 'seconds', 'exit_code', 'invocation', 'start', 'end', 'fresh')


def read_stage_times(path: Path) -> list[dict]:
    """The rows in order as {'stage', 'seconds', 'rc', 'invocation', 'start', 'end', 'fresh'}; [] when there is no
    file yet. A line of another layout is an InputError naming its row."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines() if path.is_file() else [], 1):
        cells = line.split('\t')
        if number == 1 and tuple(cells) == COLUMNS:
            continue
        numbers = cells[1:3] + cells[4:]   # all but the stage and the invocation's name
        if len(cells) != len(COLUMNS) or not all(c.lstrip('-').isdigit() for c in numbers):
            raise InputError(f'expected {len(COLUMNS)} tab-separated columns ({", ".join(COLUMNS)}; integers but '
                             f'stage and invocation), got {line!r}', file=str(path), row=number)
        stage, seconds, rc, invocation, start, end, fresh = cells
        rows.append({'stage': stage, 'seconds': int(seconds), 'rc': int(rc), 'invocation': invocation,
                     'start': int(start), 'end': int(end), 'fresh': fresh == '1'})
    return rows
