"""Bad input through the command line: one line on stderr naming the file, entry or key, exit
status 2, and never a Python traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from retinanet.cli import main

TINY = ["model.backbone=resnet18", "model.min_size=64", "model.max_size=64", "train.batch_size=2"]
TINY += ["train.max_iter=1", "train.lr_steps=[]", "train.warmup_iters=0", "data.num_workers=0"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A tiny CSV dataset in its own image folder, a corrupt checkpoint and a run folder."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48), (90, 30, 200)).save(images / name)
    csv = tmp_path / "ann.csv"
    csv.write_text("images/a.png,5,5,30,30,cat\nimages/b.png,10,8,40,30,dog\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}}, run / "last_checkpoint.pth")
    weights = {"backbone.conv1.weight": torch.zeros(1)}
    torch.save({"model": weights, "class_names": 5}, tmp_path / "bad_names.pth")
    torch.save({"model": weights, "config": {"model": {"backbone": "resnet7"}}}, tmp_path / "bad_config.pth")
    paths = {"images": images, "csv": csv, "empty": empty, "corrupt": corrupt, "run": run}
    return {k: str(v) for k, v in paths.items()}


CASES = [
    # (argv with {placeholders}, words the one-line error must contain)
    (["train", "{tmp}/nope.yaml"], "nope.yaml"),
    (["train", "-", "model.min_size=0"], "model.min_size=0: expected >= 1"),
    (["train", "-", "model.size_divisor=0"], "model.size_divisor=0"),
    (["train", "-", "model.fpn_channels=-1"], "model.fpn_channels=-1"),
    (["train", "-", "model.nms_thresh=2"], "model.nms_thresh=2"),
    (["train", "-", "model.focal_gama=1"], "did you mean 'model.focal_gamma'"),
    (["train", "-", "data.kind=csv", "data.train_path={tmp}/missing.csv"], "missing.csv"),
    # an empty training set (before: a bincount traceback on an empty float tensor)
    (["train", "-", "data.kind=csv", "data.train_path={empty}", "data.class_map=", *TINY], "empty.csv"),
    # a run folder holding another run
    (["train", "-", "data.kind=csv", "data.train_path={csv}", *TINY, "output_dir={run}"], "--resume"),
    # --resume from a weights-only checkpoint
    (["train", "-", "data.kind=csv", "data.train_path={csv}", *TINY, "output_dir={run}", "--resume"], "weights only"),
    (["eval", "--weights", "{corrupt}"], "corrupt.pth: not a readable checkpoint"),
    (["predict", "--weights", "{tmp}/none.pth", "{images}", "--out", "{tmp}/o"], "none.pth"),
    (["predict", "--weights", "{corrupt}", "{images}", "--out", "{tmp}/o"], "corrupt.pth"),
    (["export", "--weights", "{corrupt}", "--format", "onnx", "--out", "{tmp}/m.onnx"], "corrupt.pth"),
    (["predict", "--weights", "{corrupt}", "--model", "retinanet_r7_fpn", "{images}", "--out", "{tmp}/o"], "r7"),
    (["data", "check", "{tmp}/nothing.json"], "nothing.json"),
    (["train", "-", "train.device=gpu", "output_dir={tmp}/o"], "device 'gpu'"),
    # checkpoint entries of the wrong type (before: a crash deep in the loader)
    (["predict", "--weights", "{tmp}/bad_names.pth", "{images}", "--out", "{tmp}/o"], "'class_names' entry"),
    (["predict", "--weights", "{tmp}/bad_config.pth", "{images}", "--out", "{tmp}/o"], "saved config is not valid"),
    (["eval", "--weights", "{tmp}/bad_config.pth"], "saved config is not valid"),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, argv, words):
    values = {**files, "tmp": str(tmp_path)}
    argv = [a.format(**values) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # warnings may come before the one-line error
    assert last.startswith(("error:", "config error:")) and words in last, err


def test_csv_images_dir_is_honoured(files, tmp_path, capsys):
    # data.train_images_dir for CSV (documented, was rejected with a traceback): paths resolve there.
    csv = tmp_path / "elsewhere" / "ann.csv"
    csv.parent.mkdir()
    csv.write_text(Path(files["csv"]).read_text().replace("images/", ""))
    argv = ["train", "-", "data.kind=csv", f"data.train_path={csv}", f"data.train_images_dir={files['images']}"]
    assert main(argv + TINY + [f"output_dir={tmp_path / 'out'}"]) == 0, capsys.readouterr().err
    # no validation set: the trained weights are written all the same (before: only after an evaluation)
    assert (tmp_path / "out" / "model_final.pth").is_file()
