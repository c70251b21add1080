"""The run lock: ``<run dir>.lock``, held by whoever trains the run (an executor or ``ablate fit``).

A :class:`filelock.FileLock` (``flock``: exclusive, non-blocking here, released by the OS when the
holder dies, also against another lock object in the same process). The holder may delete the
lock file when it is done (``release(remove=True)``, as a standalone ``ablate fit`` does, so run
folders hold no lock files); filelock re-locks a fresh file when the inode it locked was unlinked
by the previous holder.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

# Set in a run's child process: the path of the run lock the executor holds for it. ``train`` takes
# the same lock when run on its own, and skips it when this names its lock (the child may not take
# the lock its parent holds: flock conflicts between open file descriptions, even parent-child).
HELD_LOCK_ENV = "ABLATE_RUN_LOCK_HELD"


def lock_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + ".lock")


class RunLock:
    """``try_acquire()`` -> bool, ``release(remove=False)``; ``fd`` is the locked descriptor while
    held (an executor closes the other runs' descriptors in each child it forks)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self._lock = FileLock(self.path, timeout=0, thread_local=False, on_acquired=self._acquired)

    def _acquired(self, fd: int) -> None:
        self.fd = fd
        with contextlib.suppress(OSError):  # who holds it, for a person looking at the file
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {os.uname().nodename} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except (Timeout, PermissionError):
            return False
        return True

    def release(self, remove: bool = False) -> None:
        if not self._lock.is_locked:
            return
        if remove:  # while still holding it (see the module docstring)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._lock.release()
        self.fd = None
