// CUDA host side of d2l_ext::conv2d: checks (csrc/conv2d.h, shared with the
// CPU), then per chunk of images an im2col kernel and one batched matrix
// product per group through at::bmm (cuBLAS; float16/bfloat16 accumulate in
// float32 there). Backward: W^T x grad_output, then col2im (a gather, no
// atomics) for the input gradient; grad_output x col^T summed into the weight
// gradient with baddbmm; a sum for the bias.
//
// Unverified on hardware: written in a session without a GPU (see README).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include "../conv2d.h"
#include "common.h"
#include "conv2d_kernels.h"

namespace d2l_ext {
namespace {

// Images per chunk: the im2col matrix of a chunk stays under this many bytes.
constexpr int64_t kColumnBudgetBytes = int64_t{256} << 20;

int64_t chunk_images(const ConvGeometry& g, int64_t element_size) {
  const int64_t per_image = g.C * g.kh * g.kw * g.L() * element_size;
  return std::max<int64_t>(1, std::min<int64_t>(g.N, kColumnBudgetBytes / std::max<int64_t>(1, per_image)));
}

cuda::ConvKernelArgs kernel_args(const ConvGeometry& g, const at::Tensor& t, int64_t images) {
  return {cuda::dtype_of(t, "d2l_ext.conv2d"), g.C, g.H, g.W, g.kh, g.kw, g.OH, g.OW, g.sh, g.sw, g.ph, g.pw,
          g.dh, g.dw, images, cuda::multiprocessor_count() * 16};
}

// The chunk's columns, (groups, C/groups kh kw, images OH OW).
at::Tensor im2col(const ConvGeometry& g, const at::Tensor& input, int64_t n0, int64_t images) {
  at::Tensor col = at::empty({g.groups, g.K(), images * g.L()}, input.options());
  C10_CUDA_CHECK(cuda::launch_im2col(kernel_args(g, input, images), input[n0].const_data_ptr(), col.data_ptr(),
                                     c10::cuda::getCurrentCUDAStream()));
  return col;
}

void check_cuda(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, " (CUDA kernel): ", name, " must be a CUDA tensor, got ", t.device());
  cuda::dtype_of(t, op, name);
}

at::Tensor conv2d_cuda(const at::Tensor& input_, const at::Tensor& weight_, const std::optional<at::Tensor>& bias_,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "d2l_ext.conv2d";
  const ConvGeometry g = check_conv2d_args(op, input_, weight_, bias_, stride, padding, dilation, groups);
  check_cuda(op, input_, "input");
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::MemoryFormat fmt = conv_output_format(input_, weight_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({g.groups, g.Og(), g.K()});
  at::Tensor out = at::empty({g.N, g.O, g.OH, g.OW}, input.options());
  const int64_t chunk = chunk_images(g, input.element_size());
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t images = std::min(chunk, g.N - n0);
    const at::Tensor y = at::bmm(weight, im2col(g, input, n0, images));  // (groups, O/groups, images OH OW)
    out.narrow(0, n0, images)
        .view({images, g.groups, g.Og(), g.L()})
        .copy_(y.view({g.groups, g.Og(), images, g.L()}).permute({2, 0, 1, 3}));
  }
  if (bias_.has_value() && bias_->defined() && g.N > 0) out.add_(bias_->view({1, g.O, 1, 1}));
  return fmt == at::MemoryFormat::ChannelsLast ? out.contiguous(fmt) : out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  constexpr const char* op = "d2l_ext._conv2d_backward";
  const ConvGeometry g =
      check_conv2d_backward_args(op, grad_output_, input_, weight_, stride, padding, dilation, groups);
  check_cuda(op, input_, "input");
  check_cuda(op, grad_output_, "grad_output");
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor gy = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({g.groups, g.Og(), g.K()});
  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[2]) grad_bias = gy.sum({0, 2, 3});
  if (output_mask[0]) grad_input = at::empty_like(input);
  if (output_mask[1]) grad_weight = at::zeros({g.groups, g.Og(), g.K()}, weight.options());
  const int64_t chunk = chunk_images(g, input.element_size());
  for (int64_t n0 = 0; n0 < g.N && (output_mask[0] || output_mask[1]); n0 += chunk) {
    const int64_t images = std::min(chunk, g.N - n0);
    // (groups, O/groups, images OH OW), the layout of the forward's product
    const at::Tensor gy_c = gy.narrow(0, n0, images)
                                .view({images, g.groups, g.Og(), g.L()})
                                .permute({1, 2, 0, 3})
                                .reshape({g.groups, g.Og(), images * g.L()});
    if (output_mask[0]) {
      const at::Tensor gcol = at::bmm(weight.transpose(1, 2), gy_c).contiguous();
      C10_CUDA_CHECK(cuda::launch_col2im(kernel_args(g, input, images), gcol.const_data_ptr(),
                                         grad_input[n0].data_ptr(), c10::cuda::getCurrentCUDAStream()));
    }
    if (output_mask[1]) grad_weight.baddbmm_(gy_c, im2col(g, input, n0, images).transpose(1, 2));
  }
  if (grad_weight.defined()) grad_weight = grad_weight.view(weight_.sizes());
  if (grad_input.defined() && conv_is_channels_last(input_)) {
    grad_input = grad_input.contiguous(at::MemoryFormat::ChannelsLast);
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CUDA, m) {
  m.impl("conv2d", &conv2d_cuda);
  m.impl("_conv2d_backward", &conv2d_backward_cuda);
}

}  // namespace d2l_ext
