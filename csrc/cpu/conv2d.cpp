// CPU kernels of conv2d (2-D cross-correlation) and its backward.
//
// The im2col form of the book's corr2d: for one image and one group, every
// window of the input becomes a column of a (C/groups * kh * kw) x (OH * OW)
// matrix, and the group's output channels are one matrix product of the
// weights (O/groups x C/groups*kh*kw) with it, done by at::mm (BLAS). A 1x1
// convolution with stride 1 and no padding skips the copy: the input already
// is that matrix.
//
// Work is split over images (at::parallel_for); each task owns one column
// buffer, reused image after image, so the buffer (one image's windows) stays
// in cache between its fill and the product. Backward:
//   * input gradient: columns = W^T x grad_output per image, then col2im adds
//     every column back onto the pixels its window read;
//   * weight gradient: grad_output x columns^T summed over images, into one
//     accumulator per thread (no two threads write the same memory), then
//     summed;
//   * bias gradient: grad_output summed over N, OH, OW.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <tuple>

#include "../conv2d.h"

namespace d2l_ext {
namespace {

// at::parallel_for's worker threads do not inherit the caller's
// below-autograd dispatch state, so each task sets it again before its at::mm
// calls (else autograd would see the op's inputs, which may require grad).
using BelowAutograd = at::AutoDispatchBelowADInplaceOrView;

// Outputs ox in [lo, hi) whose tap at input column offset x0 (ix = ox * s + x0)
// lands inside [0, size); the others read padding.
inline void valid_range(int64_t x0, int64_t s, int64_t size, int64_t n_out, int64_t& lo, int64_t& hi) {
  lo = x0 >= 0 ? 0 : (-x0 + s - 1) / s;
  hi = size - x0 <= 0 ? 0 : (size - x0 + s - 1) / s;
  lo = std::min(lo, n_out);
  hi = std::max(std::min(hi, n_out), lo);
}

// x: one group of one image, (C/groups, H, W); col: (K, OH * OW).
template <typename T>
void im2col(const ConvGeometry& g, const T* x, T* col) {
  const int64_t L = g.L();
  for (int64_t c = 0; c < g.Cg(); ++c) {
    const T* plane = x + c * g.H * g.W;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        T* row = col + ((c * g.kh + ki) * g.kw + kj) * L;
        const int64_t x0 = kj * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(x0, g.sw, g.W, g.OW, lo, hi);
        for (int64_t oy = 0; oy < g.OH; ++oy) {
          T* dst = row + oy * g.OW;
          const int64_t iy = oy * g.sh - g.ph + ki * g.dh;
          if (iy < 0 || iy >= g.H) {
            std::fill(dst, dst + g.OW, T(0));
            continue;
          }
          const T* src = plane + iy * g.W + x0;
          std::fill(dst, dst + lo, T(0));
          if (g.sw == 1) {
            std::memcpy(dst + lo, src + lo, sizeof(T) * (hi - lo));
          } else {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] = src[ox * g.sw];
          }
          std::fill(dst + hi, dst + g.OW, T(0));
        }
      }
    }
  }
}

// The adjoint of im2col: gx (C/groups, H, W) += every column entry at the
// pixel it was read from (padding entries are dropped). gx must start zeroed.
template <typename T>
void col2im(const ConvGeometry& g, const T* col, T* gx) {
  const int64_t L = g.L();
  for (int64_t c = 0; c < g.Cg(); ++c) {
    T* plane = gx + c * g.H * g.W;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const T* row = col + ((c * g.kh + ki) * g.kw + kj) * L;
        const int64_t x0 = kj * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(x0, g.sw, g.W, g.OW, lo, hi);
        for (int64_t oy = 0; oy < g.OH; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ki * g.dh;
          if (iy < 0 || iy >= g.H) continue;
          const T* src = row + oy * g.OW;
          T* dst = plane + iy * g.W + x0;
          if (g.sw == 1) {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] += src[ox];
          } else {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox * g.sw] += src[ox];
          }
        }
      }
    }
  }
}

// Images per task: enough that a task's at::mm calls are not dominated by
// their dispatch, few enough that both threads get work.
int64_t image_grain(const ConvGeometry& g) {
  const int64_t flops = 2 * g.O * g.K() * g.L();
  return std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, flops));
}

void check_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, " (CPU kernel): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64 for the CPU kernel, got ", t.scalar_type());
}

at::Tensor conv2d_cpu(const at::Tensor& input_, const at::Tensor& weight_, const std::optional<at::Tensor>& bias_,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "d2l_ext.conv2d";
  const ConvGeometry g = check_conv2d_args(op, input_, weight_, bias_, stride, padding, dilation, groups);
  check_cpu(op, input_, "input");
  check_cpu(op, weight_, "weight");
  const at::MemoryFormat fmt = conv_output_format(input_, weight_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({g.O, g.K()});
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.N, g.O, g.OH, g.OW}, input.options());
  if (g.N > 0) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2l_ext_conv2d_cpu", [&] {
      at::parallel_for(0, g.N, image_grain(g), [&](int64_t begin, int64_t end) {
        const BelowAutograd below;
        at::Tensor col = g.pointwise() ? at::Tensor() : at::empty({g.K(), g.L()}, input.options());
        for (int64_t n = begin; n < end; ++n) {
          const at::Tensor out_n = out[n].view({g.O, g.L()});
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            at::Tensor cols;
            if (g.pointwise()) {
              cols = input[n].view({g.C, g.L()}).narrow(0, grp * g.Cg(), g.Cg());
            } else {
              im2col<scalar_t>(g, input.const_data_ptr<scalar_t>() + (n * g.C + grp * g.Cg()) * g.H * g.W,
                               col.data_ptr<scalar_t>());
              cols = col;
            }
            at::Tensor out_g = out_n.narrow(0, grp * g.Og(), g.Og());
            const at::Tensor w_g = weight.narrow(0, grp * g.Og(), g.Og());
            if (has_bias) {
              at::addmm_out(out_g, bias.narrow(0, grp * g.Og(), g.Og()).unsqueeze(1), w_g, cols);
            } else {
              at::mm_out(out_g, w_g, cols);
            }
          }
        }
      });
    });
  }
  return fmt == at::MemoryFormat::ChannelsLast ? out.contiguous(fmt) : out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  constexpr const char* op = "d2l_ext._conv2d_backward";
  const ConvGeometry g = check_conv2d_args(op, input_, weight_, std::nullopt, stride, padding, dilation, groups);
  check_cpu(op, input_, "input");
  check_cpu(op, weight_, "weight");
  check_cpu(op, grad_output_, "grad_output");
  TORCH_CHECK(grad_output_.dim() == 4 && grad_output_.size(0) == g.N && grad_output_.size(1) == g.O &&
                  grad_output_.size(2) == g.OH && grad_output_.size(3) == g.OW,
              op, ": grad_output must be (", g.N, ", ", g.O, ", ", g.OH, ", ", g.OW, "), got ",
              grad_output_.sizes());
  TORCH_CHECK(grad_output_.scalar_type() == input_.scalar_type(), op, ": grad_output must have input's dtype (",
              input_.scalar_type(), "), got ", grad_output_.scalar_type());
  const at::Tensor gy = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({g.O, g.K()});
  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[2]) grad_bias = gy.sum({0, 2, 3});
  if (output_mask[0]) grad_input = at::zeros_like(input);
  if (output_mask[1]) grad_weight = at::zeros({g.O, g.K()}, weight.options());
  if (g.N > 0 && (output_mask[0] || output_mask[1])) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2l_ext_conv2d_backward_cpu", [&] {
      if (output_mask[0]) {
        at::parallel_for(0, g.N, image_grain(g), [&](int64_t begin, int64_t end) {
        const BelowAutograd below;
          at::Tensor col = g.pointwise() ? at::Tensor() : at::empty({g.K(), g.L()}, input.options());
          for (int64_t n = begin; n < end; ++n) {
            const at::Tensor gy_n = gy[n].view({g.O, g.L()});
            for (int64_t grp = 0; grp < g.groups; ++grp) {
              const at::Tensor w_g = weight.narrow(0, grp * g.Og(), g.Og());
              const at::Tensor gy_g = gy_n.narrow(0, grp * g.Og(), g.Og());
              if (g.pointwise()) {
                at::Tensor gx_g = grad_input[n].view({g.C, g.L()}).narrow(0, grp * g.Cg(), g.Cg());
                at::mm_out(gx_g, w_g.t(), gy_g);
              } else {
                at::mm_out(col, w_g.t(), gy_g);
                col2im<scalar_t>(g, col.const_data_ptr<scalar_t>(),
                                 grad_input.data_ptr<scalar_t>() + (n * g.C + grp * g.Cg()) * g.H * g.W);
              }
            }
          }
        });
      }
      if (output_mask[1]) {
        // One accumulator per thread: at::parallel_for runs each chunk on one
        // thread, whose number indexes its slice.
        const int64_t threads = at::get_num_threads();
        at::Tensor partial = at::zeros({threads, g.O, g.K()}, weight.options());
        at::parallel_for(0, g.N, image_grain(g), [&](int64_t begin, int64_t end) {
        const BelowAutograd below;
          at::Tensor acc = partial[at::get_thread_num()];
          at::Tensor col = g.pointwise() ? at::Tensor() : at::empty({g.K(), g.L()}, input.options());
          for (int64_t n = begin; n < end; ++n) {
            const at::Tensor gy_n = gy[n].view({g.O, g.L()});
            for (int64_t grp = 0; grp < g.groups; ++grp) {
              at::Tensor cols;
              if (g.pointwise()) {
                cols = input[n].view({g.C, g.L()}).narrow(0, grp * g.Cg(), g.Cg());
              } else {
                im2col<scalar_t>(g, input.const_data_ptr<scalar_t>() + (n * g.C + grp * g.Cg()) * g.H * g.W,
                                 col.data_ptr<scalar_t>());
                cols = col;
              }
              at::Tensor acc_g = acc.narrow(0, grp * g.Og(), g.Og());
              acc_g.addmm_(gy_n.narrow(0, grp * g.Og(), g.Og()), cols.t());
            }
          }
        });
        grad_weight = partial.sum(0);
      }
    });
  }
  if (grad_weight.defined()) grad_weight = grad_weight.view(weight_.sizes());
  if (grad_input.defined() && conv_is_channels_last(input_)) {
    grad_input = grad_input.contiguous(at::MemoryFormat::ChannelsLast);
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CPU, m) {
  m.impl("conv2d", &conv2d_cpu);
  m.impl("_conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace d2l_ext
