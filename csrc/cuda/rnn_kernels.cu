// CUDA element-wise steps of the recurrent cells: one thread per (row, unit),
// reading that unit's G gates (strided by H within the row), computing in
// float32 (float64 for double) and writing the activations, the new state and,
// in backward, the pre-activation gate gradients. Equations and saved values
// are those of the CPU kernels (csrc/cpu/rnn_cells.h, csrc/rnn.h).
#include <cuda_runtime.h>

#include "rnn_kernels.h"

namespace d2l_ext::cuda {
namespace {

constexpr int kThreads = 256;

template <typename A>
__device__ __forceinline__ A sigmoid(A x) {
  return A(1) / (A(1) + exp(-x));
}

template <typename T, typename A>
__device__ __forceinline__ A ld(const T* p, int64_t i) {
  return static_cast<A>(p[i]);
}

template <typename T>
__global__ void cell_forward_kernel(CellKind kind, int64_t B, int64_t H, T* __restrict__ gates,
                                    const T* __restrict__ hidden, const T* __restrict__ h_prev,
                                    const T* __restrict__ c_prev, T* __restrict__ h, T* __restrict__ extra) {
  using A = typename AccOf<T>::type;
  const int64_t n = B * H;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / H, j = idx - b * H;
    if (kind == CellKind::Lstm) {
      T* g = gates + b * 4 * H + j;
      const A i = sigmoid(ld<T, A>(g, 0)), f = sigmoid(ld<T, A>(g, H)), c_hat = tanh(ld<T, A>(g, 2 * H)),
              o = sigmoid(ld<T, A>(g, 3 * H));
      const A c = f * ld<T, A>(c_prev, idx) + i * c_hat;
      g[0] = static_cast<T>(i);
      g[H] = static_cast<T>(f);
      g[2 * H] = static_cast<T>(c_hat);
      g[3 * H] = static_cast<T>(o);
      extra[idx] = static_cast<T>(c);
      h[idx] = static_cast<T>(o * tanh(c));
    } else if (kind == CellKind::Gru) {
      T* g = gates + b * 3 * H + j;
      const T* hid = hidden + b * 3 * H + j;
      const A r = sigmoid(ld<T, A>(g, 0) + ld<T, A>(hid, 0));
      const A z = sigmoid(ld<T, A>(g, H) + ld<T, A>(hid, H));
      const A hn = ld<T, A>(hid, 2 * H);
      const A nn = tanh(ld<T, A>(g, 2 * H) + r * hn);
      g[0] = static_cast<T>(r);
      g[H] = static_cast<T>(z);
      g[2 * H] = static_cast<T>(nn);
      extra[idx] = static_cast<T>(hn);
      h[idx] = static_cast<T>(nn + z * (ld<T, A>(h_prev, idx) - nn));
    } else {
      const A x = ld<T, A>(gates, idx);
      const A a = kind == CellKind::Relu ? (x < A(0) ? A(0) : x) : tanh(x);
      gates[idx] = static_cast<T>(a);
      h[idx] = static_cast<T>(a);
    }
  }
}

template <typename T>
__global__ void cell_backward_kernel(CellKind kind, int64_t B, int64_t H, int64_t go_stride,
                                     const T* __restrict__ acts, const T* __restrict__ grad_out, T* __restrict__ dh,
                                     T* __restrict__ dc, const T* __restrict__ h_prev, const T* __restrict__ c_prev,
                                     const T* __restrict__ h, const T* __restrict__ extra, T* __restrict__ d_gates,
                                     T* __restrict__ d_hidden) {
  using A = typename AccOf<T>::type;
  const int64_t n = B * H;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / H, j = idx - b * H;
    const A dht = ld<T, A>(dh, idx) + (grad_out ? ld<T, A>(grad_out, b * go_stride + j) : A(0));
    if (kind == CellKind::Lstm) {
      const T* a = acts + b * 4 * H + j;
      T* dg = d_gates + b * 4 * H + j;
      const A i = ld<T, A>(a, 0), f = ld<T, A>(a, H), g = ld<T, A>(a, 2 * H), o = ld<T, A>(a, 3 * H);
      const A tc = tanh(ld<T, A>(extra, idx));
      const A dct = ld<T, A>(dc, idx) + dht * o * (A(1) - tc * tc);
      dg[0] = static_cast<T>(dct * g * i * (A(1) - i));
      dg[H] = static_cast<T>(dct * ld<T, A>(c_prev, idx) * f * (A(1) - f));
      dg[2 * H] = static_cast<T>(dct * i * (A(1) - g * g));
      dg[3 * H] = static_cast<T>(dht * tc * o * (A(1) - o));
      dc[idx] = static_cast<T>(dct * f);
    } else if (kind == CellKind::Gru) {
      const T* a = acts + b * 3 * H + j;
      T* dg = d_gates + b * 3 * H + j;
      T* dhid = d_hidden + b * 3 * H + j;
      const A r = ld<T, A>(a, 0), z = ld<T, A>(a, H), nn = ld<T, A>(a, 2 * H);
      const A dn = dht * (A(1) - z) * (A(1) - nn * nn);
      const A dr = dn * ld<T, A>(extra, idx) * r * (A(1) - r);
      const A dz = dht * (ld<T, A>(h_prev, idx) - nn) * z * (A(1) - z);
      dg[0] = static_cast<T>(dr);
      dg[H] = static_cast<T>(dz);
      dg[2 * H] = static_cast<T>(dn);
      dhid[0] = static_cast<T>(dr);
      dhid[H] = static_cast<T>(dz);
      dhid[2 * H] = static_cast<T>(dn * r);
      dh[idx] = static_cast<T>(dht * z);
    } else {
      const A a = ld<T, A>(h, idx);
      d_gates[idx] = static_cast<T>(kind == CellKind::Relu ? (a <= A(0) ? A(0) : dht) : dht * (A(1) - a * a));
    }
  }
}

int blocks_for(int64_t n, int max_blocks) {
  const int64_t want = (n + kThreads - 1) / kThreads;
  return static_cast<int>(want < max_blocks ? (want > 0 ? want : 1) : max_blocks);
}

}  // namespace

cudaError_t launch_cell_forward(const CellStepArgs& a, void* gates, const void* hidden, const void* h_prev,
                                const void* c_prev, void* h, void* extra, cudaStream_t stream) {
  const int blocks = blocks_for(a.B * a.H, a.max_blocks);
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    cell_forward_kernel<T><<<blocks, kThreads, 0, stream>>>(
        a.kind, a.B, a.H, static_cast<T*>(gates), static_cast<const T*>(hidden), static_cast<const T*>(h_prev),
        static_cast<const T*>(c_prev), static_cast<T*>(h), static_cast<T*>(extra));
  });
  return cudaGetLastError();
}

cudaError_t launch_cell_backward(const CellStepArgs& a, const void* acts, const void* grad_out, void* dh, void* dc,
                                 const void* h_prev, const void* c_prev, const void* h, const void* extra,
                                 void* d_gates, void* d_hidden, cudaStream_t stream) {
  const int blocks = blocks_for(a.B * a.H, a.max_blocks);
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    cell_backward_kernel<T><<<blocks, kThreads, 0, stream>>>(
        a.kind, a.B, a.H, a.grad_out_stride, static_cast<const T*>(acts), static_cast<const T*>(grad_out),
        static_cast<T*>(dh), static_cast<T*>(dc), static_cast<const T*>(h_prev), static_cast<const T*>(c_prev),
        static_cast<const T*>(h), static_cast<const T*>(extra), static_cast<T*>(d_gates),
        static_cast<T*>(d_hidden));
  });
  return cudaGetLastError();
}

}  // namespace d2l_ext::cuda
