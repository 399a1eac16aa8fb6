"""The training batch stream: seeded, resumable, and grouped by aspect ratio.

Aspect-ratio grouping: batches of images that are all landscape or all portrait.

The model pads a batch to its largest height and width; mixing a 640x480 and a 480x640 image
pads both to 640x640, wasting ~40% of the compute on padding. Two groups (w >= h, w < h), as in
detectron2's AspectRatioGroupedDataset; the ratios come from the annotations
(`dataset.aspect_ratios()`), so no image is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Sampler

from .common import LOGGER, DatasetError


def aspect_groups(aspect_ratios: Sequence[float]) -> list[int]:
    """Group id per image: 0 for w/h >= 1 (landscape or square), 1 for portrait."""
    return [0 if r >= 1.0 else 1 for r in aspect_ratios]


class TrainingBatches(Sampler[list[int]]):
    """Endless batches for one process: each epoch a permutation seeded by (seed, epoch), split
    by aspect group (landscape / portrait, so that padding wastes little; detectron2's grouping)
    and cut into batches of `batch_size`; global batch b of an epoch is the b-th run of `world`
    consecutive per-process batches. Incomplete batches at an epoch's end are dropped.

    Batch i of the stream is a pure function of i, so a run resumed at iteration `start` sees
    exactly the images the interrupted one would have seen. Indices carry their epoch
    (index + epoch·size) for SeededSamples.
    """

    def __init__(self, groups: list[int], batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.groups = torch.tensor(groups, dtype=torch.int64).reshape(-1)  # int64 even when empty
        self.batch_size, self.seed, self.start, self.rank, self.world = batch_size, seed, start, rank, world
        counts = torch.bincount(self.groups, minlength=2)
        self.per_epoch = int(sum(c // (batch_size * world) for c in counts.tolist()))
        if self.per_epoch == 0:
            raise DatasetError(
                f"{len(groups)} training images cannot fill one batch of {batch_size * world} (per aspect group)"
            )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of an epoch, each a list of `world` per-process batches."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.groups), generator=g)
        n = self.batch_size * self.world
        batches = []
        for group in (0, 1):
            idx = perm[self.groups[perm] == group]
            for j in range(len(idx) // n):
                batches.append(idx[j * n : (j + 1) * n])
        order = torch.randperm(len(batches), generator=g)  # interleave the groups
        offset = epoch * len(self.groups)
        return [
            [(b[r * self.batch_size : (r + 1) * self.batch_size] + offset).tolist() for r in range(self.world)]
            for b in (batches[i] for i in order)
        ]

    def __iter__(self):
        it = self.start
        epoch, batches = -1, None
        while True:
            e, i = divmod(it, self.per_epoch)
            if e != epoch:
                epoch, batches = e, self.epoch_batches(e)
            yield batches[i][self.rank]
            it += 1


class SeededSamples(Dataset):
    """Wraps a dataset so that the random transforms of stream position (index + epoch·size)
    draw from a generator seeded by that position: the same augmentation on resume, whatever
    the worker that loads it.

    A sample that fails to load (a file truncated or replaced since the dataset was read) is,
    with `on_bad="skip"`, replaced by the next position that loads: the same replacement on
    every run and resume, marked `target["replaced"] = 1` so that the trainer counts it. With
    "error" the DatasetError naming the file is raised."""

    def __init__(self, dataset: Dataset, seed: int, on_bad: str = "error"):
        self.dataset, self.seed, self.on_bad = dataset, seed, on_bad

    def __len__(self):
        return len(self.dataset)

    def _load(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 7_919 + i)
            return self.dataset[i % len(self.dataset)]

    def __getitem__(self, i: int):
        try:
            return self._load(i)
        except DatasetError as first:
            if self.on_bad != "skip":
                raise
            LOGGER.warning("skipped at training time, replaced by the next image: %s", first)
            for k in range(1, len(self.dataset)):
                try:
                    image, target = self._load(i + k)
                except DatasetError:
                    continue
                return image, {**target, "replaced": 1}
            raise DatasetError(f"no image of {len(self.dataset)} could be loaded; the first: {first}") from None
