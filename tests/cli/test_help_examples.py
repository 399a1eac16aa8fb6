"""Every example in every `--help` text, run as written.

The examples are read from the parsers themselves, so that an example added to a help text is
run without editing this file, and an example without a case below fails the test. Each one runs
in a fresh working folder holding small stand-ins for the files it names: the synthetic dataset
(and a tiny one as COCO, VOC, CSV and YOLO files), photos, a clip, checkpoints trained for one
iteration, a bare state dict, torchvision's COCO model with random weights in place of the
published file. What a case may change in its example is listed in it and nothing else: tiny
schedule overrides appended to the commands that train (1 iteration at 64 px, no ImageNet
download), a torchrun process count, a path outside the working folder, --quick or --dry-run
where the example's own run takes GPU hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import write_mp4
from PIL import Image

from retinanet.cli import build_parser, main
from retinanet.data.voc import VOC_CLASSES
from retinanet.tools.benchmark.cli import build_parser as benchmark_parser

REPO = Path(__file__).resolve().parents[2]

# Appended to every command that trains: one iteration at 64 px, no ImageNet download, no
# loader processes. Later overrides win, so these replace the example's own schedule values.
TINY_TRAIN = (
    "train.max_iter=1",
    "train.lr_steps=[]",
    "train.warmup_iters=0",
    "train.batch_size=2",
    "data.num_workers=0",
    "model.min_size=64",
    "model.max_size=64",
    "model.pretrained_backbone=false",
)
TINY_EVAL = ("data.num_workers=0", "model.min_size=64", "model.max_size=64")
NO_GPU = not torch.cuda.is_available()


@dataclass(frozen=True)
class Case:
    extra: tuple[str, ...] = ()  # appended to the example's words
    replace: tuple[tuple[str, str], ...] = ()  # (word, with): "{ws}" is the working folder
    status: int = 0
    creates: tuple[str, ...] = ()  # globs under the working folder that must match afterwards
    prints: tuple[str, ...] = ()  # in stdout (stderr for a failure)
    outputs: bool = True  # the working folder has the prepared outputs/ (runs to resume, evaluate)
    covered_by: str = ""  # another example whose run also runs this one (see the case)


def _expect_cuda_or_error(**kw) -> Case:
    """Without a GPU, a cuda example must stop at once with a one-line error naming the device."""
    if NO_GPU:
        return Case(status=2, prints=("cuda",), **{k: v for k, v in kw.items() if k == "extra"})
    return Case(**kw)


SYNTH_RUN = "outputs/synth/retinanet_r18_synth"
CASES: dict[str, Case] = {
    # ---- retinanet --help
    "retinanet demo": Case(extra=TINY_TRAIN, outputs=False, creates=(f"{SYNTH_RUN}/detections.png",), prints=("AP50",)),
    "retinanet train configs/coco/retinanet_r50_fpn_1x.yaml data.train_path=... data.val_path=...": Case(
        # "..." stands for the user's paths: here the config's own (datasets/coco/...).
        replace=(
            ("data.train_path=...", "data.train_path=datasets/coco/annotations/instances_train2017.json"),
            ("data.val_path=...", "data.val_path=datasets/coco/annotations/instances_val2017.json"),
        ),
        extra=TINY_TRAIN,
        outputs=False,
        creates=("outputs/coco/retinanet_r50_fpn_1x/model_final.pth",),
    ),
    "torchrun --nproc_per_node 8 -m retinanet train configs/coco/retinanet_r50_fpn_1x.yaml ...": Case(
        replace=(("8", "2"), ("...", "")),  # 2 processes on this machine's 2 cores
        extra=TINY_TRAIN,
        outputs=False,
        creates=("outputs/coco/retinanet_r50_fpn_1x/model_final.pth",),
    ),
    "retinanet export --weights model_final.pth --format onnx --out retinanet.onnx": Case(creates=("retinanet.onnx",)),
    "retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml": Case(prints=("IoU",)),
    # ---- demo
    "retinanet demo train.max_iter=100 output_dir=outputs/quick": Case(
        extra=TINY_TRAIN, outputs=False, creates=("outputs/quick/detections.png", "outputs/quick/model_final.pth")
    ),
    "retinanet demo train.device=cuda": _expect_cuda_or_error(extra=TINY_TRAIN, outputs=False),
    # ---- train
    "retinanet train": Case(extra=TINY_TRAIN, outputs=False, creates=(f"{SYNTH_RUN}/model_final.pth",)),
    "retinanet train configs/synth/retinanet_r18_synth.yaml train.max_iter=600 model.focal_gamma=0": Case(
        extra=TINY_TRAIN, outputs=False, creates=(f"{SYNTH_RUN}/model_final.pth",)
    ),
    "retinanet train configs/coco/retinanet_r50_fpn_1x.yaml data.train_path=coco/annotations/instances_train2017.json "
    "data.train_images_dir=coco/train2017 data.val_path=coco/annotations/instances_val2017.json "
    "data.val_images_dir=coco/val2017": Case(
        extra=TINY_TRAIN, outputs=False, creates=("outputs/coco/retinanet_r50_fpn_1x/model_final.pth",)
    ),
    "retinanet train - data.kind=csv data.train_path=ann.csv data.class_map=classes.csv": Case(
        extra=TINY_TRAIN, outputs=False, creates=("outputs/model_final.pth",)
    ),
    "retinanet train configs/finetune/retinanet_r50_fpn_coco.yaml data.train_path=mine/train.csv "
    "data.val_path=mine/val.csv data.class_map=mine/classes.csv": Case(
        extra=TINY_TRAIN,
        outputs=False,
        creates=("outputs/finetune/retinanet_r50_fpn_coco/weights_report.json", "outputs/finetune/*/model_best.pth"),
    ),
    # The prepared run stopped at iteration 1 of 1; the resume continues it to 2.
    "retinanet train configs/synth/retinanet_r18_synth.yaml --resume": Case(
        extra=(*TINY_TRAIN, "train.max_iter=2"), prints=("trained to iteration 2",)
    ),
    "torchrun --nproc_per_node 2 -m retinanet train configs/synth/retinanet_r18_synth.yaml": Case(
        extra=TINY_TRAIN, outputs=False, creates=(f"{SYNTH_RUN}/model_final.pth",)
    ),
    # ---- eval
    "retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --per-class": Case(
        prints=("| AP | AP50", "| circle |")
    ),
    "retinanet eval configs/coco/retinanet_r50_fpn_1x.yaml --weights model_final.pth "
    "data.val_path=coco/annotations/instances_val2017.json data.val_images_dir=coco/val2017 "
    "--results detections.json": Case(extra=TINY_EVAL, creates=("detections.json",), prints=("| AP | AP50",)),
    "retinanet eval --weights model_final.pth model.score_thresh=0.01 eval.backend=pycocotools": Case(
        prints=("| AP | AP50",)
    ),
    "retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --max-images 8 --tile 256 "
    "--tile-overlap 0.25": Case(prints=("| AP | AP50", "tiled: 256 px tiles at native scale")),
    "retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --report report": Case(
        creates=("report/index.md", "report/report.json", "report/confusion_matrix.png"), prints=("evaluation report:",)
    ),
    # ---- predict
    "retinanet predict --weights outputs/synth/retinanet_r18_synth/model_final.pth val/ --out preds": Case(
        creates=("preds/*.json", "preds/*.png")
    ),
    "retinanet predict --weights torchvision-coco street.jpg photos/ --out preds --score-thresh 0.5": Case(
        creates=("preds/street.json", "preds/p1.json", "preds/p2.json")
    ),
    "retinanet predict --weights model_final.pth photos/ --out preds --coco preds/detections.json --no-pictures": Case(
        creates=("preds/detections.json",)
    ),
    "retinanet predict --weights model_final.pth clip.mp4 --out preds --save-video --batch-size 4": Case(
        creates=("preds/clip_detections.mp4",)
    ),
    "retinanet predict --weights state_dict.pth --model retinanet_r50_fpn a.jpg --out preds": Case(
        creates=("preds/a.json",)
    ),
    "retinanet predict --weights model_final.pth a.jpg --out preds --tile 256 --tile-overlap 0.25": Case(
        creates=("preds/a.json", "preds/a.png"), prints=("1 images",)
    ),
    # ---- export
    "retinanet export --weights outputs/synth/retinanet_r18_synth/model_final.pth --format onnx --out retinanet.onnx": (
        Case(creates=("retinanet.onnx",))
    ),
    "retinanet export --weights torchvision-coco --format onnx --out retinanet_r50_coco.onnx --score-thresh 0.3": Case(
        creates=("retinanet_r50_coco.onnx",)
    ),
    "retinanet export --weights model_final.pth --format torchscript --out retinanet.pt": Case(
        creates=("retinanet.pt",)
    ),
    # ---- data synth (data/synth exists with the default parameters: it is reused)
    "retinanet data synth --out data/synth": Case(prints=("data/synth",)),
    "retinanet data synth --out /tmp/tiny --train 8 --val 4 --seed 1": Case(
        replace=(("/tmp/tiny", "{ws}/tmp/tiny"),), creates=("tmp/tiny/annotations/instances_train.json",)
    ),
    "retinanet data synth --out data/synth_rcs --train 40 --classes ring,cross,star --seed 7": Case(
        creates=("data/synth_rcs/annotations/instances_val.json",)
    ),
    "retinanet train data.train_path=data/synth": Case(
        extra=TINY_TRAIN, outputs=False, creates=(f"{SYNTH_RUN}/model_final.pth",)
    ),
    # ---- data check
    "retinanet data check coco/annotations/instances_val2017.json --images-dir coco/val2017": Case(),
    "retinanet data check VOCdevkit/VOC2007 --split test": Case(),
    "retinanet data check annotations.csv --class-map classes.csv": Case(),
    "retinanet data check data/synth --split val --on-bad error": Case(),
    "retinanet data check yolo/data.yaml --split val": Case(prints=("(yolo)",)),
    # ---- data convert
    "retinanet data convert data/synth --to yolo --out data/synth_yolo": Case(
        creates=("data/synth_yolo/data.yaml", "data/synth_yolo/labels/val/000100.txt"), prints=("600 images",)
    ),
    "retinanet data convert yolo --to coco --out coco_again --link-images": Case(
        creates=("coco_again/annotations/instances_train.json", "coco_again/val/000004.jpg"), prints=("hard-linked",)
    ),
    "retinanet data convert VOCdevkit/VOC2007 --to csv --out voc_csv --split test=val": Case(
        creates=("voc_csv/val/val.csv", "voc_csv/classes.csv"), prints=("val (from test): 8 images",)
    ),
    "retinanet data check data/synth/annotations/instances_val.json": Case(),
    # ---- data tile
    "retinanet data tile data/synth --split val --size 160 --overlap 0.25 --out data/synth_tiles --min-visible 0.6 "
    "--empty-ratio 0.5": Case(
        creates=("data/synth_tiles/annotations/instances_val.json", "data/synth_tiles/val/000001_x0_y0.jpg"),
        prints=("tiles of 160 px from 100 images",),
    ),
    # ---- data show
    "retinanet data show data/synth --out show/": Case(creates=("show/*.png",)),
    "retinanet data show data/synth --config configs/synth/retinanet_r18_synth.yaml --out show/": Case(
        creates=("show/*.png",)
    ),
    "retinanet data show coco/annotations/instances_val2017.json --out show/ --num 4 anchor_sizes=[16,32,64,128,256]": (
        Case(creates=("show/*.png",))
    ),
    "retinanet data show VOCdevkit/VOC2007 --split test --index 0 --index 7 --out show/": Case(creates=("show/*.png",)),
    "retinanet data show data/synth --num 2 --augmented 4 --out show/ data.augment=[photometric,lsj,rot90]": Case(
        creates=("show/000001_aug4.png", "show/000002_aug1.png")
    ),
    # ---- analyze
    "retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml --out coverage.png": Case(
        creates=("coverage.png",)
    ),
    "retinanet analyze anchors coco/annotations/instances_train2017.json --json coverage.json": Case(
        creates=("coverage.json",)
    ),
    "retinanet analyze anchors data/synth model.min_size=320 model.max_size=320 anchor_sizes=[16,32,64,128,256]": Case(
        prints=("IoU",)
    ),
    "retinanet analyze loss-cdf --weights outputs/synth/retinanet_r18_synth/model_final.pth --out fig4.png": Case(
        creates=("fig4.png",)
    ),
    # ---- experiment (results and run folders are the working folder's, see the fixture)
    "retinanet experiment gamma --scale mini": Case(
        extra=TINY_TRAIN, creates=("experiments/results/gamma_mini.md",), prints=("γ=5 α=.25",)
    ),
    "retinanet experiment alpha --scale mini data.train_path=my_coco_folder": Case(
        extra=TINY_TRAIN, creates=("experiments/results/alpha_mini.md",)
    ),
    # The paper scale is 90k iterations of 16 COCO images per row: listed, not trained.
    "torchrun --nproc_per_node 8 -m retinanet experiment anchors --scale paper": Case(
        replace=(("8", "2"),), extra=("--dry-run",), prints=("[anchors/paper]",)
    ),
    "retinanet experiment ohem --scale paper --dry-run": Case(prints=("[ohem/paper]",)),
    # ---- figure
    "retinanet figure fig1": Case(creates=("experiments/figures/fig1_focal_loss.png",)),
    "retinanet figure fig2 --results experiments/results/speed_mini.json --out fig2.png": Case(creates=("fig2.png",)),
    # ---- benchmark
    # The full run differs from the --quick example only in its sizes and repeats (asserted in
    # test_the_full_benchmark_example_is_the_quick_one_at_full_sizes): the quick run covers it.
    "retinanet benchmark --out benchmarks/run": Case(covered_by="retinanet benchmark --quick --out /tmp/bench"),
    "retinanet benchmark --quick --out /tmp/bench": Case(
        replace=(("/tmp/bench", "{ws}/bench"),), creates=("bench/results.md", "bench/results.json")
    ),
    "retinanet benchmark --only focal,assign,postprocess": Case(
        extra=("--quick",), creates=("outputs/benchmark/results.md",)
    ),
    "retinanet benchmark --device cuda --dtype fp16": _expect_cuda_or_error(extra=("--quick",)),
}


# ------------------------------------------------------------------ the examples, from the parsers
def _all_parsers():
    seen, stack = set(), [build_parser(), benchmark_parser()]
    while stack:
        p = stack.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def help_examples() -> list[str]:
    """The examples of every help text, comments dropped, continuation lines joined."""
    found = []
    for parser in _all_parsers():
        epilog = parser.epilog or ""
        if "examples:" not in epilog:
            continue
        lines = epilog.split("examples:", 1)[1].strip("\n").splitlines()
        joined, current = [], ""
        for line in lines:
            current += " " + line.strip()
            if current.endswith("\\"):
                current = current[:-1]
                continue
            joined.append(current.strip())
            current = ""
        for line in joined:
            words = shlex.split(line, comments=True)
            if words and "<command>" not in words and " ".join(words) not in found:
                found.append(" ".join(words))
    return found


def test_every_help_example_has_a_case():
    examples = help_examples()
    assert len(examples) >= 40
    assert sorted(set(examples) - set(CASES)) == [], "help examples without a case in CASES"
    assert sorted(set(CASES) - set(examples)) == [], "cases for examples no help text has any more"


def test_the_full_benchmark_example_is_the_quick_one_at_full_sizes():
    full = vars(benchmark_parser().parse_args(shlex.split("--out benchmarks/run")))
    quick = vars(benchmark_parser().parse_args(shlex.split("--quick --out /tmp/bench")))
    assert {k for k in full if full[k] != quick[k]} == {"quick", "out"}


# ------------------------------------------------------------------ stand-ins
def _write_voc(root: Path, images: list[Path], annotations: dict) -> None:
    """VOCdevkit/VOC2007 with a `test` split of `images`, boxes from the COCO file, its classes
    renamed to VOC's (a VOCdevkit folder has VOC's 20 classes)."""
    cats = {c["id"]: VOC_CLASSES[i] for i, c in enumerate(annotations["categories"])}
    by_file = {im["file_name"]: im for im in annotations["images"]}
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    ids = []
    for path in images:
        im = by_file[path.name]
        Image.open(path).convert("RGB").save(root / "JPEGImages" / f"{path.stem}.jpg")
        objs = "".join(
            f"<object><name>{cats[a['category_id']]}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{int(a['bbox'][0]) + 1}</xmin><ymin>{int(a['bbox'][1]) + 1}</ymin>"
            f"<xmax>{int(a['bbox'][0] + a['bbox'][2])}</xmax><ymax>{int(a['bbox'][1] + a['bbox'][3])}</ymax>"
            "</bndbox></object>"
            for a in annotations["annotations"]
            if a["image_id"] == im["id"]
        )
        size = f"<size><width>{im['width']}</width><height>{im['height']}</height><depth>3</depth></size>"
        (root / "Annotations" / f"{path.stem}.xml").write_text(
            f"<annotation><filename>{path.stem}.jpg</filename>{size}{objs}</annotation>"
        )
        ids.append(path.stem)
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")


def _write_csv(folder: Path, images: list[Path], annotations: dict, names=("annotations.csv", "ann.csv")) -> None:
    """CSV files of `names` (the same boxes) and classes.csv, beside the images."""
    cats = {c["id"]: c["name"] for c in annotations["categories"]}
    by_file = {im["file_name"]: im for im in annotations["images"]}
    rows = []
    for path in images:
        image_id = by_file[path.name]["id"]
        for a in annotations["annotations"]:
            if a["image_id"] == image_id:
                x, y, w, h = a["bbox"]
                rows.append(f"csv_images/{path.name},{x:.0f},{y:.0f},{x + w:.0f},{y + h:.0f},{cats[a['category_id']]}")
    (folder / "csv_images").mkdir(parents=True)
    for path in images:
        shutil.copy(path, folder / "csv_images" / path.name)
    for name in names:
        (folder / name).write_text("\n".join(rows) + "\n")
    (folder / "classes.csv").write_text("".join(f"{n},{i}\n" for i, n in enumerate(cats.values())))


def _run_here(argv: list[str]) -> None:
    assert main(argv) == 0, f"preparing the stand-ins: `retinanet {' '.join(argv)}` failed"


@pytest.fixture(scope="module")
def torchvision_coco():
    """torchvision's COCO model with random weights: the stand-in for its published file."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    return model.state_dict()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The files the examples name, made once; each example gets a fresh copy (big files linked)."""
    from retinanet.data.synth import default_synth_dir
    from retinanet.weights.loader import get_model

    root = tmp_path_factory.mktemp("examples")
    env = {"RETINANET_DATA": str(root / "cache"), "RETINANET_NO_COMPILE": "1"}
    old_cwd, old_env = Path.cwd(), {k: os.environ.get(k) for k in env}
    os.chdir(root)
    os.environ.update(env)
    try:
        _run_here(["data", "synth", "--out", "data/synth"])  # the default dataset (the help's example)
        default_synth_dir().parent.mkdir(parents=True)
        default_synth_dir().symlink_to(root / "data" / "synth")  # and the default location's copy
        _run_here(["data", "synth", "--out", "tiny", "--train", "8", "--val", "4"])
        _run_here(["data", "convert", "tiny", "--to", "yolo", "--out", "yolo"])
        (root / "my_coco_folder").symlink_to(root / "tiny")
        coco = root / "coco"
        (coco / "annotations").mkdir(parents=True)
        for split, src in (("train2017", "train"), ("val2017", "val")):
            shutil.copy(
                root / "tiny" / "annotations" / f"instances_{src}.json",
                coco / "annotations" / f"instances_{split}.json",
            )
            (coco / split).symlink_to(root / "tiny" / src)
        (root / "datasets").mkdir()
        (root / "datasets" / "coco").symlink_to(coco)
        train_ann = json.loads((root / "tiny" / "annotations" / "instances_train.json").read_text())
        train_images = sorted((root / "tiny" / "train").iterdir())
        _write_voc(root / "VOCdevkit" / "VOC2007", train_images, train_ann)
        _write_csv(root, train_images, train_ann)
        _write_csv(root / "mine", train_images, train_ann, names=("train.csv", "val.csv"))
        val_images = sorted((root / "tiny" / "val").iterdir())
        (root / "val").symlink_to(root / "tiny" / "val")
        (root / "photos").mkdir()
        for i, src in enumerate(val_images[:2], 1):
            Image.open(src).convert("RGB").save(root / "photos" / f"p{i}.jpg")
        Image.open(val_images[2]).convert("RGB").save(root / "street.jpg")
        Image.open(val_images[3]).convert("RGB").save(root / "a.jpg")
        write_mp4(root / "clip.mp4", [Image.open(p).convert("RGB").resize((96, 96)) for p in val_images[:3]])
        # Runs to evaluate, predict with and resume: one iteration each.
        _run_here(["train", "configs/synth/retinanet_r18_synth.yaml", *TINY_TRAIN])
        coco_run = ["train", "configs/coco/retinanet_r50_fpn_1x.yaml", *TINY_TRAIN]
        _run_here(
            [*coco_run, "data.train_path=coco/annotations/instances_train2017.json"]
            + [
                "data.train_images_dir=coco/train2017",
                "data.val_path=coco/annotations/instances_val2017.json",
                "data.val_images_dir=coco/val2017",
            ]
        )
        shutil.move("outputs/coco/retinanet_r50_fpn_1x/model_final.pth", "model_final.pth")
        shutil.rmtree("outputs/coco")
        torch.save(get_model("retinanet_r50_fpn").state_dict(), "state_dict.pth")
        (root / "experiments" / "results").mkdir(parents=True)
        shutil.copy(REPO / "experiments" / "results" / "speed_mini.json", root / "experiments" / "results")
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root


def _workspace(base: Path, dest: Path, outputs: bool) -> Path:
    """A copy of `base`: folders made, small files copied, big files (images, checkpoints) and
    links linked, so that an example writes only into its own folder."""

    def copy(src, dst):
        if os.path.getsize(src) < 1_000_000:
            shutil.copy2(src, dst)
        else:
            os.symlink(src, dst)

    ignore = lambda d, names: ["outputs"] if Path(d) == base and not outputs else []  # noqa: E731
    shutil.copytree(base, dest, symlinks=True, copy_function=copy, ignore=ignore)
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("example", help_examples(), ids=help_examples())
def test_help_example_runs(example, base, torchvision_coco, tmp_path, monkeypatch, capsys):
    import retinanet.tools.experiments as experiments
    import retinanet.weights.loader
    from retinanet.weights.zoo import TORCHVISION_COCO_URL

    case = CASES.get(example)
    assert case is not None, f"no case for the help example `{example}`"
    if case.covered_by:
        assert case.covered_by in CASES and not CASES[case.covered_by].covered_by
        return
    ws = _workspace(base, tmp_path / "ws", case.outputs)
    words = shlex.split(example)
    for old, new in case.replace:
        words = [new.replace("{ws}", str(ws)) if w == old else w for w in words]
    words = [w for w in words if w] + list(case.extra)

    env = {"RETINANET_DATA": str(base / "cache"), "RETINANET_NO_COMPILE": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ws)
    # The experiment runner's folders are the checkout's: use the working folder's instead.
    monkeypatch.setattr(experiments, "RUNS_DIR", ws / "experiments" / "runs")
    monkeypatch.setattr(experiments, "RESULTS_DIR", ws / "experiments" / "results")

    def published(url):  # torchvision's COCO file: the random stand-in, no download
        assert url == TORCHVISION_COCO_URL
        return torchvision_coco

    monkeypatch.setattr(retinanet.weights.loader, "load_url_state_dict", published)

    if words[0] == "torchrun":
        assert words[1:5] == ["--nproc_per_node", words[2], "-m", "retinanet"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", words[2], "-m", "retinanet"]
        penv = {**os.environ, "OMP_NUM_THREADS": "1", "PET_MASTER_PORT": str(_free_port())}
        proc = subprocess.run(cmd + words[5:], cwd=ws, env=penv, capture_output=True, text=True, timeout=600)
        status, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        assert words[0] == "retinanet"
        status = main(words[1:])
        out, err = capsys.readouterr()
    shown = f"`{' '.join(words)}` exited {status}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    assert status == case.status, shown
    if case.status:  # a refusal: one line naming what is wrong, no traceback
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, shown
    for word in case.prints:
        assert word in (out if case.status == 0 else err), shown
    for pattern in case.creates:
        assert list(ws.glob(pattern)), f"{pattern} not written\n{shown}"
