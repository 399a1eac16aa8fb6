"""Counting host-device synchronisations without a device: every op that makes the host wait for
a value computed on the device, seen through a `TorchDispatchMode` on any backend (the CPU too,
where the same ops would block on a GPU).

Counted: scalar reads (`.item()`, `bool(t)`: `_local_scalar_dense`; `.tolist()`, `.numpy()`),
ops whose output size depends on values (`nonzero`, boolean-mask `index` / `index_put`,
`masked_select`, `unique*`, `repeat_interleave` with tensor repeats). A host-to-device copy from
pageable memory is not visible here; the engine avoids those by pinning (DataLoader pin_memory).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_VALUE_SIZED = {"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive"}
_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}


class SyncCounter(TorchDispatchMode):
    """with SyncCounter() as c: ...; c.total, c.counts ({op: n}). While `c.paused` is true
    nothing is counted (e.g. the data loader's sampling, CPU work that stays on the CPU)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.paused = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        if self.paused:
            pass
        elif name == "_local_scalar_dense" or name in _VALUE_SIZED:
            self.counts[name] += 1
        elif name in _INDEXING and len(args) > 1:
            if any(torch.is_tensor(t) and t.dtype == torch.bool for t in args[1] or ()):
                self.counts[f"{name} (boolean mask)"] += 1
        elif name == "repeat_interleave" and func._overloadname == "Tensor" and kwargs.get("output_size") is None:
            self.counts[f"{name} (tensor repeats)"] += 1
        return func(*args, **kwargs)

    def __enter__(self):
        self._reads = _HostReads(self)
        self._reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._reads.__exit__(*exc)


class _HostReads(TorchFunctionMode):
    """`tensor.tolist()` and `.numpy()`: they read memory directly on the CPU, below the dispatcher."""

    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy) and not self.counter.paused:
            self.counter.counts[func.__name__] += 1
        return func(*args, **(kwargs or {}))
