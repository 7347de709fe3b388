// CUDA kernels of d2l_ext::cross_entropy and its backward.
//
// Forward: a group of TPR threads owns one example ("row"): it reads the row's
// C logits once, keeping a running (max, sum of exp) pair per thread (online
// softmax), combines the pairs across the group, and writes the row's loss and
// log-sum-exp. TPR is 32 (a warp per row) for small C, 512 (a block per row)
// for large C, and 1 for spatial inputs (N, C, d1, ...), where consecutive
// threads own consecutive positions so that loads over the strided class
// dimension stay coalesced. A one-block kernel then reduces the row losses in a
// fixed order (deterministic "mean"/"sum").
// Backward: the same row groups recompute softmax from input and lse and write
// the gradient once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "../cross_entropy.h"

namespace d2l_ext {
namespace {

template <typename T>
struct AccOf { using type = float; };
template <>
struct AccOf<double> { using type = double; };

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

// Running statistics of (part of) a row: max m and sum of exp(x - m) for the
// log-sum-exp, plus two plain sums whose meaning depends on the target kind
// (index targets: a = sum_c w_c x_c; probability targets: a = sum_c w_c q'_c,
// b = sum_c w_c q'_c x_c).
template <typename acc_t>
struct Stats {
  acc_t m, s, a, b;
};

template <typename acc_t>
__device__ __forceinline__ Stats<acc_t> stats_init() {
  return {-std::numeric_limits<acc_t>::infinity(), acc_t(0), acc_t(0), acc_t(0)};
}

// Fold one logit into (m, s). A NaN logit lands in s (never in m), so it
// survives every later step; -inf logits add nothing.
template <typename acc_t>
__device__ __forceinline__ void stats_push(Stats<acc_t>& st, acc_t v) {
  if (v > st.m) {
    st.s = st.s * exp_acc(st.m - v) + acc_t(1);
    st.m = v;
  } else if (st.m != -std::numeric_limits<acc_t>::infinity() || v != v) {
    st.s += exp_acc(v - st.m);
  }
}

template <typename acc_t>
__device__ __forceinline__ Stats<acc_t> stats_combine(const Stats<acc_t>& x, const Stats<acc_t>& y) {
  Stats<acc_t> r;
  r.m = x.m > y.m ? x.m : y.m;
  if (r.m == -std::numeric_limits<acc_t>::infinity()) {
    r.s = x.s + y.s;
  } else {
    r.s = x.s * exp_acc(x.m - r.m) + y.s * exp_acc(y.m - r.m);
  }
  r.a = x.a + y.a;
  r.b = x.b + y.b;
  return r;
}

// Combine the statistics of the TPR threads of a row group; every thread of
// the group gets the result. `smem` holds one entry per warp (TPR > 32 only).
template <int TPR, typename acc_t>
__device__ __forceinline__ Stats<acc_t> group_reduce(Stats<acc_t> st, Stats<acc_t>* smem) {
  if constexpr (TPR == 1) {
    return st;
  } else {
    constexpr int kWidth = TPR < 32 ? TPR : 32;
#pragma unroll
    for (int offset = kWidth / 2; offset > 0; offset /= 2) {
      Stats<acc_t> o;
      o.m = __shfl_xor_sync(0xffffffffu, st.m, offset, kWidth);
      o.s = __shfl_xor_sync(0xffffffffu, st.s, offset, kWidth);
      o.a = __shfl_xor_sync(0xffffffffu, st.a, offset, kWidth);
      o.b = __shfl_xor_sync(0xffffffffu, st.b, offset, kWidth);
      st = stats_combine(st, o);
    }
    if constexpr (TPR > 32) {
      constexpr int kWarps = TPR / 32;
      const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
      if (lane == 0) smem[warp] = st;
      __syncthreads();
      if (warp == 0) {
        st = lane < kWarps ? smem[lane] : stats_init<acc_t>();
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) {
          Stats<acc_t> o;
          o.m = __shfl_xor_sync(0xffffffffu, st.m, offset);
          o.s = __shfl_xor_sync(0xffffffffu, st.s, offset);
          o.a = __shfl_xor_sync(0xffffffffu, st.a, offset);
          o.b = __shfl_xor_sync(0xffffffffu, st.b, offset);
          st = stats_combine(st, o);
        }
        if (lane == 0) smem[kWarps] = st;
      }
      __syncthreads();
      st = smem[kWarps];
      __syncthreads();  // smem is reused by the next row
    }
    return st;
  }
}

template <typename scalar_t, typename acc_t>
struct Args {
  const scalar_t* input;
  const int64_t* target;    // class indices, or null
  const scalar_t* probs;    // probabilities, or null
  const scalar_t* weight;   // (C,) or null
  const acc_t* weight_sum;  // device scalar sum_c w_c, or null (then C)
  int64_t N, C, S;
  int64_t ignore_index;
  acc_t eps;
};

// Row r = (n, s) starts at n*C*S + s and steps by S over classes.
__device__ __forceinline__ int64_t row_offset(int64_t row, int64_t C, int64_t S) {
  return (row / S) * C * S + row % S;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t weight_at(const Args<scalar_t, acc_t>& p, int64_t c) {
  return p.weight ? static_cast<acc_t>(p.weight[c]) : acc_t(1);
}

// blockDim.x == TPR * rows-per-block. Writes per-row loss (loss_rows, in acc_t,
// or loss_out in scalar_t when reduction is none), the row's share of the
// "mean" divisor, and lse. Bad class indices set err = {1, value} and make the
// row's loss NaN; the host turns that into an exception.
template <typename scalar_t, typename acc_t, int TPR>
__global__ void ce_forward_kernel(Args<scalar_t, acc_t> p, acc_t* __restrict__ loss_rows,
                                  scalar_t* __restrict__ loss_out, acc_t* __restrict__ row_weight,
                                  acc_t* __restrict__ lse_out, int64_t* __restrict__ err) {
  __shared__ Stats<acc_t> smem[TPR > 32 ? TPR / 32 + 1 : 1];
  const int rows_per_block = blockDim.x / TPR;
  const int lane = threadIdx.x % TPR;
  const int64_t rows = p.N * p.S;
  const acc_t C = static_cast<acc_t>(p.C);
  const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + threadIdx.x / TPR;
       row - threadIdx.x / TPR < rows; row += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    // With TPR > 32 every thread of the block must reach group_reduce's barriers.
    const bool active = row < rows;
    const int64_t base = active ? row_offset(row, p.C, p.S) : 0;
    int64_t t = 0;
    bool skip = !active;
    if (active && p.target) {
      t = p.target[row];
      skip = t == p.ignore_index || t < 0 || t >= p.C;
    }
    Stats<acc_t> st = stats_init<acc_t>();
    if (!skip) {
      const bool smooth_dot = p.target && p.eps > acc_t(0);
      for (int64_t c = lane; c < p.C; c += TPR) {
        const acc_t v = static_cast<acc_t>(p.input[base + c * p.S]);
        stats_push(st, v);
        if (smooth_dot) {
          st.a += weight_at(p, c) * v;
        } else if (!p.target) {
          const acc_t q = static_cast<acc_t>(p.probs[base + c * p.S]);
          const acc_t wq = weight_at(p, c) * ((acc_t(1) - p.eps) * q + p.eps / C);
          st.a += wq;
          st.b += wq * v;
        }
      }
    }
    st = group_reduce<TPR>(st, smem);
    if (!active || lane != 0) continue;
    acc_t loss, w_row = acc_t(0), lse = acc_t(0);
    if (p.target && t == p.ignore_index) {
      loss = acc_t(0);
    } else if (p.target && (t < 0 || t >= p.C)) {
      err[0] = 1;
      err[1] = t;
      loss = nan;
    } else {
      lse = st.m + log_acc(st.s);
      if (p.target) {
        w_row = weight_at(p, t);
        loss = (acc_t(1) - p.eps) * w_row * (lse - static_cast<acc_t>(p.input[base + t * p.S]));
        if (p.eps > acc_t(0)) {
          const acc_t W = p.weight_sum ? *p.weight_sum : C;
          loss += p.eps / C * (W * lse - st.a);
        }
      } else {
        w_row = acc_t(1);
        loss = st.a * lse - st.b;
      }
    }
    lse_out[row] = lse;
    row_weight[row] = w_row;
    if (loss_out) loss_out[row] = static_cast<scalar_t>(loss);
    else loss_rows[row] = loss;
  }
}

// One block: total_weight = sum(row_weight); for mean/sum also the loss.
// A fixed partition and reduction tree make the result run-to-run identical.
template <typename scalar_t, typename acc_t>
__global__ void ce_reduce_kernel(const acc_t* __restrict__ loss_rows, const acc_t* __restrict__ row_weight,
                                 int64_t rows, int64_t reduction, scalar_t* __restrict__ loss,
                                 acc_t* __restrict__ total_weight) {
  __shared__ acc_t sl[32], sw[32];
  acc_t l = 0, w = 0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
    if (loss_rows) l += loss_rows[i];
    w += row_weight[i];
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    l += __shfl_xor_sync(0xffffffffu, l, offset);
    w += __shfl_xor_sync(0xffffffffu, w, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sl[warp] = l; sw[warp] = w; }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    l = lane < warps ? sl[lane] : acc_t(0);
    w = lane < warps ? sw[lane] : acc_t(0);
    for (int offset = 16; offset > 0; offset /= 2) {
      l += __shfl_xor_sync(0xffffffffu, l, offset);
      w += __shfl_xor_sync(0xffffffffu, w, offset);
    }
    if (lane == 0) {
      *total_weight = w;
      if (reduction == 1) *loss = static_cast<scalar_t>(l / w);
      else if (reduction == 2) *loss = static_cast<scalar_t>(l);
    }
  }
}

// grad[row, c] = g_row * d loss_row / d x[row, c]; see csrc/cpu/cross_entropy.cpp for the formulas.
template <typename scalar_t, typename acc_t, int TPR>
__global__ void ce_backward_kernel(Args<scalar_t, acc_t> p, const acc_t* __restrict__ lse_rows,
                                   const scalar_t* __restrict__ grad_loss, bool per_row,
                                   const acc_t* __restrict__ total_weight, scalar_t* __restrict__ grad) {
  __shared__ Stats<acc_t> smem[TPR > 32 ? TPR / 32 + 1 : 1];
  const int rows_per_block = blockDim.x / TPR;
  const int lane = threadIdx.x % TPR;
  const int64_t rows = p.N * p.S;
  const acc_t C = static_cast<acc_t>(p.C);
  const acc_t scale = total_weight ? acc_t(1) / *total_weight : acc_t(1);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + threadIdx.x / TPR;
       row - threadIdx.x / TPR < rows; row += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const bool active = row < rows;
    const int64_t base = active ? row_offset(row, p.C, p.S) : 0;
    const acc_t g = active ? static_cast<acc_t>(grad_loss[per_row ? row : 0]) * scale : acc_t(0);
    const acc_t lse = active ? lse_rows[row] : acc_t(0);
    if (p.target) {
      if (!active) continue;
      const int64_t t = p.target[row];
      if (t == p.ignore_index || t < 0 || t >= p.C) {
        for (int64_t c = lane; c < p.C; c += TPR) grad[base + c * p.S] = scalar_t(0);
        continue;
      }
      const acc_t wt = weight_at(p, t);
      const acc_t W = p.weight_sum ? *p.weight_sum : C;
      const acc_t a = g * ((acc_t(1) - p.eps) * wt + p.eps * W / C);
      const acc_t b = g * p.eps / C;
      const acc_t hit = g * (acc_t(1) - p.eps) * wt;
      for (int64_t c = lane; c < p.C; c += TPR) {
        const int64_t i = base + c * p.S;
        acc_t d = a * exp_acc(static_cast<acc_t>(p.input[i]) - lse) - b * weight_at(p, c);
        if (c == t) d -= hit;
        grad[i] = static_cast<scalar_t>(d);
      }
    } else {
      // A = sum_c w_c q'_c needs its own reduction over the row first.
      Stats<acc_t> st = stats_init<acc_t>();
      if (active) {
        for (int64_t c = lane; c < p.C; c += TPR) {
          const acc_t q = static_cast<acc_t>(p.probs[base + c * p.S]);
          st.a += weight_at(p, c) * ((acc_t(1) - p.eps) * q + p.eps / C);
        }
      }
      st = group_reduce<TPR>(st, smem);
      if (!active) continue;
      for (int64_t c = lane; c < p.C; c += TPR) {
        const int64_t i = base + c * p.S;
        const acc_t q = static_cast<acc_t>(p.probs[i]);
        const acc_t wq = weight_at(p, c) * ((acc_t(1) - p.eps) * q + p.eps / C);
        grad[i] = static_cast<scalar_t>(g * (st.a * exp_acc(static_cast<acc_t>(p.input[i]) - lse) - wq));
      }
    }
  }
}

int sm_count() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// Launch `kernel<TPR>` with TPR picked from the row length and layout.
template <typename Launch>
void launch_rows(int64_t rows, int64_t C, int64_t S, Launch&& launch) {
  const int64_t max_blocks = static_cast<int64_t>(sm_count()) * 32;
  auto blocks_for = [&](int64_t rows_per_block) {
    return static_cast<unsigned>(std::max<int64_t>(1, std::min(max_blocks, (rows + rows_per_block - 1) / rows_per_block)));
  };
  if (S > 1) {
    launch(std::integral_constant<int, 1>{}, blocks_for(256), 256u);
  } else if (C <= 1024) {
    launch(std::integral_constant<int, 32>{}, blocks_for(8), 256u);
  } else {
    launch(std::integral_constant<int, 512>{}, blocks_for(1), 512u);
  }
}

// Skipping the target check saves a device-to-host sync per forward; then a
// bad class index makes that row's loss NaN instead of raising.
bool check_targets_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("D2L_EXT_CUDA_CHECK_TARGETS");
    return !(v && (std::string(v) == "0" || std::string(v) == "false"));
  }();
  return enabled;
}

template <typename scalar_t, typename acc_t>
Args<scalar_t, acc_t> make_args(const CEShape& sh, const at::Tensor& input, const at::Tensor& target,
                                const at::Tensor& weight, const at::Tensor& weight_sum,
                                int64_t ignore_index, double eps) {
  Args<scalar_t, acc_t> p{};
  p.input = input.const_data_ptr<scalar_t>();
  if (sh.prob_target) p.probs = target.const_data_ptr<scalar_t>();
  else p.target = target.const_data_ptr<int64_t>();
  p.weight = weight.defined() ? weight.const_data_ptr<scalar_t>() : nullptr;
  p.weight_sum = weight_sum.defined() ? weight_sum.const_data_ptr<acc_t>() : nullptr;
  p.N = sh.N;
  p.C = sh.C;
  p.S = sh.S;
  p.ignore_index = ignore_index;
  p.eps = static_cast<acc_t>(eps);
  return p;
}

struct Prepared {
  at::Tensor input, target, weight, weight_sum;
};

Prepared prepare(const CEShape& sh, const at::Tensor& input, const at::Tensor& target,
                 const c10::optional<at::Tensor>& weight, double label_smoothing) {
  Prepared r{input.contiguous(), target.contiguous(), at::Tensor(), at::Tensor()};
  if (weight.has_value() && weight->defined()) {
    r.weight = weight->contiguous();
    // Only the smoothed index-target loss needs sum_c w_c; keep it on the device.
    if (!sh.prob_target && label_smoothing > 0.0)
      r.weight_sum = r.weight.sum(acc_type_of(input.scalar_type()));
  }
  return r;
}

void check_cuda_inputs(const at::Tensor& input, const char* op) {
  TORCH_CHECK(input.is_cuda(), op, " (CUDA kernel): input must be a CUDA tensor");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_cuda(
    const at::Tensor& input_, const at::Tensor& target_, const c10::optional<at::Tensor>& weight_,
    int64_t reduction, int64_t ignore_index, double label_smoothing) {
  const CEShape sh = check_cross_entropy_args(input_, target_, weight_, reduction, label_smoothing);
  check_cuda_inputs(input_, "d2l_ext.cross_entropy");
  const c10::cuda::CUDAGuard guard(input_.device());
  const Prepared in = prepare(sh, input_, target_, weight_, label_smoothing);
  const auto rows_shape = per_example_sizes(in.input);
  const auto acc_opts = in.input.options().dtype(acc_type_of(in.input.scalar_type()));
  const bool per_row = reduction == static_cast<int64_t>(Reduction::None);

  at::Tensor lse = at::empty(rows_shape, acc_opts);
  at::Tensor row_weight = at::empty(rows_shape, acc_opts);
  at::Tensor loss = per_row ? at::empty(rows_shape, in.input.options()) : at::empty({}, in.input.options());
  at::Tensor loss_rows = per_row ? at::Tensor() : at::empty(rows_shape, acc_opts);
  at::Tensor total_weight = at::empty({}, acc_opts);
  const bool check = !sh.prob_target && check_targets_enabled();
  at::Tensor err = at::zeros({2}, in.input.options().dtype(at::kLong));
  const int64_t rows = sh.rows();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.input.scalar_type(), "d2l_ext_cross_entropy_cuda", [&] {
    using acc_t = typename AccOf<scalar_t>::type;
    const auto p = make_args<scalar_t, acc_t>(sh, in.input, in.target, in.weight, in.weight_sum, ignore_index, label_smoothing);
    if (rows > 0) {
      launch_rows(rows, sh.C, sh.S, [&](auto tpr, unsigned blocks, unsigned threads) {
        ce_forward_kernel<scalar_t, acc_t, decltype(tpr)::value><<<blocks, threads, 0, stream>>>(
            p, per_row ? nullptr : loss_rows.data_ptr<acc_t>(), per_row ? loss.data_ptr<scalar_t>() : nullptr,
            row_weight.data_ptr<acc_t>(), lse.data_ptr<acc_t>(), err.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    ce_reduce_kernel<scalar_t, acc_t><<<1, 1024, 0, stream>>>(
        per_row ? nullptr : loss_rows.const_data_ptr<acc_t>(), row_weight.const_data_ptr<acc_t>(), rows,
        reduction, per_row ? nullptr : loss.data_ptr<scalar_t>(), total_weight.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  if (check && rows > 0) {
    const at::Tensor e = err.cpu();  // waits for the kernels
    const int64_t* ev = e.const_data_ptr<int64_t>();
    TORCH_CHECK_INDEX(ev[0] == 0, "d2l_ext.cross_entropy: target ", ev[1], " is out of bounds for ",
                      sh.C, " classes (ignore_index=", ignore_index, ")");
  }
  return {loss, lse, total_weight};
}

at::Tensor cross_entropy_backward_cuda(const at::Tensor& grad_loss_, const at::Tensor& input_,
                                       const at::Tensor& target_, const c10::optional<at::Tensor>& weight_,
                                       const at::Tensor& lse_, const at::Tensor& total_weight,
                                       int64_t reduction, int64_t ignore_index, double label_smoothing) {
  const CEShape sh = check_cross_entropy_args(input_, target_, weight_, reduction, label_smoothing);
  check_cuda_inputs(input_, "d2l_ext._cross_entropy_backward");
  const c10::cuda::CUDAGuard guard(input_.device());
  const bool per_row = reduction == static_cast<int64_t>(Reduction::None);
  const auto rows_shape = per_example_sizes(input_);
  const auto acc = acc_type_of(input_.scalar_type());
  TORCH_CHECK(per_row ? grad_loss_.sizes() == at::IntArrayRef(rows_shape) : grad_loss_.dim() == 0,
              "d2l_ext._cross_entropy_backward: grad_loss has shape ", grad_loss_.sizes(),
              " but the loss has shape ", per_row ? at::IntArrayRef(rows_shape) : at::IntArrayRef());
  TORCH_CHECK(grad_loss_.scalar_type() == input_.scalar_type(),
              "d2l_ext._cross_entropy_backward: grad_loss must have input's dtype ", input_.scalar_type(),
              ", got ", grad_loss_.scalar_type());
  TORCH_CHECK(lse_.sizes() == at::IntArrayRef(rows_shape) && lse_.scalar_type() == acc,
              "d2l_ext._cross_entropy_backward: lse must be ", acc, " of shape ", at::IntArrayRef(rows_shape),
              ", got ", lse_.scalar_type(), " ", lse_.sizes());
  TORCH_CHECK(total_weight.numel() == 1 && total_weight.scalar_type() == acc,
              "d2l_ext._cross_entropy_backward: total_weight must be one ", acc, " value");
  TORCH_CHECK(grad_loss_.device() == input_.device() && lse_.device() == input_.device() &&
                  total_weight.device() == input_.device(),
              "d2l_ext._cross_entropy_backward: grad_loss, lse and total_weight must be on input's device ",
              input_.device());

  const Prepared in = prepare(sh, input_, target_, weight_, label_smoothing);
  const at::Tensor lse = lse_.contiguous();
  const at::Tensor grad_loss = grad_loss_.contiguous();
  at::Tensor grad = at::empty_like(in.input, at::MemoryFormat::Contiguous);
  const int64_t rows = sh.rows();
  if (rows == 0 || sh.C == 0) return grad;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.input.scalar_type(), "d2l_ext_cross_entropy_backward_cuda", [&] {
    using acc_t = typename AccOf<scalar_t>::type;
    const auto p = make_args<scalar_t, acc_t>(sh, in.input, in.target, in.weight, in.weight_sum, ignore_index, label_smoothing);
    const acc_t* tw = reduction == static_cast<int64_t>(Reduction::Mean) ? total_weight.const_data_ptr<acc_t>() : nullptr;
    launch_rows(rows, sh.C, sh.S, [&](auto tpr, unsigned blocks, unsigned threads) {
      ce_backward_kernel<scalar_t, acc_t, decltype(tpr)::value><<<blocks, threads, 0, stream>>>(
          p, lse.const_data_ptr<acc_t>(), grad_loss.const_data_ptr<scalar_t>(), per_row, tw,
          grad.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CUDA, m) {
  m.impl("cross_entropy", &cross_entropy_cuda);
  m.impl("_cross_entropy_backward", &cross_entropy_backward_cuda);
}

}  // namespace d2l_ext
