// CUDA host side of d2l_ext::cross_entropy: argument checks, allocation, the
// out-of-range target check and the dispatcher registration. The kernels live
// in cross_entropy_kernels.cu behind the launchers of cross_entropy_kernels.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "../cross_entropy.h"
#include "cross_entropy_kernels.h"

namespace d2l_ext {
namespace {

// A few waves of blocks; the kernels loop over the remaining rows.
int max_blocks() { return cuda::multiprocessor_count() * 32; }

// Skipping the target check saves a device-to-host sync per forward; then a
// bad class index makes that row's loss NaN instead of raising.
bool check_targets_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("D2L_EXT_CUDA_CHECK_TARGETS");
    return !(v && (std::string(v) == "0" || std::string(v) == "false"));
  }();
  return enabled;
}

struct Prepared {
  at::Tensor input, target, weight, weight_sum;
  cuda::CEKernelArgs args;
};

Prepared prepare(const CEShape& sh, const at::Tensor& input, const at::Tensor& target,
                 const c10::optional<at::Tensor>& weight, int64_t ignore_index, double label_smoothing,
                 const char* op) {
  TORCH_CHECK(input.is_cuda(), op, " (CUDA kernel): input must be a CUDA tensor");
  Prepared r{input.contiguous(), target.contiguous(), at::Tensor(), at::Tensor(), {}};
  if (weight.has_value() && weight->defined()) {
    r.weight = weight->contiguous();
    // Only the smoothed index-target loss needs sum_c w_c; keep it on the device.
    if (!sh.prob_target && label_smoothing > 0.0)
      r.weight_sum = r.weight.sum(acc_type_of(input.scalar_type()));
  }
  cuda::CEKernelArgs& a = r.args;
  a.dtype = cuda::dtype_of(r.input, op);
  a.input = r.input.const_data_ptr();
  a.target = sh.prob_target ? nullptr : r.target.const_data_ptr<int64_t>();
  a.probs = sh.prob_target ? r.target.const_data_ptr() : nullptr;
  a.weight = r.weight.defined() ? r.weight.const_data_ptr() : nullptr;
  a.weight_sum = r.weight_sum.defined() ? r.weight_sum.const_data_ptr() : nullptr;
  a.N = sh.N;
  a.C = sh.C;
  a.S = sh.S;
  a.ignore_index = ignore_index;
  a.label_smoothing = label_smoothing;
  a.max_blocks = max_blocks();
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_cuda(
    const at::Tensor& input_, const at::Tensor& target_, const c10::optional<at::Tensor>& weight_,
    int64_t reduction, int64_t ignore_index, double label_smoothing) {
  const CEShape sh = check_cross_entropy_args(input_, target_, weight_, reduction, label_smoothing);
  const c10::cuda::CUDAGuard guard(input_.device());
  const Prepared in = prepare(sh, input_, target_, weight_, ignore_index, label_smoothing,
                              "d2l_ext.cross_entropy");
  const auto rows_shape = per_example_sizes(in.input);
  const auto acc_opts = in.input.options().dtype(acc_type_of(in.input.scalar_type()));
  const bool per_row = reduction == static_cast<int64_t>(Reduction::None);

  at::Tensor lse = at::empty(rows_shape, acc_opts);
  at::Tensor row_weight = at::empty(rows_shape, acc_opts);
  at::Tensor loss = per_row ? at::empty(rows_shape, in.input.options()) : at::empty({}, in.input.options());
  at::Tensor loss_rows = per_row ? at::Tensor() : at::empty(rows_shape, acc_opts);
  at::Tensor total_weight = at::empty({}, acc_opts);
  const bool check = !sh.prob_target && check_targets_enabled() && sh.rows() > 0;
  at::Tensor err = check ? at::zeros({2}, in.input.options().dtype(at::kLong)) : at::Tensor();

  C10_CUDA_CHECK(cuda::launch_cross_entropy_forward(
      in.args, per_row ? nullptr : loss_rows.data_ptr(), per_row ? loss.data_ptr() : nullptr,
      row_weight.data_ptr(), lse.data_ptr(), check ? err.data_ptr<int64_t>() : nullptr, reduction,
      per_row ? nullptr : loss.data_ptr(), total_weight.data_ptr(), c10::cuda::getCurrentCUDAStream()));

  if (check) {
    const at::Tensor e = err.cpu();  // waits for the kernels
    const int64_t* ev = e.const_data_ptr<int64_t>();
    TORCH_CHECK_INDEX(ev[0] == 0, "d2l_ext.cross_entropy: target ", ev[1], " is out of bounds for ", sh.C,
                      " classes (ignore_index=", ignore_index, ")");
  }
  return {loss, lse, total_weight};
}

at::Tensor cross_entropy_backward_cuda(const at::Tensor& grad_loss_, const at::Tensor& input_,
                                       const at::Tensor& target_, const c10::optional<at::Tensor>& weight_,
                                       const at::Tensor& lse_, const at::Tensor& total_weight,
                                       int64_t reduction, int64_t ignore_index, double label_smoothing) {
  const CEShape sh = check_cross_entropy_args(input_, target_, weight_, reduction, label_smoothing);
  const bool per_row = check_cross_entropy_backward_args(grad_loss_, input_, lse_, total_weight, reduction);
  const c10::cuda::CUDAGuard guard(input_.device());
  const Prepared in = prepare(sh, input_, target_, weight_, ignore_index, label_smoothing,
                              "d2l_ext._cross_entropy_backward");
  const at::Tensor lse = lse_.contiguous();
  const at::Tensor grad_loss = grad_loss_.contiguous();
  at::Tensor grad = at::empty_like(in.input, at::MemoryFormat::Contiguous);
  if (sh.rows() == 0 || sh.C == 0) return grad;
  const bool mean = reduction == static_cast<int64_t>(Reduction::Mean);
  C10_CUDA_CHECK(cuda::launch_cross_entropy_backward(
      in.args, lse.const_data_ptr(), grad_loss.const_data_ptr(), per_row,
      mean ? total_weight.const_data_ptr() : nullptr, grad.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CUDA, m) {
  m.impl("cross_entropy", &cross_entropy_cuda);
  m.impl("_cross_entropy_backward", &cross_entropy_backward_cuda);
}

}  // namespace d2l_ext
