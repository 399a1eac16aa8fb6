"""Published weights: fetched once into torch's hub cache, always loaded without executing code."""

from __future__ import annotations

import logging
import os
from urllib.parse import urlparse

import torch

log = logging.getLogger(__name__)


def cached_path(url: str) -> str:
    """Where `url` lives in the torch hub cache ($TORCH_HOME/hub/checkpoints/<file name>), the
    same place torchvision keeps it, so weights downloaded by either are shared."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def load_url_state_dict(source: str) -> dict:
    """A state dict from a local file or a URL (downloaded into the cache on first use).

    Loaded with `weights_only=True`: a checkpoint can hold tensors, never code.
    """
    if "://" in source:
        path = cached_path(source)
        if not os.path.exists(path):
            log.info("downloading %s to %s", source, path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                torch.hub.download_url_to_file(source, path, progress=True)  # writes a temp file, then renames
            except Exception as e:  # no network, proxy, HTTP error
                raise RuntimeError(
                    f"could not download {source} ({e}); without internet, put the file at {path} "
                    "or pass a local path instead"
                ) from e
    else:
        path = source
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint of ours or detectron2-style
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state
