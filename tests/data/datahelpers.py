"""Helpers that write tiny datasets (PNGs drawn with PIL) for the data-layer tests.

A module of its own, not conftest.py, so that `from datahelpers import ...` cannot pick up
another directory's conftest.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def write_image(path: Path, width: int = 40, height: int = 30, colour=(30, 60, 90), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path, format=fmt)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_dict(images, annotations, categories=((3, "cat"), (7, "dog"))) -> dict:
    """images: [(id, file, w, h)]; annotations: [(image_id, category_id, [x, y, w, h], iscrowd)]."""
    return {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "annotations": [
            {
                "id": k + 1,
                "image_id": i,
                "category_id": c,
                "bbox": list(b),
                "area": float(b[2] * b[3]),
                "iscrowd": crowd,
            }
            for k, (i, c, b, crowd) in enumerate(annotations)
        ],
        "categories": [{"id": c, "name": n} for c, n in categories],
    }


def voc_xml(filename: str, width: int, height: int, objects) -> str:
    """objects: [(name, (xmin, ymin, xmax, ymax), difficult)]; width 0 leaves <size> out."""
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if width else ""
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return f"<annotation><filename>{filename}</filename>{size}{objs}</annotation>"
