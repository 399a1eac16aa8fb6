"""Where the project's files are: the source checkout the package runs from, or the current
folder.

configs/ and experiments/ ship with the source checkout (an editable install). When the package
runs from a checkout, their documented relative paths ("configs/synth/retinanet_r18_synth.yaml")
mean that checkout's files, from any working directory; installed elsewhere, they mean the
current folder's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# retinanet/utils/paths.py -> the folder holding retinanet/ (the checkout's root when editable).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def in_checkout() -> bool:
    """True when the package runs from a source checkout (pyproject.toml beside it)."""
    return (SOURCE_ROOT / "pyproject.toml").is_file() and (SOURCE_ROOT / "configs").is_dir()


def project_path(relative: str | Path) -> Path:
    """`relative` (a path inside the project, e.g. "experiments/tables") in the source checkout
    when the package runs from one, else in the current folder. Absolute paths are kept."""
    relative = Path(relative)
    if relative.is_absolute():
        return relative
    return (SOURCE_ROOT if in_checkout() else Path.cwd()) / relative


def unique_stems(paths: Sequence[str | Path]) -> list[str]:
    """One output name per input file: its stem, with -2, -3, ... for a stem seen before (two
    folders' a.jpg become a and a-2), so that no output overwrites another."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem
        n = seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if n == 1 else f"{stem}-{n}")
    return stems


__all__ = ["SOURCE_ROOT", "in_checkout", "project_path", "unique_stems"]
