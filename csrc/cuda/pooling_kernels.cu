// CUDA kernels of the 2-D pooling ops (max, average, adaptive; forward and
// backward). Windows come from PoolAxis (csrc/pooling.h), shared with the CPU
// kernels, so regular and adaptive pooling run the same kernels.
//
// Forward: a thread per output element; consecutive threads own consecutive
// outputs (ow in (N, C, H, W), c in channels-last), so loads and stores of a
// warp are contiguous for stride 1 and within a few segments otherwise.
// Backward: a thread per input element walks the few outputs whose windows
// can hold it and sums their gradients (max: only where the output's offset
// names this element) in float32 (float64 for double), then writes once: no
// atomics, no zero-fill pass, deterministic.
#include <cuda_runtime.h>

#include <limits>
#include <type_traits>

#include "pooling_kernels.h"

namespace d2l_ext::cuda {
namespace {

constexpr int kThreads = 256;

// Position of element `i` in a (N, C, P, Q) tensor in either layout:
// (n, c, p, q) from a linear index in memory order.
template <typename I>
struct Coords {
  I n, c;
  int p, q;
};

template <typename I>
__device__ __forceinline__ Coords<I> coords_of(I i, I C, int P, int Q, bool channels_last) {
  Coords<I> r;
  if (channels_last) {  // memory order n, p, q, c
    r.c = i % C;
    I rest = i / C;
    r.q = static_cast<int>(rest % Q);
    rest /= Q;
    r.p = static_cast<int>(rest % P);
    r.n = rest / P;
  } else {  // memory order n, c, p, q
    r.q = static_cast<int>(i % Q);
    I rest = i / Q;
    r.p = static_cast<int>(rest % P);
    rest /= P;
    r.c = rest % C;
    r.n = rest / C;
  }
  return r;
}

// Linear index of (n, c, p, q) in a (N, C, P, Q) tensor of the layout.
template <typename I>
__device__ __forceinline__ I index_of(I n, I c, int p, int q, I C, int P, int Q, bool channels_last) {
  return channels_last ? ((n * P + p) * Q + q) * C + c : ((n * C + c) * P + p) * Q + q;
}

template <typename T>
__device__ __forceinline__ bool is_nan(T v) {
  return v != v;
}

template <typename T, typename Off, typename I>
__global__ void max_forward_kernel(PoolKernelArgs a, const T* __restrict__ x, T* __restrict__ y,
                                   Off* __restrict__ offset) {
  using A = typename AccOf<T>::type;
  const I total = static_cast<I>(a.N) * a.C * a.h.out * a.w.out;
  const I C = a.C;
  const int taps_w = a.w.taps();
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    const Coords<I> o = coords_of<I>(i, C, a.h.out, a.w.out, a.channels_last);
    int hb, hl, hh, wb, wl, wh;
    a.h.window(o.p, hb, hl, hh);
    a.w.window(o.q, wb, wl, wh);
    A best = -std::numeric_limits<A>::infinity();
    int code = (hl < hh && wl < wh) ? hl * taps_w + wl : 0;
    for (int t = hl; t < hh; ++t) {
      const int ih = hb + t * a.h.dilation;
      for (int u = wl; u < wh; ++u) {
        const int iw = wb + u * a.w.dilation;
        const A v = static_cast<A>(x[index_of<I>(o.n, o.c, ih, iw, C, a.h.in, a.w.in, a.channels_last)]);
        if (v > best || is_nan(v)) {  // torch's rule: a larger value or a NaN wins
          best = v;
          code = t * taps_w + u;
        }
      }
    }
    y[i] = static_cast<T>(best);
    offset[i] = static_cast<Off>(code);
  }
}

template <typename T, typename I>
__global__ void avg_forward_kernel(PoolKernelArgs a, const T* __restrict__ x, T* __restrict__ y) {
  using A = typename AccOf<T>::type;
  const I total = static_cast<I>(a.N) * a.C * a.h.out * a.w.out;
  const I C = a.C;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    const Coords<I> o = coords_of<I>(i, C, a.h.out, a.w.out, a.channels_last);
    int hb, hl, hh, wb, wl, wh;
    a.h.window(o.p, hb, hl, hh);
    a.w.window(o.q, wb, wl, wh);
    A sum = 0;
    for (int t = hl; t < hh; ++t) {
      for (int u = wl; u < wh; ++u) {
        sum += static_cast<A>(x[index_of<I>(o.n, o.c, hb + t, wb + u, C, a.h.in, a.w.in, a.channels_last)]);
      }
    }
    const A div = a.divisor_override != 0
                      ? static_cast<A>(a.divisor_override)
                      : static_cast<A>(a.h.count(o.p, a.include_pad)) * static_cast<A>(a.w.count(o.q, a.include_pad));
    y[i] = static_cast<T>(sum / div);
  }
}

template <typename T, typename Off, typename I>
__global__ void max_backward_kernel(PoolKernelArgs a, const T* __restrict__ gy, const Off* __restrict__ offset,
                                    T* __restrict__ gx) {
  using A = typename AccOf<T>::type;
  const I total = static_cast<I>(a.N) * a.C * a.h.in * a.w.in;
  const I C = a.C;
  const int taps_w = a.w.taps();
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    const Coords<I> e = coords_of<I>(i, C, a.h.in, a.w.in, a.channels_last);
    int oh0, oh1, ow0, ow1;
    a.h.outputs_touching(e.p, oh0, oh1);
    a.w.outputs_touching(e.q, ow0, ow1);
    A sum = 0;
    for (int oh = oh0; oh < oh1; ++oh) {
      int hb, hl, hh;
      a.h.window(oh, hb, hl, hh);
      for (int ow = ow0; ow < ow1; ++ow) {
        const I o = index_of<I>(e.n, e.c, oh, ow, C, a.h.out, a.w.out, a.channels_last);
        const int code = static_cast<int>(offset[o]);
        const int t = code / taps_w, u = code - t * taps_w;
        if (t < hl || t >= hh || hb + t * a.h.dilation != e.p) continue;
        int wb, wl, wh;
        a.w.window(ow, wb, wl, wh);
        if (u < wl || u >= wh || wb + u * a.w.dilation != e.q) continue;
        sum += static_cast<A>(gy[o]);
      }
    }
    gx[i] = static_cast<T>(sum);
  }
}

template <typename T, typename I>
__global__ void avg_backward_kernel(PoolKernelArgs a, const T* __restrict__ gy, T* __restrict__ gx) {
  using A = typename AccOf<T>::type;
  const I total = static_cast<I>(a.N) * a.C * a.h.in * a.w.in;
  const I C = a.C;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    const Coords<I> e = coords_of<I>(i, C, a.h.in, a.w.in, a.channels_last);
    int oh0, oh1, ow0, ow1;
    a.h.outputs_touching(e.p, oh0, oh1);
    a.w.outputs_touching(e.q, ow0, ow1);
    A sum = 0;
    for (int oh = oh0; oh < oh1; ++oh) {
      int hb, hl, hh;
      a.h.window(oh, hb, hl, hh);
      if (e.p < hb + hl || e.p >= hb + hh) continue;
      const A ch = static_cast<A>(a.h.count(oh, a.include_pad));
      for (int ow = ow0; ow < ow1; ++ow) {
        int wb, wl, wh;
        a.w.window(ow, wb, wl, wh);
        if (e.q < wb + wl || e.q >= wb + wh) continue;
        const A div = a.divisor_override != 0 ? static_cast<A>(a.divisor_override)
                                             : ch * static_cast<A>(a.w.count(ow, a.include_pad));
        sum += static_cast<A>(gy[index_of<I>(e.n, e.c, oh, ow, C, a.h.out, a.w.out, a.channels_last)]) / div;
      }
    }
    gx[i] = static_cast<T>(sum);
  }
}

unsigned blocks_for(int64_t total, int max_blocks) {
  const int64_t want = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(want < max_blocks ? want : max_blocks);
}

// int32 index arithmetic when every linear index fits (the common case: it
// halves the cost of the divisions that split an index into coordinates).
bool fits_int32(int64_t total) { return total <= std::numeric_limits<int32_t>::max() / 2; }

}  // namespace

cudaError_t launch_max_pool_forward(const PoolKernelArgs& a, const void* x, void* y, void* offset,
                                    cudaStream_t stream) {
  const int64_t total = a.N * a.C * a.h.out * a.w.out;
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    auto launch = [&](auto off_zero, auto idx_zero) {
      using Off = decltype(off_zero);
      using I = decltype(idx_zero);
      max_forward_kernel<T, Off, I><<<blocks_for(total, a.max_blocks), kThreads, 0, stream>>>(
          a, static_cast<const T*>(x), static_cast<T*>(y), static_cast<Off*>(offset));
    };
    if (a.offset_u8) {
      fits_int32(total) ? launch(uint8_t{}, int32_t{}) : launch(uint8_t{}, int64_t{});
    } else {
      fits_int32(total) ? launch(int32_t{}, int32_t{}) : launch(int32_t{}, int64_t{});
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_avg_pool_forward(const PoolKernelArgs& a, const void* x, void* y, cudaStream_t stream) {
  const int64_t total = a.N * a.C * a.h.out * a.w.out;
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    const unsigned blocks = blocks_for(total, a.max_blocks);
    if (fits_int32(total)) {
      avg_forward_kernel<T, int32_t><<<blocks, kThreads, 0, stream>>>(a, static_cast<const T*>(x), static_cast<T*>(y));
    } else {
      avg_forward_kernel<T, int64_t><<<blocks, kThreads, 0, stream>>>(a, static_cast<const T*>(x), static_cast<T*>(y));
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_max_pool_backward(const PoolKernelArgs& a, const void* gy, const void* offset, void* gx,
                                     cudaStream_t stream) {
  const int64_t total = a.N * a.C * a.h.in * a.w.in;
  const int64_t out_total = a.N * a.C * a.h.out * a.w.out;
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    auto launch = [&](auto off_zero, auto idx_zero) {
      using Off = decltype(off_zero);
      using I = decltype(idx_zero);
      max_backward_kernel<T, Off, I><<<blocks_for(total, a.max_blocks), kThreads, 0, stream>>>(
          a, static_cast<const T*>(gy), static_cast<const Off*>(offset), static_cast<T*>(gx));
    };
    const bool small = fits_int32(total) && fits_int32(out_total);
    if (a.offset_u8) {
      small ? launch(uint8_t{}, int32_t{}) : launch(uint8_t{}, int64_t{});
    } else {
      small ? launch(int32_t{}, int32_t{}) : launch(int32_t{}, int64_t{});
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_avg_pool_backward(const PoolKernelArgs& a, const void* gy, void* gx, cudaStream_t stream) {
  const int64_t total = a.N * a.C * a.h.in * a.w.in;
  const int64_t out_total = a.N * a.C * a.h.out * a.w.out;
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    const unsigned blocks = blocks_for(total, a.max_blocks);
    if (fits_int32(total) && fits_int32(out_total)) {
      avg_backward_kernel<T, int32_t><<<blocks, kThreads, 0, stream>>>(a, static_cast<const T*>(gy), static_cast<T*>(gx));
    } else {
      avg_backward_kernel<T, int64_t><<<blocks, kThreads, 0, stream>>>(a, static_cast<const T*>(gy), static_cast<T*>(gx));
    }
  });
  return cudaGetLastError();
}

}  // namespace d2l_ext::cuda
