"""One-line errors for bad input.

Every stage raises `InputError` for problems the user can fix (a wrong path, a bad row, a missing tool).
`cli_main` turns it into one line on stderr and exit code 2, so scripts and `make` stop at once; a full disk is
reported the same way (what was written before stays whole: every output goes through common.io's temp + rename).
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable


class InputError(Exception):
    """A problem with the user's input, reported as one line: `file:row: field: message`."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.file, self.row, self.field, self.message = file, row, field, message
        location = f'{file or ""}{f":{row}" if row is not None else ""}'
        parts = [p for p in (location, field, message) if p]
        super().__init__(': '.join(parts))


def require_positive(args, names) -> None:
    """Each named command-line value that is given must be >= 1; the first that is not is one line naming its flag."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f'must be >= 1, got {value}', field='--' + name.replace('_', '-'))


def cli_main(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a CLI entry point: InputError -> `error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs) or 0
        except InputError as e:
            print(f'error: {e}', file=sys.stderr)
            raise SystemExit(2)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            where = f'{e.filename}: ' if e.filename else ''
            print(f'error: {where}{os.strerror(e.errno)}: free some space and rerun (finished outputs are kept)',
                  file=sys.stderr)
            raise SystemExit(2)

    return wrapper
