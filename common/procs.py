"""Child processes that die with their parent.

A process killed with SIGKILL runs no clean-up, so its children (vLLM's engine core holding GPU memory, encode
workers, data-parallel workers) would live on as orphans. Linux can tie a child to its parent instead:
prctl(PR_SET_PDEATHSIG, SIGKILL) makes the kernel kill the child when the parent thread that started it exits.
- children started by `multiprocessing` with the spawn method (vLLM's engine core, process pools) re-import the
  parent's main module as `__mp_main__`: a main module calls `die_with_spawning_parent()` under that name (and
  `mark_parent()` as `__main__`);
- `subprocess.Popen(..., preexec_fn=die_with_parent)` does it between fork and exec for a command.
A child forked by `multiprocessing` (vLLM's default start method for its engine core) runs neither: the kernel clears
the death signal at fork. So our vLLM paths make vLLM spawn (inference.vllm_engine.spawn_engine_processes).
Elsewhere (not Linux) these are no-ops.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_PID = 'MEDICO_PARENT_PID'  # the pid of the process a child was started by (set by every process for its own)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits; with `parent_pid`, exit at once if the parent is
    no longer that process (it died before the request took effect). Safe as a Popen preexec_fn."""
    if not sys.platform.startswith('linux'):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def die_with_spawning_parent() -> None:
    """For a child started by multiprocessing (spawn): die with the process that marked itself as parent."""
    expected = os.environ.get(PARENT_PID)
    die_with_parent(int(expected) if expected else None)
    mark_parent()


def mark_parent() -> None:
    """Record this process as the parent of the children it starts from now on (see die_with_spawning_parent)."""
    os.environ[PARENT_PID] = str(os.getpid())
