// Window arithmetic and argument checks shared by the CPU and CUDA kernels of
// the 2-D pooling ops (max_pool2d, avg_pool2d, adaptive_avg_pool2d,
// adaptive_max_pool2d and their backwards), so that every backend reads the
// same windows and accepts the same arguments.
//
// Every pooling op here is separable in its window bounds: output (oh, ow)
// reads input rows base_h(oh) + t*dil_h for taps t in [lo_h(oh), hi_h(oh)),
// and columns likewise, where the tap range is already clipped to the input
// (padding is never read). A PoolAxis describes one axis, regular (kernel,
// stride, padding, dilation) or adaptive (torch's floor/ceil bounds).
//
// Max pooling remembers its winner as an offset inside the window, tap_h *
// taps_w + tap_w, stored as uint8 when the window has at most 256 taps (int32
// otherwise) instead of torch's int64 flat index.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#ifndef __CUDACC__
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <climits>

#include <utility>
#endif

namespace d2l_ext {

struct PoolAxis {
  int in = 0, out = 0;
  int kernel = 1, stride = 1, pad = 0, dilation = 1;
  bool adaptive = false;

  // Taps per window (an upper bound for adaptive windows): the row length of
  // the offset encoding.
  C10_HOST_DEVICE int taps() const {
    if (!adaptive) return kernel;
    return out > 0 ? (in + out - 1) / out + 1 : 1;
  }

  // Window of output o: taps t in [lo, hi) read input base + t * dilation.
  C10_HOST_DEVICE void window(int o, int& base, int& lo, int& hi) const {
    if (adaptive) {
      // torch: start = floor(o * in / out), end = ceil((o + 1) * in / out).
      base = static_cast<int>((static_cast<int64_t>(o) * in) / out);
      const int end = static_cast<int>(((static_cast<int64_t>(o) + 1) * in + out - 1) / out);
      lo = 0;
      hi = end - base;
      return;
    }
    base = o * stride - pad;
    lo = base < 0 ? (-base + dilation - 1) / dilation : 0;
    const int last = in - 1 - base;  // taps t with base + t * dilation <= in - 1
    hi = last < 0 ? 0 : last / dilation + 1;
    if (hi > kernel) hi = kernel;
    if (lo > hi) lo = hi;
  }

  // Average pooling's window size on this axis: with count_include_pad the
  // window clipped to the padded input (torch's pool_size), else the taps
  // that read the input. Average pooling has no dilation.
  C10_HOST_DEVICE int count(int o, bool include_pad) const {
    int base, lo, hi;
    window(o, base, lo, hi);
    if (adaptive || !include_pad) return hi - lo;
    const int end = base + kernel < in + pad ? base + kernel : in + pad;
    return end - base;
  }

  // Outputs whose window may contain input i: [first, last). Exact for
  // average and adaptive pooling; for dilated max pooling a superset (the
  // offset then decides).
  C10_HOST_DEVICE void outputs_touching(int i, int& first, int& last) const {
    if (adaptive) {
      first = static_cast<int>((static_cast<int64_t>(i) * out) / in);
      last = static_cast<int>(((static_cast<int64_t>(i) + 1) * out + in - 1) / in);
      if (last > out) last = out;
      return;
    }
    // o * stride - pad <= i  and  o * stride - pad + (kernel - 1) * dilation >= i
    const int reach = i + pad - (kernel - 1) * dilation;
    first = reach <= 0 ? 0 : (reach + stride - 1) / stride;
    last = (i + pad) / stride + 1;
    if (last > out) last = out;
    if (first > last) first = last;
  }
};

// torch's pooling_output_shape: floor (or ceil) of the strided window count,
// where a ceil-mode window must start inside the input or its left padding.
inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                                bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // floor division (span may be negative)
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// Offsets fit in uint8 when a window has at most 256 taps.
inline bool offsets_fit_uint8(const PoolAxis& h, const PoolAxis& w) {
  return static_cast<int64_t>(h.taps()) * w.taps() <= 256;
}

#ifndef __CUDACC__
// ------------------------------------------------------------ host-side checks
// (kept out of nvcc's sight: the .cu files only need the window maths above)

inline void check_pool_input(const char* op, const at::Tensor& input, bool allow_integer) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be (N, C, H, W), got a ", input.dim(), "-D tensor");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()) ||
                  (allow_integer && at::isIntegralType(input.scalar_type(), /*includeBool=*/false)),
              op, ": input must be a floating point", allow_integer ? " or integer" : "",
              " tensor, got ", input.scalar_type());
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0, op,
              ": input must have non-empty C, H and W (only the batch may be 0), got ", input.sizes());
  TORCH_CHECK(input.size(2) <= INT32_MAX && input.size(3) <= INT32_MAX, op,
              ": H and W must fit in int32, got ", input.sizes());
}

inline PoolAxis regular_axis(const char* op, const char* name, int64_t in, int64_t kernel, int64_t stride,
                             int64_t pad, int64_t dilation, bool ceil_mode, bool is_max) {
  TORCH_CHECK(kernel > 0, op, ": kernel_size must be > 0, got ", kernel, " (", name, ")");
  TORCH_CHECK(stride > 0, op, ": stride must be > 0, got ", stride, " (", name, ")");
  TORCH_CHECK(dilation > 0, op, ": dilation must be > 0, got ", dilation, " (", name, ")");
  TORCH_CHECK(pad >= 0, op, ": padding must be >= 0, got ", pad, " (", name, ")");
  const int64_t limit = is_max ? ((kernel - 1) * dilation + 1) / 2 : kernel / 2;
  TORCH_CHECK(pad <= limit, op, ": padding must be at most half of the ", is_max ? "dilated " : "",
              "kernel, got padding ", pad, " and kernel_size ", kernel, " (", name, ")");
  TORCH_CHECK(kernel <= INT32_MAX && stride <= INT32_MAX && dilation <= INT32_MAX && pad <= INT32_MAX, op,
              ": window parameters must fit in int32 (", name, ")");
  const int64_t out = pool_output_size(in, kernel, pad, stride, dilation, ceil_mode);
  TORCH_CHECK(out >= 1, op, ": output size ", out, " < 1 along ", name, " (input ", in, ", kernel ", kernel,
              ", stride ", stride, ", padding ", pad, ", dilation ", dilation, ")");
  PoolAxis a;
  a.in = static_cast<int>(in);
  a.out = static_cast<int>(out);
  a.kernel = static_cast<int>(kernel);
  a.stride = static_cast<int>(stride);
  a.pad = static_cast<int>(pad);
  a.dilation = static_cast<int>(dilation);
  return a;
}

// Axes of a regular pooling op on input (N, C, H, W), checked as torch checks
// them. is_max: max pooling, whose padding limit is half the dilated kernel
// (average pooling: half the kernel, and dilation must be 1).
inline std::pair<PoolAxis, PoolAxis> regular_pool_axes(const char* op, int64_t H, int64_t W,
                                                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                        at::IntArrayRef padding, at::IntArrayRef dilation,
                                                        bool ceil_mode, bool is_max) {
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              op, ": kernel_size, stride, padding and dilation must each have 2 values");
  return {regular_axis(op, "H", H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode,
                       is_max),
          regular_axis(op, "W", W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode,
                       is_max)};
}

// Axes of an adaptive pooling op on input (N, C, H, W).
inline std::pair<PoolAxis, PoolAxis> adaptive_pool_axes(const char* op, int64_t H, int64_t W,
                                                        at::IntArrayRef output_size) {
  TORCH_CHECK(output_size.size() == 2, op, ": output_size must have 2 values, got ", output_size.size());
  PoolAxis axes[2];
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(output_size[i] >= 0 && output_size[i] <= INT32_MAX, op, ": output_size must be >= 0, got ",
                output_size);
    axes[i].in = static_cast<int>(i == 0 ? H : W);
    axes[i].out = static_cast<int>(output_size[i]);
    axes[i].adaptive = true;
  }
  return {axes[0], axes[1]};
}

// A backward op's grad_output must be what the forward produced from an
// (N, C, input_size[0], input_size[1]) input.
inline void check_pool_backward(const char* op, const at::Tensor& grad_output, at::IntArrayRef input_size,
                                const PoolAxis& h, const PoolAxis& w) {
  TORCH_CHECK(grad_output.dim() == 4, op, ": grad_output must be (N, C, OH, OW), got ", grad_output.sizes());
  TORCH_CHECK(at::isFloatingType(grad_output.scalar_type()), op,
              ": grad_output must be floating point, got ", grad_output.scalar_type());
  TORCH_CHECK(grad_output.size(2) == h.out && grad_output.size(3) == w.out, op, ": grad_output is ",
              grad_output.sizes(), " but the forward on input size ", input_size, " gives (", h.out, ", ",
              w.out, ") outputs");
}

// Whether a 4-D tensor is laid out channels-last (and not also plain
// contiguous): then outputs and gradients keep that layout, as torch's do.
inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}
#endif

}  // namespace d2l_ext
