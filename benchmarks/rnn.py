"""Benchmark of d2l_ext's recurrent layers and cells against torch's.

The book's language-model settings (chapters 9-10): *The Time Machine* as
characters, vocabulary 28 fed one-hot, 35 time steps, batch 32, hidden 256,
one and two layers; also hidden 512 at batch 64. Zero initial states, float32,
training mode without dropout, timed fwd+bwd (``out = lstm(x)``, then the
gradients of every weight for a fixed random gradient of ``out``; the one-hot
input needs none).

Columns: "native" is :func:`d2l_ext.functional.lstm` / ``gru`` (time loop in
C++), "torch" the ``torch.nn.LSTM`` / ``GRU`` module on the same weights
(oneDNN on the CPU, cuDNN on a GPU), "python" d2l_ext's fallback
(:func:`d2l_ext.reference.rnn`, a Python loop over steps with two GEMMs per
cell) and, for the one-layer LSTM, "scratch": the book's from-scratch LSTM
(:func:`d2l_ext.reference.lstm_scratch`, eight GEMMs per step) on views of the
same weights. The cells (one step, ``lstm_cell`` / ``gru_cell`` against
``torch.lstm_cell`` / ``gru_cell``) are the GPU target's other half.
``--quick`` keeps one LSTM layer and one cell. On CUDA, TF32 is off on both
sides. The columns of a case are timed in six turns each, interleaved
(``Timing.rounds``), so that a drift of the machine's speed hits all alike.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import d2l_ext.functional as F
from d2l_ext import reference

from .common import Case, Impl, Timing, standard_impls

OP = "rnn"
VOCAB = 28
# Timed in turns (Timing.rounds): this machine's speed drifts by tens of percent within seconds.
LAYER_TIMING = Timing(min_run_time=3.0, max_run_time=6.0, rounds=6)
CELL_TIMING = Timing(min_run_time=1.5, max_run_time=3.0, rounds=6)
PYTHON_TIMING = Timing(min_run_time=1.5, max_run_time=4.0, rounds=6)
PYTHON_BUDGET_S = 20.0


@dataclass(frozen=True)
class Layer:
    kind: str  # "lstm" or "gru"
    layers: int
    hidden: int
    batch: int
    steps: int = 35

    @property
    def label(self) -> str:
        return f"{self.kind.upper()} L{self.layers} T{self.steps} B{self.batch} I{VOCAB} H{self.hidden}"


LAYERS = (
    Layer("lstm", 1, 256, 32),
    Layer("lstm", 2, 256, 32),
    Layer("lstm", 1, 512, 64),
    Layer("gru", 1, 256, 32),
    Layer("gru", 2, 256, 32),
    Layer("gru", 1, 512, 64),
)
CELLS = (("lstm", 256, 32), ("gru", 256, 32), ("lstm", 512, 64), ("gru", 512, 64))


def _layer_inputs(layer: Layer, device: str, seed: int):
    def make() -> dict:
        torch.manual_seed(seed)
        cls = torch.nn.LSTM if layer.kind == "lstm" else torch.nn.GRU
        module = cls(VOCAB, layer.hidden, layer.layers).to(device)
        tokens = torch.randint(VOCAB, (layer.steps, layer.batch), device=device)
        x = torch.nn.functional.one_hot(tokens, VOCAB).float()
        h0 = torch.zeros(layer.layers, layer.batch, layer.hidden, device=device)
        return {"x": x, "h0": h0, "module": module, "params": list(module._flat_weights)}

    return make


def _ours(layer: Layer, inputs: dict):
    x, h0, params = inputs["x"], inputs["h0"], inputs["params"]
    if layer.kind == "lstm":
        return lambda: F.lstm(x, (h0, h0), params, True, layer.layers, 0.0, True, False, False)[0]
    return lambda: F.gru(x, h0, params, True, layer.layers, 0.0, True, False, False)[0]


def _torch(layer: Layer, inputs: dict):
    x, h0, module = inputs["x"], inputs["h0"], inputs["module"]
    if layer.kind == "lstm":
        return lambda: module(x, (h0, h0))[0]
    return lambda: module(x, h0)[0]


def _scratch(layer: Layer, inputs: dict):
    """The book's LSTM on views of torch's weights: W_x* = w_ih[gate].T, W_h* = w_hh[gate].T,
    b_* = b_ih[gate] + b_hh[gate]; the book's gate names map to torch's i, f, o and g (= C~)."""
    x, h0 = inputs["x"], inputs["h0"][0]
    w_ih, w_hh, b_ih, b_hh = inputs["params"]
    H = layer.hidden

    def forward():
        params = []
        for gate in (0, 1, 3, 2):  # the book's order: input, forget, output, candidate
            rows = slice(gate * H, (gate + 1) * H)
            params += [w_ih[rows].T, w_hh[rows].T, b_ih[rows] + b_hh[rows]]
        return reference.lstm_scratch(x, (h0, h0), params)[0]

    return forward


def _cell_inputs(kind: str, hidden: int, batch: int, device: str, seed: int):
    def make() -> dict:
        gen = torch.Generator(device=device).manual_seed(seed)
        G = 4 if kind == "lstm" else 3
        bound = hidden**-0.5

        def u(*shape):
            return ((torch.rand(*shape, generator=gen, device=device) * 2 - 1) * bound).requires_grad_()

        x = torch.randn(batch, VOCAB, generator=gen, device=device)
        h = torch.randn(batch, hidden, generator=gen, device=device).requires_grad_()
        c = torch.randn(batch, hidden, generator=gen, device=device).requires_grad_(kind == "lstm")
        return {
            "x": x, "h": h, "c": c,
            "w": [u(G * hidden, VOCAB), u(G * hidden, hidden), u(G * hidden), u(G * hidden)],
        }

    return make


def _cell(fn, kind: str, inputs: dict):
    x, h, c, w = inputs["x"], inputs["h"], inputs["c"], inputs["w"]
    if kind == "lstm":
        return lambda: fn(x, (h, c), *w)
    return lambda: fn(x, h, *w)


def cases(device: str, quick: bool) -> list[Case]:
    if device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    out = []
    layers = LAYERS[:1] if quick else LAYERS
    for seed, layer in enumerate(layers):
        impls = standard_impls(
            functools.partial(_ours, layer),
            functools.partial(_torch, layer),
            device,
            python_timing=None if quick else PYTHON_TIMING,
            python_budget_s=PYTHON_BUDGET_S,
            kernel_op="rnn",
        )
        if layer.kind == "lstm" and layer.layers == 1:
            impls.append(Impl("scratch", functools.partial(_scratch, layer),
                              timing=None if quick else PYTHON_TIMING, budget_s=PYTHON_BUDGET_S))
        out.append(Case(
            op=layer.kind, shape=layer.label, device=device, dtype=torch.float32,
            make_inputs=_layer_inputs(layer, device, seed), impls=impls, backward=True, timing=LAYER_TIMING,
            params={"layers": layer.layers, "T": layer.steps, "B": layer.batch, "I": VOCAB,
                    "H": layer.hidden},
        ))
    cells = CELLS[:1] if quick else CELLS
    for seed, (kind, hidden, batch) in enumerate(cells):
        ours = F.lstm_cell if kind == "lstm" else F.gru_cell
        theirs = torch.lstm_cell if kind == "lstm" else torch.gru_cell
        impls = standard_impls(
            functools.partial(_cell, ours, kind),
            functools.partial(_cell, theirs, kind),
            device,
            kernel_op="rnn",
        )
        out.append(Case(
            op=f"{kind}_cell", shape=f"B{batch} I{VOCAB} H{hidden}", device=device, dtype=torch.float32,
            make_inputs=_cell_inputs(kind, hidden, batch, device, 100 + seed), impls=impls, backward=True,
            timing=CELL_TIMING,
            params={"B": batch, "I": VOCAB, "H": hidden},
        ))
    return out
