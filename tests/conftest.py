"""Fixtures shared by the tests of several modules."""

import os

import pytest
import torch


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A temporary torch hub cache (TORCH_HOME and torch.hub's dir), restored afterwards."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(os.path.join(torch.hub._get_torch_home(), "hub"))
