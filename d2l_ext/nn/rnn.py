"""Recurrent modules: torch.nn's classes (same constructor arguments,
parameter names such as ``weight_ih_l0`` and ``weight_hh_l1_reverse``,
initialisation and ``state_dict``, so weights load both ways) whose forward
runs :mod:`d2l_ext.functional`'s recurrent ops: the layers' time loop in C++
with fused cell steps, the cells as two GEMMs and one fused kernel.

``PackedSequence`` inputs are not supported (a clear error says how to pad
them). An LSTM with ``proj_size > 0`` runs the native op's per-step path (the
projection is one more GEMM a step; the CPU threads do not split its units).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .. import functional as F

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]


def _reject_packed(module: torch.nn.Module, input) -> None:
    if isinstance(input, PackedSequence):
        name = type(module).__name__
        raise NotImplementedError(
            f"d2l_ext.nn.{name} does not take a PackedSequence: unpack it with "
            "torch.nn.utils.rnn.pad_packed_sequence and pass the padded tensor (the states then "
            f"run to the longest sequence), or use torch.nn.{name} for packed input."
        )


def _state_dims_message(what: str, dims: int, states: tuple) -> str:
    """torch.nn's wording for initial states of the wrong rank."""
    if len(states) == 1:
        return f"For {what} input, hx should also be {dims}-D but got {states[0].dim()}-D tensor"
    got = ", ".join(f"{s.dim()}-D" for s in states)
    return f"For {what} input, hx and cx should also be {dims}-D but got ({got}) tensors"


def _batched(module: torch.nn.RNNBase, input: Tensor, hx, n_states: int):
    """(input (T, B, I) or (B, T, I), hx as a tuple of 3-D tensors or None, batched?)."""
    name = type(module).__name__
    if input.dim() not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
    batched = input.dim() == 3
    states = None if hx is None else ((hx,) if n_states == 1 else tuple(hx))
    if not batched:
        input = input.unsqueeze(1 if not module.batch_first else 0)
        if states is not None:
            if any(s.dim() != 2 for s in states):
                raise RuntimeError(_state_dims_message("unbatched 2-D", 2, states))
            states = tuple(s.unsqueeze(1) for s in states)
    elif states is not None and any(s.dim() != 3 for s in states):
        raise RuntimeError(_state_dims_message("batched 3-D", 3, states))
    return input, states, batched


def _zeros(module: torch.nn.RNNBase, input: Tensor, size: int) -> Tensor:
    B = input.shape[0 if module.batch_first else 1]
    D = 2 if module.bidirectional else 1
    return torch.zeros(module.num_layers * D, B, size, dtype=input.dtype, device=input.device)


def _options(m: torch.nn.RNNBase) -> tuple[bool, int, float, bool, bool, bool]:
    """The functional layers' trailing arguments, as torch.nn passes them to torch.lstm & co."""
    return m.bias, m.num_layers, float(m.dropout), m.training, m.bidirectional, m.batch_first


class RNN(torch.nn.RNN):
    """``torch.nn.RNN`` (tanh or relu) on :func:`d2l_ext.functional.rnn_tanh` /
    ``rnn_relu``: input (T, B, I) ((B, T, I) when batch_first, (T, I) unbatched),
    h_0 (L * D, B, H) -> (output (T, B, D * H), h_n (L * D, B, H))."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        _reject_packed(self, input)
        x, states, batched = _batched(self, input, hx, 1)
        h0 = _zeros(self, x, self.hidden_size) if states is None else states[0]
        self.check_forward_args(x, h0, None)
        fn = F.rnn_tanh if self.nonlinearity == "tanh" else F.rnn_relu
        out, hy = fn(x, h0, self._flat_weights, *_options(self))
        if not batched:
            out, hy = out.squeeze(1 if not self.batch_first else 0), hy.squeeze(1)
        return out, hy


class GRU(torch.nn.GRU):
    """``torch.nn.GRU`` on :func:`d2l_ext.functional.gru`: input (T, B, I) ->
    (output (T, B, D * H), h_n (L * D, B, H))."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        _reject_packed(self, input)
        x, states, batched = _batched(self, input, hx, 1)
        h0 = _zeros(self, x, self.hidden_size) if states is None else states[0]
        self.check_forward_args(x, h0, None)
        out, hy = F.gru(x, h0, self._flat_weights, *_options(self))
        if not batched:
            out, hy = out.squeeze(1 if not self.batch_first else 0), hy.squeeze(1)
        return out, hy


class LSTM(torch.nn.LSTM):
    """``torch.nn.LSTM`` on :func:`d2l_ext.functional.lstm`: input (T, B, I),
    (h_0 (L * D, B, P), c_0 (L * D, B, H)) with P = proj_size or H ->
    (output (T, B, D * P), (h_n, c_n))."""

    def forward(  # type: ignore[override]
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        _reject_packed(self, input)
        x, states, batched = _batched(self, input, hx, 2)
        if states is None:
            states = (_zeros(self, x, self.proj_size or self.hidden_size), _zeros(self, x, self.hidden_size))
        self.check_forward_args(x, states, None)
        out, hy, cy = F.lstm(x, states, self._flat_weights, *_options(self))
        if not batched:
            out, hy, cy = out.squeeze(1 if not self.batch_first else 0), hy.squeeze(1), cy.squeeze(1)
        return out, (hy, cy)


class RNNCell(torch.nn.RNNCell):
    """``torch.nn.RNNCell`` on :func:`d2l_ext.functional.rnn_tanh_cell` /
    ``rnn_relu_cell``: input (B, I) or (I,), hx (B, H) or (H,) -> h'."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if hx is None:
            hx = input.new_zeros(*input.shape[:-1], self.hidden_size)
        fn = F.rnn_tanh_cell if self.nonlinearity == "tanh" else F.rnn_relu_cell
        return fn(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(torch.nn.GRUCell):
    """``torch.nn.GRUCell`` on :func:`d2l_ext.functional.gru_cell`: input (B, I), hx (B, H) -> h'."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if hx is None:
            hx = input.new_zeros(*input.shape[:-1], self.hidden_size)
        return F.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTMCell(torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` on :func:`d2l_ext.functional.lstm_cell`: input (B, I),
    (h, c) each (B, H) -> (h', c')."""

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if hx is None:
            zeros = input.new_zeros(*input.shape[:-1], self.hidden_size)
            hx = (zeros, zeros)
        return F.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
