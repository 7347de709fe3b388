// Argument checks and shape bookkeeping shared by the CPU and CUDA kernels of
// d2l_ext::cross_entropy, so both backends accept exactly the same inputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace d2l_ext {

// torch's at::Reduction values.
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };

// input (N, C, d1, ..., dk) seen as N x C x S with S = d1 * ... * dk, so the
// class of example (n, s) is strided by S in memory (S == 1 for 2-D input).
struct CEShape {
  int64_t N, C, S;
  bool prob_target;  // target holds class probabilities, shaped like input
  int64_t rows() const { return N * S; }
};

inline CEShape check_cross_entropy_args(
    const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
    int64_t reduction, double label_smoothing) {
  TORCH_CHECK(input.dim() >= 2,
              "d2l_ext.cross_entropy: input must be (N, C, d1, ..., dk) with dim >= 2, got dim ",
              input.dim());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "d2l_ext.cross_entropy: input must be a floating point tensor, got ",
              input.scalar_type());
  TORCH_CHECK(reduction >= 0 && reduction <= 2,
              "d2l_ext.cross_entropy: reduction must be 0 (none), 1 (mean) or 2 (sum), got ",
              reduction);
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0,
              "d2l_ext.cross_entropy: label_smoothing must be between 0.0 and 1.0, got ",
              label_smoothing);
  TORCH_CHECK(target.device() == input.device(), "d2l_ext.cross_entropy: target is on ",
              target.device(), " but input is on ", input.device());
  CEShape shape{input.size(0), input.size(1), 1, false};
  for (int64_t d = 2; d < input.dim(); ++d) shape.S *= input.size(d);

  if (at::isFloatingType(target.scalar_type())) {
    shape.prob_target = true;
    TORCH_CHECK(target.scalar_type() == input.scalar_type(),
                "d2l_ext.cross_entropy: probability target must have input's dtype ",
                input.scalar_type(), ", got ", target.scalar_type());
    TORCH_CHECK(target.sizes() == input.sizes(),
                "d2l_ext.cross_entropy: probability target must have input's shape ",
                input.sizes(), ", got ", target.sizes());
  } else {
    TORCH_CHECK(target.scalar_type() == at::kLong,
                "d2l_ext.cross_entropy: class-index target must be int64, got ",
                target.scalar_type());
    bool ok = target.dim() == input.dim() - 1 && target.size(0) == input.size(0);
    for (int64_t d = 2; ok && d < input.dim(); ++d) ok = target.size(d - 1) == input.size(d);
    TORCH_CHECK(ok, "d2l_ext.cross_entropy: class-index target must have shape (N, d1, ..., dk) = ",
                "input's shape without dim 1; input is ", input.sizes(), ", target is ",
                target.sizes());
  }
  if (weight.has_value() && weight->defined()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == shape.C,
                "d2l_ext.cross_entropy: weight must have shape (C,) = (", shape.C, ",), got ",
                weight->sizes());
    TORCH_CHECK(weight->scalar_type() == input.scalar_type(),
                "d2l_ext.cross_entropy: weight must have input's dtype ", input.scalar_type(),
                ", got ", weight->scalar_type());
    TORCH_CHECK(weight->device() == input.device(), "d2l_ext.cross_entropy: weight is on ",
                weight->device(), " but input is on ", input.device());
  }
  return shape;
}

// Shape of per-example results: input's shape without the class dimension.
inline std::vector<int64_t> per_example_sizes(const at::Tensor& input) {
  std::vector<int64_t> sizes(input.sizes().begin(), input.sizes().end());
  sizes.erase(sizes.begin() + 1);
  return sizes;
}

// Accumulation dtype: float64 stays float64, every other float type uses float32.
inline at::ScalarType acc_type_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The arguments only _cross_entropy_backward has, checked against input (whose
// own checks are check_cross_entropy_args'). Returns whether the loss was per
// example (reduction none).
inline bool check_cross_entropy_backward_args(const at::Tensor& grad_loss, const at::Tensor& input,
                                              const at::Tensor& lse, const at::Tensor& total_weight,
                                              int64_t reduction) {
  const bool per_row = reduction == static_cast<int64_t>(Reduction::None);
  const auto rows_shape = per_example_sizes(input);
  const at::IntArrayRef rows(rows_shape);
  const auto acc = acc_type_of(input.scalar_type());
  TORCH_CHECK(per_row ? grad_loss.sizes() == rows : grad_loss.dim() == 0,
              "d2l_ext._cross_entropy_backward: grad_loss has shape ", grad_loss.sizes(),
              " but the loss has shape ", per_row ? rows : at::IntArrayRef());
  TORCH_CHECK(grad_loss.scalar_type() == input.scalar_type(),
              "d2l_ext._cross_entropy_backward: grad_loss must have input's dtype ", input.scalar_type(),
              ", got ", grad_loss.scalar_type());
  TORCH_CHECK(lse.sizes() == rows && lse.scalar_type() == acc, "d2l_ext._cross_entropy_backward: lse must be ",
              acc, " of shape ", rows, ", got ", lse.scalar_type(), " ", lse.sizes());
  TORCH_CHECK(total_weight.numel() == 1 && total_weight.scalar_type() == acc,
              "d2l_ext._cross_entropy_backward: total_weight must be one ", acc, " value");
  TORCH_CHECK(grad_loss.device() == input.device() && lse.device() == input.device() &&
                  total_weight.device() == input.device(),
              "d2l_ext._cross_entropy_backward: grad_loss, lse and total_weight must be on input's device ",
              input.device());
  return per_row;
}

}  // namespace d2l_ext
