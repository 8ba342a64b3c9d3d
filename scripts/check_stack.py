"""Compare the packages this Python has with a pinned set: what `make stack` prints, and what SETUP=none relies on.

    python scripts/check_stack.py [--set auto|gpu|cpu|gpu-next] [--lock]

A pin `name==X` matches an installed `X+local` build (torch 2.11.0+cu130 is torch 2.11.0, PEP 440). Exit 0 when every
pinned package is installed at its pinned version, 1 otherwise (the table says which). `--lock` also compares every
package of requirements-gpu.lock (the resolver's full GPU set). Reads only the repository's requirement files.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = {'gpu': 'requirements.txt', 'gpu-next': 'requirements-gpu-next.txt', 'cpu': 'requirements-cpu.txt'}
LOCK = 'requirements-gpu.lock'
_REQ = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==\s*([^\s;#]+))?')


def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def read_requirements(path: Path) -> dict[str, str | None]:
    """{canonical name: pinned version or None} from a requirements file, following `-r` includes."""
    pins: dict[str, str | None] = {}
    for raw in path.read_text(encoding='utf-8').splitlines():
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        if line.startswith('-r'):
            pins.update(read_requirements(path.parent / line[2:].strip()))
            continue
        if line.startswith('-'):   # --index-url and other options
            continue
        m = _REQ.match(line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def matches(pinned: str | None, installed: str | None) -> bool:
    if installed is None:
        return False
    return pinned is None or installed.split('+', 1)[0] == pinned


def auto_set() -> str:
    smi = shutil.which('nvidia-smi')
    if smi and 'GPU' in subprocess.run([smi, '-L'], capture_output=True, text=True).stdout:
        return 'gpu'
    return 'cpu'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python scripts/check_stack.py', description=__doc__.split('\n')[0])
    ap.add_argument('--set', default='auto', choices=['auto', *SETS])
    ap.add_argument('--lock', action='store_true', help=f'also compare every package of {LOCK}')
    args = ap.parse_args(argv)
    name = auto_set() if args.set == 'auto' else args.set
    pins = read_requirements(REPO / SETS[name])
    pins.update({k: v for k, v in read_requirements(REPO / 'requirements-dev.txt').items()})
    if args.lock:
        pins = {**read_requirements(REPO / LOCK), **pins}
    bad = 0
    print(f'{sys.executable} (Python {sys.version.split()[0]}) against the {name} set ({SETS[name]})')
    print(f'{"package":28} {"pinned":14} {"installed":22} ok')
    for pkg in sorted(pins):
        have = installed_version(pkg)
        ok = matches(pins[pkg], have)
        bad += not ok
        print(f'{pkg:28} {pins[pkg] or "(any)":14} {have or "MISSING":22} {"yes" if ok else "NO"}')
    print(f'{len(pins) - bad} of {len(pins)} match' + (f'; {bad} differ or are missing' if bad else ''))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
