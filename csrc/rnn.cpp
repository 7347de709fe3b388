// The recurrent layers' time loop, once for every device: the GEMMs are
// at::mm / addmm (MKL on the CPU, cuBLAS on the GPU) and the element-wise step
// of a cell is the device's RnnPointwise (csrc/rnn.h).
//
// Forward, per layer and direction: one GEMM projects the inputs of all T
// steps at once (T * B rows, with the bias(es) folded in); then per step one
// GEMM adds W_hh h_{t-1} (GRU: into a separate buffer, since r multiplies its
// n part) and one element-wise kernel forms the gates and the new state,
// writing the activations over the projections (they are what backward needs).
//
// Backward, per layer (last first) and direction: per step one element-wise
// kernel turns the carried dh (and dc) into the pre-activation gate gradients
// of that step, and one GEMM carries dh to the step before (dG_t W_hh). The
// weight gradients and the input gradient are then single GEMMs over all
// T * B rows, not T small ones.
#include "rnn.h"

#include "finite.h"
#include "cpu/vec_avx2.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace d2l_ext {
namespace {

// H: the cell's units; P: the size of h (an LSTM with a projection maps its H units to P = proj_size
// outputs, h_t = W_hr (o * tanh(c_t)); otherwise P = H).
struct RnnGeometry {
  RnnMode mode;
  int64_t T, B, I, H, L, D, G, P;
  bool bias;
  bool proj() const { return P != H; }
  int64_t per_block() const { return (bias ? 4 : 2) + (proj() ? 1 : 0); }  // tensors per (layer, direction)
  // gate activations, h (P wide), c or the GRU's W_hn h + b_hn, and with a projection o * tanh(c)
  int64_t block_numel() const {
    return T * B * (G * H + P + (rnn_block_rows(mode) - G - 1) * H + (proj() ? H : 0));
  }
};

const char* mode_name(RnnMode mode) {
  switch (mode) {
    case RnnMode::Tanh: return "rnn_tanh";
    case RnnMode::Relu: return "rnn_relu";
    case RnnMode::Lstm: return "lstm";
    case RnnMode::Gru: return "gru";
  }
  return "rnn";
}

void check_like(const at::Tensor& t, const at::Tensor& input, const char* op, const std::string& name) {
  TORCH_CHECK(t.device() == input.device(), "d2l_ext.", op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "d2l_ext.", op, ": ", name, " is ", t.scalar_type(),
              " but input is ", input.scalar_type());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* op, const std::string& name) {
  TORCH_CHECK(t.sizes() == expected, "d2l_ext.", op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
}

RnnGeometry check_rnn_args(const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                           at::TensorList weights, int64_t mode_int, bool has_biases, int64_t num_layers,
                           bool bidirectional, at::TensorList dropout_masks) {
  const RnnMode mode = rnn_mode(mode_int);
  const char* op = mode_name(mode);
  TORCH_CHECK(input.dim() == 3, "d2l_ext.", op, ": input must be (T, B, input_size), got shape ", input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), "d2l_ext.", op, ": input must be floating point, got ",
              input.scalar_type());
  TORCH_CHECK(input.size(0) > 0, "d2l_ext.", op, ": expected sequence length to be larger than 0");
  TORCH_CHECK(num_layers >= 1, "d2l_ext.", op, ": num_layers must be at least 1, got ", num_layers);
  RnnGeometry g{mode, input.size(0), input.size(1), input.size(2), 0, num_layers, bidirectional ? 2 : 1,
                rnn_gates(mode), 0, has_biases};
  TORCH_CHECK(hx.dim() == 3, "d2l_ext.", op, ": hx must be (num_layers * num_directions, B, hidden_size), got shape ",
              hx.sizes());
  g.P = g.H = hx.size(2);
  TORCH_CHECK(g.H > 0, "d2l_ext.", op, ": hidden_size must be positive");
  check_like(hx, input, op, "hx");
  if (mode == RnnMode::Lstm) {
    TORCH_CHECK(cx.has_value() && cx->defined(), "d2l_ext.lstm: cx (the initial cell state) is required");
    TORCH_CHECK(cx->dim() == 3, "d2l_ext.lstm: cx must be (num_layers * num_directions, B, hidden_size), got shape ",
                cx->sizes());
    g.H = cx->size(2);  // hx (.., P) with P < H: an LSTM with a projection
    TORCH_CHECK(g.P <= g.H, "d2l_ext.lstm: hx's last size (proj_size) must be smaller than cx's (hidden_size), got ",
                g.P, " and ", g.H);
    check_like(*cx, input, op, "cx");
    check_shape(*cx, {g.L * g.D, g.B, g.H}, op, "cx");
  } else {
    TORCH_CHECK(!cx.has_value() || !cx->defined(), "d2l_ext.", op, ": cx is for LSTM only");
  }
  check_shape(hx, {g.L * g.D, g.B, g.P}, op, "hx");
  const int64_t expected = g.L * g.D * g.per_block();
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == expected, "d2l_ext.", op, ": expected ", expected,
              " weight tensors (w_ih, w_hh", has_biases ? ", b_ih, b_hh" : "", g.proj() ? ", w_hr" : "",
              " per layer and direction), got ", weights.size());
  for (int64_t l = 0; l < g.L; ++l) {
    const int64_t in_l = l == 0 ? g.I : g.D * g.P;
    for (int64_t d = 0; d < g.D; ++d) {
      const int64_t base = (l * g.D + d) * g.per_block();
      const std::string suffix = "_l" + std::to_string(l) + (d == 1 ? "_reverse" : "");
      std::vector<std::string> names = {"weight_ih" + suffix, "weight_hh" + suffix};
      if (has_biases) names.insert(names.end(), {"bias_ih" + suffix, "bias_hh" + suffix});
      if (g.proj()) names.push_back("weight_hr" + suffix);
      for (int64_t k = 0; k < g.per_block(); ++k) check_like(weights[base + k], input, op, names[k]);
      check_shape(weights[base], {g.G * g.H, in_l}, op, names[0]);
      check_shape(weights[base + 1], {g.G * g.H, g.P}, op, names[1]);
      if (has_biases) {
        check_shape(weights[base + 2], {g.G * g.H}, op, names[2]);
        check_shape(weights[base + 3], {g.G * g.H}, op, names[3]);
      }
      if (g.proj()) check_shape(weights[base + g.per_block() - 1], {g.P, g.H}, op, names.back());
    }
  }
  TORCH_CHECK(dropout_masks.empty() || static_cast<int64_t>(dropout_masks.size()) == g.L - 1, "d2l_ext.", op,
              ": expected no dropout masks or num_layers - 1 = ", g.L - 1, ", got ", dropout_masks.size());
  for (size_t i = 0; i < dropout_masks.size(); ++i) {
    const std::string name = "dropout_masks[" + std::to_string(i) + "]";
    check_like(dropout_masks[i], input, op, name);
    check_shape(dropout_masks[i], {g.T, g.B, g.D * g.P}, op, name);
  }
  return g;
}

// The parts of reserve block (l, d): 0 activations (T, B, G * H), 1 h (T, B, P), 2 extra (T, B, H),
// 3 (projection only) r = o * tanh(c) (T, B, H).
at::Tensor block_part(const at::Tensor& reserve, const RnnGeometry& g, int64_t l, int64_t d, int part) {
  const int64_t base = (l * g.D + d) * g.block_numel();
  const int64_t gates = g.T * g.B * g.G * g.H, h = g.T * g.B * g.P, plane = g.T * g.B * g.H;
  if (part == 0) return reserve.narrow(0, base, gates).view({g.T, g.B, g.G * g.H});
  if (part == 1) return reserve.narrow(0, base + gates, h).view({g.T, g.B, g.P});
  return reserve.narrow(0, base + gates + h + (part - 2) * plane, plane).view({g.T, g.B, g.H});
}

bool has_extra(RnnMode mode) { return mode == RnnMode::Lstm || mode == RnnMode::Gru; }

// The input of layer l > 0: the previous layer's outputs (both directions side by side), dropped out.
at::Tensor layer_input(const at::Tensor& reserve, const RnnGeometry& g, int64_t l, at::TensorList masks) {
  at::Tensor x = g.D == 1 ? block_part(reserve, g, l - 1, 0, 1)
                          : at::cat({block_part(reserve, g, l - 1, 0, 1), block_part(reserve, g, l - 1, 1, 1)}, 2);
  return masks.empty() ? x : x * masks[l - 1];
}

// The book feeds characters one-hot: when every row of x (N, I) is a one-hot vector (a single 1, the
// rest 0) on the CPU, returns the positions of the ones (N,), else an undefined tensor. Then
// x @ w_ih^T is a gather of w_ih's columns, exactly (one product by 1, zeros added), as long as
// w_ih is finite, and its gradient dG^T x a scatter-add of dG's rows. The scan stops at the first
// row that is not one-hot, so dense inputs pay for about one row.
template <typename T>
at::Tensor one_hot_positions_of(const at::Tensor& x2) {
  const int64_t N = x2.size(0), I = x2.size(1);
  const T* x = x2.data_ptr<T>();
  at::Tensor pos = at::empty({N}, x2.options().dtype(at::kLong));
  int64_t* p = pos.data_ptr<int64_t>();
  for (int64_t r = 0; r < N; ++r) {
    int64_t at_one = -1;
    for (int64_t k = 0; k < I; ++k) {
      const T v = x[r * I + k];
      if (v == T(0)) continue;
      if (v != T(1) || at_one >= 0) return at::Tensor();
      at_one = k;
    }
    if (at_one < 0) return at::Tensor();
    p[r] = at_one;
  }
  return pos;
}

at::Tensor one_hot_positions(const at::Tensor& x2, const at::Tensor& w_ih) {
  if (!x2.device().is_cpu() || !x2.is_contiguous() || x2.size(0) == 0) return at::Tensor();
  const at::Tensor pos =
      x2.scalar_type() == at::kDouble ? one_hot_positions_of<double>(x2) : one_hot_positions_of<float>(x2);
  return pos.defined() && all_finite(w_ih) ? pos : at::Tensor();
}

// out (N, G * H) = w_ih^T[pos] (+ bias): the input projection of one-hot rows, one pass over out
// (w_ih^T is a small (I, G H) copy; each row of out is one of its rows plus the bias).
at::Tensor& gather_columns(at::Tensor& out, const at::Tensor& w_ih, const at::Tensor& pos, const at::Tensor& bias) {
  const at::Tensor wt = w_ih.t().contiguous();
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  const int64_t N = out.size(0), C = out.size(1);
  const int64_t* p = pos.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "rnn_gather_columns", [&] {
    const scalar_t* w = wt.data_ptr<scalar_t>();
    const scalar_t* bb = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* src = w + p[r] * C;
        scalar_t* dst = o + r * C;
        if (bb) {
          for (int64_t c = 0; c < C; ++c) dst[c] = src[c] + bb[c];
        } else {
          std::copy(src, src + C, dst);
        }
      }
    });
  });
  return out;
}

#ifdef D2L_EXT_HAVE_AVX2
// scatter_rows' float32 inner loop on AVX2, for 64 columns (eight vectors) at a time: each row of
// the block [r0, r1) goes to the row of g its token picks; the block's sum stays in registers (in
// float, as the generic loop's) and then goes to the double total. Returns the columns done.
D2L_EXT_AVX2_FN int64_t scatter_block_avx2(const float* d, int64_t C, const int64_t* pos, int64_t r0, int64_t r1,
                                           int64_t c0, int64_t c1, float* g, double* sb) {
  int64_t c = c0;
  for (; c + 64 <= c1; c += 64) {
    __m256 sum[8];
    for (auto& v : sum) v = _mm256_setzero_ps();
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = d + r * C + c;
      float* dst = g + pos[r] * C + c;
      for (int v = 0; v < 8; ++v) {
        const __m256 x = _mm256_loadu_ps(row + 8 * v);
        _mm256_storeu_ps(dst + 8 * v, _mm256_add_ps(_mm256_loadu_ps(dst + 8 * v), x));
        sum[v] = _mm256_add_ps(sum[v], x);
      }
    }
    if (!sb) continue;
    for (int v = 0; v < 8; ++v) {
      double* out = sb + c + 8 * v;
      _mm256_storeu_pd(out, _mm256_add_pd(_mm256_loadu_pd(out), _mm256_cvtps_pd(_mm256_castps256_ps128(sum[v]))));
      _mm256_storeu_pd(out + 4,
                       _mm256_add_pd(_mm256_loadu_pd(out + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(sum[v], 1))));
    }
  }
  return c;
}
#endif

// The columns of [c0, c1) that the vector loop did (from c0 on): float32 on AVX2, else none.
template <typename T>
int64_t scatter_block_fast(const T*, int64_t, const int64_t*, int64_t, int64_t, int64_t c0, int64_t, T*, double*) {
  return c0;
}
#ifdef D2L_EXT_HAVE_AVX2
template <>
int64_t scatter_block_fast<float>(const float* d, int64_t C, const int64_t* pos, int64_t r0, int64_t r1, int64_t c0,
                                  int64_t c1, float* g, double* sb) {
  return cpu::avx2::cpu_has_avx2() ? scatter_block_avx2(d, C, pos, r0, r1, c0, c1, g, sb) : c0;
}
#endif

// The backward of gather_columns: grad_w (G H, I) = dG^T x for one-hot rows x, i.e. row r of dG
// (N, G H) added to column pos[r]; and, when grad_b is defined, grad_b (G H) = the sum of dG's rows,
// in the same pass over dG. Threads split the G H columns, so no two write the same element. The
// bias sums all N = T * B rows: they accumulate in double; a weight column only the rows of its
// token, in the tensor's type (as index_add would).
void scatter_rows(const at::Tensor& dg2, const at::Tensor& pos, int64_t I, at::Tensor& grad_w, at::Tensor* grad_b) {
  const int64_t N = dg2.size(0), C = dg2.size(1);
  const int64_t* p = pos.data_ptr<int64_t>();
  const at::Tensor gt = at::zeros({I, C}, dg2.options());
  const at::Tensor gb = grad_b ? at::zeros({C}, dg2.options().dtype(at::kDouble)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dg2.scalar_type(), "rnn_scatter_rows", [&] {
    const scalar_t* d = dg2.data_ptr<scalar_t>();
    scalar_t* g = gt.data_ptr<scalar_t>();
    double* sb = grad_b ? gb.data_ptr<double>() : nullptr;
    // Blocks of kBlock rows: each row into its token's row of gt and, with a bias, into a sum of the
    // block (float) that then goes to the double total.
    at::parallel_for(0, C, 128, [&](int64_t c0, int64_t c1) {
      constexpr int64_t kBlock = 64;
      std::vector<scalar_t> part(sb ? c1 - c0 : 0);
      for (int64_t r0 = 0; r0 < N; r0 += kBlock) {
        const int64_t r1 = std::min(N, r0 + kBlock);
        const int64_t c = scatter_block_fast<scalar_t>(d, C, p, r0, r1, c0, c1, g, sb);  // [c0, c) done
        const int64_t n = c1 - c;
        scalar_t* __restrict sum = part.data();
        if (sb) std::fill(sum, sum + n, scalar_t(0));
        for (int64_t r = r0; r < r1 && n > 0; ++r) {
          const scalar_t* __restrict row = d + r * C + c;
          scalar_t* __restrict dst = g + p[r] * C + c;
          for (int64_t j = 0; j < n; ++j) dst[j] += row[j];
          if (sb) {
            for (int64_t j = 0; j < n; ++j) sum[j] += row[j];
          }
        }
        for (int64_t j = 0; sb && j < n; ++j) sb[c + j] += static_cast<double>(sum[j]);
      }
    });
  });
  grad_w.copy_(gt.t());
  if (grad_b) grad_b->copy_(gb);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_forward(
    const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx, at::TensorList weights,
    int64_t mode_int, bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks,
    const RnnPointwise& kernels) {
  const RnnGeometry g =
      check_rnn_args(input, hx, cx, weights, mode_int, has_biases, num_layers, bidirectional, dropout_masks);
  const bool lstm = g.mode == RnnMode::Lstm, gru = g.mode == RnnMode::Gru;
  const at::Tensor h0 = hx.contiguous();
  const at::Tensor c0 = lstm ? cx->contiguous() : at::Tensor();
  at::Tensor reserve = at::empty({g.L * g.D * g.block_numel()}, input.options());
  at::Tensor hy = at::empty({g.L * g.D, g.B, g.P}, input.options());
  at::Tensor cy = lstm ? at::empty({g.L * g.D, g.B, g.H}, input.options()) : at::empty({0}, input.options());
  at::Tensor hidden = gru ? at::empty({g.B, g.G * g.H}, input.options()) : at::Tensor();
  at::Tensor x = input.contiguous();
  for (int64_t l = 0; l < g.L; ++l) {
    if (l > 0) x = layer_input(reserve, g, l, dropout_masks);
    const at::Tensor x2 = x.view({g.T * g.B, x.size(2)});
    for (int64_t d = 0; d < g.D; ++d) {
      const int64_t base = (l * g.D + d) * g.per_block();
      const at::Tensor &w_ih = weights[base], &w_hh = weights[base + 1];
      const at::Tensor acts = block_part(reserve, g, l, d, 0), hs = block_part(reserve, g, l, d, 1);
      const at::Tensor extra = has_extra(g.mode) ? block_part(reserve, g, l, d, 2) : at::Tensor();
      at::Tensor acts2 = acts.view({g.T * g.B, g.G * g.H});
      // The bias of the projection: b_ih (GRU: b_hh goes with W_hh h), else b_ih + b_hh.
      const at::Tensor bias =
          !has_biases ? at::Tensor() : gru ? weights[base + 2] : weights[base + 2] + weights[base + 3];
      const at::Tensor pos = l == 0 ? one_hot_positions(x2, w_ih) : at::Tensor();
      if (pos.defined()) {  // one-hot x: the columns of w_ih it picks (+ the bias)
        gather_columns(acts2, w_ih, pos, bias);
      } else if (has_biases) {
        at::addmm_out(acts2, bias, x2, w_ih.t());
      } else {
        at::mm_out(acts2, x2, w_ih.t());
      }
      at::Tensor h_prev = h0[l * g.D + d], c_prev = lstm ? c0[l * g.D + d] : at::Tensor();
      if (g.proj()) {  // per step: gates, the cell step (writing r = o * tanh(c)), then h = W_hr r
        const at::Tensor rs = block_part(reserve, g, l, d, 3), w_hr = weights[base + g.per_block() - 1];
        for (int64_t s = 0; s < g.T; ++s) {
          const int64_t t = d == 0 ? s : g.T - 1 - s;
          acts[t].addmm_(h_prev, w_hh.t());
          kernels.forward(RnnStepForward{g.mode, acts[t], at::Tensor(), at::Tensor(), c_prev, rs[t], extra[t]});
          at::Tensor h_t = hs[t];
          at::mm_out(h_t, rs[t], w_hr.t());
          h_prev = h_t;
          c_prev = extra[t];
        }
      } else if (kernels.forward_recurrence) {
        // (the recurrences read the weights through raw pointers: dense copies of strided ones)
        kernels.forward_recurrence({g.mode, d == 1, acts, hs, extra, h_prev, c_prev, w_hh.contiguous(),
                                    gru && has_biases ? weights[base + 3].contiguous() : at::Tensor()});
        const int64_t last_t = d == 0 ? g.T - 1 : 0;
        h_prev = hs[last_t];
        if (lstm) c_prev = extra[last_t];
      } else {
        for (int64_t s = 0; s < g.T; ++s) {
          const int64_t t = d == 0 ? s : g.T - 1 - s;
          RnnStepForward step{g.mode, acts[t], hidden, h_prev, c_prev, hs[t],
                              extra.defined() ? extra[t] : at::Tensor()};
          if (gru) {
            if (has_biases) {
              at::addmm_out(hidden, weights[base + 3], h_prev, w_hh.t());
            } else {
              at::mm_out(hidden, h_prev, w_hh.t());
            }
          } else {
            step.gates.addmm_(h_prev, w_hh.t());
          }
          kernels.forward(step);
          h_prev = step.h;
          if (lstm) c_prev = step.extra;
        }
      }
      hy[l * g.D + d].copy_(h_prev);
      if (lstm) cy[l * g.D + d].copy_(c_prev);
    }
  }
  const int64_t last = g.L - 1;
  at::Tensor output = g.D == 1 ? block_part(reserve, g, last, 0, 1).clone()
                               : at::cat({block_part(reserve, g, last, 0, 1), block_part(reserve, g, last, 1, 1)}, 2);
  return {output, hy, cy, reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> rnn_backward(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const at::Tensor& input, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, at::TensorList weights, const at::Tensor& reserve, int64_t mode_int,
    bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks, bool need_input_grad,
    const RnnPointwise& kernels) {
  const RnnGeometry g =
      check_rnn_args(input, hx, cx, weights, mode_int, has_biases, num_layers, bidirectional, dropout_masks);
  const char* op = mode_name(g.mode);
  const bool lstm = g.mode == RnnMode::Lstm, gru = g.mode == RnnMode::Gru;
  TORCH_CHECK(reserve.dim() == 1 && reserve.numel() == g.L * g.D * g.block_numel(), "d2l_ext._", op,
              "_backward: reserve has ", reserve.numel(), " elements, expected ", g.L * g.D * g.block_numel(),
              " (the forward's reserve for these arguments)");
  check_like(reserve, input, op, "reserve");
  auto defined = [](const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); };
  if (defined(grad_output)) {
    check_like(*grad_output, input, op, "grad_output");
    check_shape(*grad_output, {g.T, g.B, g.D * g.P}, op, "grad_output");
  }
  if (defined(grad_hy)) {
    check_like(*grad_hy, input, op, "grad_hy");
    check_shape(*grad_hy, {g.L * g.D, g.B, g.P}, op, "grad_hy");
  }
  if (lstm && defined(grad_cy)) {
    check_like(*grad_cy, input, op, "grad_cy");
    check_shape(*grad_cy, {g.L * g.D, g.B, g.H}, op, "grad_cy");
  }
  const at::TensorOptions opts = input.options();
  const at::Tensor h0 = hx.contiguous();
  const at::Tensor c0 = lstm ? cx->contiguous() : at::Tensor();
  const at::Tensor r = reserve.contiguous();
  at::Tensor grad_hx = at::empty({g.L * g.D, g.B, g.P}, opts);
  at::Tensor grad_cx = lstm ? at::empty({g.L * g.D, g.B, g.H}, opts) : at::empty({0}, opts);
  std::vector<at::Tensor> grad_weights;
  grad_weights.reserve(weights.size());
  for (const at::Tensor& w : weights) grad_weights.push_back(at::empty(w.sizes(), opts));
  at::Tensor grad_input;
  // Gradient reaching the current layer's outputs (T, B, D * H); undefined = zero.
  at::Tensor d_out = defined(grad_output) ? grad_output->contiguous() : at::Tensor();
  at::Tensor d_gates = at::empty({g.T, g.B, g.G * g.H}, opts);
  at::Tensor d_hidden = gru ? at::empty({g.T, g.B, g.G * g.H}, opts) : d_gates;
  at::Tensor dh = at::empty({g.B, g.P}, opts), dh_next = at::empty({g.B, g.P}, opts);
  at::Tensor dc = lstm ? at::empty({g.B, g.H}, opts) : at::Tensor();
  for (int64_t l = g.L - 1; l >= 0; --l) {
    const at::Tensor x = l == 0 ? input.contiguous() : layer_input(r, g, l, dropout_masks);
    const int64_t in_l = x.size(2);
    const at::Tensor x2 = x.view({g.T * g.B, in_l});
    const bool want_dx = l > 0 || need_input_grad;
    at::Tensor dx;
    for (int64_t d = 0; d < g.D; ++d) {
      const int64_t idx = l * g.D + d, base = idx * g.per_block();
      const at::Tensor &w_ih = weights[base], &w_hh = weights[base + 1];
      const at::Tensor acts = block_part(r, g, l, d, 0), hs = block_part(r, g, l, d, 1);
      const at::Tensor extra = has_extra(g.mode) ? block_part(r, g, l, d, 2) : at::Tensor();
      if (defined(grad_hy)) dh.copy_((*grad_hy)[idx]); else dh.zero_();
      if (lstm) {
        if (defined(grad_cy)) dc.copy_((*grad_cy)[idx]); else dc.zero_();
      }
      // Steps in reverse of the forward order; `first` is the forward's first step (its h_prev is h0).
      const int64_t first = d == 0 ? 0 : g.T - 1, back = d == 0 ? -1 : 1;
      if (g.proj()) {  // per step: dh_t -> dW_hr, dr = dh_t W_hr -> the cell step -> dh_{t-1} = dG_t W_hh
        const at::Tensor rs = block_part(r, g, l, d, 3), w_hr = weights[base + g.per_block() - 1];
        at::Tensor& gw_hr = grad_weights[base + g.per_block() - 1];
        gw_hr.zero_();
        for (int64_t s = 0; s < g.T; ++s) {
          const int64_t t = d == 0 ? g.T - 1 - s : s;
          const bool at_first = t == first;
          if (d_out.defined()) dh.add_(d_out[t].narrow(1, d * g.P, g.P));
          gw_hr.addmm_(dh.t(), rs[t]);
          RnnStepBackward step;
          step.mode = g.mode;
          step.acts = acts[t];
          step.dh = at::mm(dh, w_hr);
          step.dc = dc;
          step.c_prev = at_first ? c0[idx] : extra[t + back];
          step.extra = extra[t];
          step.d_gates = d_gates[t];
          step.d_hidden = d_hidden[t];
          kernels.backward(step);
          at::mm_out(dh, d_gates[t], w_hh);
        }
      } else if (kernels.backward_recurrence) {
        kernels.backward_recurrence({g.mode, d == 1, acts, hs, extra, h0[idx], lstm ? c0[idx] : at::Tensor(),
                                     w_hh.contiguous(),
                                     d_out.defined() ? d_out.narrow(2, d * g.P, g.P) : at::Tensor(), dh, dc,
                                     d_gates, d_hidden});
      } else {
        for (int64_t s = 0; s < g.T; ++s) {
          const int64_t t = d == 0 ? g.T - 1 - s : s;
          const bool at_first = t == first;
          RnnStepBackward step;
          step.mode = g.mode;
          step.acts = acts[t];
          if (d_out.defined()) step.grad_out = d_out[t].narrow(1, d * g.P, g.P);
          step.dh = dh;
          step.dc = dc;
          step.h_prev = at_first ? h0[idx] : hs[t + back];
          if (lstm) step.c_prev = at_first ? c0[idx] : extra[t + back];
          step.h = hs[t];
          if (extra.defined()) step.extra = extra[t];
          step.d_gates = d_gates[t];
          step.d_hidden = d_hidden[t];
          kernels.backward(step);
          if (gru) {
            at::addmm_out(dh_next, dh, d_hidden[t], w_hh);
          } else {
            at::mm_out(dh_next, d_gates[t], w_hh);
          }
          std::swap(dh, dh_next);
        }
      }
      grad_hx[idx].copy_(dh);
      if (lstm) grad_cx[idx].copy_(dc);
      const at::Tensor dg2 = d_gates.view({g.T * g.B, g.G * g.H});
      const at::Tensor dhid2 = d_hidden.view({g.T * g.B, g.G * g.H});
      const at::Tensor pos = l == 0 ? one_hot_positions(x2, w_ih) : at::Tensor();
      // one-hot x: each row of dG adds to the column of w_ih its step picked (and to the bias gradient)
      const bool bias_done = pos.defined() && has_biases;
      if (pos.defined()) {
        scatter_rows(dg2, pos, in_l, grad_weights[base], has_biases ? &grad_weights[base + 2] : nullptr);
      } else {
        at::mm_out(grad_weights[base], dg2.t(), x2);
      }
      // dW_hh = sum_t dHidden_t^T h_prev(t): the steps after the first pair with the h of the step before.
      at::Tensor& gw_hh = grad_weights[base + 1];
      if (kernels.hidden_weight_grad && kernels.hidden_weight_grad(d_hidden, hs, h0[idx], d == 1, gw_hh)) {
        // done by the device's kernel
      } else if (g.T > 1) {
        const int64_t rows = (g.T - 1) * g.B;
        const at::Tensor later = d_hidden.narrow(0, d == 0 ? 1 : 0, g.T - 1).reshape({rows, g.G * g.H});
        const at::Tensor prev = hs.narrow(0, d == 0 ? 0 : 1, g.T - 1).reshape({rows, g.P});
        at::mm_out(gw_hh, later.t(), prev);
        gw_hh.addmm_(d_hidden[first].t(), h0[idx]);
      } else {
        at::mm_out(gw_hh, d_hidden[0].t(), h0[idx]);
      }
      if (has_biases) {
        if (!bias_done) at::sum_out(grad_weights[base + 2], dg2, {0});
        if (gru) {
          at::sum_out(grad_weights[base + 3], dhid2, {0});
        } else {  // b_ih and b_hh enter the gates alike
          grad_weights[base + 3].copy_(grad_weights[base + 2]);
        }
      }
      if (want_dx) {
        if (d == 0) {
          dx = at::mm(dg2, w_ih);
        } else {
          dx.addmm_(dg2, w_ih);
        }
      }
    }
    if (l > 0) {
      d_out = dx.view({g.T, g.B, in_l});
      if (!dropout_masks.empty()) d_out = d_out * dropout_masks[l - 1];
    } else if (want_dx) {
      grad_input = dx.view({g.T, g.B, g.I});
    }
  }
  return {grad_input, grad_hx, grad_cx, grad_weights};
}

}  // namespace d2l_ext
