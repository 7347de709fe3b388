// Recurrent layers (RNN tanh/relu, LSTM, GRU): what the CPU and CUDA backends
// share. The time loop (csrc/rnn.cpp) is written once on at:: ops (the GEMMs
// go to at::mm / addmm, so to MKL or cuBLAS); only the element-wise step of a
// cell, where the gates are formed, differs per device and is passed in as a
// RnnPointwise table (csrc/cpu/rnn.cpp, csrc/cuda/rnn.cpp).
//
// Shapes: input (T, B, I); hx (L * D, B, H) (D = 2 when bidirectional);
// cx like hx for LSTM; weights in torch's _flat_weights order, per layer and
// direction: w_ih (G * H, I_l), w_hh (G * H, H), then b_ih, b_hh (G * H,)
// when has_biases. G, the gates per cell, is 1 (RNN), 4 (LSTM: i, f, g, o) or
// 3 (GRU: r, z, n), in torch's order.
//
// The reserve (saved for backward), one block per (layer, direction), each
// block [acts (T, B, G * H) | h (T, B, H) | extra (T, B, H), LSTM and GRU only]:
// acts are the gates after their nonlinearity, h the block's outputs, extra
// the cell states c_t (LSTM) or the hidden part of the GRU's n gate,
// W_hn h_{t-1} + b_hn.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace d2l_ext {

enum class RnnMode : int64_t { Tanh = 0, Relu = 1, Lstm = 2, Gru = 3 };

inline RnnMode rnn_mode(int64_t mode) {
  TORCH_CHECK(mode >= 0 && mode <= 3, "d2l_ext.rnn: mode must be 0 (tanh), 1 (relu), 2 (lstm) or 3 (gru), got ",
              mode);
  return static_cast<RnnMode>(mode);
}

inline int64_t rnn_gates(RnnMode mode) {
  return mode == RnnMode::Lstm ? 4 : mode == RnnMode::Gru ? 3 : 1;
}

// Per (T, B, H) slice of a reserve block: gates + h + extra.
inline int64_t rnn_block_rows(RnnMode mode) {
  return rnn_gates(mode) + 1 + (mode == RnnMode::Lstm || mode == RnnMode::Gru ? 1 : 0);
}

// One step of one direction, element-wise over (B, H). All (B, H) and
// (B, G * H) tensors are contiguous, except grad_out rows (row stride
// grad_out.stride(0)). Writes what each comment says.
struct RnnStepForward {
  RnnMode mode;
  at::Tensor gates;    // in: input projection + bias (+ hidden projection but for GRU); out: activations
  at::Tensor hidden;   // GRU only, in: W_hh h_prev + b_hh (B, 3H)
  at::Tensor h_prev;   // (B, H)
  at::Tensor c_prev;   // LSTM only
  at::Tensor h;        // out
  at::Tensor extra;    // out: c (LSTM), W_hn h_prev + b_hn (GRU)
};

struct RnnStepBackward {
  RnnMode mode;
  at::Tensor acts;       // saved activations (B, G * H)
  at::Tensor grad_out;   // gradient from the layer's output at this step, or undefined
  at::Tensor dh;         // in: gradient carried to h_t from step t + 1; out (GRU): the part of dh_{t-1} that
                         // does not pass through W_hh, z * dh_t
  at::Tensor dc;         // LSTM, in: carried to c_t; out: to c_{t-1}
  at::Tensor h_prev, c_prev, h, extra;  // as saved (h: RNN, extra: c_t or W_hn h_prev + b_hn)
  at::Tensor d_gates;    // out: gradient of the pre-activation gates (B, G * H)
  at::Tensor d_hidden;   // GRU, out: gradient of W_hh h_prev + b_hh (B, 3H)
};

// A whole recurrence (one layer, one direction, all T steps), for a backend
// that runs the time loop itself (the CPU: threads split the hidden units and
// meet once per step). Tensors as in the step structs, with a leading T.
struct RnnRecurrence {
  RnnMode mode;
  bool reverse;        // steps run T - 1 .. 0
  at::Tensor acts;     // (T, B, G * H) in: input projection + biases (GRU: b_ih only); out: activations
  at::Tensor hs;       // (T, B, H) out
  at::Tensor extra;    // (T, B, H) out (LSTM, GRU), else undefined
  at::Tensor h0, c0;   // (B, H); c0 LSTM only
  at::Tensor w_hh;     // (G * H, H)
  at::Tensor b_hh;     // GRU with biases: (G * H), else undefined
};

struct RnnRecurrenceBackward {
  RnnMode mode;
  bool reverse;
  at::Tensor acts, hs, extra, h0, c0, w_hh;  // as saved by the forward
  at::Tensor grad_out;   // (T, B, H), rows strided (a direction's slice of the output gradient), or undefined
  at::Tensor dh, dc;     // (B, H) in: gradient of h_n (c_n); out: of h0 (c0)
  at::Tensor d_gates;    // (T, B, G * H) out
  at::Tensor d_hidden;   // (T, B, G * H) out (GRU; for the others the same tensor as d_gates)
};

// The device's kernels: the per-step functions, or (when set) whole recurrences.
struct RnnPointwise {
  void (*forward)(const RnnStepForward&);
  void (*backward)(const RnnStepBackward&);
  void (*forward_recurrence)(const RnnRecurrence&) = nullptr;
  void (*backward_recurrence)(const RnnRecurrenceBackward&) = nullptr;
  // grad_w_hh (G H, P) = sum_t d_hidden[t]^T h_prev(t) for one direction (d_hidden (T, B, G H), hs
  // (T, B, P), h0 (B, P): the h before the direction's first step); false: not done, use at::mm.
  bool (*hidden_weight_grad)(const at::Tensor& d_hidden, const at::Tensor& hs, const at::Tensor& h0, bool reverse,
                             at::Tensor& grad_w_hh) = nullptr;
};

// The layer ops, generic over the device (csrc/rnn.cpp).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_forward(
    const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx, at::TensorList weights,
    int64_t mode, bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks,
    const RnnPointwise& kernels);

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> rnn_backward(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const at::Tensor& input, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, at::TensorList weights, const at::Tensor& reserve, int64_t mode,
    bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks, bool need_input_grad,
    const RnnPointwise& kernels);

}  // namespace d2l_ext
