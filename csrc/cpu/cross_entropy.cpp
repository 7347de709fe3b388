// CPU kernels of d2l_ext::cross_entropy and its backward.
//
// Forward reads each row of logits once from memory (max, then sum of exp from
// cache) and keeps only the row's log-sum-exp; backward recomputes the softmax
// from input and lse and writes the gradient in the same pass. Rows are spread
// over threads with at::parallel_for; float32 rows that are contiguous use the
// AVX2 primitives in vec_avx2.h, everything else a generic strided loop that
// accumulates in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../cross_entropy.h"
#include "memory.h"
#include "vec_avx2.h"

namespace d2l_ext {
namespace {

// The view of one example's logits: C values, `stride` apart.
template <typename scalar_t>
struct Row {
  const scalar_t* x;
  int64_t stride;
  scalar_t operator[](int64_t c) const { return x[c * stride]; }
};

// Per-row quantities of the loss, shared by the forward and backward kernels.
template <typename scalar_t>
struct CEParams {
  CEShape shape;
  const scalar_t* input;
  const int64_t* target;    // class indices, or null
  const scalar_t* probs;    // class probabilities, or null
  const scalar_t* weight;   // (C,) or null
  int64_t ignore_index;
  double eps;               // label smoothing
  double weight_sum;        // sum_c w[c] (C when unweighted)

  int64_t offset(int64_t row) const {  // of element (row, class 0)
    const int64_t n = row / shape.S, s = row % shape.S;
    return n * shape.C * shape.S + s;
  }
  double w(int64_t c) const { return weight ? static_cast<double>(weight[c]) : 1.0; }

  // Validated class index of a row, or -1 when the row is ignored.
  int64_t class_of(int64_t row) const {
    const int64_t t = target[row];
    if (t == ignore_index) return -1;
    TORCH_CHECK_INDEX(t >= 0 && t < shape.C, "d2l_ext.cross_entropy: target ", t,
                      " is out of bounds for ", shape.C, " classes (ignore_index=",
                      ignore_index, ")");
    return t;
  }
};

// exp in the input's precision (float32 exp is several times cheaper than
// float64 and exact to an ulp of float32); callers accumulate in double.
template <typename scalar_t>
inline double exp_in(double x) {
  return static_cast<double>(std::exp(static_cast<scalar_t>(x)));
}

// log-sum-exp of one row, in double.
template <typename scalar_t>
double row_lse(Row<scalar_t> r, int64_t C) {
#ifdef D2L_EXT_HAVE_AVX2
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (r.stride == 1 && cpu::avx2::cpu_has_avx2()) {
      const float m = cpu::avx2::row_max(r.x, C);
      return static_cast<double>(m) + std::log(static_cast<double>(cpu::avx2::row_sum_exp(r.x, C, m)));
    }
  }
#endif
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < C; ++c) m = std::max(m, static_cast<double>(r[c]));
  double s = 0.0;
  for (int64_t c = 0; c < C; ++c) s += exp_in<scalar_t>(static_cast<double>(r[c]) - m);
  return m + std::log(s);
}

// sum_c w[c] * x[c] over a row (w = 1 when unweighted).
template <typename scalar_t>
double row_weighted_sum(Row<scalar_t> r, const scalar_t* w, int64_t C) {
#ifdef D2L_EXT_HAVE_AVX2
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (r.stride == 1 && cpu::avx2::cpu_has_avx2()) return cpu::avx2::row_dot(r.x, w, C);
  }
#endif
  double s = 0.0;
  for (int64_t c = 0; c < C; ++c) s += (w ? static_cast<double>(w[c]) : 1.0) * r[c];
  return s;
}

// The lse kept for an ignored row: 0, or NaN when the row's log-sum-exp is not finite (a NaN or
// +inf logit, or all -inf). Its gradient is then that value in every class: torch's
// log_softmax backward multiplies the row's softmax by a zero gradient, which is NaN there.
template <typename scalar_t>
inline scalar_t ignored_lse(double lse) {
  return std::isfinite(lse) ? scalar_t(0) : std::numeric_limits<scalar_t>::quiet_NaN();
}

struct Sums {
  double loss = 0.0, weight = 0.0;
};

#ifdef D2L_EXT_HAVE_AVX2
// forward_rows for rows [row, row + 8) whose class c sits at x + c * S + j (j < 8): eight
// positions of one example of a spatial input (x = the input, S its spatial size), or eight
// rows of few classes transposed into a (C, 8) block (S = 8).
inline void forward_block8(const CEParams<float>& p, int64_t row, const float* x, int64_t S, float* loss,
                           float* lse_out, Sums& sums) {
  const int64_t C = p.shape.C;
  float lse[8], wx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  cpu::avx2::lse8(x, C, S, lse);
  if (p.eps > 0.0) cpu::avx2::weighted_sum8(x, C, S, p.weight, wx);
  for (int j = 0; j < 8; ++j) {
    const int64_t t = p.class_of(row + j);
    if (t < 0) {  // ignored: see ignored_lse
      if (loss) loss[row + j] = 0;
      lse_out[row + j] = ignored_lse<float>(lse[j]);
      continue;
    }
    const double wt = p.w(t);
    double l = (1.0 - p.eps) * wt * (static_cast<double>(lse[j]) - x[t * S + j]);
    if (p.eps > 0.0) l += p.eps / C * (p.weight_sum * lse[j] - wx[j]);
    if (loss) loss[row + j] = static_cast<float>(l);
    lse_out[row + j] = lse[j];
    sums.loss += l;
    sums.weight += wt;
  }
}

// backward_rows for rows [row, row + 8), laid out as for forward_block8: reads x, writes the
// gradient at out + c * S + j.
inline void backward_block8(const CEParams<float>& p, int64_t row, const float* x, float* out, int64_t S,
                            const float* lse, const float* grad_loss, bool grad_per_row, double grad_scale) {
  const int64_t C = p.shape.C;
  float a[8], b[8], hit[8];
  int32_t keep[8];
  int64_t t[8];
  for (int j = 0; j < 8; ++j) {
    t[j] = p.class_of(row + j);
    const double g = (grad_per_row ? static_cast<double>(grad_loss[row + j]) : 1.0) * grad_scale;
    const double wt = t[j] < 0 ? 0.0 : p.w(t[j]);
    keep[j] = t[j] >= 0;
    a[j] = keep[j] ? static_cast<float>(g * ((1.0 - p.eps) * wt + p.eps * p.weight_sum / C)) : 0.f;
    b[j] = keep[j] ? static_cast<float>(g * p.eps / C) : 0.f;
    hit[j] = static_cast<float>(g * (1.0 - p.eps) * wt);
  }
  cpu::avx2::softmax_grad8(out, x, C, S, lse + row, a, b, p.weight, keep);
  for (int j = 0; j < 8; ++j) {
    if (keep[j]) {
      out[t[j] * S + j] -= hit[j];
    } else if (lse[row + j] != 0.f) {  // an ignored row with non-finite logits (ignored_lse): NaN
      for (int64_t c = 0; c < C; ++c) out[c * S + j] = lse[row + j];
    }
  }
}

// Rows of fewer than kFewClasses classes (contiguous, class-index targets) run eight at a time
// through the block functions on a transposed copy: one row alone fills too little of a vector
// (the book's MNIST has 10 classes, its character language models 28).
constexpr int64_t kFewClasses = 64;

// Which block path rows [row, row + 8) of [row, end) take: eight positions of one spatial example,
// or eight contiguous rows of few classes (both float32, class targets, AVX2).
inline bool spatial_block8(const CEParams<float>& p, int64_t row, int64_t end) {
  const int64_t S = p.shape.S;
  return p.target && S >= 8 && row % S <= S - 8 && row + 8 <= end && cpu::avx2::cpu_has_avx2();
}
inline bool few_classes_block8(const CEParams<float>& p, int64_t row, int64_t end) {
  return p.target && p.shape.S == 1 && p.shape.C < kFewClasses && row + 8 <= end && cpu::avx2::cpu_has_avx2();
}

#endif


// Forward over rows [begin, end): writes each row's lse (kept for backward)
// and, when `loss` is not null, its loss; returns the rows' summed loss and
// summed weight (the "mean" divisor: w[target], or 1 per row for probabilities).
// (The CPU kernels take float32 and float64 only, so results are kept in scalar_t.)
template <typename scalar_t>
Sums forward_rows(const CEParams<scalar_t>& p, int64_t begin, int64_t end, scalar_t* loss, scalar_t* lse_out) {
  const int64_t C = p.shape.C, S = p.shape.S;
  Sums sums;
  for (int64_t row = begin; row < end; ++row) {
#ifdef D2L_EXT_HAVE_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      // Spatial input: eight positions at a time, vectorised across positions.
      if (spatial_block8(p, row, end)) {
        forward_block8(p, row, p.input + p.offset(row), S, loss, lse_out, sums);
        row += 7;
        continue;
      }
      // Few classes: eight rows at a time, transposed.
      if (few_classes_block8(p, row, end)) {
        float block[kFewClasses * 8];
        cpu::avx2::rows_to_block8(p.input + row * C, C, block);
        forward_block8(p, row, block, 8, loss, lse_out, sums);
        row += 7;
        continue;
      }
    }
#endif
    const Row<scalar_t> r{p.input + p.offset(row), S};
    if (p.target) {
      const int64_t t = p.class_of(row);
      if (t < 0) {  // ignored: no loss; see ignored_lse
        if (loss) loss[row] = 0;
        lse_out[row] = ignored_lse<scalar_t>(row_lse(r, C));
        continue;
      }
      const double lse = row_lse(r, C);
      const double wt = p.w(t);
      double l = (1.0 - p.eps) * wt * (lse - static_cast<double>(r[t]));
      if (p.eps > 0.0)
        l += p.eps / C * (p.weight_sum * lse - row_weighted_sum(r, p.weight, C));
      if (loss) loss[row] = static_cast<scalar_t>(l);
      lse_out[row] = static_cast<scalar_t>(lse);
      sums.loss += l;
      sums.weight += wt;
    } else {
      // Smoothed probabilities q' = (1 - eps) q + eps / C; loss = sum_c w q' (lse - x)
      // = a * lse - b with a = sum_c w q' and b = sum_c w q' x.
      const double lse = row_lse(r, C);
      const Row<scalar_t> q{p.probs + p.offset(row), S};
      double a = 0.0, b = 0.0;
      bool summed = false;
#ifdef D2L_EXT_HAVE_AVX2
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (S == 1 && cpu::avx2::cpu_has_avx2()) {
          a = (1.0 - p.eps) * cpu::avx2::row_dot(q.x, p.weight, C) + p.eps / C * p.weight_sum;
          b = (1.0 - p.eps) * cpu::avx2::row_dot3(r.x, q.x, p.weight, C);
          if (p.eps > 0.0) b += p.eps / C * cpu::avx2::row_dot(r.x, p.weight, C);
          summed = true;
        }
      }
#endif
      for (int64_t c = 0; !summed && c < C; ++c) {
        const double wq = p.w(c) * ((1.0 - p.eps) * q[c] + p.eps / C);
        a += wq;
        b += wq * r[c];
      }
      if (loss) loss[row] = static_cast<scalar_t>(a * lse - b);
      lse_out[row] = static_cast<scalar_t>(lse);
      sums.loss += a * lse - b;
      sums.weight += 1.0;
    }
  }
  return sums;
}

// Backward over rows [begin, end): grad[row, c] = g * d loss_row / d x[row, c].
template <typename scalar_t>
void backward_rows(const CEParams<scalar_t>& p, int64_t begin, int64_t end, const scalar_t* lse,
                   const scalar_t* grad_loss, bool grad_per_row, double grad_scale,
                   scalar_t* grad) {
  const int64_t C = p.shape.C, S = p.shape.S;
  for (int64_t row = begin; row < end; ++row) {
#ifdef D2L_EXT_HAVE_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (spatial_block8(p, row, end)) {
        const int64_t off = p.offset(row);
        backward_block8(p, row, p.input + off, grad + off, S, lse, grad_loss, grad_per_row, grad_scale);
        row += 7;
        continue;
      }
      if (few_classes_block8(p, row, end)) {
        float block[kFewClasses * 8], out[kFewClasses * 8];
        cpu::avx2::rows_to_block8(p.input + row * C, C, block);
        backward_block8(p, row, block, out, 8, lse, grad_loss, grad_per_row, grad_scale);
        cpu::avx2::block8_to_rows(out, C, grad + row * C);
        row += 7;
        continue;
      }
    }
#endif
    const int64_t off = p.offset(row);
    const Row<scalar_t> r{p.input + off, S};
    scalar_t* out = grad + off;
    const double g = (grad_per_row ? static_cast<double>(grad_loss[row]) : 1.0) * grad_scale;
    if (p.target) {
      const int64_t t = p.class_of(row);
      if (t < 0) {  // 0, or NaN where torch's 0 * softmax is (ignored_lse)
        for (int64_t c = 0; c < C; ++c) out[c * S] = lse[row];
        continue;
      }
      // d/dx_c = g * [((1-eps) w_t + eps W / C) softmax_c - eps / C * w_c - (1-eps) w_t [c == t]]
      const double wt = p.w(t);
      const double a = g * ((1.0 - p.eps) * wt + p.eps * p.weight_sum / C);
      const double b = g * p.eps / C;
      const double l = static_cast<double>(lse[row]);
#ifdef D2L_EXT_HAVE_AVX2
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (S == 1 && cpu::avx2::cpu_has_avx2()) {
          cpu::avx2::row_softmax_grad(out, r.x, C, static_cast<float>(l), static_cast<float>(a),
                                      static_cast<float>(b), p.weight);
          out[t] = static_cast<float>(out[t] - g * (1.0 - p.eps) * wt);
          continue;
        }
      }
#endif
      for (int64_t c = 0; c < C; ++c)
        out[c * S] = static_cast<scalar_t>(a * exp_in<scalar_t>(r[c] - l) - b * p.w(c));
      out[t * S] = static_cast<scalar_t>(out[t * S] - g * (1.0 - p.eps) * wt);
    } else {
      // d/dx_c = g * (A softmax_c - w_c q'_c) with A = sum_c w_c q'_c.
      const Row<scalar_t> q{p.probs + off, S};
      const double l = static_cast<double>(lse[row]);
#ifdef D2L_EXT_HAVE_AVX2
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (S == 1 && cpu::avx2::cpu_has_avx2()) {
          const double A = (1.0 - p.eps) * cpu::avx2::row_dot(q.x, p.weight, C) + p.eps / C * p.weight_sum;
          cpu::avx2::row_softmax_grad_prob(out, r.x, q.x, C, static_cast<float>(l), static_cast<float>(g * A),
                                           static_cast<float>(g * (1.0 - p.eps)),
                                           static_cast<float>(g * p.eps / C), p.weight);
          continue;
        }
      }
#endif
      double A = 0.0;
      for (int64_t c = 0; c < C; ++c) A += p.w(c) * ((1.0 - p.eps) * q[c] + p.eps / C);
      for (int64_t c = 0; c < C; ++c) {
        const double wq = p.w(c) * ((1.0 - p.eps) * q[c] + p.eps / C);
        out[c * S] = static_cast<scalar_t>(g * (A * exp_in<scalar_t>(r[c] - l) - wq));
      }
    }
  }
}

// Rows per task so that each task touches roughly GRAIN_SIZE logits.
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(C, 1)); }

template <typename scalar_t>
CEParams<scalar_t> make_params(const CEShape& shape, const at::Tensor& input, const at::Tensor& target,
                               const at::Tensor& weight, int64_t ignore_index, double eps) {
  CEParams<scalar_t> p{shape, input.const_data_ptr<scalar_t>(), nullptr, nullptr, nullptr,
                       ignore_index, eps, static_cast<double>(shape.C)};
  if (shape.prob_target) p.probs = target.const_data_ptr<scalar_t>();
  else p.target = target.const_data_ptr<int64_t>();
  if (weight.defined()) {
    p.weight = weight.const_data_ptr<scalar_t>();
    p.weight_sum = 0.0;
    for (int64_t c = 0; c < shape.C; ++c) p.weight_sum += static_cast<double>(p.weight[c]);
  }
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_cpu(
    const at::Tensor& input_, const at::Tensor& target_, const c10::optional<at::Tensor>& weight_,
    int64_t reduction, int64_t ignore_index, double label_smoothing) {
  const CEShape shape = check_cross_entropy_args(input_, target_, weight_, reduction, label_smoothing);
  TORCH_CHECK(input_.device().is_cpu(), "d2l_ext.cross_entropy (CPU kernel): input must be on the CPU");
  TORCH_CHECK(input_.scalar_type() == at::kFloat || input_.scalar_type() == at::kDouble,
              "d2l_ext.cross_entropy: the CPU kernel supports float32 and float64 input, got ",
              input_.scalar_type());
  const at::Tensor input = input_.contiguous();
  const at::Tensor target = target_.contiguous();
  const at::Tensor weight = weight_.has_value() && weight_->defined() ? weight_->contiguous() : at::Tensor();

  const auto rows_shape = per_example_sizes(input);
  const bool per_row = reduction == static_cast<int64_t>(Reduction::None);
  at::Tensor loss_rows = per_row ? at::empty(rows_shape, input.options()) : at::Tensor();
  at::Tensor lse = at::empty(rows_shape, input.options());

  // Fixed blocks of rows, each summed in order and then added in block order:
  // the reduction is deterministic whatever the number of threads, and needs
  // no extra pass or tensor op.
  const int64_t rows = shape.rows(), grain = row_grain(shape.C);
  const int64_t blocks = (rows + grain - 1) / grain;
  std::vector<Sums> partial(static_cast<size_t>(blocks));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2l_ext_cross_entropy_cpu", [&] {
    const auto p = make_params<scalar_t>(shape, input, target, weight, ignore_index, label_smoothing);
    scalar_t* loss_ptr = per_row ? loss_rows.data_ptr<scalar_t>() : nullptr;
    scalar_t* lse_ptr = lse.data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        partial[b] = forward_rows<scalar_t>(p, b * grain, std::min(rows, (b + 1) * grain), loss_ptr,
                                                      lse_ptr);
    });
  });
  Sums total;
  for (const Sums& s : partial) {
    total.loss += s.loss;
    total.weight += s.weight;
  }
  at::Tensor total_weight = at::scalar_tensor(total.weight, input.options());
  if (per_row) return {loss_rows, lse, total_weight};
  const bool mean = reduction == static_cast<int64_t>(Reduction::Mean);
  at::Tensor loss = at::scalar_tensor(mean ? total.loss / total.weight : total.loss, input.options());
  return {loss, lse, total_weight};
}

at::Tensor cross_entropy_backward_cpu(const at::Tensor& grad_loss_, const at::Tensor& input_,
                                      const at::Tensor& target_, const c10::optional<at::Tensor>& weight_,
                                      const at::Tensor& lse_, const at::Tensor& total_weight,
                                      int64_t reduction, int64_t ignore_index, double label_smoothing) {
  const CEShape shape = check_cross_entropy_args(input_, target_, weight_, reduction, label_smoothing);
  TORCH_CHECK(input_.device().is_cpu(), "d2l_ext._cross_entropy_backward (CPU kernel): input must be on the CPU");
  TORCH_CHECK(input_.scalar_type() == at::kFloat || input_.scalar_type() == at::kDouble,
              "d2l_ext._cross_entropy_backward: the CPU kernel supports float32 and float64 input, got ",
              input_.scalar_type());
  const bool per_row = check_cross_entropy_backward_args(grad_loss_, input_, lse_, total_weight, reduction);

  const at::Tensor input = input_.contiguous();
  const at::Tensor target = target_.contiguous();
  const at::Tensor weight = weight_.has_value() && weight_->defined() ? weight_->contiguous() : at::Tensor();
  const at::Tensor lse = lse_.contiguous();
  const at::Tensor grad_loss = grad_loss_.contiguous();
  at::Tensor grad = at::empty_like(input, at::MemoryFormat::Contiguous);
  cpu::advise_huge_pages(grad.data_ptr(), grad.nbytes());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2l_ext_cross_entropy_backward_cpu", [&] {
    const auto p = make_params<scalar_t>(shape, input, target, weight, ignore_index, label_smoothing);
    double scale = 1.0;
    if (!per_row) {
      scale = static_cast<double>(grad_loss.item<scalar_t>());
      if (reduction == static_cast<int64_t>(Reduction::Mean)) scale /= total_weight.item<double>();
    }
    const scalar_t* g_ptr = grad_loss.const_data_ptr<scalar_t>();
    const scalar_t* lse_ptr = lse.const_data_ptr<scalar_t>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    at::parallel_for(0, shape.rows(), row_grain(shape.C), [&](int64_t begin, int64_t end) {
      backward_rows<scalar_t>(p, begin, end, lse_ptr, g_ptr, per_row, scale, out);
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CPU, m) {
  m.impl("cross_entropy", &cross_entropy_cpu);
  m.impl("_cross_entropy_backward", &cross_entropy_backward_cpu);
}

}  // namespace d2l_ext
