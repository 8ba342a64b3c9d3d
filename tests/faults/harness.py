"""Fault injection for the reliability suite: a real run killed (SIGKILL) or paused (SIGSTOP) at a chosen point, full
disks, one-line-error checks, and comparisons of output trees.

A run is the stage's own CLI entry point (`module.main(argv)`, what `make` runs through `python -m`) in a process
forked from a fork server that imported the stack once but never ran it (forking a process that has run torch or
tokenizers threads can deadlock the child). The child installs a Python audit hook (sys.addaudithook) that fires at
the n-th event of a kind (`open`, `os.rename` (os.replace too), `os.remove`, `subprocess.Popen`, ...) on a path matching
a glob, and then SIGKILLs (or SIGSTOPs) its whole process group: the child, its worker processes and the subprocesses
it started, as `kill -9 -PGID` would. Nothing in the code under test knows about it.
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import importlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

# Names that must not survive a finished run: common.io temp files/folders, inference partials, export partials,
# lock files, mkdtemp-style build folders.
DEBRIS = re.compile(r'(\.tmp$|\.tmp-|\.partial(\.\d+)?$|\.lock$|\.old$)')
PRELOAD = ['common.io', 'data_prep.prepare', 'data_prep.stats', 'inference.predict', 'eval.score', 'eval.report',
           'training.export', 'training.launch', 'submission.task1', 'submission.task2', 'swift', 'swift.arguments',
           'swift.infer_engine', 'transformers', 'torch', 'datasets', 'cv2', 'matplotlib.pyplot']


@dataclass(frozen=True)
class Trigger:
    """Fire at the `nth` audit `event` whose first string argument (or, for os.rename, either path; for
    subprocess.Popen, the command line) matches `glob`."""
    event: str
    glob: str
    nth: int = 1


def _install(trigger: Trigger, sig: int) -> None:
    seen = [0]

    def hook(name, args):
        if name != trigger.event:
            return
        if name == 'subprocess.Popen':
            paths = [' '.join(map(str, args[1] or []))]
        else:
            paths = [os.fsdecode(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if not any(fnmatch.fnmatch(str(p), trigger.glob) for p in paths):
            return
        seen[0] += 1
        if seen[0] == trigger.nth:
            sys.stdout.flush(), sys.stderr.flush()
            os.killpg(os.getpgid(0), sig)

    sys.addaudithook(hook)


def _child(module: str, argv: list[str], trigger: Trigger | None, sig: int, env: dict, out: str, err: str) -> None:
    """Body of a forked run: own process group, own stdout/stderr files, the trigger, then the stage's main()."""
    os.setpgid(0, 0)
    multiprocessing.set_start_method('fork', force=True)   # what `python -m` has on Linux (the server set its own)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if trigger:
        _install(trigger, sig)
    code = importlib.import_module(module).main(argv)
    sys.stdout.flush(), sys.stderr.flush()
    raise SystemExit(code or 0)


@dataclass
class Run:
    code: int | None          # exit code; -9 when killed
    out: str
    err: str
    pid: int = 0


class Runner:
    """Starts stage runs as children of one fork server (see the module docstring)."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.ctx = multiprocessing.get_context('forkserver')
        self.ctx.set_forkserver_preload(PRELOAD)
        self.n = 0

    def start(self, module: str, argv: list, *, trigger: Trigger | None = None, sig: int = signal.SIGKILL,
              env: dict | None = None):
        self.n += 1
        out, err = self.scratch / f'run{self.n}.out', self.scratch / f'run{self.n}.err'
        proc = self.ctx.Process(target=_child, args=(module, [str(a) for a in argv], trigger, sig, env or {},
                                                     str(out), str(err)))
        sys.stdout.flush(), sys.stderr.flush()
        proc.start()
        return proc, out, err

    def run(self, module: str, argv: list, *, trigger: Trigger | None = None, env: dict | None = None,
            timeout: float = 600) -> Run:
        """The run to its end (or to the trigger's SIGKILL)."""
        proc, out, err = self.start(module, argv, trigger=trigger, env=env)
        proc.join(timeout)
        if proc.exitcode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.join()
            raise AssertionError(f'{module} {argv} did not finish in {timeout} s')
        _reap_group(proc.pid)
        return Run(proc.exitcode, out.read_text(errors='replace'), err.read_text(errors='replace'), proc.pid)

    def killed_at(self, module: str, argv: list, trigger: Trigger, env: dict | None = None) -> Run:
        """SIGKILL the run at the trigger; fails if it ended without reaching it."""
        run = self.run(module, argv, trigger=trigger, env=env)
        assert run.code == -signal.SIGKILL, f'the run ended ({run.code}) before {trigger} fired:\n{run.err[-3000:]}'
        return run

    def killed_when(self, module: str, argv: list, ready: Callable[[], bool], timeout: float = 600) -> Run:
        """SIGKILL the run's group as soon as ready() is true (polled): for points inside a subprocess it started,
        whose writes raise no audit event here."""
        proc, out, err = self.start(module, argv)
        deadline = time.monotonic() + timeout
        while proc.exitcode is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        reached = proc.exitcode is None and ready()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.join()
        _reap_group(proc.pid)
        assert reached, f'the run ended ({proc.exitcode}) before the kill point:\n{err.read_text()[-3000:]}'
        return Run(proc.exitcode, out.read_text(errors='replace'), err.read_text(errors='replace'), proc.pid)

    @contextlib.contextmanager
    def paused_at(self, module: str, argv: list, trigger: Trigger, env: dict | None = None, then: str = 'continue'):
        """Run until the trigger SIGSTOPs it; the block runs while it is stopped; then it continues to its end (or,
        then='kill', is SIGKILLed there). Yields a Run whose code/out/err are filled in after the block."""
        proc, out, err = self.start(module, argv, trigger=trigger, sig=signal.SIGSTOP, env=env)
        while proc.exitcode is None and _state(proc.pid) != 'T':
            time.sleep(0.02)
        assert proc.exitcode is None, f'the run ended ({proc.exitcode}) before {trigger} fired'
        result = Run(None, '', '', proc.pid)
        try:
            yield result
        finally:
            if then == 'kill':
                os.killpg(proc.pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGCONT)
            proc.join(600)
            _reap_group(proc.pid)
            result.code, result.out, result.err = proc.exitcode, out.read_text(errors='replace'), err.read_text(
                errors='replace')


def _state(pid: int) -> str:
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return '?'


def _reap_group(pgid: int) -> None:
    """Processes of a killed group outlive its leader until the kernel has delivered the signal: wait for them."""
    for _ in range(500):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def run_main(main: Callable, argv: list, capsys=None) -> tuple[int, str]:
    """main(argv) in this process, for the cheap input checks: (exit code, stderr text captured by capsys)."""
    if capsys is not None:
        capsys.readouterr()
    try:
        code = main([str(a) for a in argv]) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err if capsys is not None else ''
    return code, err


def one_line_error(err: str, *parts: str) -> str:
    """The stderr of a refused run: exactly one `error:` line, no traceback; returns that line."""
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, err[-3000:]
    assert 'Traceback (most recent call last)' not in err, err[-3000:]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def tree(root: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """{relative path: sha256} of every file under root (symlinks by target)."""
    out = {}
    for p in sorted(Path(root).rglob('*')):
        rel = str(p.relative_to(root))
        if p.is_file() and not skip(rel):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def debris(*roots: Path) -> list[str]:
    """Temp files, partial files, locks and aside folders left under the roots."""
    found = []
    for root in roots:
        for p in Path(root).rglob('*'):
            if DEBRIS.search(p.name):
                found.append(str(p))
    return sorted(found)


def files_mode(root: Path) -> set[int]:
    return {p.stat().st_mode & 0o777 for p in Path(root).rglob('*') if p.is_file()}


# ---- full disks ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def can_mount() -> str | None:
    """None when this process may mount a tmpfs, else why not (the disk-full cases then skip)."""
    if os.geteuid() != 0:
        return 'not root: a small tmpfs cannot be mounted here'
    probe = Path('/tmp') / f'medico-tmpfs-probe-{os.getpid()}'
    probe.mkdir(exist_ok=True)
    try:
        proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(probe)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return f'mount -t tmpfs failed: {proc.stderr.strip()[:200]}'
        subprocess.run(['umount', str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int):
    """A tmpfs of size_mb MiB mounted at path for the block (skips the test when the machine does not allow it)."""
    why = can_mount()
    if why:
        pytest.skip(f'full-disk case not run: {why}')
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size_mb}m,mode=0755', 'tmpfs', str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', str(path)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the disk with one filler file until at most `leave` bytes are free."""
    filler = disk / 'filler.bin'
    with open(filler, 'wb') as f:
        block = b'\0' * (1 << 16)
        while True:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            if free <= leave:
                break
            try:
                f.write(block[:max(1, min(len(block), free - leave))])
                f.flush()
            except OSError:
                break
    return filler
