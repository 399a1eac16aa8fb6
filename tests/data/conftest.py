"""Fixtures of the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from datahelpers import coco_dict, write_image, write_json


@pytest.fixture
def coco_case(tmp_path: Path):
    """A COCO dataset: a.png with 2 boxes + a crowd box, b.png empty, c.png with 1 box."""
    images_dir = tmp_path / "images"
    for name, (w, h) in {"a.png": (40, 30), "b.png": (20, 20), "c.png": (24, 32)}.items():
        write_image(images_dir / name, w, h)
    data = coco_dict(
        [(1, "a.png", 40, 30), (2, "b.png", 20, 20), (5, "c.png", 24, 32)],
        [
            (1, 7, [2, 3, 10, 5], 0),
            (1, 3, [20, 10, 15, 12], 0),
            (1, 3, [0, 0, 30, 20], 1),
            (5, 7, [1.5, 2.5, 4, 6], 0),
        ],
    )
    ann = write_json(tmp_path / "annotations" / "instances.json", data)
    return images_dir, ann, data
