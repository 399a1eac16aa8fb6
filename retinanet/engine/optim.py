"""SGD whose step can be skipped by a flag on the device: a non-finite loss skips the update
without the host reading the loss first.

The paper trains with SGD, momentum 0.9 and weight decay 1e-4 (§4.1, "Optimization"). A
training step that checks `torch.isfinite(loss)` on the host before stepping makes the host wait
for the device on every iteration; here the check stays a tensor, the update is selected with
`torch.where`, and the engine reads the skip counts only at its log period.
"""

from __future__ import annotations

import torch
from torch import Tensor


class SkippableSGD(torch.optim.SGD):
    """`torch.optim.SGD` (no dampening, no Nesterov) with `step_if(ok)`: the step when `ok` (a
    0-dim bool tensor, on any device) is true, else a no-op that leaves parameters and momentum
    buffers as they were, even when the gradients are NaN or infinite.

    The arithmetic is torch's single-tensor SGD (grad + wd * p; buf = momentum * buf + grad;
    p - lr * buf), so a run of steps with `ok` true gives the same parameters as
    `torch.optim.SGD` (bit for bit on this CPU, tests/engine/test_optim.py); the state dict is
    the same too (checkpoints load in either). A parameter
    whose first step is skipped gets a zero momentum buffer, which is exactly what torch's first
    step does without dampening (momentum * 0 + grad = grad).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step_if(self, ok: Tensor) -> None:
        # Through `step`, so that what wraps it (the LR scheduler's call tracking, step hooks) sees a step.
        self._ok = ok
        try:
            self.step()
        finally:
            self._ok = None

    @torch.no_grad()
    def step(self, closure=None):
        ok = getattr(self, "_ok", None)
        if ok is None:  # a plain step (GradScaler's fp16 path calls this one)
            return super().step(closure)
        skip = ~ok
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            # 0-dim factors picked on the device by `ok` (Python scalars: no copy to the device):
            # a skipped step multiplies the buffer by 1, adds 0 to it and moves the parameter by
            # 0 x buffer. In place, one pass each, as torch's SGD does it.
            step_size = torch.where(ok, -lr, 0.0)
            decay = torch.where(ok, momentum, 1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=wd) if wd else p.grad.clone()
                d.masked_fill_(skip, 0.0)  # the gradient of a skipped step may be NaN
                if momentum:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:  # torch's first step: the buffer is the gradient (zeros if skipped)
                        buf = state["momentum_buffer"] = d
                    else:
                        buf.mul_(decay.to(buf.dtype)).add_(d)
                    d = buf
                p.addcmul_(d, step_size.to(p.dtype))
        return None
