"""d2l_ext's recurrent ops (the cells, the stacked layers, the torch.nn-style modules) against torch.

The reference is always torch's own cell or layer (``torch.rnn_tanh_cell`` and
friends, ``torch.nn.RNN`` / ``GRU`` / ``LSTM`` and the cell modules) on the
same weights and inputs. Outputs, final states and the gradients of *every*
input (sequence, initial states, all weights and biases) are compared under
both backends (native kernels and the Python fallback), on every device of
``DEVICES``, in float32 and float64 (float16/bfloat16 have their own test).
The loss is a random linear function of the output, h_n and (LSTM) c_n, so
every gradient path is exercised.

The native op (``torch.ops.d2l_ext.rnn``) may not have kernels for every
device (CPU float32/float64 always; CUDA only in a build with a CUDA
toolkit): the functional then quietly runs the Python fallback, so "native"
tests skip there (``skip_unless_rnn_kernel``, the ``rnn_backend`` fixture).
An LSTM with ``proj_size`` runs the native op too (its per-step path);
``test_native_op_in_the_graph`` checks which side ran.

Error budget (conftest.py explains the model): one step of a cell forms its
pre-activations as sums of ``I_l + H + 2`` terms (input projection, hidden
projection, two biases; ``I_l`` is at most ``max(I, D * H)``); the backward
carries the state gradient through ``D * G * H``-term sums (G gates per cell,
D directions feeding the layer below), and the weight and bias gradients
are sums over the ``T * B`` rows. Errors made at one step travel through the
following steps and the following layers; with torch's default weight scale
(uniform in +-1/sqrt(H), spectral radius below 1) and saturating
nonlinearities the recurrence does not amplify them, so the independent
rounding errors of the ``L * T`` steps add up like a random walk:

    terms = L * T * (max(I, D * H) + D * G * H + B + 2)   (+ H for an LSTM projection)

``rtol = tolerances(dtype, terms)``. The absolute errors are relative to the
size of the *terms* of those sums, not to the (possibly cancelled) results,
so they are measured normwise (``compare``):

* outputs and final states against the value magnitude, max(1, largest
  |input|, |initial state|, |output|): the weights and biases of every test
  here are about 1 in size at most (torch's default init, uniform in
  +-1/sqrt(H)), so no pre-activation term is larger than the largest input
  or state, and the gates and tanh'd states are at most 1;
* every gradient against the gradient magnitude, the largest entry of all of
  torch's gradients of the problem: they are all sums of products of the same
  pre-activation gradients with weights, inputs or states. A gradient that is
  tiny because its terms cancel (W_hh's in a one-unit GRU whose states stay
  near 0, say) is judged against that size, not against itself.

For float32 ``rtol`` is a few 1e-6 to a few 1e-5 (e.g. T=6, H=5, 3
bidirectional LSTM layers: 3e-5); the measured errors are a few eps (the CPU
kernel's AVX2 sigmoid/tanh are accurate to a few ulp).
``test_budget_is_not_vacuous`` shows the budget rejects a float32 result in
float64 and a bfloat16 one in float32.

On a CUDA device torch's reference runs on the CPU: cuDNN's RNNs may compute
float32 in TF32 (``torch.backends.cudnn.allow_tf32`` is on by default), a
10-bit mantissa that fits no budget of a few float32 ulps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
import torch._dynamo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import d2l_ext
import d2l_ext.functional as D
from d2l_ext import reference

from .conftest import (
    BACKENDS,
    DEVICES,
    FLOAT_DTYPES,
    HALF_DTYPES,
    assert_close,
    assert_close_lowp,
    backend_with_kernel,
    grad_fn_names,
    requires_native,
    seeded,
    skip_unless_op_kernel,
    tolerances,
    use_backend_with_kernel,
)

KINDS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
MODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}  # the native op's mode codes
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}
LAYER_FNS = {"rnn_tanh": D.rnn_tanh, "rnn_relu": D.rnn_relu, "gru": D.gru, "lstm": D.lstm}
TORCH_LAYER_FNS = {
    "rnn_tanh": torch.rnn_tanh,
    "rnn_relu": torch.rnn_relu,
    "gru": torch.gru,
    "lstm": torch.lstm,
}
CELL_FNS = {k: getattr(D, f"{k}_cell") for k in KINDS}
TORCH_CELL_FNS = {k: getattr(torch, f"{k}_cell") for k in KINDS}


def _module_spec(kind: str) -> tuple[str, dict]:
    """(torch.nn class name, extra constructor kwargs) of a layer kind."""
    if kind.startswith("rnn_"):
        return "RNN", dict(nonlinearity=kind[4:])
    return kind.upper(), {}


# --------------------------------------------------------------------------- native or not


def skip_unless_rnn_kernel(device: str) -> None:
    skip_unless_op_kernel("rnn", device)


@pytest.fixture
def rnn_backend(backend, request):
    """conftest's ``backend`` fixture, native skipped where there is no rnn kernel."""
    return backend_with_kernel("rnn", backend, request)


def _use(backend_name: str, device: str):
    return use_backend_with_kernel("rnn", backend_name, device)


# --------------------------------------------------------------------------- inputs


_gen = seeded


def make(shape, dtype, device, seed=0, scale=1.0) -> torch.Tensor:
    """N(0, scale^2) drawn in float64 on the CPU, rounded to dtype, moved to device."""
    return (scale * torch.randn(shape, generator=_gen(seed), dtype=torch.float64)).to(dtype).to(device)


def uniform(shape, bound, dtype, device, seed=0) -> torch.Tensor:
    """U(-bound, bound) (torch's default RNN initialisation with bound 1/sqrt(H))."""
    u = torch.rand(shape, generator=_gen(seed), dtype=torch.float64) * 2 - 1
    return (bound * u).to(dtype).to(device)


def flat_params(kind, In, H, L, bidirectional, bias, dtype, device, seed=0) -> list[torch.Tensor]:
    """Weights in torch's ``_flat_weights`` order: w_ih (G*H, I_l), w_hh (G*H, H)[, b_ih, b_hh]."""
    G, Dn, bound = GATES[kind], 2 if bidirectional else 1, 1 / math.sqrt(H)
    out = []
    for layer in range(L):
        width = In if layer == 0 else Dn * H
        for _ in range(Dn):
            shapes = [(G * H, width), (G * H, H)] + ([(G * H,), (G * H,)] if bias else [])
            for shape in shapes:  # every tensor its own seed
                out.append(uniform(shape, bound, dtype, device, seed + 10 * len(out) + 1))
    return out


def rnn_terms(T, B, In, H, L=1, Dn=1, G=1, proj=0) -> int:
    """Terms of the error budget (module docstring)."""
    return L * max(T, 1) * (max(In, Dn * H) + Dn * G * H + max(B, 1) + 2 + (H if proj else 0))


def _max_abs(t: torch.Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


def check(name, actual, expected, *, dtype, terms, magnitude):
    """``actual`` (on any device) equals ``expected`` within the budget (module docstring)."""
    assert actual is not None and expected is not None, name
    expected = expected.detach().to(actual.device)
    assert_close(actual.detach(), expected, dtype=dtype, terms=terms, magnitude=magnitude, msg=name)


def value_magnitude(ref_outs, inputs=()) -> float:
    """max(1, largest |input or state|, largest |output|): the size of the pre-activation terms."""
    return max([1.0] + [_max_abs(t) for t in (*ref_outs, *inputs) if t is not None])


def grad_magnitude(ref_grads) -> float:
    """The largest entry of all of the reference's gradients."""
    return max([_max_abs(g) for g in ref_grads if g is not None] + [1e-300])


def compare(outs, r_outs, grads=(), r_grads=(), *, dtype, terms, inputs=()):
    """Ours against the reference: every output within the budget relative to the value
    magnitude, every gradient relative to the gradient magnitude (module docstring).
    ``grads`` / ``r_grads``: lists (None where there is no gradient, on both sides alike)
    or dicts with the same keys."""
    if isinstance(grads, dict):
        assert list(grads) == list(r_grads)
        names, grads, r_grads = list(grads), list(grads.values()), list(r_grads.values())
    else:
        names = [f"#{k}" for k in range(len(grads))]
    assert len(outs) == len(r_outs) and len(grads) == len(r_grads)
    vmag, gmag = value_magnitude(r_outs, inputs), grad_magnitude(r_grads)
    for k, (a, r) in enumerate(zip(outs, r_outs)):
        assert a.shape == r.shape, (k, a.shape, r.shape)
        check(f"output #{k}", a, r, dtype=dtype, terms=terms, magnitude=vmag)
    for name, a, r in zip(names, grads, r_grads):
        assert (a is None) == (r is None), name
        if a is not None:
            assert a.shape == r.shape, (name, a.shape, r.shape)
            check(f"{name} gradient", a, r, dtype=dtype, terms=terms, magnitude=gmag)


def compare_runs(results, **kw):
    """``compare`` for ``results = [(outs, grads) of ours, (outs, grads) of the reference]``."""
    (outs, grads), (r_outs, r_grads) = results
    compare(outs, r_outs, grads, r_grads, **kw)


def _random_linear_loss(outs, seed, round_to=None):
    """sum_k <g_k, outs_k> with fixed N(0, 1) g_k: every output gets its own random gradient
    (``round_to``: g_k drawn in that format, so that two formats get the same values)."""
    return sum(
        (o * make(o.shape, round_to or o.dtype, o.device, seed + k).to(o.dtype)).sum()
        for k, o in enumerate(outs)
    )


def _leaf(t: torch.Tensor, device) -> torch.Tensor:
    """A fresh leaf copy of ``t`` on ``device``, strides kept (``.to`` alone would return ``t``
    itself on its own device, and two runs would then share one ``.grad``)."""
    return t.detach().to(device, copy=True).requires_grad_()


# --------------------------------------------------------------------------- functional cells

CELL_BIASES = ["both", "none", "ih_only", "hh_only"]
CELL_SHAPES = {"batched": 3, "batch_1": 1, "unbatched": None}


def _cell_inputs(kind, B, In, H, bias, dtype, device, seed=0):
    """(x, h, c or None, w_ih, w_hh, b_ih or None, b_hh or None); B None: unbatched."""
    G, bound = GATES[kind], 1 / math.sqrt(H)
    lead = () if B is None else (B,)
    x = make((*lead, In), dtype, device, seed + 1)
    h = make((*lead, H), dtype, device, seed + 2, scale=0.5)
    c = make((*lead, H), dtype, device, seed + 3) if kind == "lstm" else None
    w_ih = uniform((G * H, In), bound, dtype, device, seed + 4)
    w_hh = uniform((G * H, H), bound, dtype, device, seed + 5)
    b_ih = uniform((G * H,), bound, dtype, device, seed + 6) if bias in ("both", "ih_only") else None
    b_hh = uniform((G * H,), bound, dtype, device, seed + 7) if bias in ("both", "hh_only") else None
    return x, h, c, w_ih, w_hh, b_ih, b_hh


def _run_cell(fn, kind, tensors, *, unbatched_ref=False, seed=50):
    """(outputs (h[, c]), grads of every given tensor in order) of a random linear loss.
    ``unbatched_ref``: torch's functional cells take no 1-D input: add and drop the batch dim."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in tensors]
    x, h, c, w_ih, w_hh, b_ih, b_hh = leaves
    if unbatched_ref:
        x, h, c = x[None], h[None], None if c is None else c[None]
    out = fn(x, (h, c), w_ih, w_hh, b_ih, b_hh) if kind == "lstm" else fn(x, h, w_ih, w_hh, b_ih, b_hh)
    outs = list(out) if kind == "lstm" else [out]
    if unbatched_ref:
        outs = [o[0] for o in outs]
    _random_linear_loss(outs, seed).backward()
    return [o.detach() for o in outs], [None if t is None else t.grad for t in leaves]


CELL_NAMES = ("input", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", CELL_BIASES)
@pytest.mark.parametrize("shape", list(CELL_SHAPES))
def test_cell_matches_torch(rnn_backend, device, dtype, kind, bias, shape):
    """One step of each cell: h' (and c'), and the gradients w.r.t. input, hx, cx,
    w_ih, w_hh, b_ih, b_hh, as torch's cell on the CPU; torch allows either bias
    alone (the other is zero), and so must we. Unbatched 1-D input: torch's
    functional cells need a batch dim, so its reference gets one added."""
    B, In, H = CELL_SHAPES[shape], 4, 5
    tensors = _cell_inputs(kind, B, In, H, bias, dtype, device)
    outs, grads = _run_cell(CELL_FNS[kind], kind, tensors)
    cpu = [None if t is None else t.cpu() for t in tensors]
    r_outs, r_grads = _run_cell(TORCH_CELL_FNS[kind], kind, cpu, unbatched_ref=B is None)
    terms = rnn_terms(1, B or 1, In, H, G=GATES[kind])
    assert len(outs) == (2 if kind == "lstm" else 1)
    for a, r in zip(outs, r_outs):
        assert a.shape == r.shape == tensors[1].shape and a.device == tensors[0].device
    for name, t, a in zip(CELL_NAMES, tensors, grads):
        assert (a is None) == (t is None) and (t is None or a.shape == t.shape), name
    compare(
        outs,
        r_outs,
        dict(zip(CELL_NAMES, grads)),
        dict(zip(CELL_NAMES, r_grads)),
        dtype=dtype,
        terms=terms,
        inputs=tensors[:3],
    )
    assert _max_abs(grads[3]) > 0 and _max_abs(grads[4]) > 0


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", ["both", "none"])
@pytest.mark.parametrize("batch", [2, None], ids=["batched", "unbatched"])
def test_gradcheck_cell(device, kind, bias, batch):
    """gradcheck (float64, through the native op) of each cell w.r.t. input, hx, cx and the weights."""
    skip_unless_rnn_kernel(device)
    tensors = _cell_inputs(kind, batch, 3, 3, bias, torch.float64, device, seed=3)
    present = [i for i, t in enumerate(tensors) if t is not None]
    leaves = [tensors[i].detach().clone().requires_grad_() for i in present]

    def fn(*args):
        full = [None] * 7
        for i, a in zip(present, args):
            full[i] = a
        x, h, c, w_ih, w_hh, b_ih, b_hh = full
        if kind == "lstm":
            return D.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
        return CELL_FNS[kind](x, h, w_ih, w_hh, b_ih, b_hh)

    with d2l_ext.use_backend("native"):
        assert any("d2l_ext" in n for n in grad_fn_names(_as_tuple(fn(*leaves))[0]))
        assert torch.autograd.gradcheck(fn, leaves)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


# --------------------------------------------------------------------------- cell modules


CELL_MODULES = {
    "RNNCell_tanh": ("RNNCell", dict(nonlinearity="tanh")),
    "RNNCell_relu_no_bias": ("RNNCell", dict(nonlinearity="relu", bias=False)),
    "GRUCell": ("GRUCell", {}),
    "LSTMCell": ("LSTMCell", {}),
    "LSTMCell_no_bias": ("LSTMCell", dict(bias=False)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CELL_MODULES))
@pytest.mark.parametrize("shape", ["batched", "unbatched", "no_hx", "unbatched_no_hx"])
def test_cell_module_matches_torch(rnn_backend, device, case, shape):
    """The cell modules as torch's (loaded weights), with and without hx, batched or not:
    outputs and every parameter's, the input's and the state's gradients (float32)."""
    name, kwargs = CELL_MODULES[case]
    dtype, In, H = torch.float32, 4, 5
    torch.manual_seed(7)
    theirs = getattr(torch.nn, name)(In, H, **kwargs, dtype=dtype)
    ours = getattr(d2l_ext.nn, name)(In, H, **kwargs, dtype=dtype, device=device)
    ours.load_state_dict(theirs.state_dict())
    lead = () if "unbatched" in shape else (3,)
    x = make((*lead, In), dtype, "cpu", 1)
    states = None
    if "no_hx" not in shape:
        states = [make((*lead, H), dtype, "cpu", 2 + k) for k in range(2 if name == "LSTMCell" else 1)]
    results = []
    for module, dev in ((ours, device), (theirs, "cpu")):
        xl = _leaf(x, dev)
        sl = None if states is None else [_leaf(s, dev) for s in states]
        arg = None if sl is None else (tuple(sl) if name == "LSTMCell" else sl[0])
        outs = list(_as_tuple(module(xl, arg)))
        _random_linear_loss(outs, 60).backward()
        grads = [xl.grad] + ([] if sl is None else [s.grad for s in sl])
        grads += [p.grad for p in module.parameters()]
        results.append(([o.detach() for o in outs], grads))
    terms = rnn_terms(1, 3, In, H, G=GATES["lstm"])
    assert len(results[0][1]) == len(results[1][1]) == 1 + len(states or []) + len(list(ours.parameters()))
    assert all(a.shape == (*lead, H) for a in results[0][0])
    compare_runs(
        results,
        dtype=dtype,
        terms=terms,
        inputs=[x, *(states or [])],
    )


# --------------------------------------------------------------------------- modules (layers)


class Config(NamedTuple):
    kind: str
    T: int
    B: int | None  # None: unbatched input
    In: int
    H: int
    L: int = 1
    bi: bool = False
    batch_first: bool = False
    bias: bool = True
    init: bool = True  # pass initial states (else zeros)
    proj: int = 0  # LSTM proj_size
    dropout: float = 0.0  # with dropout > 0 the modules run in eval mode (no effect there)

    @property
    def Dn(self) -> int:
        return 2 if self.bi else 1

    def terms(self) -> int:
        return rnn_terms(self.T, self.B or 1, self.In, self.H, self.L, self.Dn, GATES[self.kind], self.proj)

    def module_kwargs(self) -> dict:
        name, kw = _module_spec(self.kind)
        kw = dict(
            kw,
            num_layers=self.L,
            bidirectional=self.bi,
            batch_first=self.batch_first,
            bias=self.bias,
            dropout=self.dropout,
        )
        if self.proj:
            kw["proj_size"] = self.proj
        return kw


def build_modules(cfg: Config, dtype, device, seed=0):
    """(ours on device, torch's on the CPU) with the same (torch's default) weights."""
    name, _ = _module_spec(cfg.kind)
    torch.manual_seed(seed)
    theirs = getattr(torch.nn, name)(cfg.In, cfg.H, **cfg.module_kwargs(), dtype=dtype)
    ours = getattr(d2l_ext.nn, name)(cfg.In, cfg.H, **cfg.module_kwargs(), dtype=dtype, device=device)
    ours.load_state_dict(theirs.state_dict())
    if cfg.dropout:
        ours.eval()
        theirs.eval()
    return ours, theirs


def module_inputs(cfg: Config, dtype, seed=0):
    """(x, [h0(, c0)] or None) on the CPU for the config's shapes."""
    if cfg.B is None:
        x_shape = (cfg.T, cfg.In)
        lead = (cfg.L * cfg.Dn,)
    else:
        x_shape = (cfg.B, cfg.T, cfg.In) if cfg.batch_first else (cfg.T, cfg.B, cfg.In)
        lead = (cfg.L * cfg.Dn, cfg.B)
    x = make(x_shape, dtype, "cpu", seed + 1)
    if not cfg.init:
        return x, None
    states = [make((*lead, cfg.proj or cfg.H), dtype, "cpu", seed + 2, scale=0.5)]
    if cfg.kind == "lstm":
        states.append(make((*lead, cfg.H), dtype, "cpu", seed + 3))
    return x, states


def run_module(module, x, states, device, seed=70, round_to=None):
    """(outputs [out, h_n(, c_n)], named gradients) of a random linear loss of all outputs."""
    lstm = isinstance(module, torch.nn.LSTM)
    xl = _leaf(x, device)
    sl = None if states is None else [_leaf(s, device) for s in states]
    arg = None if sl is None else (tuple(sl) if lstm else sl[0])
    module.zero_grad(set_to_none=True)
    out, hn = module(xl, arg)
    outs = [out, *_as_tuple(hn)]
    _random_linear_loss(outs, seed, round_to).backward()
    grads = {"input": xl.grad}
    if sl is not None:
        grads.update({f"state {k}": s.grad for k, s in enumerate(sl)})
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return [o.detach() for o in outs], grads


def compare_modules(cfg: Config, dtype, device, seed=0):
    ours, theirs = build_modules(cfg, dtype, device, seed)
    x, states = module_inputs(cfg, dtype, seed)
    outs, grads = run_module(ours, x, states, device)
    r_outs, r_grads = run_module(theirs, x, states, "cpu")
    terms = cfg.terms()
    assert len(outs) == len(r_outs) == (3 if cfg.kind == "lstm" else 2)
    for name, a, r in zip(("output", "h_n", "c_n"), outs, r_outs):
        assert a.shape == r.shape and a.dtype == dtype and a.device.type == torch.device(device).type, name
    compare(outs, r_outs, grads, r_grads, dtype=dtype, terms=terms, inputs=[x, *(states or [])])
    for name, a in grads.items():
        assert a is not None, f"{name} got no gradient"
        # nonzero, but where it is zero by construction: a tiny ReLU layer may be off everywhere,
        # and with T = 1 from zero states W_hh only ever multiplies zeros
        zero_h = cfg.T == 1 and not cfg.init and name.startswith("weight_hh")
        if cfg.B != 0 and cfg.kind != "rnn_relu" and not zero_h:
            assert _max_abs(a) > 0, f"{name} gradient is zero: a path is not exercised"
    return outs, grads


MODULE_CASES = {}
for _k in KINDS:
    MODULE_CASES.update(
        {
            f"{_k}-basic": Config(_k, T=5, B=3, In=4, H=5),
            f"{_k}-3_layers-bi-batch_first-no_bias": Config(
                _k, 4, 2, 3, 4, L=3, bi=True, batch_first=True, bias=False
            ),
            f"{_k}-T1-B1-no_init": Config(_k, 1, 1, 3, 4, L=2, init=False),
            f"{_k}-unbatched-bi": Config(_k, 4, None, 3, 4, L=2, bi=True),
            f"{_k}-unbatched-batch_first-no_init": Config(_k, 3, None, 2, 3, batch_first=True, init=False),
            f"{_k}-eval_dropout": Config(_k, 4, 2, 3, 4, L=2, bi=True, dropout=0.5),
        }
    )
MODULE_CASES.update(
    {
        "lstm-proj": Config("lstm", 5, 3, 4, 5, L=2, bi=True, proj=3),
        "lstm-proj-unbatched-batch_first": Config("lstm", 4, None, 3, 4, batch_first=True, proj=2),
        "lstm-proj-no_init-no_bias": Config("lstm", 3, 2, 3, 4, L=3, proj=1, init=False, bias=False),
        "gru-zero_batch": Config("gru", 3, 0, 3, 4, L=2, bi=True),
        "lstm-zero_batch-no_init": Config("lstm", 3, 0, 3, 4, L=2, init=False),
    }
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_module_matches_torch(rnn_backend, device, dtype, case):
    """RNN (tanh, relu), GRU, LSTM modules with torch's weights: output, h_n, c_n and
    the gradients of the input, the initial states and all parameters."""
    cfg = MODULE_CASES[case]
    outs, grads = compare_modules(cfg, dtype, device, seed=sum(map(ord, case)))
    P = cfg.proj or cfg.H
    if cfg.B is None:
        assert outs[0].shape == (cfg.T, cfg.Dn * P) and outs[1].shape == (cfg.L * cfg.Dn, P)
    else:
        assert outs[0].shape[-1] == cfg.Dn * P and outs[1].shape == (cfg.L * cfg.Dn, cfg.B, P)


@st.composite
def configs(draw):
    """A random layer: kind, 1-3 layers, directions, batch_first, bias, T 1-5, B 1-3
    or unbatched, with or without initial states, an LSTM projection, eval-mode dropout."""
    kind = draw(st.sampled_from(KINDS))
    H = draw(st.integers(1, 4))
    proj = draw(st.integers(1, H - 1)) if kind == "lstm" and H > 1 and draw(st.booleans()) else 0
    return Config(
        kind,
        T=draw(st.integers(1, 5)),
        B=draw(st.sampled_from([None, 1, 2, 3])),
        In=draw(st.integers(1, 4)),
        H=H,
        L=draw(st.integers(1, 3)),
        bi=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        init=draw(st.booleans()),
        proj=proj,
        dropout=draw(st.sampled_from([0.0, 0.0, 0.4])),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), seed=st.integers(0, 2**20))
def test_hypothesis_module_matches_torch(device, dtype, backend_name, cfg, seed):
    with _use(backend_name, device):
        compare_modules(cfg, dtype, device, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize(
    "case", ["output_only", "h_n_only", "c_n_only", "input_frozen", "weights_frozen", "no_grad"]
)
def test_partial_outputs_and_requires_grad(rnn_backend, device, kind, case):
    """Only some outputs in the loss (the others' gradients are missing, i.e. zero),
    or only some inputs requiring grad: the wanted gradients as torch's, the others None;
    under no_grad no graph at all."""
    if case == "c_n_only" and kind != "lstm":
        pytest.skip("c_n is LSTM's")
    cfg = Config(kind, 4, 2, 3, 4, L=2, bi=True)
    dtype = torch.float64
    ours, theirs = build_modules(cfg, dtype, device, seed=5)
    x, states = module_inputs(cfg, dtype, seed=5)
    results = []
    for module, dev in ((ours, device), (theirs, "cpu")):
        if case == "weights_frozen":
            module.requires_grad_(False)
        xl = _leaf(x, dev).requires_grad_(case not in ("input_frozen", "no_grad"))
        sl = [_leaf(s, dev).requires_grad_(case != "no_grad") for s in states]
        arg = tuple(sl) if kind == "lstm" else sl[0]
        if case == "no_grad":
            with torch.no_grad():
                out, hn = module(xl, arg)
            assert out.grad_fn is None and not out.requires_grad
            results.append(([out, *_as_tuple(hn)], []))
            continue
        out, hn = module(xl, arg)
        outs = [out, *_as_tuple(hn)]
        used = {"output_only": [0], "h_n_only": [1], "c_n_only": [2]}.get(case, list(range(len(outs))))
        _random_linear_loss([outs[i] for i in used], 80).backward()
        results.append(
            (
                [o.detach() for o in outs],
                [xl.grad, *[s.grad for s in sl], *[p.grad for p in module.parameters()]],
            )
        )
    compare_runs(
        results,
        dtype=torch.float64,
        terms=cfg.terms(),
        inputs=[x, *states],
    )
    if case in ("input_frozen", "weights_frozen"):
        assert results[0][1][0 if case == "input_frozen" else -1] is None


# --------------------------------------------------------------------------- functional layers


def layer_inputs(kind, T, B, In, H, L, bi, bias, dtype, device, seed=0):
    """(x (T, B, I), hx, cx or None, params) for the functional layers and the raw op."""
    Dn = 2 if bi else 1
    x = make((T, B, In), dtype, device, seed + 1)
    hx = make((L * Dn, B, H), dtype, device, seed + 2, scale=0.5)
    cx = make((L * Dn, B, H), dtype, device, seed + 3) if kind == "lstm" else None
    return x, hx, cx, flat_params(kind, In, H, L, bi, bias, dtype, device, seed + 4)


def call_layer(fn, kind, x, hx, cx, params, bias, L, p, train, bi, batch_first):
    """A functional layer (ours or torch's) -> (output, h_n[, c_n])."""
    if kind == "lstm":
        return tuple(fn(x, (hx, cx), params, bias, L, p, train, bi, batch_first))
    return tuple(fn(x, hx, params, bias, L, p, train, bi, batch_first))


class Bug(NamedTuple):
    """A known disagreement with torch: the case xfails (strictly) under these backends and devices."""

    reason: str
    backends: tuple = ("native",)
    devices: tuple = ("cpu",)


NON_CONTIGUOUS = {  # which argument of the functional layer is a non-contiguous view -> known Bug or None
    "batch_first_input": None,  # a (B, T, I) input: the layer's (T, B, I) view of it
    "hx": None,
    "cx": None,
    "w_ih": None,
    "w_hh": None,  # was a bug: the CPU recurrence read w_hh as if contiguous (now a dense copy)
    "biases": None,  # every other element of a longer vector
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", list(NON_CONTIGUOUS))
def test_functional_layer_non_contiguous_matches_torch(rnn_backend, device, dtype, kind, which, request):
    """The functional layers (torch.lstm & co's signature), 2 bidirectional layers, with one
    kind of argument a non-contiguous view (the transposed view of a contiguous tensor, or
    a strided slice): outputs and all gradients as torch's functional."""
    bug = NON_CONTIGUOUS[which]
    if bug is not None and rnn_backend in bug.backends and device in bug.devices:
        request.applymarker(pytest.mark.xfail(strict=True, reason=bug.reason))
    if which == "cx" and kind != "lstm":
        pytest.skip("cx is LSTM's")
    T, B, In, H, L = 4, 3, 3, 4, 2
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, L, True, True, dtype, "cpu", seed=9)

    def transposed(t):  # same values, the last two dims swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    def strided(t):  # same values, every other element of a longer vector
        return torch.stack([t, torch.full_like(t, float("nan"))], dim=-1)[..., 0]

    xb = x.transpose(0, 1).contiguous()  # (B, T, I); with batch_first the layer sees a (T, B, I) view
    if which == "hx":
        hx = transposed(hx)
    if which == "cx":
        cx = transposed(cx)
    per = 4  # tensors per layer and direction: w_ih, w_hh, b_ih, b_hh
    changed = {"w_ih": [0], "w_hh": [1], "biases": [2, 3]}.get(which, [])
    params = [
        (strided(w) if w.dim() == 1 else transposed(w)) if k % per in changed else w
        for k, w in enumerate(params)
    ]
    views = {"batch_first_input": xb.transpose(0, 1), "hx": hx, "cx": cx}
    views.update({name: params[i] for name, i in (("w_ih", 0), ("w_hh", 1), ("biases", 2))})
    assert not views[which].is_contiguous()
    results = []
    for fn, dev in ((LAYER_FNS[kind], device), (TORCH_LAYER_FNS[kind], "cpu")):
        leaves = [_leaf(t, dev) for t in (xb, hx, *([cx] if cx is not None else []), *params)]
        xl, hl = leaves[:2]
        cl = leaves[2] if cx is not None else None
        ps = leaves[3:] if cx is not None else leaves[2:]
        outs = call_layer(fn, kind, xl, hl, cl, ps, True, L, 0.0, False, True, True)
        _random_linear_loss(outs, 90).backward()
        results.append(([o.detach() for o in outs], [t.grad for t in leaves]))
    terms = rnn_terms(T, B, In, H, L, 2, GATES[kind])
    assert results[0][0][0].shape == (B, T, 2 * H)
    compare_runs(
        results,
        dtype=dtype,
        terms=terms,
        inputs=[x, hx, cx],
    )


LAYER_GRAD_CASES = (
    [(k, 1, False, True) for k in KINDS]
    + [(k, 2, True, True) for k in KINDS]
    + [
        ("gru", 2, True, False),
        ("lstm", 1, True, False),
        ("rnn_tanh", 2, False, False),
    ]
)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "kind,L,bi,bias",
    LAYER_GRAD_CASES,
    ids=[f"{k}-L{n}-{'bi' if b else 'uni'}-{'bias' if c else 'nobias'}" for k, n, b, c in LAYER_GRAD_CASES],
)
def test_gradcheck_layers(device, kind, L, bi, bias):
    """gradcheck (float64, T=3, B=2, H=3) of the functional layers through the native op,
    w.r.t. the input, hx, cx and every weight."""
    skip_unless_rnn_kernel(device)
    x, hx, cx, params = layer_inputs(kind, 3, 2, 2, 3, L, bi, bias, torch.float64, device, seed=11)
    leaves = [
        t.detach().clone().requires_grad_() for t in (x, hx, *([cx] if cx is not None else []), *params)
    ]
    n_state = 2 if kind == "lstm" else 1

    def fn(*args):
        c = args[2] if kind == "lstm" else None
        return call_layer(
            LAYER_FNS[kind],
            kind,
            args[0],
            args[1],
            c,
            list(args[1 + n_state :]),
            bias,
            L,
            0.0,
            False,
            bi,
            False,
        )

    with d2l_ext.use_backend("native"):
        assert any("d2l_ext" in n for n in grad_fn_names(fn(*leaves)[0]))
        assert torch.autograd.gradcheck(fn, leaves)


def _fixed_masks(T, B, width, L, dtype, device, seed=0):
    """Dropout masks as the op takes them (0 or 1 / (1 - p), here p = 1/2)."""
    return [
        (torch.rand((T, B, width), generator=_gen(seed + k), dtype=torch.float64) > 0.5).to(dtype).to(device)
        * 2
        for k in range(L - 1)
    ]


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["rnn_relu", "gru", "lstm"])
def test_gradcheck_raw_op_with_dropout_masks(device, kind):
    """gradcheck of torch.ops.d2l_ext.rnn itself with dropout masks between 2 bidirectional layers."""
    skip_unless_rnn_kernel(device)
    T, B, In, H, L = 3, 2, 2, 3, 2
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, L, True, True, torch.float64, device, seed=12)
    masks = _fixed_masks(T, B, 2 * H, L, torch.float64, device, seed=1)
    assert 0 < float(torch.cat(masks).count_nonzero()) < torch.cat(masks).numel()
    leaves = [
        t.detach().clone().requires_grad_() for t in (x, hx, *([cx] if cx is not None else []), *params)
    ]
    lstm = kind == "lstm"

    def fn(*args):
        c = args[2] if lstm else None
        out, hy, cy, _ = torch.ops.d2l_ext.rnn(
            args[0], args[1], c, list(args[2 + lstm :]), MODES[kind], True, L, True, masks
        )
        return (out, hy, cy) if lstm else (out, hy)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gradgradcheck_python_backend(kind):
    """Double backward of the Python fallback (the native op's double backward is not required)."""
    x, hx, cx, params = layer_inputs(kind, 2, 2, 2, 2, 1, True, True, torch.float64, "cpu", seed=13)
    leaves = [
        t.detach().clone().requires_grad_() for t in (x, hx, *([cx] if cx is not None else []), *params)
    ]
    lstm = kind == "lstm"

    def fn(*args):
        return call_layer(
            LAYER_FNS[kind],
            kind,
            args[0],
            args[1],
            args[2] if lstm else None,
            list(args[2 + lstm :]),
            True,
            1,
            0.0,
            False,
            True,
            False,
        )

    with d2l_ext.use_backend("python"):
        assert torch.autograd.gradgradcheck(fn, leaves)


# --------------------------------------------------------------------------- state_dict, init

INIT_CASES = {
    "RNN_relu_2_bi": ("RNN", dict(nonlinearity="relu", num_layers=2, bidirectional=True)),
    "GRU_3_no_bias": ("GRU", dict(num_layers=3, bias=False, batch_first=True)),
    "LSTM": ("LSTM", {}),
    "LSTM_proj_2_bi": ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
    "RNNCell_relu": ("RNNCell", dict(nonlinearity="relu")),
    "GRUCell": ("GRUCell", {}),
    "LSTMCell_no_bias": ("LSTMCell", dict(bias=False)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(INIT_CASES))
def test_state_dict_and_init_like_torch(rnn_backend, device, dtype, case):
    """Same class hierarchy and repr, same parameter names (weight_ih_l0,
    weight_hh_l1_reverse, weight_hr_l0, ...), the same default initialisation from
    the same seed, and state_dicts that load both ways (and are then used)."""
    name, kwargs = INIT_CASES[case]
    In, H = 3, 4
    torch.manual_seed(1234)
    ours = getattr(d2l_ext.nn, name)(In, H, **kwargs, device=device, dtype=dtype)
    torch.manual_seed(1234)
    theirs = getattr(torch.nn, name)(In, H, **kwargs, device=device, dtype=dtype)
    assert isinstance(ours, getattr(torch.nn, name)) and type(ours) is not type(theirs)
    assert repr(ours) == repr(theirs)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_theirs) and len(sd_ours) > 0
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for key, value in sd_theirs.items():
        assert sd_ours[key].shape == value.shape and sd_ours[key].dtype == dtype, key
        assert torch.equal(sd_ours[key], value), f"default init of {key} differs"
    if kwargs.get("bidirectional"):
        assert "weight_hh_l1_reverse" in sd_ours
    if kwargs.get("proj_size"):
        assert "weight_hr_l0" in sd_ours

    # torch's re-drawn weights into ours, ours into a fresh torch module
    with torch.no_grad():
        for k, prm in enumerate(theirs.parameters()):
            prm.copy_(make(prm.shape, dtype, device, seed=100 + k, scale=0.4))
    ours.load_state_dict(theirs.state_dict())
    torch.manual_seed(99)
    back = getattr(torch.nn, name)(In, H, **kwargs, device=device, dtype=dtype)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value) and torch.equal(back.state_dict()[key], value), key
    # the loaded weights are the ones the forward uses (_flat_weights follow load_state_dict)
    x = make((2, In) if name.endswith("Cell") else (3, 2, In), dtype, device, seed=5)
    a, b = _as_tuple(ours(x)), _as_tuple(theirs.cpu()(x.cpu()))
    a = [t[0] if isinstance(t, tuple) else t for t in a]
    b = [t[0] if isinstance(t, tuple) else t for t in b]
    L, Dn = kwargs.get("num_layers", 1), 2 if kwargs.get("bidirectional") else 1
    terms = rnn_terms(3, 2, In, H, L, Dn, 4, kwargs.get("proj_size", 0))
    compare([a[0]], [b[0]], dtype=dtype, terms=terms, inputs=[x])


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_train_and_eval(rnn_backend, device, kind):
    """dropout between 3 stacked layers: in train mode the output differs from eval's
    (and from another train call), the first layer's final states do not (no dropout
    before it); in eval mode dropout has no effect (equals torch in eval); with one
    layer torch applies no dropout at all, and neither do we."""
    dtype = torch.float64
    cfg = Config(kind, 5, 3, 3, 4, L=3, bi=True, dropout=0.5)
    ours, theirs = build_modules(cfg, dtype, device, seed=21)
    x, states = module_inputs(cfg, dtype, seed=21)
    x, states = x.to(device), [s.to(device) for s in states]
    arg = tuple(states) if kind == "lstm" else states[0]
    with torch.no_grad():
        ev_out, ev_h = ours(x, arg)  # build_modules left both in eval
        r_out, r_h = theirs(x.cpu(), tuple(s.cpu() for s in states) if kind == "lstm" else states[0].cpu())
        ours.train()
        tr_out, tr_h = ours(x, arg)
        tr2_out, _ = ours(x, arg)
    terms = cfg.terms()
    compare(
        [ev_out, *_as_tuple(ev_h)], [r_out, *_as_tuple(r_h)], dtype=dtype, terms=terms, inputs=[x, *states]
    )
    assert not torch.allclose(tr_out, ev_out, rtol=1e-3, atol=1e-3), "dropout had no effect in train mode"
    assert not torch.allclose(tr_out, tr2_out, rtol=1e-3, atol=1e-3), "the same masks were drawn twice"
    Dn = cfg.Dn
    for a, e in zip(_as_tuple(tr_h), _as_tuple(ev_h)):
        compare([a[:Dn]], [e[:Dn]], dtype=dtype, terms=terms, inputs=[x, *states])  # the first layer's
        assert not torch.allclose(a[Dn:], e[Dn:], rtol=1e-3, atol=1e-3)

    one = Config(kind, 5, 3, 3, 4, L=1, bi=True, dropout=0.5)
    with pytest.warns(UserWarning, match="dropout"):
        ours1, theirs1 = build_modules(one, dtype, device, seed=22)
    ours1.train()
    theirs1.train()
    x1, s1 = module_inputs(one, dtype, seed=22)
    outs, grads = run_module(ours1, x1, s1, device)
    r_outs, r_grads = run_module(theirs1, x1, s1, "cpu")
    compare(outs, r_outs, grads, r_grads, dtype=dtype, terms=one.terms(), inputs=[x1, *s1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_one_zeroes_the_inputs_of_later_layers(rnn_backend, device, kind):
    """p = 1 in train mode is deterministic: layers after the first see zero input.
    Checked against torch (which zeroes them too) including all gradients, and
    directly: the second layer's output is that layer run alone on zeros."""
    dtype = torch.float64
    cfg = Config(kind, 4, 2, 3, 4, L=2, bi=False, dropout=1.0)
    ours, theirs = build_modules(cfg, dtype, device, seed=23)
    ours.train()
    theirs.train()
    x, states = module_inputs(cfg, dtype, seed=23)
    outs, grads = run_module(ours, x, states, device)
    r_outs, r_grads = run_module(theirs, x, states, "cpu")
    terms = cfg.terms()
    compare(outs, r_outs, grads, r_grads, dtype=dtype, terms=terms, inputs=[x, *states])
    # nothing reaches the input or layer 0's input weights through the zeroed layer-1 input but
    # h_n[0] (and c_n[0]): the loss uses them, so the gradients are not zero
    assert _max_abs(grads["input"]) > 0 and _max_abs(grads["weight_ih_l1"]) == 0
    # semantics: layer 1 alone on a zero input gives the same output
    name, extra = _module_spec(kind)
    single = getattr(torch.nn, name)(cfg.H, cfg.H, **extra, dtype=dtype)
    with torch.no_grad():
        for p_name, p in single.named_parameters():
            p.copy_(getattr(theirs, p_name.replace("l0", "l1")))
        s1 = [s[1:2] for s in states]
        z_out, _ = single(
            torch.zeros(cfg.T, cfg.B, cfg.H, dtype=dtype), tuple(s1) if kind == "lstm" else s1[0]
        )
    compare([outs[0]], [z_out], dtype=dtype, terms=terms, inputs=[x, *states])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_masks_as_the_reference(rnn_backend, device, kind):
    """With the seed fixed, the functional layer in train mode draws its masks (one per
    layer after the first, 0 or 1 / (1 - p), about a fraction p of zeros) and applies
    them as the book's reference loop does with the same masks: outputs and gradients."""
    dtype, p, seed = torch.float64, 0.4, 1234
    T, B, In, H, L = 4, 3, 3, 4, 3
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, L, True, True, dtype, device, seed=24)
    leaves = [
        t.detach().clone().requires_grad_() for t in (x, hx, *([cx] if cx is not None else []), *params)
    ]
    lstm = kind == "lstm"

    def split(ls):
        return ls[0], ls[1], (ls[2] if lstm else None), list(ls[2 + lstm :])

    torch.manual_seed(seed)
    outs = call_layer(LAYER_FNS[kind], kind, *split(leaves), True, L, p, True, True, False)
    _random_linear_loss(outs, 95).backward()
    grads = [t.grad for t in leaves]

    torch.manual_seed(seed)
    masks = D._dropout_masks(x, 2 * H, L, p, True)  # the functional's own draw, same RNG state
    assert len(masks) == L - 1
    values = torch.cat([m.flatten() for m in masks])
    assert all(m.shape == (T, B, 2 * H) for m in masks)
    assert bool(((values == 0) | (values == 1 / (1 - p))).all())
    assert 0.2 < float((values == 0).double().mean()) < 0.6

    r_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    xr, hr, cr, pr = split(r_leaves)
    r_outs = reference.rnn(xr, hr, cr, pr, MODES[kind], True, L, True, masks)
    r_outs = [o for o in r_outs if o is not None]
    _random_linear_loss(r_outs, 95).backward()
    terms = rnn_terms(T, B, In, H, L, 2, GATES[kind])
    compare(
        list(outs), r_outs, grads, [t.grad for t in r_leaves], dtype=dtype, terms=terms, inputs=[x, hx, cx]
    )
    # and the masks mattered: without them the result differs
    no_drop = call_layer(
        LAYER_FNS[kind], kind, *split([t.detach() for t in leaves]), True, L, p, False, True, False
    )
    assert not torch.allclose(no_drop[0], outs[0].detach(), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- opcheck

OPCHECK_CASES = {  # name -> (kind, T, B, I, H, L, bidirectional, bias, masks)
    "tanh": ("rnn_tanh", 3, 2, 3, 4, 1, False, True, False),
    "relu_bi_no_bias": ("rnn_relu", 3, 2, 3, 4, 1, True, False, False),
    "lstm_2_bi_masks": ("lstm", 3, 2, 3, 4, 2, True, True, True),
    "lstm_T1_B1": ("lstm", 1, 1, 2, 3, 1, False, True, False),
    "gru_2_masks": ("gru", 3, 2, 3, 4, 2, False, True, True),
    "gru_bi_no_bias": ("gru", 2, 3, 2, 3, 1, True, False, False),
}


def _raw_args(case, device, requires_grad, dtype=torch.float64):
    kind, T, B, In, H, L, bi, bias, with_masks = OPCHECK_CASES[case]
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, L, bi, bias, dtype, device, seed=31)
    x, hx = x.requires_grad_(requires_grad), hx.requires_grad_(requires_grad)
    if cx is not None:
        cx.requires_grad_(requires_grad)
    params = [w.requires_grad_(requires_grad) for w in params]
    masks = _fixed_masks(T, B, (2 if bi else 1) * H, L, dtype, device) if with_masks else []
    return (x, hx, cx, params, MODES[kind], bias, L, bi, masks)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(OPCHECK_CASES))
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_rnn(device, case, requires_grad):
    skip_unless_rnn_kernel(device)
    args = _raw_args(case, device, requires_grad)
    torch.library.opcheck(torch.ops.d2l_ext.rnn.default, args)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["tanh", "lstm_2_bi_masks", "gru_2_masks"])
@pytest.mark.parametrize("given_grads", ["all", "output", "states"])
def test_opcheck_and_values_rnn_backward(device, case, given_grads):
    """The backward op: opcheck, and its gradients (a missing output gradient counts
    as zero) equal autograd through the book's reference loop with the same masks."""
    skip_unless_rnn_kernel(device)
    x, hx, cx, params, mode, bias, L, bi, masks = _raw_args(case, device, False)
    out, hy, cy, reserve = torch.ops.d2l_ext.rnn(x, hx, cx, params, mode, bias, L, bi, masks)
    g_out = make(out.shape, out.dtype, device, 41) if given_grads != "states" else None
    g_hy = make(hy.shape, hy.dtype, device, 42) if given_grads != "output" else None
    g_cy = make(cy.shape, cy.dtype, device, 43) if given_grads != "output" and cx is not None else None
    args = (g_out, g_hy, g_cy, x, hx, cx, params, reserve, mode, bias, L, bi, masks, True)
    torch.library.opcheck(torch.ops.d2l_ext._rnn_backward.default, args)
    gx, ghx, gcx, gws = torch.ops.d2l_ext._rnn_backward(*args)

    leaves = [
        t.detach().clone().requires_grad_() for t in (x, hx, *([cx] if cx is not None else []), *params)
    ]
    lstm = cx is not None
    r = reference.rnn(
        leaves[0], leaves[1], leaves[2] if lstm else None, leaves[2 + lstm :], mode, bias, L, bi, masks
    )
    loss = sum((o * g).sum() for o, g in zip(r, (g_out, g_hy, g_cy)) if o is not None and g is not None)
    r_grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    ours = [gx, ghx, *([gcx] if lstm else []), *gws]
    kind, T, B, In, H = OPCHECK_CASES[case][:5]
    terms = rnn_terms(T, B, In, H, L, 2 if bi else 1, GATES[kind])
    r_grads = [torch.zeros_like(t) if e is None else e for t, e in zip(leaves, r_grads)]
    compare([], [], ours, r_grads, dtype=torch.float64, terms=terms)


# --------------------------------------------------------------------------- the backends really differ


class _OpLog(TorchDispatchMode):
    """Every op that reaches the dispatcher below autograd, by name ("d2l_ext.rnn.default", ...)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", ["lstm_layer", "gru_module", "rnn_cell", "lstm_cell", "lstm_proj"])
def test_native_op_in_the_graph(rnn_backend, case, monkeypatch):
    """Native: the native op runs (forward and backward, seen by a dispatch mode), the
    output's graph holds d2l_ext's C++ node and the Python loop is not called (an LSTM
    with proj_size included). Python: no d2l_ext op at all, the fallback runs."""
    calls = []
    for name in ("rnn", "rnn_tanh_cell", "lstm_cell"):
        real = getattr(reference, name)
        monkeypatch.setattr(reference, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3)
    if case == "lstm_layer":
        x_, h, c, ps = layer_inputs("lstm", 4, 2, 3, 4, 2, True, True, torch.float32, "cpu")

        def fn():
            return D.lstm(x_, (h, c), [p.requires_grad_() for p in ps], True, 2, 0.0, False, True, False)[0]
    elif case in ("gru_module", "lstm_proj"):
        m = d2l_ext.nn.GRU(3, 4, 2) if case == "gru_module" else d2l_ext.nn.LSTM(3, 4, proj_size=2)

        def fn():
            return m(x)[0]
    else:
        cell = d2l_ext.nn.RNNCell(3, 4) if case == "rnn_cell" else d2l_ext.nn.LSTMCell(3, 4)

        def fn():
            return _as_tuple(cell(x[0]))[0]

    with _OpLog() as fwd:
        out = fn()
    with _OpLog() as bwd:
        out.sum().backward()
    native = rnn_backend == "native"
    d2l_ops = [o for o in fwd.ops + bwd.ops if "d2l_ext" in o]
    if native:
        assert "d2l_ext.rnn.default" in fwd.ops and "d2l_ext._rnn_backward.default" in bwd.ops
        assert any("d2l_ext" in n for n in grad_fn_names(out))
        assert calls == []
    else:
        assert d2l_ops == [] and not any("d2l_ext" in n for n in grad_fn_names(out))
        assert calls, "the Python fallback did not run"
    # whatever the fixture chose, the python backend never reaches the native op
    calls.clear()
    with d2l_ext.use_backend("python"), _OpLog() as log:
        fn().sum().backward()
    assert not any("d2l_ext" in o for o in log.ops) and calls


# --------------------------------------------------------------------------- torch.compile


def _capturing(backend_name: str, graphs: list):
    """A torch.compile backend that keeps the dynamo graphs it is given."""
    from torch._dynamo.backends.registry import lookup_backend

    inner = lookup_backend(backend_name)

    def backend(gm, example_inputs):
        graphs.append(gm)
        return inner(gm, example_inputs)

    return backend


@requires_native
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
def test_torch_compile_functional_fullgraph(kind, compile_backend):
    """The functional layer compiled with fullgraph=True traces the native op (fake
    kernel) into one graph; forward and backward equal eager."""
    skip_unless_rnn_kernel("cpu")
    T, B, In, H, L = 4, 3, 3, 4, 2
    dtype = torch.float32
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, L, True, True, dtype, "cpu", seed=51)
    lstm = kind == "lstm"

    def model(x, hx, *rest):
        c = rest[0] if lstm else None
        return call_layer(LAYER_FNS[kind], kind, x, hx, c, list(rest[lstm:]), True, L, 0.0, False, True, True)

    def run(fn):
        leaves = [
            t.detach().clone().requires_grad_()
            for t in (x.transpose(0, 1), hx, *([cx] if lstm else []), *params)
        ]
        outs = fn(*leaves)
        _random_linear_loss(outs, 52).backward()
        return [o.detach() for o in outs], [t.grad for t in leaves]

    graphs: list = []
    torch._dynamo.reset()
    try:
        with d2l_ext.use_backend("native"):
            compiled = run(torch.compile(model, fullgraph=True, backend=_capturing(compile_backend, graphs)))
            eager = run(model)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1 and "d2l_ext" in graphs[0].code
    terms = rnn_terms(T, B, In, H, L, 2, GATES[kind])
    compare(compiled[0], eager[0], compiled[1], eager[1], dtype=dtype, terms=terms, inputs=[x, hx, cx])


@requires_native
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_torch_compile_module_fullgraph(name):
    """A module's forward compiled with fullgraph=True (aot_eager: AOT autograd also
    builds the backward), then backward: outputs and every parameter's gradient as
    eager. Dynamo refuses anything that subclasses torch.nn.RNNBase unless
    ``allow_rnn`` is set, d2l_ext's modules included."""
    skip_unless_rnn_kernel("cpu")
    dtype = torch.float32
    torch.manual_seed(3)
    m = getattr(d2l_ext.nn, name)(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=dtype)
    x = make((2, 5, 3), dtype, "cpu", 53)

    def forward(x):
        out, hn = m(x)
        return (out, *_as_tuple(hn))

    def run(fn):
        m.zero_grad(set_to_none=True)
        xl = x.clone().requires_grad_()
        outs = fn(xl)
        _random_linear_loss(outs, 54).backward()
        return [o.detach() for o in outs], [xl.grad] + [p.grad for p in m.parameters()]

    graphs: list = []
    torch._dynamo.reset()
    try:
        with d2l_ext.use_backend("native"), torch._dynamo.config.patch(allow_rnn=True):
            compiled = run(torch.compile(forward, fullgraph=True, backend=_capturing("aot_eager", graphs)))
        with d2l_ext.use_backend("native"):
            eager = run(forward)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1 and "d2l_ext" in graphs[0].code
    terms = rnn_terms(5, 2, 3, 4, 2, 2, GATES[name.lower()])
    assert len(compiled[1]) == len(eager[1]) == 1 + len(list(m.parameters()))
    compare(compiled[0], eager[0], compiled[1], eager[1], dtype=dtype, terms=terms, inputs=[x])


# --------------------------------------------------------------------------- the book's scratch LSTM


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_book_scratch_lstm_equals_torch(rnn_backend, dtype):
    """Section 10.1.3's LSTM from scratch (``reference.lstm_scratch``) is torch.nn.LSTM
    (and d2l_ext.nn.LSTM) when its parameters are the slices of torch's weights: torch
    stacks the gates as i, f, g, o (the book's candidate C~ is torch's g), W_x* are
    the transposed w_ih slices, and the book's single bias is b_ih + b_hh. The
    gradients of the book's parameters are the corresponding slices of torch's."""
    T, B, In, H = 6, 3, 4, 5
    torch.manual_seed(17)
    theirs = torch.nn.LSTM(In, H, dtype=dtype)
    ours = d2l_ext.nn.LSTM(In, H, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in theirs._flat_weights)
    book_order = {"i": 0, "f": 1, "o": 3, "c": 2}  # the book's [i, f, o, c] in torch's rows

    def rows(k):
        return slice(k * H, (k + 1) * H)

    params = []
    for gate in "ifoc":
        r = rows(book_order[gate])
        params += [w_ih[r].T.clone(), w_hh[r].T.clone(), (b_ih[r] + b_hh[r]).clone()]
    params = [p.requires_grad_() for p in params]
    x = make((T, B, In), dtype, "cpu", 18)
    h0, c0 = make((B, H), dtype, "cpu", 19, scale=0.5), make((B, H), dtype, "cpu", 20)

    book_out, (book_h, book_c) = reference.lstm_scratch(x, (h0, c0), params)
    _random_linear_loss([book_out, book_h, book_c], 21).backward()
    book = [t.detach() for t in (book_out, book_h, book_c)]
    results = {}
    for key, module in (("torch", theirs), ("d2l_ext", ours)):
        module.zero_grad(set_to_none=True)
        out, (h, c) = module(x, (h0[None], c0[None]))
        _random_linear_loss([out, h[0], c[0]], 21).backward()
        results[key] = ([out.detach(), h[0].detach(), c[0].detach()], [p.grad for p in module._flat_weights])
    terms = rnn_terms(T, B, In, H, G=4)
    for outs, (g_ih, g_hh, g_bih, g_bhh) in results.values():
        # the book's parameter gradients against the slices of torch's (and of ours)
        book_grads, sliced = {}, {}
        for k, gate in enumerate("ifoc"):
            r = rows(book_order[gate])
            W_x, W_h, b = params[3 * k : 3 * k + 3]
            book_grads.update(
                {
                    f"W_x{gate}": W_x.grad,
                    f"W_h{gate}": W_h.grad,
                    f"b_{gate}": b.grad,
                    f"b_{gate} (hh)": b.grad,
                }
            )
            sliced.update(
                {
                    f"W_x{gate}": g_ih[r].T,
                    f"W_h{gate}": g_hh[r].T,
                    f"b_{gate}": g_bih[r],
                    f"b_{gate} (hh)": g_bhh[r],
                }
            )
        compare(book, outs, book_grads, sliced, dtype=dtype, terms=terms, inputs=[x, h0, c0])


# --------------------------------------------------------------------------- bad inputs

_X = (5, 2, 4)  # (T, B, I) of the modules below: input_size 4, hidden_size 3, 2 layers


def _t(shape, dtype=torch.float32, device="cpu"):
    return make(shape, dtype, device, seed=len(shape))


# name -> (class, extra kwargs, call(module) on the CPU)
MODULE_ERRORS = {
    "lstm_wrong_input_size": ("LSTM", {}, lambda m: m(_t((5, 2, 3)))),
    "gru_wrong_input_size_unbatched": ("GRU", {}, lambda m: m(_t((5, 6)))),
    "rnn_wrong_input_size_batch_first": ("RNN", dict(batch_first=True), lambda m: m(_t((2, 5, 5)))),
    "rnn_wrong_hx_layers": ("RNN", {}, lambda m: m(_t(_X), _t((1, 2, 3)))),
    "gru_wrong_hx_batch": ("GRU", {}, lambda m: m(_t(_X), _t((2, 3, 3)))),
    "lstm_wrong_h0_size": ("LSTM", {}, lambda m: m(_t(_X), (_t((2, 2, 4)), _t((2, 2, 3))))),
    "lstm_wrong_c0_size": ("LSTM", {}, lambda m: m(_t(_X), (_t((2, 2, 3)), _t((2, 2, 4))))),
    "lstm_proj_h0_not_projected": (
        "LSTM",
        dict(proj_size=2),
        lambda m: m(_t(_X), (_t((2, 2, 3)), _t((2, 2, 3)))),
    ),
    "unbatched_input_3d_hx": ("GRU", {}, lambda m: m(_t((5, 4)), _t((2, 1, 3)))),
    "batched_input_2d_hx": ("RNN", {}, lambda m: m(_t(_X), _t((2, 3)))),
    "lstm_unbatched_3d_c0": ("LSTM", {}, lambda m: m(_t((5, 4)), (_t((2, 3)), _t((2, 1, 3))))),
    "input_4d": ("LSTM", {}, lambda m: m(_t((1, 5, 2, 4)))),
    "input_1d": ("GRU", {}, lambda m: m(_t((4,)))),
    "input_float64_weights_float32": ("GRU", {}, lambda m: m(_t(_X, torch.float64))),
    "hx_float64": ("GRU", {}, lambda m: m(_t(_X), _t((2, 2, 3), torch.float64))),
    "empty_sequence": ("RNN", {}, lambda m: m(_t((0, 2, 4)))),
    "rnn_cell_3d_input": ("RNNCell", {}, lambda m: m(_t(_X))),
    "lstm_cell_wrong_input_size": ("LSTMCell", {}, lambda m: m(_t((2, 3)))),
}


# cases whose exception type is torch's but whose message is not (yet) torch's word for word
MESSAGE_DEVIATIONS: dict[str, str] = {}  # case -> how our message differs from torch's (none now)


@pytest.mark.parametrize("case", list(MODULE_ERRORS))
def test_module_bad_inputs_raise_like_torch(rnn_backend, case, request):
    """torch's module raises, and so does ours, with the same exception type; the
    modules run torch's own argument checks, so where torch's check fires first
    the message is torch's word for word."""
    name, extra, call = MODULE_ERRORS[case]
    kwargs = {} if name.endswith("Cell") else dict(num_layers=2, **extra)
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(4, 3, **kwargs)
    ours = getattr(d2l_ext.nn, name)(4, 3, **kwargs)
    with pytest.raises(Exception) as torch_exc:
        call(theirs)
    with pytest.raises(Exception) as ours_exc:
        call(ours)
    assert type(ours_exc.value) is type(torch_exc.value), (repr(ours_exc.value), repr(torch_exc.value))
    if case == "hx_float64":  # torch fails inside its kernel; ours names the argument (native)
        if rnn_backend == "native":
            assert "hx" in str(ours_exc.value) and "Double" in str(ours_exc.value)
    elif case == "empty_sequence":
        assert "sequence length" in str(ours_exc.value).lower() or rnn_backend == "python"
    elif name.endswith("Cell"):
        words = {
            "rnn_cell_3d_input": "Expected input to be 1D or 2D",
            "lstm_cell_wrong_input_size": "input has inconsistent input_size: got 3 expected 4",
        }
        assert words[case] in str(ours_exc.value)
    else:
        if case in MESSAGE_DEVIATIONS:
            request.applymarker(pytest.mark.xfail(strict=True, reason=MESSAGE_DEVIATIONS[case]))
        assert str(ours_exc.value) == str(torch_exc.value)


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_packed_sequence_not_implemented(name):
    """A PackedSequence input raises NotImplementedError that says how to pad it."""
    m = getattr(d2l_ext.nn, name)(4, 3)
    packed = pack_padded_sequence(_t(_X), torch.tensor([5, 3]))
    with pytest.raises(NotImplementedError, match="pad_packed_sequence"):
        m(packed)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_bad_inputs(rnn_backend, kind):
    """The functional cells: torch's words for a wrong input size, RuntimeErrors that name
    hx / cx for wrong states (torch raises RuntimeError too), ValueError for 3-D input."""
    x, h, c, w_ih, w_hh, b_ih, b_hh = _cell_inputs(kind, 3, 4, 5, "both", torch.float32, "cpu")
    fn, ref = CELL_FNS[kind], TORCH_CELL_FNS[kind]

    def call(f, x, h, c=c):
        return f(x, (h, c), w_ih, w_hh, b_ih, b_hh) if kind == "lstm" else f(x, h, w_ih, w_hh, b_ih, b_hh)

    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 3 expected 4"):
        call(fn, x[:, :3], h)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size"):
        call(ref, x[:, :3], h)
    for bad_h in (h[:, :4], h[:2], h[None]):
        with pytest.raises(RuntimeError):
            call(ref, x, bad_h)
        with pytest.raises(RuntimeError, match="hx"):
            call(fn, x, bad_h)
    with pytest.raises(ValueError, match="1D or 2D"):
        call(fn, x[None], h)
    if kind == "lstm":
        with pytest.raises(RuntimeError):
            call(ref, x, h, c[:, :4])
        with pytest.raises(RuntimeError, match="cx"):
            call(fn, x, h, c[:, :4])
        with pytest.raises(RuntimeError, match="pair"):
            D.lstm_cell(x, (h,), w_ih, w_hh, b_ih, b_hh)


def _bad_raw(case):
    """Arguments of torch.ops.d2l_ext.rnn (float32, 2 bidirectional layers) with one thing wrong."""
    kind = "lstm" if case.startswith("lstm") else "gru"
    x, hx, cx, params = layer_inputs(kind, 3, 2, 3, 4, 2, True, True, torch.float32, "cpu", seed=61)
    masks = _fixed_masks(3, 2, 8, 2, torch.float32, "cpu")
    mode = MODES[kind]
    f64 = torch.float64
    if case == "gru_hx_dtype":
        hx = hx.to(f64)
    elif case == "lstm_cx_dtype":
        cx = cx.to(f64)
    elif case == "gru_weight_dtype":
        params[0] = params[0].to(f64)
    elif case == "lstm_bias_dtype_reverse":
        params[7] = params[7].to(f64)
    elif case == "gru_mask_dtype":
        masks[0] = masks[0].to(f64)
    elif case == "gru_hx_shape":
        hx = hx[:, :1]
    elif case == "lstm_cx_shape":
        cx = cx[:3]
    elif case == "lstm_cx_missing":
        cx = None
    elif case == "gru_cx_given":
        cx = hx.clone()
    elif case == "gru_weight_shape_layer_1":
        params[8] = params[8][:, :4]
    elif case == "gru_weight_count":
        params = params[:-1]
    elif case == "gru_mask_count":
        masks = masks * 2
    elif case == "gru_mask_shape":
        masks[0] = masks[0][:, :, :4]
    elif case == "gru_mode":
        mode = 7
    elif case == "gru_input_2d":
        x = x[0]
    elif case == "gru_input_int":
        x = x.long()
    elif case == "gru_empty_sequence":
        x = x[:0]
    return (x, hx, cx, params, mode, True, 2, True, masks)


RAW_ERRORS = {  # case -> a word the message must contain
    "gru_hx_dtype": "hx is Double but input is Float",
    "lstm_cx_dtype": "cx is Double",
    "gru_weight_dtype": "weight_ih_l0 is Double",
    "lstm_bias_dtype_reverse": "bias_hh_l0_reverse is Double",
    "gru_mask_dtype": "dropout_masks[0] is Double",
    "gru_hx_shape": "hx must have shape",
    "lstm_cx_shape": "cx must have shape",
    "lstm_cx_missing": "cx",
    "gru_cx_given": "cx is for LSTM only",
    "gru_weight_shape_layer_1": "weight_ih_l1 must have shape",
    "gru_weight_count": "weight tensors",
    "gru_mask_count": "dropout masks",
    "gru_mask_shape": "dropout_masks[0] must have shape",
    "gru_mode": "mode",
    "gru_input_2d": "input must be (T, B, input_size)",
    "gru_input_int": "got Long",
    "gru_empty_sequence": "sequence length",
}


@requires_native
@pytest.mark.parametrize("case", list(RAW_ERRORS))
def test_native_op_bad_arguments(case):
    """The native op checks its arguments and raises a RuntimeError that names the bad one."""
    skip_unless_rnn_kernel("cpu")
    with pytest.raises(RuntimeError) as exc:
        torch.ops.d2l_ext.rnn(*_bad_raw(case))
    assert RAW_ERRORS[case] in str(exc.value), str(exc.value)


@pytest.mark.parametrize("kind", KINDS)
def test_functional_layer_dtype_mismatch(rnn_backend, kind):
    """A float64 hx (or weight) with a float32 input is a RuntimeError on both backends
    (torch's too); the native one names the argument."""
    x, hx, cx, params = layer_inputs(kind, 3, 2, 3, 4, 1, False, True, torch.float32, "cpu")
    for what, bad in (
        ("hx", lambda: (hx.double(), params)),
        ("weight_hh_l0", lambda: (hx, [params[0], params[1].double(), *params[2:]])),
    ):
        h, ps = bad()
        with pytest.raises(RuntimeError):
            call_layer(TORCH_LAYER_FNS[kind], kind, x, h, cx, ps, True, 1, 0.0, False, False, False)
        with pytest.raises(RuntimeError) as exc:
            call_layer(LAYER_FNS[kind], kind, x, h, cx, ps, True, 1, 0.0, False, False, False)
        if rnn_backend == "native":
            assert what in str(exc.value), str(exc.value)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("p", [1.5, -0.1])
def test_functional_dropout_out_of_range(rnn_backend, kind, p, request):
    """torch.gru & co refuse a dropout probability outside [0, 1] between stacked layers
    in train mode, and ignore it in eval mode; so do we, in torch's words (eval: the
    same result as torch). The exception type is not torch's (a known deviation)."""
    x, hx, cx, params = layer_inputs(kind, 3, 2, 3, 4, 2, False, True, torch.float64, "cpu", seed=62)
    with pytest.raises(Exception) as theirs:
        call_layer(TORCH_LAYER_FNS[kind], kind, x, hx, cx, params, True, 2, p, True, False, False)
    with pytest.raises(Exception) as ours:
        call_layer(LAYER_FNS[kind], kind, x, hx, cx, params, True, 2, p, True, False, False)
    assert str(ours.value) == str(theirs.value)
    outs = call_layer(LAYER_FNS[kind], kind, x, hx, cx, params, True, 2, p, False, False, False)
    r_outs = call_layer(TORCH_LAYER_FNS[kind], kind, x, hx, cx, params, True, 2, p, False, False, False)
    compare(
        list(outs),
        list(r_outs),
        dtype=torch.float64,
        terms=rnn_terms(3, 2, 3, 4, 2, 1, GATES[kind]),
        inputs=[x, hx, cx],
    )
    assert type(ours.value) is type(theirs.value), (repr(ours.value), repr(theirs.value))


@pytest.mark.cuda
@pytest.mark.parametrize("device", [p for p in DEVICES if p.id == "cuda"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_device_mismatch(rnn_backend, device, kind):
    """Module on the GPU, input (or state) on the CPU: a RuntimeError like torch's (whose
    check says the tensors are on different devices); the native CUDA kernel names the
    argument (the CPU input dispatches to it because the weights are CUDA tensors)."""
    cfg = Config(kind, 3, 2, 3, 4)
    ours, theirs = build_modules(cfg, torch.float32, device)
    theirs = theirs.to(device)
    x, states = module_inputs(cfg, torch.float32)
    arg_cpu = tuple(states) if kind == "lstm" else states[0]
    arg_dev = tuple(s.to(device) for s in states) if kind == "lstm" else states[0].to(device)
    for args in ((x, arg_dev), (x.to(device), arg_cpu)):
        with pytest.raises(RuntimeError):
            theirs(*args)
        with pytest.raises(RuntimeError) as exc:
            ours(*args)
        if rnn_backend == "native":  # the CUDA kernel's checks: the input, or the argument on the CPU
            msg = str(exc.value)
            assert (
                ("hx is on cpu" in msg or "cx is on cpu" in msg)
                if args[0].is_cuda
                else ("input must be a CUDA tensor" in msg)
            ), msg


# --------------------------------------------------------------------------- float16 / bfloat16


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_low_precision(rnn_backend, device, dtype, kind):
    """float16/bfloat16 in, same format out, against torch in float32 on the CPU on the
    same (exactly representable) weights, inputs and output gradient. CUDA only: the CPU
    path of the functional has no such kernels (it would test the fallback in a format
    the CPU GEMMs emulate).

    Budget: a step of a cell rounds about eight element-wise results to the format
    (the GEMMs accumulate in float32 and round once; cuBLAS's reduced-precision
    reductions are turned off here), each at most 1/2 ulp: sqrt(8) / 2 ~ 1.4 eps
    per step, and, as for float32, the contractive recurrence lets the L * T steps'
    errors add up like a random walk. So 2 eps relative to each entry plus
    2 eps * sqrt(L * T) of the tensor's largest entry (assert_close_lowp with
    ``accumulates_in_float32=False`` and that magnitude)."""
    if device != "cuda":
        pytest.skip("float16/bfloat16 recurrent layers are tested on CUDA only")
    cfg = Config(kind, 6, 3, 4, 8, L=2, bi=True)
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction)
    matmul.allow_fp16_reduced_precision_reduction = matmul.allow_bf16_reduced_precision_reduction = False
    try:
        ours, theirs = build_modules(cfg, torch.float32, "cpu", seed=71)
        with torch.no_grad():
            for prm in theirs.parameters():
                prm.copy_(prm.to(dtype).float())
        ours = ours.to(device=device, dtype=dtype)
        ours.load_state_dict(theirs.state_dict())
        x, states = module_inputs(cfg, torch.float32, seed=71)
        x, states = x.to(dtype).float(), [s.to(dtype).float() for s in states]
        r_outs, r_grads = run_module(theirs, x, states, "cpu", round_to=dtype)
        outs, grads = run_module(ours, x.to(dtype), [s.to(dtype) for s in states], device)
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction = saved
    steps = math.sqrt(cfg.L * cfg.T)
    for name, a, r in zip(("output", "h_n", "c_n"), outs, r_outs):
        assert a.dtype == dtype
        assert_close_lowp(
            a.cpu(), r, dtype=dtype, magnitude=steps * _max_abs(r), accumulates_in_float32=False, msg=name
        )
    for name, a in grads.items():
        assert a.dtype == dtype, name
        assert_close_lowp(
            a.cpu(),
            r_grads[name],
            dtype=dtype,
            magnitude=steps * _max_abs(r_grads[name]),
            accumulates_in_float32=False,
            msg=f"{name} gradient",
        )


# --------------------------------------------------------------------------- the budget can fail


def test_budget_is_not_vacuous():
    """The tolerances used here can fail: the float64 budget rejects torch's LSTM computed
    in float32, and the float32 budget rejects it rounded to bfloat16."""
    cfg = Config("lstm", 6, 3, 4, 5, L=3, bi=True)
    m64 = build_modules(cfg, torch.float64, "cpu", seed=81)[1]
    x, states = module_inputs(cfg, torch.float64, seed=81)
    with torch.no_grad():
        ref = m64(x, tuple(states))[0]
        sloppy = m64.float()(x.float(), tuple(s.float() for s in states))[0]
    terms = cfg.terms()
    inputs = [x, *states]
    with pytest.raises(AssertionError):
        compare([sloppy.double()], [ref], dtype=torch.float64, terms=terms, inputs=inputs)
    with pytest.raises(AssertionError):
        compare([sloppy.bfloat16().float()], [sloppy], dtype=torch.float32, terms=terms, inputs=inputs)
    compare([sloppy], [ref.float()], dtype=torch.float32, terms=terms, inputs=inputs)
    assert tolerances(torch.float32, terms) < 5e-5 and tolerances(torch.float64, terms) < 1e-13


# --------------------------------------------------------------------------- LSTM with a projection


def _proj_args(device, bi, bias, requires_grad=True):
    """Arguments of torch.ops.d2l_ext.rnn for a 2-layer LSTM with H = 4 units and proj_size P = 2."""
    g = _gen(77)
    T, B, In, H, P, L, Dn = 3, 2, 3, 4, 2, 2, 2 if bi else 1

    def t(*shape):
        u = torch.rand(shape, generator=g, dtype=torch.float64) - 0.5
        return u.to(device).requires_grad_(requires_grad)

    weights = []
    for layer in range(L):
        for _ in range(Dn):
            weights += [t(4 * H, In if layer == 0 else Dn * P), t(4 * H, P)]
            weights += [t(4 * H), t(4 * H)] if bias else []
            weights.append(t(P, H))
    return [t(T, B, In), t(L * Dn, B, P), t(L * Dn, B, H), weights, MODES["lstm"], bias, L, bi, []]


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_lstm_projection_native_op(device, bi, bias):
    """The native op with proj_size (hx's last size P < cx's H): values against torch.lstm,
    gradcheck of every input in float64, and opcheck (fake kernel, autograd registration)."""
    skip_unless_rnn_kernel(device)
    args = _proj_args(device, bi, bias)
    out, hy, cy, _ = torch.ops.d2l_ext.rnn(*args)
    r_out, r_hy, r_cy = torch.lstm(args[0], (args[1], args[2]), args[3], bias, 2, 0.0, True, bi, False)
    for a, r in ((out, r_out), (hy, r_hy), (cy, r_cy)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-13)  # float64, sums of a few dozen terms

    leaves = [args[0], args[1], args[2], *args[3]]

    def fn(x, h, c, *w):
        o, h_n, c_n, _ = torch.ops.d2l_ext.rnn(x, h, c, list(w), *args[4:])
        return o, h_n, c_n

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)
    torch.library.opcheck(torch.ops.d2l_ext.rnn.default, tuple(args))


# --------------------------------------------------------------------------- the CPU's fast paths

FAST_PATH_CASES = {  # kind, T, B, In, H, L, bi: T >= 8 packs W_hh (float32, AVX-512 CPUs); B G H^2 >= 2^17
    # with H >= 32 runs on torch's threads: they split the batch when each gets 8 rows or more (B >= 16
    # on two threads), else the hidden units; odd B and H leave partial 8-row / 32-column tiles.
    "lstm-split": ("lstm", 12, 13, 5, 77, 2, True),
    "gru-split": ("gru", 10, 9, 6, 70, 1, False),
    "rnn_tanh-batch_split": ("rnn_tanh", 9, 40, 4, 130, 1, True),
    "lstm-batch_split": ("lstm", 11, 19, 5, 72, 2, True),
    "gru-batch_split": ("gru", 10, 24, 6, 70, 2, True),
    "lstm-one_thread_packed": ("lstm", 9, 3, 4, 20, 1, False),
}


@requires_native
@pytest.mark.parametrize("one_hot", [False, True], ids=["dense", "one_hot"])
@pytest.mark.parametrize("case", list(FAST_PATH_CASES))
def test_cpu_fast_paths_match_torch(case, one_hot):
    """float32 on the CPU with the sizes that take the packed AVX-512 products, the threads'
    split of the batch or of the hidden units (when torch has more than one thread) and one-hot inputs (the
    gather of w_ih's columns): outputs, final states and every gradient against torch.lstm &
    co in float64 on the same values, within the float32 budget of the module docstring."""
    skip_unless_rnn_kernel("cpu")
    kind, T, B, In, H, L, bi = FAST_PATH_CASES[case]
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, L, bi, True, torch.float32, "cpu", seed=90)
    if one_hot:
        x = torch.nn.functional.one_hot(torch.randint(In, (T, B), generator=_gen(91)), In).float()
    lstm = kind == "lstm"
    states = [hx, cx] if lstm else [hx]
    leaves = [t.detach().clone().requires_grad_() for t in (x, *states, *params)]
    r_leaves = [t.detach().double().requires_grad_() for t in leaves]

    def run(fn, ls):
        c = ls[2] if lstm else None
        outs = call_layer(fn, kind, ls[0], ls[1], c, ls[2 + lstm :], True, L, 0.0, True, bi, False)
        loss = _random_linear_loss(outs, seed=92, round_to=torch.float32)
        return [o.detach() for o in outs], list(torch.autograd.grad(loss, ls))

    outs, grads = run(LAYER_FNS[kind], leaves)
    r_outs, r_grads = run(TORCH_LAYER_FNS[kind], r_leaves)
    r_outs, r_grads = [t.float() for t in r_outs], [t.float() for t in r_grads]  # + half an ulp
    terms = rnn_terms(T, B, In, H, L, 2 if bi else 1, GATES[kind])
    compare(outs, r_outs, grads, r_grads, dtype=torch.float32, terms=terms, inputs=[x, *states])


@requires_native
@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn_tanh"])
def test_cpu_results_do_not_depend_on_the_thread_count(kind):
    """A one-layer float32 layer on one-hot input (every product in d2l_ext's kernels, none in
    MKL's) gives bit-identical outputs and gradients on one thread and on two, where two split
    the batch (B = 32: 16 rows each): every element sums its terms in the same order."""
    skip_unless_rnn_kernel("cpu")
    T, B, In, H = 12, 32, 7, 64
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, 1, False, True, torch.float32, "cpu", seed=98)
    x = torch.nn.functional.one_hot(torch.randint(In, (T, B), generator=_gen(99)), In).float()
    lstm = kind == "lstm"

    def run():
        leaves = [t.detach().clone().requires_grad_() for t in (*([hx, cx] if lstm else [hx]), *params)]
        c = leaves[1] if lstm else None
        weights = leaves[1 + lstm :]
        outs = call_layer(LAYER_FNS[kind], kind, x, leaves[0], c, weights, True, 1, 0.0, True, False, False)
        loss = _random_linear_loss(outs, seed=100)
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b), (a - b).abs().max()


@requires_native
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_cpu_one_hot_input_matches_torch(kind, dtype, bias):
    """One-hot inputs take a gather of w_ih's columns forward and a scatter of the gate
    gradients (with the bias gradient summed in the same pass) backward: every output and
    gradient against torch's layer, in both dtypes and without biases too."""
    skip_unless_rnn_kernel("cpu")
    T, B, In, H = 9, 5, 6, 24
    x, hx, cx, params = layer_inputs(kind, T, B, In, H, 1, False, bias, dtype, "cpu", seed=95)
    x = torch.nn.functional.one_hot(torch.randint(In, (T, B), generator=_gen(96)), In).to(dtype)
    lstm = kind == "lstm"
    leaves = [t.detach().clone().requires_grad_() for t in (x, hx, *([cx] if lstm else []), *params)]
    r_leaves = [t.detach().clone().requires_grad_() for t in leaves]

    def run(fn, ls):
        c = ls[2] if lstm else None
        outs = call_layer(fn, kind, ls[0], ls[1], c, ls[2 + lstm :], bias, 1, 0.0, True, False, False)
        loss = _random_linear_loss(outs, seed=97)
        return [o.detach() for o in outs], list(torch.autograd.grad(loss, ls))

    outs, grads = run(LAYER_FNS[kind], leaves)
    r_outs, r_grads = run(TORCH_LAYER_FNS[kind], r_leaves)
    compare(outs, r_outs, grads, r_grads, dtype=dtype, terms=rnn_terms(T, B, In, H, 1, 1, GATES[kind]))
