"""The one place where arguments become datasets: `build_dataset` (plain arguments) and
`build_datasets` (the run config's `data` section), plus `detect_kind`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from retinanet.config import ConfigError
from retinanet.data.coco import CocoDetection
from retinanet.data.common import DatasetError, DetectionDataset, MissingFileError, require_exists
from retinanet.data.csv_dataset import CsvDetection
from retinanet.data.transforms import Compose, RandomHorizontalFlip
from retinanet.data.voc import VocDetection
from retinanet.data.yolo import YAML_NAMES, YoloDetection

if TYPE_CHECKING:
    from ..config import Config

KINDS = ("coco", "voc", "csv", "yolo")
# data.train_split / val_split when not set (None): VOC's ImageSets lists, ultralytics' data.yaml keys.
DEFAULT_SPLITS = {"voc": ("trainval", "test"), "yolo": ("train", "val")}


def coco_splits(folder: Path) -> list[str]:
    """Splits of a COCO-layout folder: the <split> of every annotations/instances_<split>.json."""
    return sorted(p.stem[len("instances_") :] for p in (folder / "annotations").glob("instances_*.json"))


def detect_kind(path: str | Path) -> str:
    """ "coco", "voc", "csv" or "yolo" from what is at `path`.

    A .json file -> coco; a folder with annotations/instances_*.json (COCO 2017, the synthetic
    dataset) -> coco; a .csv file -> csv; a .yaml/.yml file, or a folder with data.yaml -> yolo;
    a folder with Annotations/, VOC<year>/Annotations or .xml files -> voc.
    """
    p = require_exists(Path(path), "dataset path")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".json":
            return "coco"
        if suffix == ".csv":
            return "csv"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        raise DatasetError(
            f"cannot tell the dataset kind of {p}: expected a .json (COCO), .csv or data.yaml (YOLO) file, or a folder"
        )
    if (p / "Annotations").is_dir() or any((q / "Annotations").is_dir() for q in p.glob("VOC*")):
        return "voc"
    if coco_splits(p):
        return "coco"
    if any((p / name).is_file() for name in YAML_NAMES):
        return "yolo"
    if any(p.glob("*.xml")):
        return "voc"
    raise DatasetError(
        f"cannot tell the dataset kind of folder {p}: expected annotations/instances_*.json (COCO), "
        "Annotations/ or .xml files (VOC), data.yaml (YOLO); for CSV give the annotations .csv file"
    )


def infer_coco_images_dir(ann_file: Path) -> Path:
    """The image folder of a COCO annotation file, by the usual layouts, first existing of:
    <root>/<split>/ and <root>/images/<split>/ for <root>/annotations/instances_<split>.json
    (COCO 2017: val2017/; the synthetic dataset: val/), then images/ beside the JSON or beside
    its folder, then the JSON's own folder."""
    split = ann_file.stem[len("instances_") :] if ann_file.stem.startswith("instances_") else ann_file.stem
    here, up = ann_file.parent, ann_file.parent.parent
    candidates = [up / split, up / "images" / split, here / split, here / "images", up / "images"]
    for c in candidates:
        if c.is_dir():
            return c
    return here


def build_dataset(
    kind: Optional[str],
    path: str | Path,
    *,
    split: Optional[str] = None,
    images_dir: Optional[str | Path] = None,
    class_map: Optional[str | Path] = None,
    class_names: Optional[Sequence[str]] = None,
    year: Optional[str | int] = None,
    use_difficult: bool = False,
    transforms: Optional[Callable] = None,
    on_bad: str = "error",
    keep_empty: bool = True,
    verify_images: bool = False,
) -> DetectionDataset:
    """Build a detection dataset from plain arguments.

    kind: "coco" | "voc" | "csv" | "yolo", or None / "auto" to detect it from `path` (`detect_kind`).
    path: coco: the instances JSON, or a folder with annotations/instances_<split>.json (then
      `split` names the file, e.g. "train"; the only one is taken when there is one);
      voc: the VOC<year> folder, VOCdevkit (+ `year`), or a folder of .xml files;
      csv: the annotations CSV; yolo: the folder holding data.yaml, or the .yaml file.
    split: coco folder: see above; voc devkit: the ImageSets/Main list (default "trainval");
      yolo: a split of data.yaml (the only one when there is one).
    images_dir: coco: default `infer_coco_images_dir`; csv: the folder relative image paths resolve
    against (default the CSV's folder). class_map: csv only.
    class_names: voc and csv: the class list (label = index) instead of the one the files make.
    year / use_difficult: voc only.
    on_bad: "error" (raise at the first bad entry, naming file and entry) or "skip" (drop it,
      warn once per kind, count in `dataset.skipped`). keep_empty: keep images without boxes.
    verify_images: decode every image once at construction.
    """
    kind = detect_kind(path) if kind in (None, "auto") else kind
    if kind not in KINDS:
        raise ValueError(f"dataset kind {kind!r}: expected one of {KINDS} (or 'auto')")
    path = Path(path)
    common = dict(transforms=transforms, on_bad=on_bad, keep_empty=keep_empty, verify_images=verify_images)

    def reject(**given) -> None:
        wrong = [k for k, v in given.items() if v not in (None, False)]
        if wrong:
            raise TypeError(f"build_dataset(kind={kind!r}) takes no {', '.join(wrong)}")

    if kind == "coco":
        reject(class_map=class_map, class_names=class_names, year=year, use_difficult=use_difficult)
        if path.is_dir():
            splits = coco_splits(path)
            if split is None and len(splits) == 1:
                split = splits[0]
            if split is None or split not in splits:
                raise MissingFileError(
                    f"COCO folder {path}: no annotations/instances_{split}.json (splits found: {splits}); pass split="
                )
            ann_file = path / "annotations" / f"instances_{split}.json"
        else:
            ann_file = require_exists(path, "COCO annotation file")
        images = Path(images_dir) if images_dir is not None else infer_coco_images_dir(ann_file)
        return CocoDetection(images, ann_file, **common)
    if kind == "voc":
        reject(class_map=class_map, images_dir=images_dir)
        return VocDetection(
            path, split or "trainval", year=year, class_names=class_names, use_difficult=use_difficult, **common
        )
    if kind == "yolo":
        reject(
            images_dir=images_dir, class_map=class_map, class_names=class_names, year=year, use_difficult=use_difficult
        )
        return YoloDetection(path, split, **common)
    reject(split=split, year=year, use_difficult=use_difficult)
    return CsvDetection(path, class_map, class_names=class_names, images_dir=images_dir, **common)


def train_transforms(d) -> Compose:
    """The training set's random transforms: the flip (data.hflip_prob), then data.augment (a
    ConfigError naming a bad item)."""
    from .augment import Augment

    steps: list[Callable] = [RandomHorizontalFlip(d.hflip_prob)] if d.hflip_prob > 0 else []
    try:
        steps += [Augment(d.augment)] if d.augment else []
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Compose(steps)


def synthetic_root(path: str | None, preset: Optional[str] = None) -> Path:
    """The folder of the synthetic dataset for data.kind=synth: `path` (data.train_path) when it
    holds one already (any size), else generated there, or at the default location, once.
    preset: data.synth_preset (None: the default dataset)."""
    from .synth import default_synth_dir, ensure_synthetic

    given = Path(path) if path else None
    if given is not None and (given / "annotations").is_dir():
        return given
    if preset is None:  # the default dataset's call, as it always was
        return Path(ensure_synthetic(given or default_synth_dir()))
    return Path(ensure_synthetic(given or default_synth_dir(preset=preset), preset=preset))


def build_datasets(cfg: "Config", train: bool = True, class_names: Optional[Sequence[str]] = None):
    """(train dataset or None, val dataset) from cfg.data; "synth" generates the built-in
    synthetic dataset on first use.

    One class list per run: the training set's (or `class_names`, the model's, when evaluating
    without one). VOC and CSV splits without a class map take it, so that a box of a class the
    training set does not have is an unknown-class entry (an error naming the file and class, or
    a counted skip with data.on_bad=skip); datasets with their own list (COCO categories, a class
    map) must have the same one, in the same order, or it is an error naming both lists."""
    d = cfg.data
    if d.kind == "synth":
        from .synth_presets import PRESETS

        if d.synth_preset is not None and d.synth_preset not in PRESETS:
            raise ConfigError(f"data.synth_preset={d.synth_preset!r}: expected one of {sorted(PRESETS)} or null")
        root = synthetic_root(d.train_path, d.synth_preset)
        kind, train_path, val_path = (
            "coco",
            root / "annotations" / "instances_train.json",
            root / "annotations" / "instances_val.json",
        )
        train_images, val_images = root / "train", root / "val"
    else:
        kind, train_path, val_path = d.kind, d.train_path, d.val_path
        train_images, val_images = d.train_images_dir, d.val_images_dir
    common = dict(class_map=d.class_map, on_bad=d.on_bad, verify_images=d.verify_images)
    takes_names = kind in ("voc", "csv") and d.class_map is None
    default_train, default_val = DEFAULT_SPLITS.get(kind, (None, None))
    train_split, val_split = d.train_split or default_train, d.val_split or default_val
    train_ds = None
    if train:
        if train_path is None:
            raise ValueError("data.train_path is not set")
        extra = {"split": train_split} if kind in DEFAULT_SPLITS else {}
        if takes_names and class_names is not None:
            extra["class_names"] = class_names
        train_ds = build_dataset(
            kind,
            train_path,
            images_dir=train_images,
            transforms=train_transforms(d),
            keep_empty=d.keep_empty,
            **extra,
            **common,
        )
        _check_class_list(train_ds, class_names, "the model")
        class_names = train_ds.class_names
    val_ds = None
    if val_path is not None:
        extra = {"split": val_split} if kind in DEFAULT_SPLITS else {}
        if takes_names and class_names is not None:
            extra["class_names"] = class_names
        val_ds = build_dataset(kind, val_path, images_dir=val_images, keep_empty=True, **extra, **common)
        _check_class_list(val_ds, class_names, "the training set" if train else "the model")
    return train_ds, val_ds


def _check_class_list(dataset: DetectionDataset, names: Optional[Sequence[str]], whose: str) -> None:
    """A DatasetError naming both lists when `dataset`'s classes are not `names` in order."""
    if names is None or list(dataset.class_names) == [str(n) for n in names]:
        return

    def show(items) -> str:
        items = [str(n) for n in items]
        return "[" + ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "") + "]"

    raise DatasetError(
        f"{dataset.source} has the classes {show(dataset.class_names)} but {whose} has {show(names)}: "
        "labels would mean other classes; use the same class list (e.g. data.class_map for CSV) in every split"
    )
