"""Weights files: fetched once into torch's hub cache, always read without executing code.

`read_weights_file` is the one place the library calls `torch.load`: with `weights_only=True`,
so a checkpoint can hold tensors and plain containers, never code.
"""

from __future__ import annotations

import logging
import os
import pickle
from urllib.parse import urlparse

import torch

log = logging.getLogger(__name__)


def cached_path(url: str) -> str:
    """Where `url` lives in the torch hub cache ($TORCH_HOME/hub/checkpoints/<file name>), the
    same place torchvision keeps it, so weights downloaded by either are shared."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def local_file(source: str) -> str:
    """The local path of `source`: a path as it is, or a URL's file in the hub cache, downloaded
    on first use (a temporary file renamed into place, so an interrupted download leaves none)."""
    if "://" not in source:
        return source
    path = cached_path(source)
    if not os.path.exists(path):
        log.info("downloading %s to %s", source, path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            torch.hub.download_url_to_file(source, path, progress=True)
        except Exception as e:  # no network, proxy, HTTP error
            raise RuntimeError(
                f"could not download {source} ({e}); without internet, put the file at {path} "
                "or pass a local path instead"
            ) from e
    return path


def read_weights_file(path: str | os.PathLike, what: str = "weights file"):
    """The object saved in `path` (`torch.load(..., weights_only=True)` on the CPU).

    FileNotFoundError naming the file when it is missing; ValueError naming it when it is not a
    readable PyTorch file (truncated, corrupt, or holding objects other than tensors)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message suggests weights_only=False: never here
        raise ValueError(
            f"{path}: not a readable {what}: not a PyTorch file, truncated or corrupt, or holding objects other than "
            "tensors and plain containers (which are never loaded: loading must not execute code)"
        ) from e
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ValueError(
            f"{path}: not a readable {what}, possibly truncated or corrupt ({type(e).__name__}: {first})"
        ) from e


def load_url_state_dict(source: str) -> dict:
    """A state dict from a local file or a URL (downloaded into the cache on first use). A
    training checkpoint's "model" entry is taken (ours and detectron2's)."""
    path = local_file(source)
    state = read_weights_file(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


__all__ = ["cached_path", "load_url_state_dict", "local_file", "read_weights_file"]
