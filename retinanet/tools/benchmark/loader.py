"""The `loader` section: images per second that one data-loader worker decodes into what the
datasets yield, on synthetic JPEGs of 640 x 480 and 1333 x 800 px (COCO-sized and the paper's
800 px scale), before and after the datasets moved to uint8 from TorchCodec's decoder, against
torchvision.io's decoder and against what one GPU trains on.

Cases: ours (`load_image(dtype=uint8)`: TorchCodec for 8-bit JPEG/PNG, the datasets' decode),
before (PIL, then float in [0, 1]: the datasets' decode until then), torchvision
(`torchvision.io.decode_image`, uint8, deprecated since torchvision 0.29 in favour of TorchCodec)
and PIL uint8.

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
from torch import Tensor

from ...data.common import load_image, to_rgb8
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


def _pil(path: Path) -> Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(to_rgb8(im)).permute(2, 0, 1)


def loader(ctx: Context) -> None:
    import warnings

    from torchvision.io import ImageReadMode, decode_image, read_file

    a = ctx.args
    count = 2 if a.quick else 8
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io's decoders, deprecated in 0.29
        for width, height in QUICK_SIZES if a.quick else SIZES:
            paths = write_jpegs(Path(tmp), width, height, count, a.seed)
            cases = [
                Case("ours", lambda: [load_image(p, dtype=torch.uint8) for p in paths]),
                Case("before", lambda: [_pil(p).float().div_(255.0) for p in paths]),
                Case("torchvision", lambda: [decode_image(read_file(str(p)), mode=ImageReadMode.RGB) for p in paths]),
                Case("PIL uint8", lambda: [_pil(p) for p in paths]),
            ]
            torch.set_num_threads(1)
            try:
                m = measure(cases, a, torch.device("cpu"))
            finally:
                torch.set_num_threads(threads)
            per_image = {c.name: m.median_ms(c.name) / count for c in cases}
            rate = {k: 1000.0 / v for k, v in per_image.items()}
            diff = max(
                max(int((x.int() - y.int()).abs().max()) for x, y in zip(m.outputs["ours"], m.outputs[other]))
                for other in ("torchvision", "PIL uint8")
            )  # libjpeg builds may round the IDCT differently: a level or two
            notes = (
                f"one worker: ours {rate['ours']:.0f} images/s, before {rate['before']:.0f} "
                f"({rate['ours'] / rate['before']:.2f}x), torchvision.io {rate['torchvision']:.0f}, "
                f"PIL uint8 {rate['PIL uint8']:.0f}; one GPU trains on ~{GPU_IMAGES_PER_S:g} images/s "
                f"({GPU_SOURCE}): {GPU_IMAGES_PER_S / rate['ours']:.2f} workers, before resizing and "
                f"augmentation; largest pixel difference {diff}/255"
            )
            ctx.rows.append(
                summary_row(
                    "loader",
                    f"JPEG decode {width} x {height}, per image, one worker (ours: load_image uint8)",
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
