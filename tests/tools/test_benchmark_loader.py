"""The benchmark's `loader` section: what it decodes is what training decodes, before and after,
and it reports per-worker rates against the GPU figure it names."""

import json

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from retinanet.data.common import load_image
from retinanet.tools import benchmark
from retinanet.tools.benchmark.loader import GPU_IMAGES_PER_S, _pil, write_jpegs


def test_every_decoder_gives_the_training_images_pixels(tmp_path):
    from retinanet.data import build_dataset

    for path in write_jpegs(tmp_path, 96, 64, 2, seed=0):
        ours = load_image(path, dtype=torch.uint8)
        theirs = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        before = _pil(path)
        assert ours.shape == theirs.shape == before.shape == (3, 64, 96)
        assert torch.equal(ours, theirs) and torch.equal(ours, before)  # the same libjpeg result here: a fair race
    # what a dataset yields is the "ours" case
    (tmp_path / "a.csv").write_text(f"{path.name},1,1,20,20,thing\n")
    image, _ = build_dataset("csv", tmp_path / "a.csv", images_dir=tmp_path)[0]
    assert image.dtype == torch.uint8 and torch.equal(image, load_image(path, dtype=torch.uint8))


def test_loader_section_reports_rates_per_worker_and_the_workers_a_gpu_needs(tmp_path):
    out = tmp_path / "bench"
    assert benchmark.main(["--quick", "--only", "loader", "--out", str(out)]) == 0
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if r["section"] == "loader"]
    assert len(rows) == 1
    row = rows[0]
    details = row["details"]
    rates = details["images_per_s"]
    assert set(rates) == {"ours", "before", "torchvision", "PIL uint8"}
    assert all(v > 0 for v in rates.values())
    assert abs(rates["ours"] - 1000 / row["ours_ms"]) < 1e-6 * rates["ours"]
    assert details["gpu_images_per_s"] == GPU_IMAGES_PER_S == 10.0
    workers = GPU_IMAGES_PER_S / rates["ours"]
    assert f"{workers:.2f} workers" in row["notes"]
