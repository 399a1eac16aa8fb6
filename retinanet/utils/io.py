"""Atomic file writes: a crash or a kill mid-write never leaves a truncated file behind.

Every file the library writes that a later run reads back (checkpoints, resolved configs,
result JSONs, COCO results) goes through `atomic_open`: the data is written to a temporary file
in the destination folder, flushed to disk, and renamed over the destination (os.replace is
atomic on POSIX and Windows when both are on one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file opened for writing (`mode` "w" or "wb") that replaces `path` only when the block
    ends without an exception; the folder is created when missing."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text or bytes) to `path` atomically; returns the path."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


__all__ = ["atomic_open", "atomic_write"]
