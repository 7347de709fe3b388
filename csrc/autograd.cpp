// Autograd for the forward ops (cross_entropy, pooling, conv2d, rnn), in C++
// (TORCH_LIBRARY_IMPL(d2l_ext, Autograd)), as torchvision does for its ops
// (torchvision/csrc/ops/autograd).
//
// Why not torch.library.register_autograd from Python, as extension-cpp does:
// that path costs ~50 us of Python per call (argument defaults, a Python
// autograd.Function, a redispatch), measured on a (1, 1, 4, 4) input on the
// 2-core CPU machine; on a GPU that is several times the kernels' own time
// (benchmarks/NOTES.md). Here a call is dispatcher -> this kernel -> backend
// kernel, with no Python in between.
//
// Each forward saves what its backward op needs (max: the winners' offsets;
// average: nothing but sizes) and its backward calls the op's `_..._backward`.
// In ordinary backward that call goes straight to the backend kernel; when a
// graph of the gradient is being recorded (create_graph=True), it goes through
// the dispatcher, where d2l_ext/_ops.py registers the backward ops' own
// derivatives (double backward).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "pooling_ops.h"

namespace d2l_ext {
namespace {

using at::IntArrayRef;
using c10::SymIntArrayRef;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The handles, looked up once (the schemas are registered when the library loads).
using Window = IntArrayRef;
using MaxPoolSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, Window, Window, Window, Window, bool);
using MaxPoolBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, SymIntArrayRef, Window, Window, Window,
                                      Window, bool);
using AvgPoolSig = at::Tensor(const at::Tensor&, Window, Window, Window, bool, bool, std::optional<int64_t>);
using AvgPoolBackwardSig = at::Tensor(const at::Tensor&, SymIntArrayRef, Window, Window, Window, bool, bool,
                                      std::optional<int64_t>);
using AdaptiveAvgSig = at::Tensor(const at::Tensor&, SymIntArrayRef);
using AdaptiveMaxSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, SymIntArrayRef);
using AdaptiveMaxBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, SymIntArrayRef);
using CrossEntropySig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                         const std::optional<at::Tensor>&, int64_t,
                                                                         int64_t, double);
using CrossEntropyBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                                           int64_t, int64_t, double);

#define D2L_EXT_OP(fn, name, Sig)                                  \
  const c10::TypedOperatorHandle<Sig>& fn() {                      \
    static const auto handle = find_op<Sig>("d2l_ext::" name);     \
    return handle;                                                 \
  }
D2L_EXT_OP(max_pool2d_op, "max_pool2d", MaxPoolSig)
D2L_EXT_OP(max_pool2d_backward_op, "_max_pool2d_backward", MaxPoolBackwardSig)
D2L_EXT_OP(avg_pool2d_op, "avg_pool2d", AvgPoolSig)
D2L_EXT_OP(avg_pool2d_backward_op, "_avg_pool2d_backward", AvgPoolBackwardSig)
D2L_EXT_OP(adaptive_avg_pool2d_op, "adaptive_avg_pool2d", AdaptiveAvgSig)
D2L_EXT_OP(adaptive_avg_pool2d_backward_op, "_adaptive_avg_pool2d_backward", AdaptiveAvgSig)
D2L_EXT_OP(adaptive_max_pool2d_op, "adaptive_max_pool2d", AdaptiveMaxSig)
D2L_EXT_OP(adaptive_max_pool2d_backward_op, "_adaptive_max_pool2d_backward", AdaptiveMaxBackwardSig)
using Conv2dSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, Window, Window,
                             Window, int64_t);
using Conv2dBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                          const at::Tensor&, Window, Window,
                                                                          Window, int64_t, std::array<bool, 3>);
D2L_EXT_OP(conv2d_op, "conv2d", Conv2dSig)
D2L_EXT_OP(conv2d_backward_op, "_conv2d_backward", Conv2dBackwardSig)
D2L_EXT_OP(cross_entropy_op, "cross_entropy", CrossEntropySig)
D2L_EXT_OP(cross_entropy_backward_op, "_cross_entropy_backward", CrossEntropyBackwardSig)
using RnnSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, at::TensorList, int64_t, bool, int64_t,
    bool, at::TensorList);
using RnnBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>(
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, at::TensorList, const at::Tensor&,
    int64_t, bool, int64_t, bool, at::TensorList, bool);
D2L_EXT_OP(rnn_op, "rnn", RnnSig)
D2L_EXT_OP(rnn_backward_op, "_rnn_backward", RnnBackwardSig)
#undef D2L_EXT_OP

// Runs a backward op: below autograd unless a graph of the gradient is being
// recorded (then the backward op's own autograd kernel must see the call).
template <typename F>
at::Tensor call_backward(F&& f) {
  if (at::GradMode::is_enabled()) return f();
  at::AutoDispatchBelowADInplaceOrView guard;
  return f();
}

void save_input_size(AutogradContext* ctx, const at::Tensor& input) {
  ctx->saved_data["h"] = input.sym_size(2);
  ctx->saved_data["w"] = input.sym_size(3);
}

std::array<c10::SymInt, 2> input_size(AutogradContext* ctx) {
  return {ctx->saved_data["h"].toSymInt(), ctx->saved_data["w"].toSymInt()};
}

std::vector<int64_t> ints(AutogradContext* ctx, const char* key) { return ctx->saved_data[key].toIntVector(); }

void save_window(AutogradContext* ctx, Window kernel, Window stride, Window padding) {
  ctx->saved_data["kernel"] = kernel.vec();
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
}

// The backward kernels lay the input gradient out as grad_output; torch's
// follows the input, so grad_output is brought to the input's layout first.
at::Tensor as_layout(const at::Tensor& t, bool channels_last) {
  if (t.dim() != 4 || is_channels_last(t) == channels_last) return t;
  return t.clone(layout_of(channels_last));
}

// backward returns one gradient per argument of forward: the input's, then none.
variable_list input_grad_only(at::Tensor grad_input, size_t n_args) {
  variable_list grads(n_args);
  grads[0] = std::move(grad_input);
  return grads;
}

class MaxPool2d : public torch::autograd::Function<MaxPool2d> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, Window kernel, Window stride,
                               Window padding, Window dilation, bool ceil_mode) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, offset] = max_pool2d_op().call(input, kernel, stride, padding, dilation, ceil_mode);
    ctx->mark_non_differentiable({offset});
    ctx->set_materialize_grads(false);  // no zeros made for offset's (never used) gradient
    ctx->save_for_backward({offset});
    save_input_size(ctx, input);
    save_window(ctx, kernel, stride, padding);
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["ceil_mode"] = ceil_mode;
    return {out, offset};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(6);
    const at::Tensor offset = ctx->get_saved_variables()[0];
    const auto size = input_size(ctx);
    const auto kernel = ints(ctx, "kernel"), stride = ints(ctx, "stride"), padding = ints(ctx, "padding"),
               dilation = ints(ctx, "dilation");
    const bool ceil_mode = ctx->saved_data["ceil_mode"].toBool();
    return input_grad_only(call_backward([&] {
                             return max_pool2d_backward_op().call(grads[0], offset, size, kernel, stride, padding,
                                                                  dilation, ceil_mode);
                           }),
                           6);
  }
};

class AvgPool2d : public torch::autograd::Function<AvgPool2d> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, Window kernel, Window stride,
                            Window padding, bool ceil_mode, bool count_include_pad,
                            std::optional<int64_t> divisor_override) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out =
        avg_pool2d_op().call(input, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override);
    save_input_size(ctx, input);
    save_window(ctx, kernel, stride, padding);
    ctx->saved_data["ceil_mode"] = ceil_mode;
    ctx->saved_data["count_include_pad"] = count_include_pad;
    ctx->saved_data["divisor_override"] = divisor_override;
    ctx->saved_data["channels_last"] = is_channels_last(input);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto size = input_size(ctx);
    const auto kernel = ints(ctx, "kernel"), stride = ints(ctx, "stride"), padding = ints(ctx, "padding");
    const bool ceil_mode = ctx->saved_data["ceil_mode"].toBool();
    const bool include_pad = ctx->saved_data["count_include_pad"].toBool();
    const auto divisor = ctx->saved_data["divisor_override"].toOptional<int64_t>();
    const at::Tensor g = as_layout(grads[0], ctx->saved_data["channels_last"].toBool());
    return input_grad_only(call_backward([&] {
                             return avg_pool2d_backward_op().call(g, size, kernel, stride, padding, ceil_mode,
                                                                  include_pad, divisor);
                           }),
                           7);
  }
};

class AdaptiveAvgPool2d : public torch::autograd::Function<AdaptiveAvgPool2d> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, SymIntArrayRef output_size) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = adaptive_avg_pool2d_op().call(input, output_size);
    save_input_size(ctx, input);
    // torch computes global average pooling as a mean, whose gradient is contiguous.
    const bool global = output_size.size() == 2 && output_size[0] == 1 && output_size[1] == 1;
    ctx->saved_data["channels_last"] = is_channels_last(input) && !global;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto size = input_size(ctx);
    const at::Tensor g = as_layout(grads[0], ctx->saved_data["channels_last"].toBool());
    return input_grad_only(call_backward([&] { return adaptive_avg_pool2d_backward_op().call(g, size); }), 2);
  }
};

class AdaptiveMaxPool2d : public torch::autograd::Function<AdaptiveMaxPool2d> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, SymIntArrayRef output_size) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, offset] = adaptive_max_pool2d_op().call(input, output_size);
    ctx->mark_non_differentiable({offset});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({offset});
    save_input_size(ctx, input);
    return {out, offset};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(2);
    const at::Tensor offset = ctx->get_saved_variables()[0];
    const auto size = input_size(ctx);
    return input_grad_only(
        call_backward([&] { return adaptive_max_pool2d_backward_op().call(grads[0], offset, size); }), 2);
  }
};

// Softmax cross-entropy. Saves the input, target, weight and the forward's
// per-example log-sum-exp and total weight; the input gradient is the fused
// backward op, the gradients of probability targets and of the weight (rare:
// soft targets that are themselves learned) are written with ATen ops.
class CrossEntropy : public torch::autograd::Function<CrossEntropy> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& weight, int64_t reduction, int64_t ignore_index,
                               double label_smoothing) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, lse, total_weight] =
        cross_entropy_op().call(input, target, weight, reduction, ignore_index, label_smoothing);
    ctx->mark_non_differentiable({lse, total_weight});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({input, target, weight.value_or(at::Tensor()), lse, total_weight});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    return {loss, lse, total_weight};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(6);
    const at::Tensor& grad_loss = grads[0];
    if (!grad_loss.defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &target = saved[1], &lse = saved[3], &total_weight = saved[4];
    const std::optional<at::Tensor> weight = saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    if (ctx->needs_input_grad(0)) {
      out[0] = call_backward([&] {
        return cross_entropy_backward_op().call(grad_loss, input, target, weight, lse, total_weight, reduction,
                                                ignore_index, eps);
      });
    }
    // needs_input_grad counts the tensor arguments: a weight of None is none.
    const bool grad_target = ctx->needs_input_grad(1);
    const bool grad_weight = weight.has_value() && ctx->needs_input_grad(2);
    if (!grad_target && !grad_weight) return out;
    // Probability targets only (the functional refuses index targets with a
    // weight that needs a gradient, as torch does). Per example, with g the
    // loss gradient (over total_weight for "mean") and q' = (1 - eps) q + eps / C:
    //   d loss / d q_c = -(1 - eps) g w_c log_softmax(input)_c
    //   d loss / d w_c = g q'_c (lse - input_c), summed over examples.
    at::Tensor g = reduction != 0 ? grad_loss.expand(lse.sizes()) : grad_loss;
    if (reduction == 1) g = g / total_weight;
    g = g.unsqueeze(1);
    std::vector<int64_t> class_view(input.dim(), 1);
    class_view[1] = -1;
    const at::Tensor lse_ = lse.unsqueeze(1).to(input.scalar_type());
    if (grad_target) {
      at::Tensor gt = -(1.0 - eps) * g * (input - lse_);
      if (weight) gt = gt * weight->view(class_view);
      out[1] = gt;
    }
    if (grad_weight) {
      const at::Tensor q = target * (1.0 - eps) + eps / static_cast<double>(input.size(1));
      const at::Tensor terms = g * q * (lse_ - input);
      out[2] = terms.transpose(0, 1).reshape({input.size(1), -1}).sum(1);
    }
    return out;
  }
};

// conv2d: saves the input and the weight; one backward op returns the three
// gradients, each only where autograd asks for it.
class Conv2d : public torch::autograd::Function<Conv2d> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, Window stride, Window padding, Window dilation,
                            int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = conv2d_op().call(input, weight, bias, stride, padding, dilation, groups);
    ctx->save_for_backward({input, weight});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(7);
    if (!grads[0].defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // needs_input_grad counts the tensor arguments: input 0, weight 1, bias 2 (when given).
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    if (!mask[0] && !mask[1] && !mask[2]) return out;
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"), dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data["groups"].toInt();
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads3;
    if (at::GradMode::is_enabled()) {
      grads3 = conv2d_backward_op().call(grads[0], saved[0], saved[1], stride, padding, dilation, groups, mask);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      grads3 = conv2d_backward_op().call(grads[0], saved[0], saved[1], stride, padding, dilation, groups, mask);
    }
    out[0] = std::get<0>(grads3);
    out[1] = std::get<1>(grads3);
    out[2] = std::get<2>(grads3);
    return out;
  }
};

// rnn: saves the inputs, the weights, the dropout masks and the forward's
// reserve (gate activations and states); one backward op returns every
// gradient. The reserve and, but for LSTM, cy are not differentiable.
class Rnn : public torch::autograd::Function<Rnn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& hx,
                               const std::optional<at::Tensor>& cx, at::TensorList weights, int64_t mode,
                               bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, hy, cy, reserve] =
        rnn_op().call(input, hx, cx, weights, mode, has_biases, num_layers, bidirectional, dropout_masks);
    const bool has_cx = cx.has_value() && cx->defined();
    if (has_cx) {
      ctx->mark_non_differentiable({reserve});
    } else {
      ctx->mark_non_differentiable({cy, reserve});
    }
    ctx->set_materialize_grads(false);
    std::vector<at::Tensor> saved = {input, hx, has_cx ? *cx : at::Tensor(), reserve};
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), dropout_masks.begin(), dropout_masks.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["has_biases"] = has_biases;
    ctx->saved_data["num_layers"] = num_layers;
    ctx->saved_data["bidirectional"] = bidirectional;
    ctx->saved_data["n_weights"] = static_cast<int64_t>(weights.size());
    return {out, hy, cy, reserve};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t n_weights = ctx->saved_data["n_weights"].toInt();
    const auto first_weight = saved.begin() + 4;
    const std::vector<at::Tensor> weights(first_weight, first_weight + n_weights);
    const std::vector<at::Tensor> masks(first_weight + n_weights, saved.end());
    // One gradient per forward argument, lists flattened: input, hx, cx, weights..., 4 flags, masks...
    variable_list out(3 + n_weights + 4 + masks.size());
    auto given = [](const at::Tensor& g) { return g.defined() ? std::optional<at::Tensor>(g) : std::nullopt; };
    if (!grads[0].defined() && !grads[1].defined() && !grads[2].defined()) return out;
    const bool has_cx = saved[2].defined();
    const std::optional<at::Tensor> cx = has_cx ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    auto call = [&] {
      return rnn_backward_op().call(given(grads[0]), given(grads[1]), has_cx ? given(grads[2]) : std::nullopt,
                                    saved[0], saved[1], cx, weights, saved[3], ctx->saved_data["mode"].toInt(),
                                    ctx->saved_data["has_biases"].toBool(), ctx->saved_data["num_layers"].toInt(),
                                    ctx->saved_data["bidirectional"].toBool(), masks, ctx->needs_input_grad(0));
    };
    std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> r;
    if (at::GradMode::is_enabled()) {
      r = call();
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      r = call();
    }
    if (ctx->needs_input_grad(0)) out[0] = std::get<0>(r);
    out[1] = std::get<1>(r);
    if (has_cx) out[2] = std::get<2>(r);
    auto& gw = std::get<3>(r);
    for (int64_t i = 0; i < n_weights; ++i) out[3 + i] = std::move(gw[i]);
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_autograd(
    const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx, at::TensorList weights,
    int64_t mode, bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks) {
  auto r = Rnn::apply(input, hx, cx, weights, mode, has_biases, num_layers, bidirectional, dropout_masks);
  return {r[0], r[1], r[2], r[3]};
}

at::Tensor conv2d_autograd(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           Window stride, Window padding, Window dilation, int64_t groups) {
  return Conv2d::apply(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_autograd(const at::Tensor& input,
                                                                      const at::Tensor& target,
                                                                      const std::optional<at::Tensor>& weight,
                                                                      int64_t reduction, int64_t ignore_index,
                                                                      double label_smoothing) {
  auto r = CrossEntropy::apply(input, target, weight, reduction, ignore_index, label_smoothing);
  return {r[0], r[1], r[2]};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_autograd(const at::Tensor& input, Window kernel, Window stride,
                                                       Window padding, Window dilation, bool ceil_mode) {
  auto r = MaxPool2d::apply(input, kernel, stride, padding, dilation, ceil_mode);
  return {r[0], r[1]};
}

at::Tensor avg_pool2d_autograd(const at::Tensor& input, Window kernel, Window stride, Window padding,
                               bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  return AvgPool2d::apply(input, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override);
}

at::Tensor adaptive_avg_pool2d_autograd(const at::Tensor& input, SymIntArrayRef output_size) {
  return AdaptiveAvgPool2d::apply(input, output_size);
}

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d_autograd(const at::Tensor& input,
                                                                SymIntArrayRef output_size) {
  auto r = AdaptiveMaxPool2d::apply(input, output_size);
  return {r[0], r[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, Autograd, m) {
  m.impl("cross_entropy", &cross_entropy_autograd);
  m.impl("conv2d", &conv2d_autograd);
  m.impl("rnn", &rnn_autograd);
  m.impl("max_pool2d", &max_pool2d_autograd);
  m.impl("avg_pool2d", &avg_pool2d_autograd);
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d_autograd);
  m.impl("adaptive_max_pool2d", &adaptive_max_pool2d_autograd);
}

}  // namespace d2l_ext
