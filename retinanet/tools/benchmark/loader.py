"""The `loader` section: images per second that one data-loader worker decodes, PIL (the
library's `load_image`) against `torchvision.io.decode_image`, on synthetic JPEGs of 640 x 480
and 1333 x 800 px (COCO-sized and the paper's 800 px scale), against what one GPU trains on.

One worker: torch uses one thread per DataLoader worker process, so the decode is timed with
one thread. The GPU figure it is compared with: detectron2's RetinaNet R50-FPN 1x trains 16
images per iteration in 0.200 s on 8 V100s (its MODEL_ZOO.md, 2019), 10 images/s per GPU in
float32; a newer GPU in bf16 consumes several times that, so the workers needed scale with it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...data.common import load_image
from .context import Context
from .timing import Case, measure, run_counts, summary_row

GPU_IMAGES_PER_S = 10.0  # detectron2 MODEL_ZOO.md, RetinaNet R50-FPN 1x: 16 / (0.200 s x 8 V100)
GPU_SOURCE = "detectron2 MODEL_ZOO.md: RetinaNet R50-FPN 1x, 0.200 s per 16-image iteration on 8 V100"
SIZES = ((640, 480), (1333, 800))
QUICK_SIZES = ((160, 120),)


def write_jpegs(folder: Path, width: int, height: int, count: int, seed: int) -> list[Path]:
    """`count` photo-like JPEGs (quality 90): smooth colour fields (a coarse random grid,
    bicubic-upsampled) plus grain, so that they compress like photographs, not like noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        path = folder / f"{width}x{height}_{i}.jpg"
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def loader(ctx: Context) -> None:
    from torchvision.io import ImageReadMode, decode_image, read_file

    a = ctx.args
    count = 2 if a.quick else 8
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in QUICK_SIZES if a.quick else SIZES:
            paths = write_jpegs(Path(tmp), width, height, count, a.seed)

            def pil_float():
                return [load_image(p) for p in paths]

            def tv_float():
                return [decode_image(read_file(str(p)), mode=ImageReadMode.RGB).float().div_(255) for p in paths]

            def pil_uint8():
                out = []
                for p in paths:
                    with Image.open(p) as im:
                        out.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
                return out

            def tv_uint8():
                return [decode_image(read_file(str(p)), mode=ImageReadMode.RGB) for p in paths]

            cases = [
                Case("ours", pil_float),
                Case("torchvision", tv_float),
                Case("PIL uint8", pil_uint8),
                Case("decode_image uint8", tv_uint8),
            ]
            torch.set_num_threads(1)
            try:
                m = measure(cases, a, torch.device("cpu"))
            finally:
                torch.set_num_threads(threads)
            per_image = {c.name: m.median_ms(c.name) / count for c in cases}
            rate = {k: 1000.0 / v for k, v in per_image.items()}
            diff = max(
                float((x - y).abs().max()) for x, y in zip(m.outputs["ours"], m.outputs["torchvision"])
            )  # libjpeg builds may round the IDCT differently: a level or two
            best = max(rate["ours"], rate["torchvision"])
            notes = (
                f"one worker: PIL {rate['ours']:.0f} images/s, decode_image {rate['torchvision']:.0f} "
                f"(uint8 only: PIL {rate['PIL uint8']:.0f}, decode_image {rate['decode_image uint8']:.0f}); "
                f"one GPU trains on ~{GPU_IMAGES_PER_S:g} images/s ({GPU_SOURCE}): "
                f"{GPU_IMAGES_PER_S / best:.2f} workers at the faster decoder, before resizing and "
                f"augmentation; largest pixel difference {diff * 255:.0f}/255"
            )
            ctx.rows.append(
                summary_row(
                    "loader",
                    f"JPEG decode {width} x {height}, per image, one worker (ours: PIL load_image, float)",
                    None,
                    None,
                    None,
                    notes=notes,
                    ours_ms=per_image["ours"],
                    tv_ms=per_image["torchvision"],
                    ms_per_image=per_image,
                    images_per_s=rate,
                    gpu_images_per_s=GPU_IMAGES_PER_S,
                    gpu_source=GPU_SOURCE,
                    max_abs_diff=diff,
                    runs=run_counts(m),
                )
            )
