// The one schema block of d2l_ext: every op the library offers is declared
// here, and each backend file (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu) registers
// its kernels for these names with TORCH_LIBRARY_IMPL. Autograd and fake
// (meta) kernels are registered from Python in d2l_ext/_ops.py.
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
}
