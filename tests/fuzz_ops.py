"""Random valid and invalid calls of every d2l_ext op and module against torch's (run by
tests/test_fuzz.py in a subprocess, so a crash is caught and reported with the call that caused it).

    python tests/fuzz_ops.py SEED CASES

For each case: draw an op (a function of ``d2l_ext.functional`` or a module of ``d2l_ext.nn``) and
its arguments (shapes with zero or negative sizes, wrong ranks, integer, bool and complex inputs,
NaN and Inf values, non-contiguous, channels-last and expanded (stride 0) layouts, out-of-range
classes, windows larger than the input, initial states of the wrong shape, ...); call torch's
function and ours. Both raising is fine, and so is ours raising a Python exception where torch
returns (a degenerate case torch lets through: a clean error, listed as a NOTE); ours returning
where torch raises, or results that differ (values, NaN positions, shape, dtype, a channels-last
layout), is a FINDING. Where both return floating results, both also run a backward (a fixed
random output gradient) and their input, weight and parameter gradients must match too.
Before each call the case is printed (flushed), so a crash leaves it as the last line (followed
by "  torch: ..." when ours crashed, by "  torch backward: ..." when our backward crashed).
Ours runs on the native kernels or (a quarter of the cases) on the Python fallback.

One torch bug is stepped around, not reported: where a dilated max-pooling window reads only
padding, torch reports an out-of-range index and its backward writes out of bounds (heap
corruption); such a case is a NOTE and skips the backward (``_padding_only``).

The case generators draw every choice through ``rng.choice``, ``rng.randint`` and ``rng.random``
only (and tensor values from torch's global generator), so the same generators run under
``random.Random`` here and under hypothesis in tests/fuzz_hypothesis.py (its ``DrawRng``), which
shrinks a failing case. Rare and invalid branches are taken when ``rng.random()`` is close to 1
(``_rare``), and lists put the ordinary choice first: hypothesis shrinks towards 0 and the first
element, i.e. towards an ordinary call.

The functional cells take unbatched (I,) input as the torch.nn cell modules do (torch's raw
``torch.gru_cell`` & co. do not): torch's side unsqueezes it the same way.
"""

from __future__ import annotations

import random
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as TF

import d2l_ext
import d2l_ext.functional as F
import d2l_ext.nn as dnn

# ---------------------------------------------------------------------------- drawing helpers


def _rare(rng, p: float) -> bool:
    """True with probability p (hypothesis shrinks rng.random() to 0: False)."""
    return rng.random() > 1.0 - p


def _size(rng, lo: int = 0, hi: int = 9) -> int:
    """A dimension: mostly in [max(lo, 1), hi], sometimes 0 or -1 (invalid)."""
    r = rng.random()
    if r > 0.95:
        return -1
    if r > 0.88:
        return 0
    return rng.randint(max(lo, 1), hi)


def _tensor(rng, shape: list[int], dtype=torch.float32) -> torch.Tensor:
    shape = [max(s, 0) for s in shape]
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape).bool()
    return torch.randint(-3, 10, shape, dtype=dtype)


def _dtype(rng) -> torch.dtype:
    return rng.choice([torch.float32] * 6 + [torch.float64, torch.int64])


VALUE_MUTATIONS = ["nan", "inf", "-inf", "int32", "bool", "complex"]
LAYOUT_MUTATIONS = ["transposed", "strided", "channels_last", "expanded"]


def _with_values(rng, x: torch.Tensor, kind: str) -> torch.Tensor:
    """x with a NaN/Inf value injected, or in another dtype (integer, bool, complex)."""
    if kind in ("nan", "inf", "-inf"):
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return x
        x = x.clone()
        x.view(-1)[rng.randint(0, x.numel() - 1)] = float(kind)
        return x
    if kind == "int32":
        return x.to(torch.int32)
    if kind == "bool":
        return x > 0
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


def _with_layout(rng, x: torch.Tensor, kind: str) -> torch.Tensor:
    """x's values (all but "expanded") in another memory layout: the same logical tensor."""
    if x.dim() == 0:
        return x
    if kind == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "expanded" and x.numel() > 0:  # a size-1 slice broadcast back: stride 0
        d = rng.randint(0, x.dim() - 1)
        return x.narrow(d, 0, 1).expand(x.shape)
    if kind == "transposed" and x.dim() >= 2:
        a = rng.randint(0, x.dim() - 2)
        b = rng.randint(a + 1, x.dim() - 1)
        return x.transpose(a, b).contiguous().transpose(a, b)
    # "strided" (and the fallback of the others): every other element of a larger buffer,
    # at storage offset 1
    big = torch.zeros(*x.shape[:-1], 2 * x.shape[-1] + 1, dtype=x.dtype)
    big[..., 1::2] = x
    return big[..., 1::2]


def _mutate(rng, x: torch.Tensor, values: float = 0.25, layout: float = 0.3) -> torch.Tensor:
    """Sometimes bad values or dtype (probability ``values``), sometimes an unusual layout."""
    if _rare(rng, values):
        x = _with_values(rng, x, rng.choice(VALUE_MUTATIONS))
    if _rare(rng, layout):
        x = _with_layout(rng, x, rng.choice(LAYOUT_MUTATIONS))
    return x


def _backend(rng) -> str:
    """Which d2l_ext backend runs ours: mostly the native kernels, sometimes the Python fallback."""
    if not d2l_ext.native_available():
        return "python"
    return rng.choice(["native", "native", "native", "python"])


# ---------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One call: ``theirs(*args, **kw)`` against ``ours(*args, **kw)`` (ours under ``backend``).

    ``grad``: indices of ``args`` (tensors, or tuples/lists of tensors) differentiated in the
    backward check; ``params``: the two modules' parameters (torch's, ours), matched by name.
    """

    name: str
    theirs: Callable
    ours: Callable
    args: tuple
    kw: dict = field(default_factory=dict)
    grad: tuple[int, ...] = ()
    params: tuple[list, list] = ((), ())
    backend: str = "native"
    max_pool: str | None = None  # "max_pool1d"/"max_pool2d": args[0] is its input (see _padding_only)
    pool_kw: dict | None = None  # that op's keyword arguments where kw are not (modules)

    def describe(self) -> str:
        args = ", ".join(_describe(a) for a in self.args)
        kw = "".join(f", {k}={_describe(v)}" for k, v in self.kw.items())
        return f"{self.name} [{self.backend}] ({args}{kw})"


_SHORT = {torch.float32: "f32", torch.float64: "f64", torch.int64: "i64", torch.int32: "i32",
          torch.uint8: "u8", torch.bool: "bool", torch.complex64: "c64", torch.complex128: "c128"}


def _describe(a: Any) -> str:
    if torch.is_tensor(a):
        s = f"{_SHORT.get(a.dtype, str(a.dtype))}{list(a.shape)}"
        if a.dim() == 4 and not a.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last):
            s += "(channels_last)"
        elif not a.is_contiguous():
            s += f"(strides {a.stride()})"
        if (a.is_floating_point() or a.is_complex()) and a.numel() and not bool(torch.isfinite(a).all()):
            s += "(nan)" if bool(torch.isnan(a).any()) else "(inf)"
        return s
    if isinstance(a, torch.nn.utils.rnn.PackedSequence):
        return f"PackedSequence({_describe(a.data)}, batch_sizes={a.batch_sizes.tolist()})"
    if isinstance(a, (tuple, list)):
        inner = ", ".join(_describe(x) for x in a)
        return f"({inner})" if isinstance(a, tuple) else f"[{inner}]"
    return repr(a)


CONV_OPS = ["conv2d", "conv1d"]


def _pick(rng, good: list, bad: list, p: float = 0.08):
    """A choice from ``good``, or with probability p from ``bad`` (invalid values): rare enough
    that a case with several arguments still reaches the kernels most of the time."""
    return rng.choice(bad) if _rare(rng, p) else rng.choice(good)


def case_conv(rng) -> Case:
    name = rng.choice(CONV_OPS)
    dims = 1 if name == "conv1d" else 2
    rank = _pick(rng, [dims + 2] * 3 + [dims + 1], [dims + 3, dims])  # dims + 1: unbatched
    groups = rng.choice([1, 1, 2, 3])
    n = _size(rng, 1, 4)
    c = _pick(rng, [groups, 2 * groups], [0, -1, groups + 1])
    o = _pick(rng, [groups, 2 * groups, 3 * groups], [0, -1, groups + 1])
    k = [_pick(rng, [1, 2, 3, 4, 5], [0, -1]) for _ in range(dims)]
    spatial = [_size(rng, 1, 10) for _ in range(dims)]
    shape = ([n] if rank >= dims + 2 else []) + [c] + (spatial if rank > dims else spatial[1:])
    shape += [2] if rank == dims + 3 else []
    dt = _dtype(rng)
    x = _mutate(rng, _tensor(rng, shape, dt))
    w = _tensor(rng, [o, max(c, 1) // max(groups, 1) or 1, *k], torch.float64 if _rare(rng, 0.05) else dt)
    w = _mutate(rng, w, values=0.03, layout=0.2)
    b = _tensor(rng, [o + (1 if _rare(rng, 0.05) else 0)], dt) if rng.random() < 0.5 else None
    kw = dict(stride=_pick(rng, [1, 1, 2] + ([(1, 2)] if dims == 2 else []), [0, -1]),
              padding=_pick(rng, [0, 1, 2, "valid", "same"] + ([(1, 0)] if dims == 2 else []), [-1, "full"]),
              dilation=_pick(rng, [1, 1, 2], [0, -1]), groups=groups)
    return Case(name, getattr(TF, name), getattr(F, name), (x, w, b), kw, grad=(0, 1, 2),
                backend=_backend(rng))


POOL_OPS = ["max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d"]


def _pool_kw(rng, name: str) -> dict:
    """Arguments of a pooling function: also the constructor arguments of its torch.nn module."""
    dims = 1 if name.endswith("1d") else 2
    if name.startswith("adaptive"):
        good = [1, 2, 3, 5] + ([(2, 3), (None, 2), (3, None)] if dims == 2 else [(2,)])
        kw = {"output_size": _pick(rng, good, [0, -1, (2, 3, 1)] + ([(2, 3)] if dims == 1 else []))}
        if "max" in name:
            kw["return_indices"] = _rare(rng, 0.3)
        return kw
    kernel = _pick(rng, [2, 1, 3, 5] + ([(2, 3), (3, 1)] if dims == 2 else [(3,)]), [0, -1, (2, 2, 2)])
    smallest = min(kernel) if isinstance(kernel, tuple) else kernel
    stride = _pick(rng, [None, 1, 2] + ([(1, 2)] if dims == 2 else []), [0, -1])
    kw = {"kernel_size": kernel, "stride": stride,
          "padding": rng.randint(0, max(smallest, 0) // 2) if not _rare(rng, 0.08) else rng.choice([-1, 3]),
          "ceil_mode": _rare(rng, 0.3)}
    if name.startswith("max"):
        kw["dilation"] = _pick(rng, [1, 2], [0])
        kw["return_indices"] = _rare(rng, 0.3)
    else:
        kw["count_include_pad"] = rng.random() < 0.5
        if dims == 2:
            kw["divisor_override"] = _pick(rng, [None, None, 3, -2], [0])
    return kw


def _pool_input(rng, name: str) -> torch.Tensor:
    dims = 1 if name.endswith("1d") else 2
    rank = _pick(rng, [dims + 2] * 3 + [dims + 1], [dims + 3, dims])  # dims + 1: unbatched
    shape = [_size(rng, 1, 6) for _ in range(rank - dims)] + [_size(rng, 1, 12) for _ in range(dims)]
    return _mutate(rng, _tensor(rng, shape[-rank:] if rank else [], _dtype(rng)))


def case_pool(rng) -> Case:
    name = rng.choice(POOL_OPS)
    x = _pool_input(rng, name)
    kw = _pool_kw(rng, name)
    return Case(name, getattr(TF, name), getattr(F, name), (x,), kw, grad=(0,), backend=_backend(rng),
                max_pool=name if name.startswith("max") else None)


def _padding_only(case: Case) -> torch.Tensor | None:
    """Where torch's max pooling reports an out-of-range index: a dilated window that reads only
    padding (torch's CPU and CUDA kernels report its first tap past the padding, which may lie
    beyond the input; ours report 0, _ops.offsets_to_indices). torch's backward then scatters
    out of bounds: it corrupts the heap ("double free or corruption"), so it is not run there."""
    if case.max_pool is None:
        return None
    x, kw = case.args[0], {**(case.kw if case.pool_kw is None else case.pool_kw), "return_indices": True}
    dims = 1 if case.max_pool.endswith("1d") else 2
    try:
        _, indices = getattr(TF, case.max_pool)(x, **kw)
    except Exception:  # not a valid call: nothing to explain
        return None
    size = 1
    for s in x.shape[-dims:]:
        size *= s
    bad = (indices < 0) | (indices >= size)
    return bad if bool(bad.any()) else None


def _ce_args(rng) -> tuple[torch.Tensor, torch.Tensor, dict]:
    n, c = _size(rng), rng.randint(1, 7)  # C = 0 classes: torch's smoothing term is 0/0 (NaN), ours 0
    rank = rng.choice([2, 2, 2, 1, 3])
    shape = [n, c] if rank == 2 else [c] if rank == 1 else [n, c, _size(rng, 1, 4)]
    dt = _pick(rng, [torch.float32, torch.float32, torch.float64], [torch.int64])
    x = _mutate(rng, _tensor(rng, shape, dt))
    tshape = [] if rank == 1 else [n] if rank == 2 else [n, shape[2]]
    kind = _pick(rng, ["index"] * 3 + ["probability"], ["uint8", "int32", "float-index"], 0.15)
    if kind == "probability":  # class probabilities, input's shape (any values: torch takes them)
        t = torch.rand([max(s, 0) for s in shape], dtype=rng.choice([torch.float32, torch.float64]))
        t = _mutate(rng, t, values=0.1, layout=0.2)
    else:
        hi = max(c, 1) + (2 if _rare(rng, 0.1) else 0)
        t = torch.randint(-1 if _rare(rng, 0.05) else 0, hi, [max(s, 0) for s in tshape])
        t = {"index": t, "uint8": t.clamp(min=0).to(torch.uint8), "int32": t.int(),
             "float-index": t.float()}[kind]
        t = _with_layout(rng, t, rng.choice(LAYOUT_MUTATIONS)) if _rare(rng, 0.15) else t
    kw = {"reduction": _pick(rng, ["mean", "sum", "none"], ["avg"], 0.03),
          "ignore_index": rng.choice([-100, 0, 1]),
          "label_smoothing": _pick(rng, [0.0, 0.1, -0.2], [1.5])}
    if _rare(rng, 0.3):
        weight = torch.rand(max(c, 0) + (1 if _rare(rng, 0.1) else 0)) + 0.1
        kw["weight"] = weight.double() if _rare(rng, 0.1) else weight
    return x, t, kw


def case_ce(rng) -> Case:
    x, t, kw = _ce_args(rng)
    return Case("cross_entropy", TF.cross_entropy, F.cross_entropy, (x, t), kw, grad=(0,),
                backend=_backend(rng))


CELL_OPS = ["rnn_tanh_cell", "rnn_relu_cell", "gru_cell", "lstm_cell"]
_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


def case_cell(rng) -> Case:
    kind = rng.choice(CELL_OPS)
    g = _GATES[kind.removesuffix("_cell")]
    b, i, h = _size(rng), _size(rng, 1, 6), _size(rng, 1, 6)
    batched = not _rare(rng, 0.15)
    x = _tensor(rng, [b, i] if batched else [i], _dtype(rng) if _rare(rng, 0.2) else torch.float32)
    x = _mutate(rng, x)
    hx = _mutate(rng, _tensor(rng, [b, h + (1 if _rare(rng, 0.05) else 0)] if batched else [h]), 0.05, 0.2)
    state = (hx, torch.randn(hx.shape)) if kind == "lstm_cell" else hx
    w_ih, w_hh = torch.randn(g * max(h, 0), max(i, 0)), torch.randn(g * max(h, 0), max(h, 0))
    w_ih = _mutate(rng, w_ih, values=0.03, layout=0.15)
    bias = (torch.randn(g * max(h, 0)), torch.randn(g * max(h, 0))) if rng.random() < 0.7 else (None, None)
    args = (x, state, w_ih, w_hh, *bias)
    return Case(kind, _module_semantics(getattr(torch, kind)), getattr(F, kind), args,
                grad=(0, 1, 2, 3, 4, 5), backend=_backend(rng))


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


LAYER_OPS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def case_rnn_layer(rng) -> Case:
    """The functional layers (stacked, bidirectional, batch-first, LSTM projections) against
    torch's raw ``torch.rnn_tanh`` & co., which take the same arguments."""
    name = rng.choice(LAYER_OPS)
    g = _GATES[name]
    n_in, H = _size(rng, 1, 5), _size(rng, 1, 5)
    L, D = rng.choice([1, 2, 1, 3]), rng.choice([1, 2])
    P = rng.choice([0, 0, 0, 1, 2]) if name == "lstm" and H > 2 else 0
    has_biases, batch_first = rng.random() < 0.7, _rare(rng, 0.3)
    dt = torch.float64 if _rare(rng, 0.15) else torch.float32
    h, hp = max(H, 0), P or max(H, 0)
    params = []
    for layer in range(L):
        for _ in range(D):
            params += [torch.randn(g * h, max(n_in, 0) if layer == 0 else D * hp, dtype=dt),
                       torch.randn(g * h, hp, dtype=dt)]
            if has_biases:
                params += [torch.randn(g * h, dtype=dt), torch.randn(g * h, dtype=dt)]
            if P:
                params.append(torch.randn(P, h, dtype=dt))
    if _rare(rng, 0.05) and params:  # a weight missing
        del params[rng.randint(0, len(params) - 1)]
    T, B = _size(rng, 1, 5), _size(rng, 1, 4)
    features = max(n_in, 0) + (1 if _rare(rng, 0.05) else 0)
    shape = [B, T, features] if batch_first else [T, B, features]
    if _rare(rng, 0.05):
        shape = shape[1:]  # 2-D: the raw layers take batched input only
    x = _mutate(rng, _tensor(rng, shape, torch.float64 if dt == torch.float64 and not _rare(rng, 0.05)
                             else torch.float32))
    states = L * D + (rng.choice([1, -1]) if _rare(rng, 0.05) else 0)
    batch = max(B, 0) + (1 if _rare(rng, 0.05) else 0)
    h0 = _mutate(rng, _tensor(rng, [states, batch, hp], dt), values=0.05, layout=0.2)
    hx = (h0, _tensor(rng, [states, batch, h], dt)) if name == "lstm" else h0
    # dropout between layers: off, or deterministic (eval, or p = 1), or invalid (p > 1)
    dropout, train = rng.choice([(0.0, False), (0.0, True), (0.5, False), (1.0, True), (1.5, True)])
    args = (x, hx, params, has_biases, L, dropout, train, D == 2, batch_first)
    return Case(name, getattr(torch, name), getattr(F, name), args, grad=(0, 1, 2), backend=_backend(rng))


BOOK_OPS = ["pool2d", "corr2d"]


def _torch_pool2d(X, pool_size, mode="max"):
    if X.dim() != 2:
        raise ValueError("X must be 2-D")
    pool = {"max": TF.max_pool2d, "avg": TF.avg_pool2d}.get(mode)
    if pool is None:
        raise ValueError(f"bad mode {mode!r}")
    return pool(X[None, None], pool_size, 1).squeeze(0).squeeze(0)


def _torch_corr2d(X, K):
    if X.dim() != 2 or K.dim() != 2:
        raise RuntimeError("X and K must be 2-D")
    return TF.conv2d(X[None, None], K[None, None])[0, 0]


def case_book(rng) -> Case:
    """The book's pool2d and corr2d (2-D X), against torch's pooling and conv2d."""
    name = rng.choice(BOOK_OPS)
    shape = [_size(rng, 1, 8), _size(rng, 1, 8)] + ([3] if _rare(rng, 0.05) else [])
    X = _mutate(rng, _tensor(rng, shape, _dtype(rng)))
    if name == "pool2d":
        size = _pick(rng, [2, 1, 3, (2, 3)], [0, 9])
        mode = _pick(rng, ["max", "avg"], ["sum"], 0.05)
        return Case(name, _torch_pool2d, F.pool2d, (X, size), {"mode": mode}, grad=(0,),
                    backend=_backend(rng))
    K = _mutate(rng, _tensor(rng, [_size(rng, 1, 4), _size(rng, 1, 4)], X.dtype), values=0.05, layout=0.2)
    return Case(name, _torch_corr2d, F.corr2d, (X, K), grad=(0, 1), backend=_backend(rng))


# ------------------------------------------------------------------------------ modules


def _build(name: str, kw: dict, dtype: torch.dtype, train: bool):
    """torch.nn's module and d2l_ext.nn's with the same constructor arguments and state
    (or the exception each constructor raised), both in ``dtype`` and train/eval mode."""
    built = []
    for cls in (getattr(torch.nn, name), getattr(dnn, name)):
        try:
            m = cls(**kw).to(dtype)
            m.train(train)
        except Exception as e:  # an invalid constructor argument
            m = e
        built.append(m)
    theirs, ours = built
    if isinstance(theirs, torch.nn.Module) and isinstance(ours, torch.nn.Module):
        ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _call(module):
    def call(*args):
        if isinstance(module, Exception):
            raise module
        return module(*args)

    return call


def _params(module) -> list:
    return [p for _, p in sorted(module.named_parameters())] if isinstance(module, torch.nn.Module) else []


def _module_case(rng, name: str, kw: dict, args: tuple, grad: tuple, dtype=torch.float32,
                 train: bool = True) -> Case:
    theirs, ours = _build(name, kw, dtype, train)
    shown = ", ".join(f"{k}={_describe(v)}" for k, v in kw.items())
    pool = {"MaxPool1d": "max_pool1d", "MaxPool2d": "max_pool2d"}.get(name)
    return Case(f"nn.{name}({shown}){'' if train else '.eval()'}", _call(theirs), _call(ours), args,
                grad=grad, params=(_params(theirs), _params(ours)),
                backend=_backend(rng), max_pool=pool, pool_kw=kw if pool else None)


CONV_MODULES = ["Conv2d", "Conv1d"]
POOL_MODULES = {"max_pool2d": "MaxPool2d", "avg_pool2d": "AvgPool2d", "max_pool1d": "MaxPool1d",
                "avg_pool1d": "AvgPool1d", "adaptive_avg_pool2d": "AdaptiveAvgPool2d",
                "adaptive_max_pool2d": "AdaptiveMaxPool2d", "adaptive_avg_pool1d": "AdaptiveAvgPool1d",
                "adaptive_max_pool1d": "AdaptiveMaxPool1d"}


def case_module(rng) -> Case:
    """Conv1d/Conv2d (every padding_mode), the pooling modules and CrossEntropyLoss: torch.nn's
    module against d2l_ext.nn's with the same arguments and state."""
    family = rng.choice(["conv", "pool", "loss"])
    if family == "pool":
        fn = rng.choice(POOL_OPS)
        return _module_case(rng, POOL_MODULES[fn], _pool_kw(rng, fn), (_pool_input(rng, fn),), (0,))
    if family == "loss":
        x, t, kw = _ce_args(rng)
        return _module_case(rng, "CrossEntropyLoss", kw, (x, t), (0,))
    name = rng.choice(CONV_MODULES)
    dims = 1 if name == "Conv1d" else 2
    groups = rng.choice([1, 1, 2, 3])
    c = _pick(rng, [groups, 2 * groups], [0, -1, groups + 1])
    o = _pick(rng, [groups, 2 * groups, 3 * groups], [0, -1, groups + 1])
    kernel = _pick(rng, [3, 1, 2, 5] + ([(1, 3), (2, 1)] if dims == 2 else []), [0, -1])
    kw = {"in_channels": c, "out_channels": o, "kernel_size": kernel,
          "stride": _pick(rng, [1, 1, 2] + ([(2, 1)] if dims == 2 else []), [0]),
          "padding": _pick(rng, [0, 1, 2, "same", "valid"] + ([(1, 0)] if dims == 2 else []), [-1]),
          "dilation": _pick(rng, [1, 1, 2], [0]), "groups": groups, "bias": rng.random() < 0.7,
          "padding_mode": rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])}
    dt = torch.float64 if _rare(rng, 0.15) else torch.float32
    rank = _pick(rng, [dims + 2] * 3 + [dims + 1], [dims + 3])
    n = _size(rng, 1, 4)
    shape = ([n] if rank >= dims + 2 else []) + [max(c, 0) + (1 if _rare(rng, 0.05) else 0)]
    shape += [_size(rng, 1, 9) for _ in range(dims)] + ([2] if rank == dims + 3 else [])
    x = _mutate(rng, _tensor(rng, shape, torch.float32 if _rare(rng, 0.05) else dt))
    return _module_case(rng, name, kw, (x,), (0,), dt)


RNN_MODULES = ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell"]


def case_rnn_module(rng) -> Case:
    """RNN (tanh, relu), GRU, LSTM (num_layers, bidirectional, batch_first, bias, proj_size,
    dropout with eval(), unbatched input, h0 of the right or a wrong shape, a wrong input size,
    PackedSequence input) and the three cells, against torch.nn's."""
    name = rng.choice(RNN_MODULES)
    n_in, H = _size(rng, 1, 5), _size(rng, 1, 5)
    dt = torch.float64 if _rare(rng, 0.15) else torch.float32
    xdt = torch.float32 if _rare(rng, 0.05) else dt
    features = max(n_in, 0) + (1 if _rare(rng, 0.05) else 0)
    kw: dict = {"input_size": n_in, "hidden_size": H, "bias": rng.random() < 0.8}
    if name.endswith("Cell"):
        if name == "RNNCell":
            kw["nonlinearity"] = rng.choice(["tanh", "relu"])
        B = _size(rng, 1, 4)
        batched = not _rare(rng, 0.2)
        x = _mutate(rng, _tensor(rng, [B, features] if batched else [features], xdt))
        args: tuple = (x,)
        if rng.random() < 0.6:  # an initial state (else zeros)
            hshape = [max(B, 0), max(H, 0)] if batched else [max(H, 0)]
            if _rare(rng, 0.1):
                hshape[rng.randint(0, len(hshape) - 1)] += 1
            h0 = _mutate(rng, _tensor(rng, hshape, dt), values=0.05, layout=0.2)
            args = (x, (h0, torch.randn(h0.shape, dtype=dt)) if name == "LSTMCell" else h0)
        return _module_case(rng, name, kw, args, (0, 1), dt)
    L, D = rng.choice([1, 2, 1, 0]), rng.choice([1, 2])
    kw.update(num_layers=L, batch_first=_rare(rng, 0.3), bidirectional=D == 2)
    if name == "RNN":
        kw["nonlinearity"] = rng.choice(["tanh", "relu"])
    if name == "LSTM":
        kw["proj_size"] = rng.choice([0, 0, 0, 1, 2, -1])
    dropout = rng.choice([0.0, 0.0, 0.3])
    kw["dropout"] = dropout
    train = dropout == 0 and rng.random() < 0.5  # dropout is random: only in eval mode
    T, B = _size(rng, 1, 5), _size(rng, 1, 4)
    batched = not _rare(rng, 0.2)
    shape = ([B, T] if kw["batch_first"] else [T, B]) if batched else [T]
    shape = [max(s, 0) for s in shape] + [features]
    if _rare(rng, 0.04):  # a 4-D or 1-D input
        shape = shape + [2] if rng.random() < 0.5 else shape[-1:]
    x = _mutate(rng, _tensor(rng, shape, xdt))
    if x.dim() == 3 and x.numel() > 0 and _rare(rng, 0.06):  # a PackedSequence (ours: unsupported)
        lengths = torch.tensor([rng.randint(1, max(T, 1)) for _ in range(max(B, 0))], dtype=torch.long)
        x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=kw["batch_first"],
                                                    enforce_sorted=False)
    args = (x,)
    if rng.random() < 0.5:  # initial states (else zeros)
        P = kw.get("proj_size", 0) if kw.get("proj_size", 0) > 0 else max(H, 0)
        lead = [max(L, 0) * D] + ([max(B, 0)] if batched else [])
        hshape, cshape = lead + [P], lead + [max(H, 0)]
        if _rare(rng, 0.1):  # one wrong size, or a wrong rank
            d = rng.randint(0, len(hshape))
            if d == len(hshape):
                hshape = hshape[1:]
            else:
                hshape[d] += 1
        h0 = _mutate(rng, _tensor(rng, hshape, dt), values=0.05, layout=0.2)
        args = (x, (h0, _tensor(rng, cshape, dt)) if name == "LSTM" else h0)
    return _module_case(rng, name, kw, args, (0, 1), dt, train)


CASES = [case_conv, case_pool, case_ce, case_cell, case_rnn_layer, case_book, case_module, case_rnn_module]


def covered_names() -> set[str]:
    """The functions and modules the generators draw (every public one must be among them)."""
    return set(CONV_OPS + POOL_OPS + CELL_OPS + LAYER_OPS + BOOK_OPS + ["cross_entropy"]
               + CONV_MODULES + list(POOL_MODULES.values()) + RNN_MODULES + ["CrossEntropyLoss"])


# ------------------------------------------------------------------------------ comparison


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol). Both sides compute the same maths; only the order of the roundings differs
    (blocked GEMMs, another summation order, fused vs separate cell steps). A sum of n terms then
    differs by about sqrt(n) eps relative to its terms' size: at most a few hundred terms here,
    so ~1e-6 (float32, eps 1.2e-7) and ~1e-14 (float64, eps 2.2e-16) relative errors; recurrent
    layers carry them through a few steps. float32 keeps a 100x margin (rtol 1e-4, atol 1e-5 for
    results near 0 after cancellation). float64 allows 1e-10: still 1e4x the expected error,
    but 1e3x below float32's precision, so it catches a float64 path computing in float32.
    An entry that cancels to near 0 keeps the absolute error of its terms, whose size the
    largest (finite) entry of the same tensor indicates: atol is scaled by it when above 1
    (gradients of stacked relu layers reach 1e2)."""
    if dtype in (torch.float64, torch.complex128):
        return 1e-10, 1e-10
    return 1e-4, 1e-5


def _precision(case: Case) -> torch.dtype:
    """float64 when every floating input is 64-bit, else float32: with a float32 input and a
    float64 one (a float64 probability target, say) torch computes part of the result in float32
    before promoting it, so a float64 result only carries float32's precision."""
    tensors = _flat(list(case.args) + list(case.kw.values())) + list(case.params[0])
    floats = [t for t in tensors if t.is_floating_point() or t.is_complex()]
    wide = (torch.float64, torch.complex128)
    return torch.float64 if floats and all(t.dtype in wide for t in floats) else torch.float32


def _layout(t: torch.Tensor) -> str:
    if t.dim() != 4 or t.is_contiguous():
        return "contiguous-or-other"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "contiguous-or-other"


def _compare(got, expected, path: str = "output", precision: torch.dtype = torch.float64) -> str | None:
    """None when ours (got) matches torch's (expected), else what differs. Tolerances: those of
    the result's dtype, or float32's where ``precision`` (the inputs') is float32."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{path}: torch returns {_describe(expected)}, ours {_describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = _compare(g, e, f"{path}[{i}]", precision)
            if problem:
                return problem
        return None
    if got is None or expected is None:  # gradients: None (unused) is the same as zeros
        other = expected if got is None else got
        if other is None or (torch.is_tensor(other) and not bool(other.any())):
            return None
        return f"{path}: torch {_describe(expected)}, ours {_describe(got)}"
    if not torch.is_tensor(got) or not torch.is_tensor(expected):
        return None if got == expected else f"{path}: torch {expected!r}, ours {got!r}"
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return f"{path}: torch {_describe(expected)}, ours {_describe(got)}"
    if not (expected.is_floating_point() or expected.is_complex()):
        if not torch.equal(got, expected):
            diff = (got != expected).nonzero()[0].tolist()
            return (f"{path}: values differ, first at {diff}: torch {expected[tuple(diff)].item()}, "
                    f"ours {got[tuple(diff)].item()}")
        return None
    rtol, atol = _tolerance(expected.dtype if precision == torch.float64 else torch.float32)
    got_d, exp_d = got.detach(), expected.detach()
    finite = exp_d[torch.isfinite(exp_d)]
    atol *= max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    if not torch.allclose(got_d, exp_d, rtol=rtol, atol=atol, equal_nan=True):
        if not torch.equal(got_d.isnan(), exp_d.isnan()):
            return (f"{path}: NaN at other positions (torch {int(exp_d.isnan().sum())} NaN, "
                    f"ours {int(got_d.isnan().sum())})")
        bad = ~torch.isclose(got_d, exp_d, rtol=rtol, atol=atol, equal_nan=True)
        where = bad.nonzero()[0].tolist()
        return (f"{path}: values differ at {int(bad.sum())} of {bad.numel()} entries, first {where}: "
                f"torch {exp_d[tuple(where)].item()}, ours {got_d[tuple(where)].item()}")
    if {_layout(got), _layout(expected)} == {"channels_last", "contiguous-or-other"} and got.numel() > 1:
        return f"{path}: layout differs: torch {_layout(expected)} {expected.stride()}, ours {got.stride()}"
    return None


def _leaves(a, leaves: list):
    """a with its real floating tensors replaced by fresh leaves that require grad (same strides)."""
    if isinstance(a, (tuple, list)):
        return type(a)(_leaves(x, leaves) for x in a)
    if torch.is_tensor(a) and a.is_floating_point():
        leaf = a.detach().requires_grad_()
        leaves.append(leaf)
        return leaf
    return a


def _flat(out) -> list:
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out] if torch.is_tensor(out) else []


def _gradients(fn: Callable, case: Case, params: list):
    """(which outputs require grad, gradients of the grad args' leaves and of params) after a
    backward of sum(output * g) with a fixed random g."""
    args, leaves = list(case.args), []
    for i in case.grad:
        if i < len(args):
            args[i] = _leaves(args[i], leaves)
    for p in params:
        p.grad = None
    outs = [o for o in _flat(fn(*args, **case.kw)) if o.is_floating_point()]
    gen = torch.Generator().manual_seed(0)
    total, flags = None, []
    for o in outs:
        g = torch.randn(o.shape, generator=gen, dtype=o.dtype)
        flags.append(o.requires_grad)
        if o.requires_grad:
            term = (o * g).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    return flags, [leaf.grad for leaf in leaves] + [p.grad for p in params]


def _differentiable(case: Case, expected) -> bool:
    outs = _flat(expected)
    tensors = _flat([case.args[i] for i in case.grad if i < len(case.args)]) + list(case.params[0])
    return (any(o.is_floating_point() for o in outs) and not any(o.is_complex() for o in outs)
            and any(t.is_floating_point() for t in tensors))


def _attempt(fn: Callable):
    try:
        return fn(), None
    except Exception as e:  # the verdict
        return None, e


def _torch_uint8_gather(case: Case, err: Exception) -> bool:
    """torch's label-smoothing path gathers with the target as the index, which must be int32/int64:
    a uint8 target, accepted by its nll_loss and by ours, makes torch raise there."""
    target = case.args[1] if case.name.lower().startswith("cross") and len(case.args) > 1 else None
    return (torch.is_tensor(target) and target.dtype == torch.uint8
            and "Expected dtype int32/int64 for index" in str(err))


def _torch_conv_inf_artifact(case: Case, ours, theirs) -> bool:
    """A strided or padded convolution's input gradient with an inf in the input or weights: torch's
    backward multiplies the inf by zeros it inserts (its transposed convolution), which puts NaN
    at positions whose true gradient is a number; ours sums only the real terms. Accepted when
    ours has NaN nowhere torch has none, and where torch has a number ours agrees with it."""
    if "conv" not in case.name.lower():
        return False
    tensors = [t for t in _flat(list(case.args) + list(case.params[0])) if t.is_floating_point()]
    if not any(bool(torch.isinf(t).any()) for t in tensors):
        return False
    for o, t in zip(_flat(ours), _flat(theirs)):
        if o.shape != t.shape or bool((o.isnan() & ~t.isnan()).any()):
            return False
        keep = ~t.isnan()
        if _compare(o[keep], t[keep], "gradient", _precision(case)) is not None:
            return False
    return True


def run_case(case: Case, label: str) -> tuple[list[str], list[str]]:
    """Run one case, printing it and its verdict (flushed); returns (findings, notes)."""
    print(f"{label}: {case.describe()}", flush=True)
    expected, t_err = _attempt(lambda: case.theirs(*case.args, **case.kw))
    print(f"  torch: {'returns' if t_err is None else 'raises ' + type(t_err).__name__}", flush=True)
    with d2l_ext.use_backend(case.backend):
        got, o_err = _attempt(lambda: case.ours(*case.args, **case.kw))
    findings, notes = [], []
    if t_err is None and o_err is not None:
        notes.append(f"torch returns, ours raises {type(o_err).__name__}: {o_err}")
    elif t_err is not None and o_err is None:
        if _torch_uint8_gather(case, t_err):
            notes.append("cross_entropy: a uint8 target with label smoothing: torch's gather refuses it, "
                         "ours takes it (as nll_loss does)")
        else:
            findings.append(f"torch raises {type(t_err).__name__}: {t_err}; ours returns {_describe(got)}")
    elif t_err is None:
        problem = _compare(got, expected, precision=_precision(case))
        padding_only = _padding_only(case)
        if problem and padding_only is not None and isinstance(expected, tuple) and isinstance(got, tuple):
            patched = (got[0], torch.where(padding_only, expected[1], got[1]))
            if got[1].shape == padding_only.shape and _compare(patched, expected) is None:
                notes.append("max pooling: where a window reads only padding, torch's index is out of range, "
                             "ours 0")
                problem = None
        if problem:
            findings.append(f"values differ: {problem}")
        elif padding_only is not None:
            notes.append("max pooling: a window reads only padding: torch's backward would write out of "
                         "bounds (heap corruption), so no backward is compared")
        elif _differentiable(case, expected):
            t_result, t_err = _attempt(lambda: _gradients(case.theirs, case, list(case.params[0])))
            print(f"  torch backward: {'returns' if t_err is None else 'raises ' + type(t_err).__name__}",
                  flush=True)
            with d2l_ext.use_backend(case.backend):
                o_result, o_err = _attempt(lambda: _gradients(case.ours, case, list(case.params[1])))
            if t_err is None and o_err is not None:
                notes.append(f"backward: torch returns, ours raises {type(o_err).__name__}: {o_err}")
            elif t_err is not None and o_err is None:
                _, o_grads = o_result
                empty = all(o.numel() == 0 for o in _flat(expected))
                if empty and _compare(o_grads, [None] * len(o_grads)) is None:
                    # torch's pooling backward refuses an empty grad_output; ours: zero gradients
                    notes.append(f"backward of an empty output: torch raises {type(t_err).__name__}: "
                                 f"{t_err}; ours returns zero gradients")
                else:
                    findings.append(f"backward: torch raises {type(t_err).__name__}: {t_err}; ours returns")
            elif t_err is None:
                (t_flags, t_grads), (o_flags, o_grads) = t_result, o_result
                if o_flags != t_flags:
                    findings.append(f"backward: outputs requiring grad: torch {t_flags}, ours {o_flags}")
                else:
                    problem = _compare(o_grads, t_grads, "gradient", _precision(case))
                    if problem and _torch_conv_inf_artifact(case, o_grads, t_grads):
                        notes.append("conv backward with an infinite value: torch's NaN from inf * 0 where "
                                     "ours has the number (the finite-term check passes)")
                    elif problem:
                        findings.append(f"backward: {problem}")
    for note in notes:
        print(f"NOTE: {note}", flush=True)
    for finding in findings:
        print(f"FINDING: {finding}", flush=True)
    return findings, notes


def main(seed: int, cases: int) -> int:
    warnings.simplefilter("ignore")  # torch's UserWarnings (padding="same", RNN dropout, ...)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    findings = 0
    for i in range(cases):
        case = rng.choice(CASES)(rng)
        findings += len(run_case(case, f"case {i}")[0])
    print(f"DONE {cases} cases, {findings} findings", flush=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
