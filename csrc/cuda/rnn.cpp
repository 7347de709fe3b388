// CUDA host side of the recurrent layers: the shared time loop (csrc/rnn.cpp,
// GEMMs on cuBLAS through at::mm) with the element-wise steps of
// rnn_kernels.cu, launched on the current stream. float32, float64, float16
// and bfloat16 (the last two keep their gates and states in their own type and
// compute each step in float32).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../rnn.h"
#include "common.h"
#include "rnn_kernels.h"

namespace d2l_ext {
namespace {

const void* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr() : nullptr;
}

cuda::CellStepArgs step_args(RnnMode mode, const at::Tensor& like, int64_t B, int64_t H, int64_t go_stride) {
  return {cuda::dtype_of(like, "d2l_ext.rnn"), static_cast<cuda::CellKind>(mode), B, H, go_stride,
          cuda::multiprocessor_count() * 8};
}

void forward_cuda(const RnnStepForward& s) {
  const auto a = step_args(s.mode, s.h, s.h.size(0), s.h.size(1), 0);
  C10_CUDA_CHECK(cuda::launch_cell_forward(a, s.gates.data_ptr(), ptr_or_null(s.hidden), ptr_or_null(s.h_prev),
                                           ptr_or_null(s.c_prev), s.h.data_ptr(),
                                           s.extra.defined() ? s.extra.data_ptr() : nullptr,
                                           c10::cuda::getCurrentCUDAStream()));
}

void backward_cuda(const RnnStepBackward& s) {
  const int64_t go_stride = s.grad_out.defined() ? s.grad_out.stride(0) : 0;
  const auto a = step_args(s.mode, s.dh, s.dh.size(0), s.dh.size(1), go_stride);
  C10_CUDA_CHECK(cuda::launch_cell_backward(
      a, s.acts.const_data_ptr(), ptr_or_null(s.grad_out), s.dh.data_ptr(),
      s.dc.defined() ? s.dc.data_ptr() : nullptr, ptr_or_null(s.h_prev), ptr_or_null(s.c_prev),
      ptr_or_null(s.h), ptr_or_null(s.extra), s.d_gates.data_ptr(),
      s.d_hidden.defined() ? s.d_hidden.data_ptr() : nullptr, c10::cuda::getCurrentCUDAStream()));
}

constexpr RnnPointwise kCudaKernels{&forward_cuda, &backward_cuda};

void check_cuda(const at::Tensor& input) {
  TORCH_CHECK(input.is_cuda(), "d2l_ext.rnn (CUDA kernel): input must be a CUDA tensor, got ", input.device());
  cuda::dtype_of(input, "d2l_ext.rnn");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_cuda(
    const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx, at::TensorList weights,
    int64_t mode, bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks) {
  check_cuda(input);
  const c10::cuda::CUDAGuard guard(input.device());
  return rnn_forward(input, hx, cx, weights, mode, has_biases, num_layers, bidirectional, dropout_masks,
                     kCudaKernels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> rnn_backward_cuda(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const at::Tensor& input, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, at::TensorList weights, const at::Tensor& reserve, int64_t mode,
    bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks, bool need_input_grad) {
  check_cuda(input);
  const c10::cuda::CUDAGuard guard(input.device());
  return rnn_backward(grad_output, grad_hy, grad_cy, input, hx, cx, weights, reserve, mode, has_biases, num_layers,
                      bidirectional, dropout_masks, need_input_grad, kCudaKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CUDA, m) {
  m.impl("rnn", &rnn_cuda);
  m.impl("_rnn_backward", &rnn_backward_cuda);
}

}  // namespace d2l_ext
