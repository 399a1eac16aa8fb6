"""A run's best evaluation and its early-stopping count (train.save_best, train.patience).

Kept in every training checkpoint ("progress"), so that a resumed run knows its best value and
how many evaluations it has gone without improving; a run that stopped early stays stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class Progress:
    metric: str = "AP"
    best: float | None = None
    best_iteration: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False

    @classmethod
    def restore(cls, saved: dict, metric: str) -> "Progress":
        """The saved progress; a fresh one when it was for another metric (logged)."""
        known = {f.name for f in dataclasses.fields(cls)}
        p = cls(**{k: v for k, v in saved.items() if k in known}) if saved else cls(metric)
        if p.metric != metric:
            log.info(
                "best metric changed %s -> %s on resume: best value and patience count start again", p.metric, metric
            )
            p = cls(metric, stopped_early=p.stopped_early)
        return p

    def state(self) -> dict:
        return dataclasses.asdict(self)

    def update(self, metrics: dict, it: int) -> bool:
        """Count one evaluation; True when it is a new best (strictly better)."""
        value = metrics.get(self.metric)
        if value is None or math.isnan(value):
            log.warning("evaluation at iteration %d has no %s: not counted for the best model", it, self.metric)
            return False
        if self.best is None or value > self.best:
            self.best, self.best_iteration, self.evals_since_best = float(value), it, 0
            return True
        self.evals_since_best += 1
        return False

    def synced(self, world: int) -> "Progress":
        """Rank 0's progress on every process (only it holds the evaluation's metrics), so that
        all take the same decision to stop."""
        if world <= 1:
            return self
        box = [self.state()]
        dist.broadcast_object_list(box, src=0)
        return Progress(**box[0])


__all__ = ["Progress"]
