"""Tiled prediction on image files, for `retinanet predict --tile SIZE --tile-overlap F`: large
images with small objects (aerial and satellite pictures, slides, documents).

Each image is read as uint8 (no size limit: Pillow's decompression-bomb check is lifted, see
`retinanet.data.tile.load_rgb8`), turned as its EXIF orientation says, and cut into overlapping
tiles of SIZE px that go through the model at their native scale, a few at a time; the
detections are mapped to image pixels and merged (retinanet/engine/tiling.py: the grid, the
native scale, the rule for objects on tile borders, bounded memory). The outputs are those of
`predict_images`: OUT/<stem>.json, OUT/<stem>.png and the COCO-style file.

In Python:

    from retinanet.engine.tiling import TileSpec, predict_tiled
    dets = predict_tiled(model.eval(), uint8_hwc_array, TileSpec(512, 0.25))  # boxes in image pixels
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..data.common import LOGGER, DatasetError
from ..data.tile import load_rgb8, tile_windows
from ..engine.tiling import TileSpec, predict_tiled
from ..utils.paths import unique_stems
from ..utils.visualize import to_pil
from .predict import CocoPredictions, detection_records, draw_records


def predict_images_tiled(
    model,
    device: torch.device,
    images: Sequence[Path],
    out: Path,
    class_names: Sequence[str],
    score_thresh: float,
    spec: TileSpec,
    pictures: bool = True,
    coco: Optional[CocoPredictions] = None,
) -> tuple[int, list[str]]:
    """`predict_images` by tiles: each image file cut by `spec`, its detections with score >=
    score_thresh written as OUT/<stem>.json (with a "tiling" entry: size, overlap, full_image)
    and OUT/<stem>.png, and added to `coco`. An unreadable file is skipped and named. Returns
    (the number of detections, the messages of the skipped files)."""
    total, failed = 0, []
    tiling = {"size": spec.size, "overlap": spec.overlap, "full_image": spec.full_image}
    for path, stem in tqdm(list(zip(images, unique_stems(images))), desc="predict", unit="img", disable=not images):
        try:
            pixels, orientation = load_rgb8(path, orient=True)  # boxes in the frame the user sees
        except DatasetError as e:  # truncated, empty, not an image, vanished since the listing
            failed.append(str(e))
            LOGGER.warning("skipped: %s", e)
            continue
        det = predict_tiled(model, pixels, spec, device)
        records = detection_records(det, class_names, score_thresh)
        total += len(records)
        height, width = pixels.shape[:2]
        if pictures:
            draw_records(pixels, records, class_names).save(out / f"{stem}.png")
        result = {"image": str(path), "width": int(width), "height": int(height), "tiling": tiling}
        if orientation != 1:
            result["exif_orientation"] = orientation
        result["detections"] = records
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
        if coco is not None:
            coco.add(str(path), width, height, records)
        del pixels
    return total, failed


def draw_tile_grid(image, spec: TileSpec, colour=(255, 255, 255), opacity: float = 0.35, width: int = 1):
    """A copy of `image` (PIL, array or tensor) with the outline of every tile of `spec` drawn
    faintly (blended at `opacity`): pictures of what the model saw."""
    canvas = to_pil(image).convert("RGBA")
    overlay = canvas.copy()
    draw = ImageDraw.Draw(overlay)
    for x0, y0, x1, y1 in tile_windows(canvas.height, canvas.width, spec.size, spec.overlap).tolist():
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour + (255,), width=width)
    return Image.blend(canvas, overlay, opacity).convert("RGB")


__all__ = ["draw_tile_grid", "predict_images_tiled"]
