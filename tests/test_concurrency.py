"""Ops and autograd through them from several Python threads at once (CPU).

Each thread runs the same calls on its own inputs; every result must equal the
one the same call gives when nothing else runs. Equal up to float32 summation
order: under load the recurrent kernels may hand a recurrence to one thread and
the BLAS may pick another split, which reorders sums (a few ulp); a race or a
shared buffer would show as errors of the order of the values themselves.
"""

from __future__ import annotations

import threading

import pytest
import torch

import d2l_ext
from d2l_ext import functional as F

pytestmark = pytest.mark.skipif(not d2l_ext.native_available(), reason="needs the compiled library")


def _work(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 12, 12, generator=g, requires_grad=True)
    w = torch.randn(6, 3, 3, 3, generator=g, requires_grad=True)
    seq = torch.randn(7, 4, 5, generator=g, requires_grad=True)
    lstm_w = [torch.randn(s, generator=g, requires_grad=True) for s in ((32, 5), (32, 8), (32,), (32,))]
    target = torch.randint(0, 6, (4,), generator=g)
    y = F.conv2d(x, w, padding=1)
    y = F.max_pool2d(torch.relu(y), 2)
    y = F.avg_pool2d(y, 2).mean((2, 3))
    state = (torch.zeros(1, 4, 8), torch.zeros(1, 4, 8))
    out, _, _ = F.lstm(seq, state, lstm_w, True, 1, 0.0, False, False, False)
    loss = F.cross_entropy(y + out[-1, :, :6], target)
    grads = torch.autograd.grad(loss, [x, w, seq, *lstm_w])
    return [loss.detach(), *grads]


def test_threads_get_the_results_of_a_lone_call():
    with d2l_ext.use_backend("native"):
        expected = {seed: _work(seed) for seed in range(8)}
        results: dict[int, list[torch.Tensor]] = {}
        errors: list[BaseException] = []

        def run(seed: int) -> None:
            try:
                for _ in range(5):
                    results[seed] = _work(seed)
            except BaseException as e:  # reported below; a thread's exception would vanish
                errors.append(e)

        threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    assert sorted(results) == list(range(8))
    for seed, got in results.items():
        for a, b in zip(got, expected[seed]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"seed {seed}")


def test_backward_from_several_threads_on_one_graph():
    """Threads call backward on losses that share one forward graph (retain_graph)."""
    with d2l_ext.use_backend("native"):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 10, 10, generator=g, requires_grad=True)
        w = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
        y = F.max_pool2d(F.conv2d(x, w), 2)
        expected = torch.autograd.grad(y.sum(), [x, w], retain_graph=True)
        got: list = [None] * 4

        def run(i: int) -> None:
            got[i] = torch.autograd.grad(y.sum(), [x, w], retain_graph=True)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for grads in got:
        assert grads is not None
        for a, b in zip(grads, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
