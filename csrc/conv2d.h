// conv2d: argument checks and output geometry, shared by the backends (the
// Python functional checks first with torch's messages; these guard the raw op).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace d2l_ext {

struct ConvGeometry {
  int64_t N, C, H, W;     // input
  int64_t O, kh, kw;      // weight (O, C / groups, kh, kw)
  int64_t OH, OW;         // output
  int64_t sh, sw, ph, pw, dh, dw, groups;
  int64_t Cg() const { return C / groups; }
  int64_t Og() const { return O / groups; }
  int64_t K() const { return Cg() * kh * kw; }  // rows of a group's im2col matrix
  int64_t L() const { return OH * OW; }          // its columns
  bool pointwise() const {  // 1x1, stride 1, no padding: the input is its own im2col matrix
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  }
};

inline bool conv_is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// torch's rule: the output is channels-last when the input or the weight is.
inline at::MemoryFormat conv_output_format(const at::Tensor& input, const at::Tensor& weight) {
  return conv_is_channels_last(input) || conv_is_channels_last(weight) ? at::MemoryFormat::ChannelsLast
                                                                       : at::MemoryFormat::Contiguous;
}

inline ConvGeometry check_conv2d_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be (N, C, H, W), got a ", input.dim(), "-D tensor");
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be (O, C / groups, kh, kw), got a ", weight.dim(),
              "-D tensor");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              ": stride, padding and dilation must have two values each");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, op, ": stride must be positive, got ", stride);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be non-negative, got ", padding);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, op, ": dilation must be positive, got ", dilation);
  TORCH_CHECK(groups > 0, op, ": groups must be positive, got ", groups);
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0 && weight.size(2) > 0 && weight.size(3) > 0, op,
              ": weight must have no zero-size dimension, got ", weight.sizes());
  TORCH_CHECK(weight.size(0) % groups == 0, op, ": weight's output channels (", weight.size(0),
              ") must be divisible by groups (", groups, ")");
  TORCH_CHECK(input.size(1) == weight.size(1) * groups, op, ": input has ", input.size(1),
              " channels, weight of size ", weight.sizes(), " with groups=", groups, " expects ",
              weight.size(1) * groups);
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0, op, ": input must have non-empty H and W, got ",
              input.sizes());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": weight must have input's dtype (",
              input.scalar_type(), "), got ", weight.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), op, ": weight must be on input's device (", input.device(),
              "), got ", weight.device());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must be (", weight.size(0),
                ",), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), op, ": bias must have input's dtype (",
                input.scalar_type(), "), got ", bias->scalar_type());
    TORCH_CHECK(bias->device() == input.device(), op, ": bias must be on input's device (", input.device(),
                "), got ", bias->device());
  }
  ConvGeometry g{};
  g.N = input.size(0), g.C = input.size(1), g.H = input.size(2), g.W = input.size(3);
  g.O = weight.size(0), g.kh = weight.size(2), g.kw = weight.size(3);
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1];
  g.dh = dilation[0], g.dw = dilation[1], g.groups = groups;
  const int64_t span_h = g.dh * (g.kh - 1) + 1, span_w = g.dw * (g.kw - 1) + 1;
  TORCH_CHECK(g.H + 2 * g.ph >= span_h && g.W + 2 * g.pw >= span_w, op, ": padded input (",
              g.H + 2 * g.ph, " x ", g.W + 2 * g.pw, ") is smaller than the dilated kernel (", span_h, " x ",
              span_w, ")");
  g.OH = (g.H + 2 * g.ph - span_h) / g.sh + 1;
  g.OW = (g.W + 2 * g.pw - span_w) / g.sw + 1;
  return g;
}

// The backward op's arguments: the forward's, and a grad_output shaped and
// typed like the forward's output.
inline ConvGeometry check_conv2d_backward_args(const char* op, const at::Tensor& grad_output,
                                               const at::Tensor& input, const at::Tensor& weight,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g = check_conv2d_args(op, input, weight, std::nullopt, stride, padding, dilation, groups);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.N && grad_output.size(1) == g.O &&
                  grad_output.size(2) == g.OH && grad_output.size(3) == g.OW,
              op, ": grad_output must be (", g.N, ", ", g.O, ", ", g.OH, ", ", g.OW, "), got ",
              grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op, ": grad_output must have input's dtype (",
              input.scalar_type(), "), got ", grad_output.scalar_type());
  return g;
}

}  // namespace d2l_ext
