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
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "cross_entropy_kernels.h"

namespace d2l_ext::cuda {
namespace {

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
// survives every later step; -inf logits add nothing; +inf makes s NaN.
template <typename acc_t>
__device__ __forceinline__ void stats_push(Stats<acc_t>& st, acc_t v) {
  if (v > st.m) {
    // exp(v - v) is 1, or NaN for v = +inf, as in a two-pass log-sum-exp.
    st.s = st.s * exp_acc(st.m - v) + exp_acc(v - v);
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
      skip = t != p.ignore_index && (t < 0 || t >= p.C);  // an ignored row's lse decides its gradient
    }
    Stats<acc_t> st = stats_init<acc_t>();
    if (!skip) {
      const bool smooth_dot = p.target && p.eps > acc_t(0);
      auto extras = [&](int64_t c, acc_t v) {
        if (smooth_dot) {
          st.a += weight_at(p, c) * v;
        } else if (!p.target) {
          const acc_t q = static_cast<acc_t>(p.probs[base + c * p.S]);
          const acc_t wq = weight_at(p, c) * ((acc_t(1) - p.eps) * q + p.eps / C);
          st.a += wq;
          st.b += wq * v;
        }
      };
      // U coalesced loads in flight per thread, then one rescale per chunk.
      constexpr int U = 8;
      int64_t c = lane;
      for (; c + (U - 1) * TPR < p.C; c += U * TPR) {
        acc_t v[U];
#pragma unroll
        for (int j = 0; j < U; ++j) v[j] = static_cast<acc_t>(p.input[base + (c + j * TPR) * p.S]);
        acc_t cm = v[0];
#pragma unroll
        for (int j = 1; j < U; ++j) cm = v[j] > cm ? v[j] : cm;
        if (cm > st.m) {
          st.s *= exp_acc(st.m - cm);
          st.m = cm;
        }
        if (st.m == -std::numeric_limits<acc_t>::infinity()) {
          // Everything so far is -inf (adds nothing) or NaN (must survive).
#pragma unroll
          for (int j = 0; j < U; ++j)
            if (v[j] != v[j]) st.s = v[j];
        } else {
#pragma unroll
          for (int j = 0; j < U; ++j) st.s += exp_acc(v[j] - st.m);
        }
        if (smooth_dot || !p.target) {
#pragma unroll
          for (int j = 0; j < U; ++j) extras(c + j * TPR, v[j]);
        }
      }
      for (; c < p.C; c += TPR) {
        const acc_t v = static_cast<acc_t>(p.input[base + c * p.S]);
        stats_push(st, v);
        extras(c, v);
      }
    }
    st = group_reduce<TPR>(st, smem);
    if (!active || lane != 0) continue;
    acc_t loss, w_row = acc_t(0), lse = acc_t(0);
    if (p.target && t == p.ignore_index) {
      // Kept as 0, or NaN when the row's lse is not finite: its gradient is then NaN in every class,
      // as torch's (log_softmax's backward multiplies the softmax by a zero gradient).
      const acc_t row_lse = st.m + log_acc(st.s);
      lse = row_lse - row_lse == acc_t(0) ? acc_t(0) : nan;
      loss = acc_t(0);
    } else if (p.target && (t < 0 || t >= p.C)) {
      if (err) {
        err[0] = 1;
        err[1] = t;
      }
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
      if (t == p.ignore_index || t < 0 || t >= p.C) {  // lse: 0, or NaN (see the forward)
        for (int64_t c = lane; c < p.C; c += TPR) grad[base + c * p.S] = static_cast<scalar_t>(lse);
        continue;
      }
      const acc_t wt = weight_at(p, t);
      const acc_t W = p.weight_sum ? *p.weight_sum : C;
      const acc_t a = g * ((acc_t(1) - p.eps) * wt + p.eps * W / C);
      const acc_t b = g * p.eps / C;
      const acc_t hit = g * (acc_t(1) - p.eps) * wt;
#pragma unroll 4
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

// Launch `kernel<TPR>` with TPR picked from the row length and layout.
template <typename Launch>
void launch_rows(int64_t rows, int64_t C, int64_t S, int max_blocks, Launch&& launch) {
  auto blocks_for = [&](int64_t rows_per_block) {
    const int64_t want = (rows + rows_per_block - 1) / rows_per_block;
    return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(max_blocks, want)));
  };
  if (S > 1) {
    launch(std::integral_constant<int, 1>{}, blocks_for(256), 256u);
  } else if (C <= 1024) {
    launch(std::integral_constant<int, 32>{}, blocks_for(8), 256u);
  } else {
    launch(std::integral_constant<int, 512>{}, blocks_for(1), 512u);
  }
}

template <typename scalar_t>
Args<scalar_t, typename AccOf<scalar_t>::type> to_args(const CEKernelArgs& a) {
  using acc_t = typename AccOf<scalar_t>::type;
  Args<scalar_t, acc_t> p{};
  p.input = static_cast<const scalar_t*>(a.input);
  p.target = a.target;
  p.probs = static_cast<const scalar_t*>(a.probs);
  p.weight = static_cast<const scalar_t*>(a.weight);
  p.weight_sum = static_cast<const acc_t*>(a.weight_sum);
  p.N = a.N;
  p.C = a.C;
  p.S = a.S;
  p.ignore_index = a.ignore_index;
  p.eps = static_cast<acc_t>(a.label_smoothing);
  return p;
}


}  // namespace

cudaError_t launch_cross_entropy_forward(const CEKernelArgs& a, void* loss_rows, void* loss_out,
                                         void* row_weight, void* lse, int64_t* err, int64_t reduction,
                                         void* loss_scalar, void* total_weight, cudaStream_t stream) {
  cudaError_t status = cudaSuccess;
  dispatch(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename AccOf<scalar_t>::type;
    const auto p = to_args<scalar_t>(a);
    const int64_t rows = a.N * a.S;
    if (rows > 0) {
      launch_rows(rows, a.C, a.S, a.max_blocks, [&](auto tpr, unsigned blocks, unsigned threads) {
        ce_forward_kernel<scalar_t, acc_t, decltype(tpr)::value><<<blocks, threads, 0, stream>>>(
            p, static_cast<acc_t*>(loss_rows), static_cast<scalar_t*>(loss_out),
            static_cast<acc_t*>(row_weight), static_cast<acc_t*>(lse), err);
      });
      status = cudaGetLastError();
      if (status != cudaSuccess) return;
    }
    ce_reduce_kernel<scalar_t, acc_t><<<1, 1024, 0, stream>>>(
        static_cast<const acc_t*>(loss_rows), static_cast<const acc_t*>(row_weight), rows, reduction,
        static_cast<scalar_t*>(loss_scalar), static_cast<acc_t*>(total_weight));
    status = cudaGetLastError();
  });
  return status;
}

cudaError_t launch_cross_entropy_backward(const CEKernelArgs& a, const void* lse, const void* grad_loss,
                                          bool per_row, const void* total_weight, void* grad,
                                          cudaStream_t stream) {
  cudaError_t status = cudaSuccess;
  dispatch(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename AccOf<scalar_t>::type;
    const auto p = to_args<scalar_t>(a);
    launch_rows(a.N * a.S, a.C, a.S, a.max_blocks, [&](auto tpr, unsigned blocks, unsigned threads) {
      ce_backward_kernel<scalar_t, acc_t, decltype(tpr)::value><<<blocks, threads, 0, stream>>>(
          p, static_cast<const acc_t*>(lse), static_cast<const scalar_t*>(grad_loss), per_row,
          static_cast<const acc_t*>(total_weight), static_cast<scalar_t*>(grad));
    });
    status = cudaGetLastError();
  });
  return status;
}

}  // namespace d2l_ext::cuda
