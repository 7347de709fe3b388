"""Benchmark of ``d2l_ext.functional.cross_entropy`` against ``torch.nn.functional.cross_entropy``.

N = 4096 rows of random logits (``randn * 2``) with C in {10, 28, 1000, 32000}
classes and random class-index targets, float32; on CUDA also bfloat16 at
C = 32000. Each shape is timed fwd+bwd (``loss = cross_entropy(x, t)``, then
``torch.autograd.grad(loss, x)``) and forward only. ``--quick`` keeps C = 10.

N = 4096, C = 32000 float32 logits are 524 MB; the gradient, torch's saved
log-softmax and the fallback's intermediates are as large again, so the
fallback column may be skipped ("-") when one call is too slow (see
``PYTHON_BUDGET_S``).
"""

from __future__ import annotations

import functools

import torch

import d2l_ext.functional as F

from .common import Case, Timing, standard_impls

OP = "cross_entropy"
N = 4096
CLASSES = (10, 28, 1000, 32000)  # 28: the character language model's vocabulary
QUICK_CLASSES = (10,)
SCALE = 2.0  # logits ~ N(0, 2^2): a spread-out softmax, never all zeros
# The Python fallback is slow: a shorter timing, and no timing at all when five
# calls would take longer than this (seconds).
PYTHON_TIMING = Timing(min_run_time=0.5, max_run_time=8.0)
PYTHON_BUDGET_S = 20.0


def _make_inputs(n: int, c: int, device: str, dtype: torch.dtype, seed: int):
    def make() -> dict:
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(n, c, generator=gen, device=device) * SCALE
        x = x.to(dtype).requires_grad_()
        t = torch.randint(0, c, (n,), generator=gen, device=device)
        return {"x": x, "t": t}

    return make


def _d2l(inputs: dict):
    return functools.partial(F.cross_entropy, inputs["x"], inputs["t"])


def _torch(inputs: dict):
    return functools.partial(torch.nn.functional.cross_entropy, inputs["x"], inputs["t"])


def cases(device: str, quick: bool) -> list[Case]:
    classes = QUICK_CLASSES if quick else CLASSES
    configs = [(c, torch.float32) for c in classes]
    if device.startswith("cuda"):
        configs.append((max(classes), torch.bfloat16))
    out = []
    for c, dtype in configs:
        for backward in (True, False):
            out.append(
                Case(
                    op=OP,
                    shape=f"N={N} C={c}",
                    device=device,
                    dtype=dtype,
                    make_inputs=_make_inputs(N, c, device, dtype, seed=c),
                    impls=standard_impls(
                        _d2l,
                        _torch,
                        device,
                        python_timing=None if quick else PYTHON_TIMING,
                        python_budget_s=PYTHON_BUDGET_S,
                    ),
                    backward=backward,
                    params={"N": N, "C": c, "scale": SCALE, "reduction": "mean"},
                )
            )
    return out
