"""Pure-Python (plain torch tensor code) versions of every d2l_ext op.

These are two things at once:

* the **fallback** that runs when the compiled library is missing or when
  ``D2L_EXT_BACKEND=python`` is set, and
* the **readable maths** behind each kernel, written the way *Dive into Deep
  Learning* writes it, but vectorised.

Each function here takes arguments that :mod:`d2l_ext.functional` has already
checked and normalised (the same arguments the native op receives), so the two
backends can be compared one to one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "avg_pool2d",
    "conv2d",
    "gru_cell",
    "lstm_cell",
    "lstm_scratch",
    "rnn",
    "rnn_relu_cell",
    "rnn_tanh_cell",
    "corr2d",
    "corr2d_book",
    "cross_entropy",
    "cross_entropy_book",
    "log_softmax",
    "max_pool2d",
    "pool2d",
    "pool_output_size",
]


def log_softmax(x: Tensor, dim: int = 1) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``, computed stably.

    The book's ``softmax(X) = exp(X) / exp(X).sum()`` overflows for large
    logits; subtracting the row maximum first (the "LogSumExp trick") does not
    change the result and keeps every ``exp`` at most 1.
    """
    m = x.amax(dim=dim, keepdim=True).detach()
    # A row that is all -inf has max -inf; shift by 0 there so we get -inf - 0, not nan.
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    lse = m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))
    return x - lse


def cross_entropy_book(y_hat: Tensor, y: Tensor) -> Tensor:
    """The book's section 4.4 definition: ``-log(y_hat[range(N), y])``.

    ``y_hat`` (N, C) are already probabilities, ``y`` (N,) class indices;
    returns the (N,) per-example losses. Shown for learners; not numerically
    safe, which is why :func:`cross_entropy` works on logits instead.
    """
    return -torch.log(y_hat[list(range(len(y_hat))), y])


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy on logits, with torch's full set of options.

    Shapes: ``input`` (N, C, d1, ..., dk) logits (k >= 0). ``target`` is either
    class indices (N, d1, ..., dk), int64, or class probabilities with the same
    shape as ``input``. ``weight`` (C,) rescales each class. Returns a scalar
    for ``reduction`` "mean"/"sum" and (N, d1, ..., dk) for "none".

    With ``p = log_softmax(input)``, ``eps = label_smoothing`` and ``w`` the
    class weights (all ones when ``weight`` is None), the loss of one example is

    * index target ``t``: ``(1 - eps) * w[t] * -p[t] + eps / C * sum_c w[c] * -p[c]``
      (0 where ``t == ignore_index``); "mean" divides the sum by ``sum w[t]``
      over the examples that are not ignored;
    * probability target ``q``: ``sum_c w[c] * q'[c] * -p[c]`` with the smoothed
      ``q' = (1 - eps) * q + eps / C``; "mean" divides by the number of examples.
    """
    num_classes = input.shape[1]
    logp = log_softmax(input, dim=1)
    # Broadcast the (C,) weights against (N, C, d1, ...).
    w = None if weight is None else weight.view([1, -1] + [1] * (input.dim() - 2))

    if target.dtype.is_floating_point:  # class probabilities
        q = target
        if label_smoothing > 0.0:
            q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
        terms = -logp * q if w is None else -logp * q * w
        per_example = terms.sum(dim=1)
        if reduction == "none":
            return per_example
        if reduction == "sum":
            return per_example.sum()
        count = per_example.numel()
        return per_example.sum() / count if count else per_example.sum() * float("nan")

    # Class indices: pick -logp[t] for each example; ignored examples use class 0
    # for the lookup and are zeroed afterwards.
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    nll = -logp.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    w_t = torch.ones_like(nll) if weight is None else weight[safe_target]
    w_t = torch.where(valid, w_t, torch.zeros_like(w_t))
    per_example = (1.0 - label_smoothing) * w_t * nll
    if label_smoothing > 0.0:
        smooth = (-logp).sum(dim=1) if w is None else (-logp * w).sum(dim=1)
        per_example = per_example + label_smoothing / num_classes * smooth
    # Ignored examples contribute 0, even when their logits are NaN.
    per_example = torch.where(valid, per_example, torch.zeros_like(per_example))
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    total = w_t.sum()
    # "mean" divides by the total weight of the examples kept. When every example
    # is ignored that is 0: torch's loss is then NaN (0/0) but its gradient 0, so
    # divide by a safe 1 and add the NaN as a constant (0 whenever total != 0).
    safe_total = torch.where(total != 0, total, torch.ones_like(total))
    nan_if_empty = (0.0 * total.detach()) / total.detach()
    return per_example.sum() / safe_total + nan_if_empty


# ------------------------------------------------------------------- pooling


def pool2d(X: Tensor, pool_size: tuple[int, int], mode: str = "max") -> Tensor:
    """The book's section 7.5 pooling: a window of ``pool_size`` slides over the
    2-D ``X`` (h, w) with stride 1 and no padding; each output is the window's
    max (``mode="max"``) or mean (``"avg"``). Returns (h - p_h + 1, w - p_w + 1).

    Plain loops, exactly as the book writes them: the maths, not the speed.
    """
    p_h, p_w = pool_size
    Y = torch.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1), dtype=X.dtype, device=X.device)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            if mode == "max":
                Y[i, j] = X[i : i + p_h, j : j + p_w].max()
            elif mode == "avg":
                Y[i, j] = X[i : i + p_h, j : j + p_w].mean()
    return Y


def pool_output_size(
    size: int, kernel: int, padding: int, stride: int, dilation: int, ceil_mode: bool
) -> int:
    """Outputs along one axis: how many windows of ``dilation * (kernel - 1) + 1``
    input elements fit, ``stride`` apart, in the padded input. With ``ceil_mode``
    a last partial window counts too, if it starts inside the input or its left
    padding (torch's rule)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _windows(
    x: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
    fill: float | int,
) -> Tensor:
    """Every pooling window of x (N, C, H, W) as (N, C, OH, OW, kH * kW): pad
    with ``fill`` (left/top by ``padding``, right/bottom as far as the last
    window reaches), cut strided windows with ``unfold``, keep every
    ``dilation``-th element."""
    out = [
        pool_output_size(x.shape[2 + i], kernel[i], padding[i], stride[i], dilation[i], ceil_mode)
        for i in (0, 1)
    ]
    extent = [(out[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1)]
    after = [extent[i] - padding[i] - x.shape[2 + i] for i in (0, 1)]  # may be < 0: crop
    xp = torch.nn.functional.pad(x, (padding[1], after[1], padding[0], after[0]), value=fill)
    spans = [dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1)]
    w = xp.unfold(2, spans[0], stride[0]).unfold(3, spans[1], stride[1])
    w = w[..., :: dilation[0], :: dilation[1]]
    return w.reshape(*w.shape[:4], kernel[0] * kernel[1])


def _lowest(dtype: torch.dtype) -> float | int:
    return float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min


def _winner(win: Tensor) -> Tensor:
    """Index of each window's winner along the last dim, by torch's rule: scan
    in order, a larger value or a NaN takes over. So: the first maximum, or the
    last NaN if the window has any."""
    tap = win.argmax(dim=-1)
    if win.is_floating_point():
        nan = win.isnan()
        last_nan = win.shape[-1] - 1 - nan.flip(-1).to(torch.uint8).argmax(dim=-1)
        tap = torch.where(nan.any(-1), last_nan, tap)
    return tap


def max_pool2d(
    x: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
) -> tuple[Tensor, Tensor]:
    """Max pooling of x (N, C, H, W): (output (N, C, OH, OW), indices (N, C, OH, OW)).

    Each output is its window's largest element; ``indices`` says where it came
    from as ``h * W + w`` in its input plane: the first maximum in row-major
    window order (the last NaN, if any), the element the gradient flows to.
    Padding never wins: where every element read equals the padding value
    (-inf, or the integer minimum), the first element read does.
    """
    H, W = x.shape[2:]
    win = _windows(x, kernel, stride, padding, dilation, ceil_mode, _lowest(x.dtype))
    tap = _winner(win)
    # Which window elements read the input (1) rather than the padding (0).
    reads = _windows(
        torch.ones_like(x[:1, :1], dtype=torch.uint8), kernel, stride, padding, dilation, ceil_mode, 0
    )
    best = win.detach().gather(-1, tap.unsqueeze(-1)).squeeze(-1)
    tap = torch.where(best == _lowest(x.dtype), reads.argmax(dim=-1), tap)
    out = win.gather(-1, tap.unsqueeze(-1)).squeeze(-1)
    OH, OW = out.shape[2:]
    rows = torch.arange(OH, device=x.device).view(-1, 1) * stride[0] - padding[0]
    cols = torch.arange(OW, device=x.device) * stride[1] - padding[1]
    rows = rows + (tap // kernel[1]) * dilation[0]
    cols = cols + (tap % kernel[1]) * dilation[1]
    return out, rows * W + cols


def avg_pool2d(
    x: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """Average pooling of x (N, C, H, W) -> (N, C, OH, OW): window sum / divisor.

    The divisor is ``divisor_override`` if given, else the window's size, where
    ``count_include_pad`` counts the zero padding (but not the part of a
    ceil-mode window beyond it) and otherwise only the elements read.
    """
    win = _windows(x, kernel, stride, padding, (1, 1), ceil_mode, 0)
    total = win.sum(-1)
    if divisor_override is not None:
        div = torch.tensor(divisor_override, device=x.device)
    else:
        counts = []
        for i, n in enumerate(total.shape[2:]):
            start = torch.arange(n, device=x.device) * stride[i] - padding[i]
            size = x.shape[2 + i]
            if count_include_pad:
                counts.append((start + kernel[i]).clamp(max=size + padding[i]) - start)
            else:
                counts.append((start + kernel[i]).clamp(max=size) - start.clamp(min=0))
        div = counts[0].view(-1, 1) * counts[1]
    if not x.dtype.is_floating_point:
        return torch.div(total, div, rounding_mode="trunc").to(x.dtype)  # as C++ integer division
    return (total / div).to(x.dtype)


def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """Window [start, end) of each of ``out`` adaptive outputs over ``size``
    inputs: start = floor(i * size / out), end = ceil((i + 1) * size / out)."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _empty_like_graph(x: Tensor, shape) -> Tensor:
    """A zero-size result that still hangs off x in the autograd graph (its
    gradient is zeros, as torch's)."""
    return x.new_zeros(shape) + x.flatten()[:0].sum()


def adaptive_avg_pool2d(x: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling of x (N, C, H, W) -> (N, C, *output_size): output
    (i, j) is the mean of the (possibly overlapping) window rows
    [floor(i H / OH), ceil((i + 1) H / OH)) and columns likewise."""
    rows = _adaptive_bounds(x.shape[2], output_size[0])
    cols = _adaptive_bounds(x.shape[3], output_size[1])
    shape = (*x.shape[:2], len(rows), len(cols))
    if 0 in shape:
        return _empty_like_graph(x, shape)
    return torch.stack(
        [torch.stack([x[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for c0, c1 in cols], -1) for r0, r1 in rows], -2
    )


def adaptive_max_pool2d(x: Tensor, output_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Adaptive max pooling of x (N, C, H, W): (output, indices), each
    (N, C, *output_size), windows as :func:`adaptive_avg_pool2d`, winners and
    indices as :func:`max_pool2d` (``h * W + w``)."""
    W = x.shape[3]
    rows = _adaptive_bounds(x.shape[2], output_size[0])
    cols = _adaptive_bounds(W, output_size[1])
    shape = (*x.shape[:2], len(rows), len(cols))
    if 0 in shape:
        return _empty_like_graph(x, shape), torch.zeros(shape, dtype=torch.long, device=x.device)
    outs, idxs = [], []
    for r0, r1 in rows:
        for c0, c1 in cols:
            win = x[:, :, r0:r1, c0:c1].flatten(2)
            tap = _winner(win).unsqueeze(-1)
            outs.append(win.gather(-1, tap).squeeze(-1))
            width = c1 - c0
            idxs.append(((r0 + tap // width) * W + c0 + tap % width).squeeze(-1))
    return torch.stack(outs, -1).view(shape), torch.stack(idxs, -1).view(shape)


# ---------------------------------------------------------------------- conv2d


def corr2d_book(X: Tensor, K: Tensor) -> Tensor:
    """The book's section 7.2 two-dimensional cross-correlation: the kernel
    ``K`` (kh, kw) slides over ``X`` (h, w) with stride 1 and no padding; each
    output is the sum of the window times the kernel. Returns (h - kh + 1, w - kw + 1).

    Plain loops, one output at a time, as the book writes them: the maths, not the speed.
    """
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1), dtype=X.dtype, device=X.device)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


def corr2d(X: Tensor, K: Tensor) -> Tensor:
    """:func:`corr2d_book` with the loops turned around: one pass per kernel
    tap ``(a, b)`` adds ``K[a, b]`` times the shifted input slice, so the loops
    run kh * kw times instead of once per output."""
    kh, kw = K.shape
    oh, ow = X.shape[0] - kh + 1, X.shape[1] - kw + 1
    Y = torch.zeros((oh, ow), dtype=torch.result_type(X, K), device=X.device)
    for a in range(kh):
        for b in range(kw):
            Y = Y + K[a, b] * X[a : a + oh, b : b + ow]
    return Y


def conv_output_size(size: int, kernel: int, padding: int, stride: int, dilation: int) -> int:
    """Outputs along one axis: windows of ``dilation * (kernel - 1) + 1`` input
    elements, ``stride`` apart, that fit in the padded input."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    """2-D cross-correlation of ``input`` (N, C, H, W) with ``weight``
    (O, C / groups, kh, kw), plus ``bias`` (O,): (N, O, OH, OW).

    The im2col form of the book's corr2d: ``unfold`` lays every window out as a
    column, (N, C kh kw, OH OW), so each group's output channels are one matrix
    product of the weights (O / groups, C / groups kh kw) with those columns.
    """
    n, _c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    oh = conv_output_size(h, kh, padding[0], stride[0], dilation[0])
    ow = conv_output_size(w, kw, padding[1], stride[1], dilation[1])
    if not (input.is_floating_point() or input.is_complex()):
        return _conv2d_taps(input, weight, bias, stride, padding, dilation, groups, (oh, ow))
    cols = torch.nn.functional.unfold(input, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    cols = cols.view(n, groups, cg * kh * kw, oh * ow)
    out = weight.reshape(groups, o // groups, cg * kh * kw) @ cols  # (N, groups, O / groups, OH OW)
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.view(1, o, 1, 1)
    return out


def _conv2d_taps(input, weight, bias, stride, padding, dilation, groups, out_size) -> Tensor:
    """:func:`conv2d` for integer tensors (``unfold`` has no integer kernel):
    corr2d's loop over kernel taps, each adding the weights of tap (a, b)
    times the strided slice of the zero-padded input that the tap reads."""
    n, c, _h, _w = input.shape
    o, cg, kh, kw = weight.shape
    oh, ow = out_size
    x = torch.nn.functional.pad(input, (padding[1], padding[1], padding[0], padding[0]))
    x = x.view(n, groups, cg, *x.shape[2:])
    wg = weight.view(groups, o // groups, cg, kh, kw)
    out = torch.zeros((n, groups, o // groups, oh, ow), dtype=input.dtype, device=input.device)
    for a in range(kh):
        for b in range(kw):
            top, left = a * dilation[0], b * dilation[1]
            rows = slice(top, top + stride[0] * (oh - 1) + 1, stride[0])
            cols = slice(left, left + stride[1] * (ow - 1) + 1, stride[1])
            tap = x[..., rows, cols]
            out = out + torch.einsum("ngchw,gdc->ngdhw", tap, wg[..., a, b])
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.view(1, o, 1, 1)
    return out


# ------------------------------------------------------------------ recurrent cells and layers
# Chapters 9-10 of the book: one step of each cell, with torch's weight layout
# (w_ih (G * H, I), w_hh (G * H, H), gates stacked in torch's order).

RNN_MODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return x @ w.T if b is None else x @ w.T + b


def rnn_tanh_cell(x: Tensor, h: Tensor, w_ih, w_hh, b_ih=None, b_hh=None) -> Tensor:
    """``H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)``: x (B, I), h (B, H) -> (B, H)."""
    return torch.tanh(_linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh))


def rnn_relu_cell(x: Tensor, h: Tensor, w_ih, w_hh, b_ih=None, b_hh=None) -> Tensor:
    """The Elman cell with ReLU: x (B, I), h (B, H) -> (B, H)."""
    return torch.relu(_linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh))


def lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor], w_ih, w_hh, b_ih=None, b_hh=None
) -> tuple[Tensor, Tensor]:
    """The LSTM cell (section 10.1): input, forget and output gates, candidate
    memory; x (B, I), state (h, c) each (B, H) -> (h, c)."""
    h, c = state
    i, f, g, o = (_linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)).chunk(4, dim=1)
    input_gate, forget_gate, output_gate = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    C_tilde = torch.tanh(g)
    c = forget_gate * c + input_gate * C_tilde
    return output_gate * torch.tanh(c), c


def gru_cell(x: Tensor, h: Tensor, w_ih, w_hh, b_ih=None, b_hh=None) -> Tensor:
    """The GRU cell (section 10.2): reset gate r, update gate z, candidate
    state n with the hidden bias b_hn inside the reset product (torch's form);
    x (B, I), h (B, H) -> (B, H)."""
    x_r, x_z, x_n = _linear(x, w_ih, b_ih).chunk(3, dim=1)
    h_r, h_z, h_n = _linear(h, w_hh, b_hh).chunk(3, dim=1)
    R = torch.sigmoid(x_r + h_r)
    Z = torch.sigmoid(x_z + h_z)
    H_tilde = torch.tanh(x_n + R * h_n)
    return Z * h + (1 - Z) * H_tilde


def rnn(
    input: Tensor,
    hx: Tensor,
    cx: Tensor | None,
    weights: list[Tensor],
    mode: int,
    has_biases: bool,
    num_layers: int,
    bidirectional: bool,
    dropout_masks: list[Tensor],
    proj_size: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Deep (and bidirectional) recurrent layers as the book builds them: a
    Python loop over time steps per layer and direction, the layer's outputs
    (both directions concatenated, times the dropout mask) feeding the next.

    Shapes: input (T, B, I); hx (L * D, B, P) where P = proj_size or H; cx
    (L * D, B, H) for LSTM; weights in torch's ``_flat_weights`` order
    (w_ih, w_hh[, b_ih, b_hh][, w_hr] per layer and direction). Returns
    (output (T, B, D * P), hy, cy (LSTM) or None). An LSTM with proj_size
    maps h_t = (o * tanh(c_t)) @ w_hr.T.
    """
    cell = (rnn_tanh_cell, rnn_relu_cell, lstm_cell, gru_cell)[mode]
    D = 2 if bidirectional else 1
    per = (4 if has_biases else 2) + (1 if proj_size else 0)
    T = input.shape[0]
    x = input
    hs, cs = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w = weights[k * per : (k + 1) * per]
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            h = hx[k]
            c = cx[k] if cx is not None else None
            steps: list[Tensor] = [input.new_empty(0)] * T
            for t in range(T) if d == 0 else reversed(range(T)):
                if mode == 2:
                    h, c = cell(x[t], (h, c), w_ih, w_hh, b_ih, b_hh)
                    if proj_size:
                        h = h @ w[-1].T
                else:
                    h = cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
                steps[t] = h
            outs.append(torch.stack(steps))
            hs.append(h)
            cs.append(c)
        x = torch.cat(outs, dim=2) if D == 2 else outs[0]
        if layer < num_layers - 1 and dropout_masks:
            x = x * dropout_masks[layer]
    return x, torch.stack(hs), (torch.stack(cs) if mode == 2 else None)


def lstm_scratch(inputs: Tensor, state: tuple[Tensor, Tensor], params: list[Tensor]) -> tuple[Tensor, tuple]:
    """The book's from-scratch LSTM (section 10.1.3), kept as it is written
    there, for the benchmark's "scratch loop" baseline: inputs (T, B, I), params
    ``[W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c]``
    with W_x* (I, H), W_h* (H, H); returns (outputs (T, B, H), (H, C))."""
    W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c = params
    H, C = state
    outputs = []
    for X in inputs:
        I = torch.sigmoid((X @ W_xi) + (H @ W_hi) + b_i)  # noqa: E741 (the book's names)
        F = torch.sigmoid((X @ W_xf) + (H @ W_hf) + b_f)
        O = torch.sigmoid((X @ W_xo) + (H @ W_ho) + b_o)  # noqa: E741
        C_tilde = torch.tanh((X @ W_xc) + (H @ W_hc) + b_c)
        C = F * C + I * C_tilde
        H = O * torch.tanh(C)
        outputs.append(H)
    return torch.stack(outputs), (H, C)
