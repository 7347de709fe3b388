// The one schema block of d2l_ext: every op the library offers is declared
// here, and each backend file (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu) registers
// its kernels for these names with TORCH_LIBRARY_IMPL. Fake (meta) kernels are
// registered from Python in d2l_ext/_ops.py; autograd too for cross_entropy
// and the pooling ops' backward ops, while the pooling ops' autograd is C++
// (csrc/autograd.cpp: no Python on the call path).
#include <torch/library.h>

TORCH_LIBRARY(d2l_ext, m) {
  // Fused softmax cross-entropy over dim 1 of input (N, C, d1, ..., dk).
  // target: int64 class indices (N, d1, ..., dk) or probabilities shaped like
  // input. reduction: 0 none, 1 mean, 2 sum (torch's Reduction enum).
  // Returns (loss, lse, total_weight): loss is () or (N, d1, ..., dk); lse is
  // the per-example log-sum-exp (N, d1, ..., dk) saved for backward (float32
  // for half inputs); total_weight is the divisor used by "mean".
  m.def(
      "cross_entropy(Tensor input, Tensor target, Tensor? weight, int reduction, "
      "int ignore_index, float label_smoothing) -> (Tensor, Tensor, Tensor)");
  // Gradient of loss with respect to input, written in one pass.
  m.def(
      "_cross_entropy_backward(Tensor grad_loss, Tensor input, Tensor target, "
      "Tensor? weight, Tensor lse, Tensor total_weight, int reduction, "
      "int ignore_index, float label_smoothing) -> Tensor");

  // 2-D pooling over input (N, C, H, W) (contiguous or channels-last; the
  // outputs keep the layout). Max pooling returns (output, offset): offset is
  // the winner's tap inside its window, tap_h * taps_w + tap_w (see
  // csrc/pooling.h), uint8 when a window has at most 256 taps, else int32.
  // The backward ops take the input's (H, W) and never the input itself.
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "_max_pool2d_backward(Tensor grad_output, Tensor offset, SymInt[2] input_size, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "avg_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
      "bool count_include_pad, int? divisor_override) -> Tensor");
  m.def(
      "_avg_pool2d_backward(Tensor grad_output, SymInt[2] input_size, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  // Adaptive pooling: output (oh, ow) covers rows [floor(oh*H/OH), ceil((oh+1)*H/OH)), as torch.
  m.def("adaptive_avg_pool2d(Tensor input, SymInt[2] output_size) -> Tensor");
  m.def("_adaptive_avg_pool2d_backward(Tensor grad_output, SymInt[2] input_size) -> Tensor");
  m.def("adaptive_max_pool2d(Tensor input, SymInt[2] output_size) -> (Tensor, Tensor)");
  m.def("_adaptive_max_pool2d_backward(Tensor grad_output, Tensor offset, SymInt[2] input_size) -> Tensor");

  // 2-D cross-correlation of input (N, C, H, W) with weight (O, C / groups, kh, kw), plus bias (O,):
  // (N, O, OH, OW), channels-last when the input or the weight is (as torch). The backward op
  // returns (grad_input, grad_weight, grad_bias), each only where output_mask asks (else undefined).
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
      "int groups) -> Tensor");
  m.def(
      "_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // Recurrent layers (RNN tanh/relu, LSTM, GRU; csrc/rnn.h): input (T, B, I), hx (L * D, B, H), cx like
  // hx for LSTM (else None), weights in torch's _flat_weights order (w_ih, w_hh[, b_ih, b_hh] per layer and
  // direction). mode: 0 tanh, 1 relu, 2 lstm, 3 gru. dropout_masks: none, or num_layers - 1 tensors
  // (T, B, D * H) that multiply the inputs of layers 1.. (already scaled by 1 / (1 - p)).
  // Returns (output (T, B, D * H), hy, cy (LSTM; else empty), reserve (1-D, saved for backward)).
  m.def(
      "rnn(Tensor input, Tensor hx, Tensor? cx, Tensor[] weights, int mode, bool has_biases, int num_layers, "
      "bool bidirectional, Tensor[] dropout_masks) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of rnn: (grad_input (undefined unless need_input_grad), grad_hx, grad_cx (LSTM; else
  // empty), grad_weights in the order of weights). Missing output gradients count as zero.
  m.def(
      "_rnn_backward(Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, Tensor input, Tensor hx, Tensor? cx, "
      "Tensor[] weights, Tensor reserve, int mode, bool has_biases, int num_layers, bool bidirectional, "
      "Tensor[] dropout_masks, bool need_input_grad) -> (Tensor, Tensor, Tensor, Tensor[])");
}
