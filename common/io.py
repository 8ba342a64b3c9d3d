"""Atomic file writes, exclusive output locks and JSONL helpers: nothing half-written is ever left at the final path.

Temp files and folders are named `.<final name>.<host>-<pid>.<random>.tmp`, so a later writer in the same folder can
tell the debris of a killed process (its pid is gone) from the work of a live one and remove it. Files are created
with mode 0666 minus the umask, like `open()` creates them, not mkstemp's private 0600.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any, Iterable, Iterator

from common.errors import InputError

_HOST = re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname())[:40] or 'host'
_TEMP = re.compile(r'^\..+\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$')
_swept: set[tuple[int, str]] = set()   # (pid, folder): each process sweeps a folder once
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def temp_name(path: str | os.PathLike) -> Path:
    """A fresh temp path next to `path`, in the form `sweep_stale_temps` recognises."""
    path = Path(path)
    return path.with_name(f'.{path.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike) -> int:
    """Remove temp files and folders in `folder` left by killed writers of this host; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or m['host'] != _HOST or _alive(int(m['pid'])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def _sweep_once(folder: Path) -> None:
    key = (os.getpid(), str(folder))
    if key not in _swept:
        sweep_stale_temps(folder)
        _swept.add(key)


def _disk_full_names(e: OSError, path: Path) -> OSError:
    """A disk-full error raised by a write() names no file; name the one being written."""
    if e.errno in DISK_FULL and not e.filename:
        return OSError(e.errno, e.strerror, str(path))
    return e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    while True:
        tmp = temp_name(path)
        try:  # 0o666 & ~umask, as open() would create the final file
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and (named := _disk_full_names(e, path)) is not e:
            raise named from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w', **kwargs):
    """open() that writes to a temp file and renames it onto `path` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder next to `path`; on success it takes the place of `path` (an old folder there is
    moved aside under a temp name first, then removed). On failure the temp folder is removed and `path` is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    tmp = temp_name(path)
    os.mkdir(tmp, 0o777)   # 0o777 & ~umask, as mkdir would; mkdtemp's would be private
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = temp_name(path) if path.exists() else None
    if old is not None:
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def umask() -> int:
    """This process's umask (read without changing it where Linux shows it)."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(folder: str | os.PathLike) -> None:
    """Give the files under `folder` the mode open() would (0666 & ~umask): tools that write through mkstemp leave
    0600 files, unreadable to the other users of a shared folder."""
    mode = 0o666 & ~umask()
    for path in Path(folder).rglob('*'):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


@contextlib.contextmanager
def exclusive_lock(lock: str | os.PathLike, what: str, output: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold an exclusive flock on the file `lock` for the block, or raise InputError at once when another process holds
    it. The lock file is removed on exit; the kernel drops the lock of a killed process, so a stale file is harmless.
    """
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    import fcntl
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f'another {what} is writing here now (lock file {lock}); wait for it to finish or '
                             'choose another output', file=str(output or lock)) from None
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically, one JSON object per line; returns the number of rows."""
    n = 0
    with atomic_open(path, 'w', encoding='utf-8') as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + '\n')
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write('\n')


def decode_line(raw: bytes, file: str, row: int) -> str:
    """One line of a UTF-8 text file; a byte that is not UTF-8 is an InputError naming file, line and column."""
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise InputError(f'not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})', file=file,
                         row=row) from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file; a missing file or a bad line is an InputError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError('file not found', file=str(path))
    rows = []
    with open(path, 'rb') as f:
        for i, raw in enumerate(f, 1):
            line = decode_line(raw, str(path), i)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f'not valid JSON ({e.msg})', file=str(path), row=i) from None
            if not isinstance(row, dict):
                raise InputError('line is not a JSON object', file=str(path), row=i)
            rows.append(row)
    return rows
