"""The data layer: datasets (COCO JSON, Pascal VOC XML, CSV, YOLO), the built-in synthetic dataset,
transforms, aspect-ratio batching, dataset checks and conversion between the formats.

Every dataset yields (image, target): image uint8 (3, H, W) RGB; target
{"boxes": float32 (n, 4) xyxy absolute pixels, "labels": int64 (n,) contiguous 0..K-1,
"image_id": int}; n may be 0. Datasets expose class_names, label_to_cat_id, image_ids,
aspect_ratios() and coco_gt(). `build_dataset` is the one place that turns plain arguments
into a dataset.
"""

from retinanet.data.build import KINDS, build_dataset, build_datasets, detect_kind, infer_coco_images_dir
from retinanet.data.check import check_dataset, format_summary, summarize_dataset
from retinanet.data.coco import CocoDetection
from retinanet.data.common import (
    LOGGER,
    ON_BAD,
    DatasetError,
    DetectionDataset,
    MissingFileError,
    collate_fn,
    load_image,
)
from retinanet.data.csv_dataset import CsvDetection
from retinanet.data.samplers import SeededSamples, TrainingBatches, aspect_groups
from retinanet.data.synth import default_synth_dir, ensure_synthetic, generate_synthetic
from retinanet.data.transforms import Compose, RandomHorizontalFlip
from retinanet.data.voc import VOC_CLASSES, VocDetection
from retinanet.data.yolo import YoloDetection

__all__ = [
    "KINDS",
    "LOGGER",
    "ON_BAD",
    "VOC_CLASSES",
    "CocoDetection",
    "Compose",
    "CsvDetection",
    "DatasetError",
    "DetectionDataset",
    "MissingFileError",
    "RandomHorizontalFlip",
    "SeededSamples",
    "TrainingBatches",
    "VocDetection",
    "YoloDetection",
    "aspect_groups",
    "build_dataset",
    "build_datasets",
    "check_dataset",
    "collate_fn",
    "default_synth_dir",
    "detect_kind",
    "ensure_synthetic",
    "format_summary",
    "generate_synthetic",
    "infer_coco_images_dir",
    "load_image",
    "summarize_dataset",
]
