"""Random valid and invalid calls of every d2l_ext op against torch's (run by tests/test_fuzz.py
in a subprocess, so a crash is caught and reported with the call that caused it).

    python tests/fuzz_ops.py SEED CASES

For each case: draw an op and its arguments (shapes with zero or negative sizes, wrong ranks,
integer inputs, out-of-range classes, windows larger than the input, ...); call torch's function
and ours. Both raising is fine, and so is ours raising a Python exception where torch returns
(a degenerate size torch lets through: a clean error, listed as a NOTE); ours returning where torch
raises, or values that differ, is a FINDING. Before each call the case is printed (flushed), so a
crash leaves it as the last line. The functional cells take unbatched (I,) input as the torch.nn
cell modules do (torch's raw ``torch.gru_cell`` & co. do not): torch's side unsqueezes it the same way.
"""

from __future__ import annotations

import random
import sys

import torch
import torch.nn.functional as TF

import d2l_ext.functional as F


def _size(rng: random.Random, lo: int = 0, hi: int = 9) -> int:
    r = rng.random()
    if r < 0.05:
        return -1
    if r < 0.12:
        return 0
    return rng.randint(max(lo, 1), hi)


def _tensor(rng: random.Random, shape: list[int], dtype=torch.float32) -> torch.Tensor:
    shape = [max(s, 0) for s in shape]
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    return torch.randint(-3, 10, shape, dtype=dtype)


def _dtype(rng: random.Random) -> torch.dtype:
    return rng.choice([torch.float32] * 6 + [torch.float64, torch.int64])


def case_conv(rng):
    dims = rng.choice([1, 2])
    rank = rng.choice([dims + 2] * 5 + [dims + 1, dims + 3])
    n, c, o = _size(rng), _size(rng, 1, 6), _size(rng, 1, 6)
    groups = rng.choice([1, 1, 1, 2, 3])
    k = [_size(rng, 1, 5) for _ in range(dims)]
    spatial = [_size(rng, 1, 12) for _ in range(dims)]
    shape = ([n] if rank == dims + 2 else []) + [c] + spatial + ([2] if rank == dims + 3 else [])
    dt = _dtype(rng)
    x = _tensor(rng, shape, dt)
    w = _tensor(rng, [o, max(c, 1) // max(groups, 1) or 1, *k], dt if rng.random() > 0.05 else torch.float64)
    b = _tensor(rng, [o], dt) if rng.random() < 0.5 else None
    kw = dict(stride=rng.choice([1, 1, 2, 0, -1]), padding=rng.choice([0, 1, 2, -1, "same", "valid"]),
              dilation=rng.choice([1, 1, 2, 0]), groups=groups)
    fn = ("conv1d", TF.conv1d, F.conv1d) if dims == 1 else ("conv2d", TF.conv2d, F.conv2d)
    return fn, (x, w, b), kw


def case_pool(rng):
    name = rng.choice(["max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d",
                       "adaptive_max_pool2d"])
    dims = 1 if name.endswith("1d") else 2
    rank = rng.choice([dims + 2] * 5 + [dims + 1, dims + 3])
    shape = [_size(rng) for _ in range(rank - dims)] + [_size(rng, 1, 12) for _ in range(dims)]
    x = _tensor(rng, shape, _dtype(rng))
    if name.startswith("adaptive"):
        kw = {"output_size": rng.choice([1, 2, 3, 5, 0, -1, (2, 3)])}
    else:
        kw = {"kernel_size": rng.choice([1, 2, 3, 5, 0, -1]), "stride": rng.choice([None, 1, 2, 0]),
              "padding": rng.choice([0, 1, 2, 3]), "ceil_mode": rng.random() < 0.3}
        if name.startswith("max"):
            kw["dilation"] = rng.choice([1, 2, 0])
            kw["return_indices"] = rng.random() < 0.3
        else:
            kw["count_include_pad"] = rng.random() < 0.5
    return (name, getattr(TF, name), getattr(F, name)), (x,), kw


def case_ce(rng):
    n, c = _size(rng), rng.randint(1, 7)  # C = 0 classes: torch's smoothing term is 0/0 (NaN), ours 0
    rank = rng.choice([2, 2, 2, 1, 3])
    shape = [n, c] if rank == 2 else [c] if rank == 1 else [n, c, _size(rng, 1, 4)]
    x = _tensor(rng, shape, rng.choice([torch.float32, torch.float32, torch.float64, torch.int64]))
    tshape = [] if rank == 1 else [n] if rank == 2 else [n, shape[2]]
    hi = max(c, 1) + (2 if rng.random() < 0.1 else 0)
    t = torch.randint(-1 if rng.random() < 0.05 else 0, hi, [max(s, 0) for s in tshape])
    kw = {"reduction": rng.choice(["mean", "sum", "none"]), "ignore_index": rng.choice([-100, 0, 1]),
          "label_smoothing": rng.choice([0.0, 0.1, 1.5])}
    if rng.random() < 0.3:
        kw["weight"] = torch.rand(max(c, 0) + (1 if rng.random() < 0.1 else 0)) + 0.1
    return ("cross_entropy", TF.cross_entropy, F.cross_entropy), (x, t), kw


def case_cell(rng):
    kind = rng.choice(["rnn_tanh_cell", "gru_cell", "lstm_cell"])
    g = {"rnn_tanh_cell": 1, "gru_cell": 3, "lstm_cell": 4}[kind]
    b, i, h = _size(rng), _size(rng, 1, 6), _size(rng, 1, 6)
    batched = rng.random() < 0.85
    x = _tensor(rng, [b, i] if batched else [i], _dtype(rng) if rng.random() < 0.2 else torch.float32)
    hx = _tensor(rng, [b, h + (1 if rng.random() < 0.05 else 0)] if batched else [h])
    state = (hx, torch.randn_like(hx)) if kind == "lstm_cell" else hx
    w_ih, w_hh = torch.randn(g * max(h, 0), max(i, 0)), torch.randn(g * max(h, 0), max(h, 0))
    bias = (torch.randn(g * max(h, 0)), torch.randn(g * max(h, 0))) if rng.random() < 0.7 else (None, None)
    fns = (kind, _module_semantics(getattr(torch, kind)), getattr(F, kind))
    return fns, (x, state, w_ih, w_hh, *bias), {}


def _module_semantics(cell):
    """torch's raw cell with torch.nn.*Cell's handling of an unbatched (I,) input."""

    def call(x, hx, *weights):
        if x.dim() != 1:
            return cell(x, hx, *weights)
        states = hx if isinstance(hx, tuple) else (hx,)
        if any(h.dim() != 1 for h in states):
            raise RuntimeError("unbatched input needs unbatched states")
        states = tuple(h.unsqueeze(0) for h in states)
        out = cell(x.unsqueeze(0), states if isinstance(hx, tuple) else states[0], *weights)
        return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)

    return call


CASES = [case_conv, case_pool, case_ce, case_cell]


def _close(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)  # float32 summation order


def main(seed: int, cases: int) -> int:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    findings = 0
    for i in range(cases):
        (name, theirs, ours), args, kw = rng.choice(CASES)(rng)
        desc = f"case {i}: {name} {[tuple(a.shape) if torch.is_tensor(a) else a for a in args]} {kw}"
        print(desc, flush=True)
        try:
            expected, t_err = theirs(*args, **kw), None
        except Exception as e:  # torch's verdict
            expected, t_err = None, e
        try:
            got, o_err = ours(*args, **kw), None
        except Exception as e:
            got, o_err = None, e
        if t_err is None and o_err is not None:
            print(f"NOTE: torch returns, ours raises {type(o_err).__name__}: {o_err}", flush=True)
        elif t_err is not None and o_err is None:
            findings += 1
            print(f"FINDING: torch raises {type(t_err).__name__}: {t_err}; ours returns", flush=True)
        elif t_err is None and not _close(got, expected):
            findings += 1
            print("FINDING: values differ", flush=True)
    print(f"DONE {cases} cases, {findings} findings", flush=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
