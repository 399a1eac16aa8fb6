"""SkippableSGD: torch's SGD bit for bit when stepping, an exact no-op when told to skip."""

import torch

from retinanet.engine.optim import SkippableSGD


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(7, generator=g))]


def _grads(step, params, bad=False):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
        if bad:
            p.grad[0] = float("nan")
            p.grad.view(-1)[-1] = float("inf")


def test_steps_equal_torch_sgd_bit_for_bit():
    ours, ref = _params(), _params()
    a = SkippableSGD(ours, lr=0.1, momentum=0.9, weight_decay=1e-4)
    b = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=1e-4)
    for step in range(5):
        _grads(step, ours)
        _grads(step, ref)
        a.step_if(torch.tensor(True))
        b.step()
        for p, q in zip(ours, ref):
            assert torch.equal(p, q)
    for p, q in zip(ours, ref):
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    b.load_state_dict(a.state_dict())  # the same state dict: checkpoints load in either


def test_a_skipped_step_changes_nothing_even_with_nan_gradients():
    ours, ref = _params(), _params()
    a = SkippableSGD(ours, lr=0.1, momentum=0.9, weight_decay=1e-4)
    b = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=1e-4)
    # the first step skipped: no update, and the next step is torch's first step
    _grads(0, ours, bad=True)
    a.step_if(torch.tensor(False))
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
    for step in range(3):
        _grads(step, ours)
        _grads(step, ref)
        a.step_if(torch.tensor(True))
        b.step()
        before = [p.detach().clone() for p in ours] + [a.state[p]["momentum_buffer"].clone() for p in ours]
        _grads(step, ours, bad=True)  # a poisoned step in between, skipped
        a.step_if(torch.tensor(False))
        after = [p.detach() for p in ours] + [a.state[p]["momentum_buffer"] for p in ours]
        assert all(torch.equal(x, y) for x, y in zip(before, after))
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)


def test_plain_step_is_torch_sgd():
    ours, ref = _params(), _params()
    a = SkippableSGD(ours, lr=0.05, momentum=0.9)
    b = torch.optim.SGD(ref, lr=0.05, momentum=0.9)
    for step in range(3):
        _grads(step, ours)
        _grads(step, ref)
        a.step()
        b.step()
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
