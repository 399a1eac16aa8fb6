"""`retinanet predict` over folders (batched, COCO-style JSON) and video files."""

import json
import sys

import numpy as np
import pytest
import torch
from helpers import write_mp4
from PIL import Image

from retinanet.cli import main
from retinanet.config import Config, config_to_dict
from retinanet.inference.predict import CocoPredictions, batched
from retinanet.model.build import build_model
from retinanet.model.config import ModelConfig

NAMES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="resnet18",
        num_classes=3,
        fpn_channels=64,
        head_convs=1,
        min_size=96,
        max_size=128,
        size_divisor=32,
        score_thresh=0.0,
        detections_per_img=5,
    )
    path = tmp_path_factory.mktemp("predict") / "tiny.pth"
    torch.save(
        {"model": build_model(cfg).state_dict(), "config": config_to_dict(Config(model=cfg)), "class_names": NAMES},
        path,
    )
    return path


def _frames(n=3, size=(80, 60)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_batched():
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batched([], 3)) == []


def test_coco_predictions_ids_and_boxes():
    ours = CocoPredictions(NAMES)
    ours.add("a.png", 10, 20, [{"box": [1.0, 2.0, 4.0, 8.0], "score": 0.5, "label": 2, "class_name": "owl"}])
    assert ours.data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "owl"}]
    (ann,) = ours.data["annotations"]
    assert (
        ann["category_id"] == 3 and ann["bbox"] == [1.0, 2.0, 3.0, 6.0] and ann["area"] == 18.0 and ann["image_id"] == 1
    )
    coco_ids = CocoPredictions(["__background__", "person", "N/A", "car"], category_ids=[0, 1, 2, 3])
    assert coco_ids.data["categories"] == [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    assert coco_ids.category_id(3) == 3
    own = CocoPredictions(["a", "b"], category_ids=[7, 1000])
    assert own.data["categories"] == [{"id": 7, "name": "a"}, {"id": 1000, "name": "b"}] and own.category_id(1) == 1000


def test_predict_folder_batched_with_coco_json(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, frame in enumerate(_frames(3)):
        frame.save(folder / ("sub" if i == 2 else "") / f"p{i}.png")
    out = tmp_path / "pred"
    coco = tmp_path / "all.json"
    argv = [
        "predict",
        "--weights",
        str(checkpoint),
        str(folder),
        "--out",
        str(out),
        "--score-thresh",
        "0",
        "--batch-size",
        "2",
        "--coco",
        str(coco),
        "--no-pictures",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p0.json", "p1.json", "p2.json"]  # no PNGs
    data = json.loads(coco.read_text())
    assert [im["file_name"].split("/")[-1] for im in data["images"]] == ["p0.png", "p1.png", "p2.png"]
    assert [im["id"] for im in data["images"]] == [1, 2, 3]
    assert len(data["annotations"]) == 15  # 5 detections per image at threshold 0
    per_image = json.loads((out / "p1.json").read_text())["detections"]
    anns = [a for a in data["annotations"] if a["image_id"] == 2]
    for d, a in zip(per_image, anns):
        x1, y1, x2, y2 = d["box"]
        assert a["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.011)
        assert a["category_id"] == d["label"] + 1 and a["score"] == d["score"]
    printed = capsys.readouterr().out
    assert "3 images, 15 detections" in printed and str(coco) in printed


def _predict_video(checkpoint, video, out) -> list[str]:
    """`retinanet predict` of one video at score threshold 0, the annotated video written."""
    return [
        "predict",
        "--weights",
        str(checkpoint),
        str(video),
        "--out",
        str(out),
        "--score-thresh",
        "0",
        "--save-video",
    ]


def test_predict_animated_gif_as_video(checkpoint, tmp_path, capsys):
    frames = _frames(4)
    video = tmp_path / "clip.gif"
    frames[0].save(video, save_all=True, append_images=frames[1:], duration=[100, 200, 100, 100], loop=0)
    out = tmp_path / "pred"
    assert main(_predict_video(checkpoint, video, out)) == 0
    data = json.loads((out / "clip_detections.json").read_text())
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 2, 3]
    assert [im["timestamp"] for im in data["images"]] == [0.0, 0.1, 0.3, 0.4]
    assert data["images"][0]["file_name"] == "clip.gif#frame=0" and (
        data["images"][0]["width"],
        data["images"][0]["height"],
    ) == (80, 60)
    assert len(data["annotations"]) == 20 and data["info"]["fps"] == 8.0
    assert {c["name"] for c in data["categories"]} == set(NAMES)
    annotated = Image.open(out / "clip_detections.gif")
    assert annotated.n_frames == 4 and annotated.size == (80, 60)
    assert "clip.gif: 4 frames, 20 detections" in capsys.readouterr().out


def test_predict_mp4_without_pyav_is_a_clear_error(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed: import av fails
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    assert main(["predict", "--weights", str(checkpoint), str(video), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "PyAV" in err and "pip install av" in err and "Traceback" not in err


def test_predict_help_mentions_folders_and_videos(capsys):
    assert main(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--coco", "--save-video", "--batch-size", "--no-pictures", ".mp4", ".gif"):
        assert word in text


def test_predict_mp4_with_pyav(checkpoint, tmp_path, capsys):
    import av

    video = tmp_path / "clip.mp4"
    write_mp4(video, _frames(5, size=(96, 64)))
    out = tmp_path / "pred"
    assert main(_predict_video(checkpoint, video, out)) == 0
    data = json.loads((out / "clip_detections.json").read_text())
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 2, 3, 4]
    assert [im["timestamp"] for im in data["images"]] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (96, 64)
    assert len(data["annotations"]) == 25 and data["info"]["fps"] == pytest.approx(5.0)
    annotated = next(p for p in out.iterdir() if p.name.startswith("clip_detections") and p.suffix == ".mp4")
    with av.open(str(annotated)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 96, 3)
    assert "clip.mp4: 5 frames, 25 detections" in capsys.readouterr().out
