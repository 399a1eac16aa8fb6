"""Large images with small objects, made from the synthetic dataset, for the README's section on
tiled prediction: mosaics of G x G validation images (a COCO dataset with their boxes), and the
picture docs/tiled_prediction.jpg (a mosaic predicted by tiles, the tile grid drawn faintly).

    .venv/bin/python scripts/tiling_demo.py --out data/mosaics              # 6 mosaics of 4 x 4 images
    .venv/bin/python scripts/tiling_demo.py --out data/mosaics --picture docs/tiled_prediction.jpg \\
        --weights outputs/synth/retinanet_r18_synth/model_final.pth

The source is the synthetic dataset's val split (`retinanet data synth`, or the demo's copy in
~/.cache/retinanet); each mosaic is written once, as a high-quality JPEG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retinanet.data import build_dataset, default_synth_dir
from retinanet.data.tile import load_rgb8
from retinanet.engine.tiling import TileSpec, predict_tiled
from retinanet.inference.tiling import draw_tile_grid
from retinanet.utils.visualize import draw_detections
from retinanet.weights.loader import load_model


def write_mosaics(source: Path, out: Path, grid: int, count: int) -> Path:
    """OUT/annotations/instances_val.json and OUT/val/mosaic_<k>.jpg: `count` mosaics of
    grid x grid consecutive images of the source's val split, their boxes moved with them."""
    dataset = build_dataset("coco", source, split="val")
    side = dataset.records[0].width
    if any((r.width, r.height) != (side, side) for r in dataset.records):
        raise SystemExit("the mosaics need square images of one size")
    (out / "val").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": c, "name": n} for n, c in zip(dataset.class_names, dataset.label_to_cat_id)]
    for k in range(count):
        records = dataset.records[k * grid * grid : (k + 1) * grid * grid]
        if len(records) < grid * grid:
            break
        mosaic = np.zeros((grid * side, grid * side, 3), np.uint8)
        name = f"mosaic_{k + 1}.jpg"
        coco["images"].append({"id": k + 1, "file_name": name, "width": grid * side, "height": grid * side})
        for i, rec in enumerate(records):
            y, x = divmod(i, grid)
            mosaic[y * side : (y + 1) * side, x * side : (x + 1) * side] = load_rgb8(rec.path)[0]
            for (x1, y1, x2, y2), label in zip(rec.boxes.tolist(), rec.labels.tolist()):
                x1, y1, x2, y2 = x1 + x * side, y1 + y * side, x2 + x * side, y2 + y * side
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": k + 1,
                        "category_id": dataset.label_to_cat_id[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        Image.fromarray(mosaic).save(out / "val" / name, quality=95, subsampling=0)
    (out / "annotations").mkdir(exist_ok=True)
    path = out / "annotations" / "instances_val.json"
    path.write_text(json.dumps(coco))
    return path


def picture(image_path: Path, weights: str, out: Path, spec: TileSpec, score_thresh: float, width: int) -> Path:
    """The image predicted by tiles: the tile grid faintly in white, detections >= score_thresh."""
    loaded = load_model(weights)
    model = loaded.model.eval()
    pixels, _ = load_rgb8(image_path)
    with torch.no_grad():
        det = predict_tiled(model, pixels, spec)
    keep = det["scores"] >= score_thresh
    canvas = draw_tile_grid(pixels, spec, opacity=0.5, width=3)
    canvas = draw_detections(canvas, det["boxes"][keep], det["labels"][keep], det["scores"][keep], loaded.class_names)
    if canvas.width > width:  # drawn at full size, then shrunk: a picture for a README
        canvas = canvas.resize((width, round(canvas.height * width / canvas.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=80)
    print(f"{out}: {int(keep.sum())} detections with score >= {score_thresh} by {spec.size} px tiles")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=default_synth_dir(), help="a synthetic dataset folder")
    p.add_argument("--out", type=Path, required=True, help="the folder of the mosaics (a COCO dataset)")
    p.add_argument("--grid", type=int, default=4, help="images per side of a mosaic (default 4)")
    p.add_argument("--count", type=int, default=6, help="mosaics (default 6)")
    p.add_argument("--picture", type=Path, help="also draw the first mosaic predicted by tiles into this file")
    p.add_argument("--weights", help="the checkpoint for --picture")
    p.add_argument("--tile", type=int, default=320)
    p.add_argument("--tile-overlap", type=float, default=0.25)
    p.add_argument("--score-thresh", type=float, default=0.3)
    p.add_argument("--width", type=int, default=960, help="the picture's width (default 960)")
    args = p.parse_args()
    path = write_mosaics(args.source, args.out, args.grid, args.count)
    print(f"mosaics: {path}")
    if args.picture:
        if not args.weights:
            raise SystemExit("--picture needs --weights")
        first = args.out / "val" / "mosaic_1.jpg"
        spec = TileSpec(args.tile, args.tile_overlap)
        picture(first, args.weights, args.picture, spec, args.score_thresh, args.width)


if __name__ == "__main__":
    main()
