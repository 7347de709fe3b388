// The pooling ops' entry points, shared by every backend: argument checks
// (as torch makes them), window axes, output layout and allocation. A backend
// (csrc/cpu/pooling.cpp, csrc/cuda/pooling.cpp) supplies only its kernels and
// registers PoolOps<Backend>::<op> for each schema of csrc/ops.cpp:
//
//   struct Backend {
//     static void check(const char* op, const at::Tensor& t, const char* name, PoolKind kind);
//     static void max_forward(const PoolArgs&, const at::Tensor& x, at::Tensor& y, at::Tensor& offset);
//     static void max_backward(const PoolArgs&, const at::Tensor& gy, const at::Tensor& offset, at::Tensor& gx);
//     static void avg_forward(const PoolArgs&, const at::Tensor& x, at::Tensor& y);
//     static void avg_backward(const PoolArgs&, const at::Tensor& gy, at::Tensor& gx);
//   };
//
// Kernels receive tensors already laid out as PoolArgs::channels_last says,
// outputs allocated, and never an empty tensor.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <climits>
#include <optional>
#include <tuple>
#include <utility>

#include "pooling.h"

namespace d2l_ext {

// What a backend is asked to run, for its dtype checks.
enum class PoolKind { MaxForward, AvgForward, AdaptiveForward, Backward };

struct PoolArgs {
  int64_t N = 0, C = 0;
  PoolAxis h, w;
  bool channels_last = false;
  bool include_pad = true;       // average pooling: count the zero padding
  int64_t divisor_override = 0;  // average pooling: 0 = none
  bool offset_u8 = true;         // max pooling: offsets are uint8 (else int32)
};


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
                             int64_t pad, int64_t dilation, bool ceil_mode) {
  TORCH_CHECK(kernel > 0, op, ": kernel_size must be > 0, got ", kernel, " (", name, ")");
  TORCH_CHECK(stride > 0, op, ": stride must be > 0, got ", stride, " (", name, ")");
  TORCH_CHECK(dilation > 0, op, ": dilation must be > 0, got ", dilation, " (", name, ")");
  TORCH_CHECK(pad >= 0, op, ": padding must be >= 0, got ", pad, " (", name, ")");
  // torch's limit, for max pooling too: half the kernel, whatever the dilation.
  TORCH_CHECK(pad <= kernel / 2, op, ": padding must be at most half of the ",
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
// them (average pooling passes dilation {1, 1}).
inline std::pair<PoolAxis, PoolAxis> regular_pool_axes(const char* op, int64_t H, int64_t W,
                                                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                        at::IntArrayRef padding, at::IntArrayRef dilation,
                                                        bool ceil_mode) {
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              op, ": kernel_size, stride, padding and dilation must each have 2 values");
  return {regular_axis(op, "H", H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode),
          regular_axis(op, "W", W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)};
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


// Whether a 4-D tensor is laid out channels-last: then outputs and gradients
// keep that layout, as torch's do.
inline bool is_channels_last(const at::Tensor& t) {
  // torch's own pooling asks suggest_memory_format: it reads the strides, so an
  // (N, C, 1, 1) tensor allocated channels-last still counts as channels-last.
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

inline at::MemoryFormat layout_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline std::pair<int64_t, int64_t> backward_input_size(const char* op, at::IntArrayRef input_size) {
  TORCH_CHECK(input_size.size() == 2 && input_size[0] > 0 && input_size[1] > 0, op,
              ": input_size must be the input's (H, W), both > 0, got ", input_size);
  return {input_size[0], input_size[1]};
}

template <typename Backend>
struct PoolOps {
  // ------------------------------------------------------------ shared bodies
  static std::tuple<at::Tensor, at::Tensor> max_forward(const at::Tensor& input_, const PoolAxis& h,
                                                        const PoolAxis& w) {
    PoolArgs a{input_.size(0), input_.size(1), h, w, is_channels_last(input_)};
    a.offset_u8 = offsets_fit_uint8(h, w);
    const auto fmt = layout_of(a.channels_last);
    const at::Tensor input = input_.contiguous(fmt);
    at::Tensor out = at::empty({a.N, a.C, h.out, w.out}, input.options().memory_format(fmt));
    at::Tensor off = at::empty({a.N, a.C, h.out, w.out},
                               input.options().dtype(a.offset_u8 ? at::kByte : at::kInt).memory_format(fmt));
    if (out.numel() > 0) Backend::max_forward(a, input, out, off);
    return {out, off};
  }

  static at::Tensor max_backward(const char* op, const at::Tensor& grad_output_, const at::Tensor& offset_,
                                 at::IntArrayRef input_size, const PoolAxis& h, const PoolAxis& w) {
    Backend::check(op, grad_output_, "grad_output", PoolKind::Backward);
    TORCH_CHECK(offset_.device() == grad_output_.device(), op, ": offset is on ", offset_.device(),
                " but grad_output is on ", grad_output_.device());
    check_pool_backward(op, grad_output_, input_size, h, w);
    TORCH_CHECK(offset_.sizes() == grad_output_.sizes(), op, ": offset ", offset_.sizes(),
                " must have grad_output's shape ", grad_output_.sizes());
    PoolArgs a{grad_output_.size(0), grad_output_.size(1), h, w, is_channels_last(offset_)};
    a.offset_u8 = offsets_fit_uint8(h, w);
    TORCH_CHECK(offset_.scalar_type() == (a.offset_u8 ? at::kByte : at::kInt), op, ": offset must be ",
                a.offset_u8 ? "uint8" : "int32", " for this window (as the forward returns it), got ",
                offset_.scalar_type());
    // The gradient takes the input's layout, which the forward gave the offsets.
    const auto fmt = layout_of(a.channels_last);
    const at::Tensor gy = grad_output_.contiguous(fmt);
    const at::Tensor off = offset_.contiguous(fmt);
    at::Tensor gx = at::empty({a.N, a.C, h.in, w.in}, gy.options().memory_format(fmt));
    if (gx.numel() == 0) return gx;
    if (gy.numel() == 0) return gx.zero_();
    Backend::max_backward(a, gy, off, gx);
    return gx;
  }

  static at::Tensor avg_forward(const at::Tensor& input_, const PoolAxis& h, const PoolAxis& w, bool include_pad,
                                int64_t divisor_override) {
    PoolArgs a{input_.size(0), input_.size(1), h, w, is_channels_last(input_), include_pad, divisor_override};
    const auto fmt = layout_of(a.channels_last);
    const at::Tensor input = input_.contiguous(fmt);
    at::Tensor out = at::empty({a.N, a.C, h.out, w.out}, input.options().memory_format(fmt));
    if (out.numel() > 0) Backend::avg_forward(a, input, out);
    return out;
  }

  static at::Tensor avg_backward(const char* op, const at::Tensor& grad_output_, at::IntArrayRef input_size,
                                 const PoolAxis& h, const PoolAxis& w, bool include_pad, int64_t divisor_override) {
    Backend::check(op, grad_output_, "grad_output", PoolKind::Backward);
    check_pool_backward(op, grad_output_, input_size, h, w);
    PoolArgs a{grad_output_.size(0), grad_output_.size(1), h, w, is_channels_last(grad_output_), include_pad,
               divisor_override};
    const auto fmt = layout_of(a.channels_last);
    const at::Tensor gy = grad_output_.contiguous(fmt);
    at::Tensor gx = at::empty({a.N, a.C, h.in, w.in}, gy.options().memory_format(fmt));
    if (gx.numel() == 0) return gx;
    if (gy.numel() == 0) return gx.zero_();
    Backend::avg_backward(a, gy, gx);
    return gx;
  }

  static void check_divisor(const char* op, const std::optional<int64_t>& divisor_override) {
    TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, op, ": divisor must be not zero");
  }

  // ------------------------------------------------------------------ the ops
  static std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool ceil_mode) {
    constexpr const char* op = "d2l_ext.max_pool2d";
    check_pool_input(op, input, /*allow_integer=*/true);
    Backend::check(op, input, "input", PoolKind::MaxForward);
    const auto [h, w] = regular_pool_axes(op, input.size(2), input.size(3), kernel_size, stride, padding, dilation,
                                          ceil_mode);
    return max_forward(input, h, w);
  }

  static at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& offset,
                                        at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                        bool ceil_mode) {
    constexpr const char* op = "d2l_ext._max_pool2d_backward";
    const auto [H, W] = backward_input_size(op, input_size);
    const auto [h, w] = regular_pool_axes(op, H, W, kernel_size, stride, padding, dilation, ceil_mode);
    return max_backward(op, grad_output, offset, input_size, h, w);
  }

  static at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                               std::optional<int64_t> divisor_override) {
    constexpr const char* op = "d2l_ext.avg_pool2d";
    check_pool_input(op, input, /*allow_integer=*/true);
    Backend::check(op, input, "input", PoolKind::AvgForward);
    check_divisor(op, divisor_override);
    const int64_t one[2] = {1, 1};
    const auto [h, w] = regular_pool_axes(op, input.size(2), input.size(3), kernel_size, stride, padding, one,
                                          ceil_mode);
    return avg_forward(input, h, w, count_include_pad, divisor_override.value_or(0));
  }

  static at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                        std::optional<int64_t> divisor_override) {
    constexpr const char* op = "d2l_ext._avg_pool2d_backward";
    check_divisor(op, divisor_override);
    const auto [H, W] = backward_input_size(op, input_size);
    const int64_t one[2] = {1, 1};
    const auto [h, w] = regular_pool_axes(op, H, W, kernel_size, stride, padding, one, ceil_mode);
    return avg_backward(op, grad_output, input_size, h, w, count_include_pad, divisor_override.value_or(0));
  }

  static at::Tensor adaptive_avg_pool2d(const at::Tensor& input, at::IntArrayRef output_size) {
    constexpr const char* op = "d2l_ext.adaptive_avg_pool2d";
    check_pool_input(op, input, /*allow_integer=*/false);
    Backend::check(op, input, "input", PoolKind::AdaptiveForward);
    const auto [h, w] = adaptive_pool_axes(op, input.size(2), input.size(3), output_size);
    return avg_forward(input, h, w, false, 0);
  }

  static at::Tensor adaptive_avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size) {
    constexpr const char* op = "d2l_ext._adaptive_avg_pool2d_backward";
    const auto [H, W] = backward_input_size(op, input_size);
    TORCH_CHECK(grad_output.dim() == 4, op, ": grad_output must be (N, C, OH, OW), got ", grad_output.sizes());
    const int64_t out[2] = {grad_output.size(2), grad_output.size(3)};
    const auto [h, w] = adaptive_pool_axes(op, H, W, out);
    return avg_backward(op, grad_output, input_size, h, w, false, 0);
  }

  static std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d(const at::Tensor& input,
                                                                at::IntArrayRef output_size) {
    constexpr const char* op = "d2l_ext.adaptive_max_pool2d";
    check_pool_input(op, input, /*allow_integer=*/false);
    Backend::check(op, input, "input", PoolKind::AdaptiveForward);
    const auto [h, w] = adaptive_pool_axes(op, input.size(2), input.size(3), output_size);
    return max_forward(input, h, w);
  }

  static at::Tensor adaptive_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& offset,
                                                 at::IntArrayRef input_size) {
    constexpr const char* op = "d2l_ext._adaptive_max_pool2d_backward";
    const auto [H, W] = backward_input_size(op, input_size);
    TORCH_CHECK(grad_output.dim() == 4, op, ": grad_output must be (N, C, OH, OW), got ", grad_output.sizes());
    const int64_t out[2] = {grad_output.size(2), grad_output.size(3)};
    const auto [h, w] = adaptive_pool_axes(op, H, W, out);
    return max_backward(op, grad_output, offset, input_size, h, w);
  }
};

// Registers a backend's pooling kernels: D2L_EXT_REGISTER_POOLING(m, CpuPool).
#define D2L_EXT_REGISTER_POOLING(m, Backend)                                                  \
  do {                                                                                        \
    (m).impl("max_pool2d", &PoolOps<Backend>::max_pool2d);                                    \
    (m).impl("_max_pool2d_backward", &PoolOps<Backend>::max_pool2d_backward);                 \
    (m).impl("avg_pool2d", &PoolOps<Backend>::avg_pool2d);                                    \
    (m).impl("_avg_pool2d_backward", &PoolOps<Backend>::avg_pool2d_backward);                 \
    (m).impl("adaptive_avg_pool2d", &PoolOps<Backend>::adaptive_avg_pool2d);                  \
    (m).impl("_adaptive_avg_pool2d_backward", &PoolOps<Backend>::adaptive_avg_pool2d_backward); \
    (m).impl("adaptive_max_pool2d", &PoolOps<Backend>::adaptive_max_pool2d);                  \
    (m).impl("_adaptive_max_pool2d_backward", &PoolOps<Backend>::adaptive_max_pool2d_backward); \
  } while (0)

}  // namespace d2l_ext
