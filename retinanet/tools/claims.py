"""Several processes on one table: a run is trained by the process that holds its folder's lock,
so that workers started side by side (one per GPU, or two single-threaded ones on a 2-core CPU,
where they do ~1.4x the work of one two-threaded process) share a table's runs instead of
training the same run twice.

The lock is an advisory `fcntl.flock` on <run_dir>/.lock, held while the run trains. The
operating system releases it when its process ends, however it ends, so a killed worker leaves
nothing stale behind: the next one takes the lock and resumes the run from its checkpoint. The
file names the holder (host, pid, start time) for the messages of the others. Under torchrun
all processes of the job train each run together, so a distributed table takes no locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK_NAME = ".lock"


def distributed() -> bool:
    """True under torchrun with more than one process (the job trains every run together)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class RunLock:
    """The lock of one run folder. `try_acquire()` -> bool without waiting, `acquire()` waits
    until the holder is done (or dead); `release()`; `holder()` says who has it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _took(self, fd: int) -> None:
        self._fd = fd
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._took(fd)
        return True

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._took(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        """ "pid N on HOST since T" from the lock file, or "another process"."""
        try:
            r = json.loads(self.path.read_text())
            return f"pid {r['pid']} on {r['host']} since {r['since']}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["LOCK_NAME", "RunLock", "distributed"]
