"""Aspect-ratio grouping: batches of images that are all landscape or all portrait.

The model pads a batch to its largest height and width; mixing a 640x480 and a 480x640 image
pads both to 640x640, wasting ~40% of the compute on padding. Two groups (w >= h, w < h), as in
detectron2's AspectRatioGroupedDataset; the ratios come from the annotations
(`dataset.aspect_ratios()`), so no image is decoded.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler


def aspect_groups(aspect_ratios: Sequence[float]) -> list[int]:
    """Group id per image: 0 for w/h >= 1 (landscape or square), 1 for portrait."""
    return [0 if r >= 1.0 else 1 for r in aspect_ratios]


class GroupedBatchSampler(BatchSampler):
    """Batches from `sampler`'s indices, each batch from a single aspect group.

    Indices are taken in the sampler's order and buffered per group; a batch is yielded as soon
    as its group has `batch_size` of them. At the end, incomplete batches are yielded (smallest
    group last) unless drop_last. Every index the sampler yields appears in exactly one batch
    (without drop_last).

    aspect_ratios: width / height of every dataset index (`dataset.aspect_ratios()`).
    """

    def __init__(self, sampler: Sampler[int], aspect_ratios: Sequence[float], batch_size: int, drop_last: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}: expected > 0")
        self.sampler = sampler
        self.groups = aspect_groups(aspect_ratios)
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {0: [], 1: []}
        for index in self.sampler:
            buf = buffers[self.groups[index]]
            buf.append(index)
            if len(buf) == self.batch_size:
                yield list(buf)
                buf.clear()
        if not self.drop_last:
            for buf in sorted(buffers.values(), key=len, reverse=True):
                if buf:
                    yield list(buf)

    def _indices(self) -> Iterable[int]:
        """The indices one pass of the sampler yields, in some order. For the usual permutation
        samplers they are known without iterating, which for RandomSampler would draw from the
        global torch generator and shift every later random number."""
        s = self.sampler
        if isinstance(s, SequentialSampler):
            return range(len(s))
        if isinstance(s, RandomSampler) and not s.replacement and s.num_samples == len(s.data_source):
            return range(len(s.data_source))
        if isinstance(s, SubsetRandomSampler):
            return s.indices
        return s

    def __len__(self) -> int:
        counts = {0: 0, 1: 0}
        for index in self._indices():  # a permutation's group counts do not depend on its order
            counts[self.groups[index]] += 1
        if self.drop_last:
            return sum(n // self.batch_size for n in counts.values())
        return sum(-(-n // self.batch_size) for n in counts.values())
