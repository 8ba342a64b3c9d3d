"""Check a Subtask 1 script against the organizers' hidden-set patch, before anything is uploaded.

The organizers run every submission a second time on the private set (`medvqa challenge_evaluate`): they rewrite
submission_task1.py with three regexes (medvqa 0.15.7, competitions/medico-2026/task_1.py) and abort when one does
not match. Their own ms-swift sample loads the data with one chained call, which none of the regexes match, so a
script derived from it fails that run. Here every regex must match exactly once, the patched script must compile,
and it must not read `ds` / `ds_shuffled` any more (those lines are gone after the patch).

    python -m submission.patch_check path/to/submission_task1.py
"""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from common.errors import InputError, cli_main

# Pattern strings copied exactly from medvqa 0.15.7 competitions/medico-2026/task_1.py (challenge_evaluate).
CHALLENGE_PATCHES = (
    (r'ds\s*=\s*load_dataset\(\s*["\']SimulaMet/Kvasir-VQA-x1["\']\)\["test"\]',
     'val_dataset = load_dataset("SimulaMet/Kvasir-VQA-x1-private")["test"]'),
    (r'.*ds\.shuffle\s*\(\s*seed\s*=\s*42\s*\).*', ''),
    (r'.*ds_shuffled\.select\s*\(\s*range\s*\(\s*1500\s*\)\s*\).*', ''),
)
# full_evaluate mode (same file): the public 1500 cap is lifted.
FULL_EVALUATE_PATCH = (r'val_dataset\s*=\s*ds_shuffled\.select\(\s*range\(\s*1500\s*\)\s*\)',
                       'val_dataset = ds_shuffled')

# The three lines in the form the patches expect (organizers' PyTorch template; keep them verbatim and separate).
EXPECTED_LINES = (
    'ds = load_dataset("SimulaMet/Kvasir-VQA-x1")["test"]',
    'ds_shuffled = ds.shuffle(seed=42)',
    'val_dataset = ds_shuffled.select(range(1500))',
)
PRIVATE_DATASET = 'SimulaMet/Kvasir-VQA-x1-private'


def _chained_load(tree: ast.AST) -> int | None:
    """Line of a `load_dataset(...)[...].shuffle(...)` chain (the organizers' swift sample), if any."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ('shuffle', 'select')):
            inner = node.func.value
            if isinstance(inner, ast.Subscript):
                inner = inner.value
            if isinstance(inner, ast.Call):
                f = inner.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name == 'load_dataset':
                    return node.lineno
    return None


def apply_challenge_patch(code: str) -> tuple[str, list[int]]:
    """The organizers' rewrite: returns the patched code and how often each pattern matched."""
    counts = []
    for pattern, repl in CHALLENGE_PATCHES:
        code, n = re.subn(pattern, repl, code)
        counts.append(n)
    return code, counts


def check_script(code: str, name: str = 'submission_task1.py') -> str:
    """Raise InputError unless the organizers' hidden-set patch applies cleanly; returns the patched code."""
    try:
        tree = ast.parse(code, filename=name)
    except SyntaxError as e:
        raise InputError(f'does not compile: {e.msg}', file=name, row=e.lineno) from None
    line = _chained_load(tree)
    if line is not None:
        raise InputError('chained load_dataset(...).shuffle(...).select(...): the organizers\' hidden-set patch needs '
                         'three separate lines: ' + ' / '.join(EXPECTED_LINES), file=name, row=line)
    patched, counts = apply_challenge_patch(code)
    problems = [f'organizer patch {i} matched {n} times (expected 1; keep the line `{EXPECTED_LINES[i - 1]}`)'
                for i, n in enumerate(counts, 1) if n != 1]
    n_full = len(re.findall(FULL_EVALUATE_PATCH[0], code))
    if n_full != 1:
        problems.append(f'full-evaluate pattern matched {n_full} times (expected 1)')
    if problems:
        raise InputError('; '.join(problems), file=name)
    try:
        patched_tree = ast.parse(patched, filename=name)
        compile(patched_tree, name, 'exec')
    except SyntaxError as e:
        raise InputError(f'does not compile after the organizers\' patch: {e.msg}', file=name, row=e.lineno) from None
    stale = sorted({(n.id, n.lineno) for n in ast.walk(patched_tree)
                    if isinstance(n, ast.Name) and n.id in ('ds', 'ds_shuffled') and isinstance(n.ctx, ast.Load)})
    if stale:
        var, row = stale[0]
        raise InputError(f'`{var}` is still read after the organizers\' patch removed it (use `val_dataset`)',
                         file=name, row=row)
    return patched


def check_file(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise InputError('script not found', file=str(path))
    return check_script(path.read_text(encoding='utf-8'), str(path))


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('script', help='a submission_task1.py')
    args = ap.parse_args(argv)
    check_file(args.script)
    print(f'ok: {args.script}: the organizers\' 3 hidden-set patches each match once and the patched script compiles')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
