"""Compare the packages this Python has with a pinned set: what `make stack` prints, and what SETUP=none relies on.

    python scripts/check_stack.py [--set auto|gpu|cpu|gpu-next] [--lock] [--imports]

A pin `name==X` matches an installed `X+local` build (torch 2.11.0+cu130 is torch 2.11.0, PEP 440). Exit 0 when every
pinned package is installed at its pinned version, 1 otherwise (the table says which). `--lock` also compares every
package of requirements-gpu.lock (the resolver's full GPU set). Reads only the repository's requirement files.
`--imports` instead imports what the stages load first — ms-swift, each model family's transformers modelling code
and, where the set pins vLLM, vLLM's model module for each family — so a wheel missing from a carried set shows at
install time, not minutes into an engine start. Exit 1 when any import fails (the table gives its error).
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


def import_targets(pins: dict[str, str | None]) -> list[str]:
    """The modules to import for --imports, from the model families the recipes train (common/model_family.py)."""
    sys.path.insert(0, str(REPO))
    from common.model_family import FAMILIES
    mods = ['swift.template', 'swift.infer_engine']
    mods += [f'transformers.models.{f.config_model_type}.modeling_{f.config_model_type}' for f in FAMILIES.values()]
    if 'vllm' in pins:
        mods += ['swift.infer_engine.vllm_engine']
        mods += [f'vllm.model_executor.models.{f.vllm_module}' for f in FAMILIES.values()]
    return mods


def check_imports(mods: list[str]) -> int:
    import importlib
    bad = 0
    print(f'{"module":50} ok')
    for mod in mods:
        try:
            importlib.import_module(mod)
            status = 'yes'
        except Exception as e:   # noqa: BLE001 - any failure to import is what this reports
            bad += 1
            status = f'NO: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:200]
        print(f'{mod:50} {status}')
    print(f'{len(mods) - bad} of {len(mods)} import' + (f'; {bad} fail' if bad else ''))
    return 1 if bad else 0


def auto_set() -> str:
    smi = shutil.which('nvidia-smi')
    if smi and 'GPU' in subprocess.run([smi, '-L'], capture_output=True, text=True).stdout:
        return 'gpu'
    return 'cpu'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python scripts/check_stack.py', description=__doc__.split('\n')[0])
    ap.add_argument('--set', default='auto', choices=['auto', *SETS])
    ap.add_argument('--lock', action='store_true', help=f'also compare every package of {LOCK}')
    ap.add_argument('--imports', action='store_true', help='import each family\'s modelling code instead (see above)')
    args = ap.parse_args(argv)
    name = auto_set() if args.set == 'auto' else args.set
    pins = read_requirements(REPO / SETS[name])
    if args.imports:
        print(f'{sys.executable} (Python {sys.version.split()[0]}): imports of the {name} set ({SETS[name]})')
        return check_imports(import_targets(pins))
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
