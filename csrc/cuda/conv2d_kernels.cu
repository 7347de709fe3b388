// The data-movement kernels of the CUDA conv2d: im2col and its adjoint col2im.
// The arithmetic is cuBLAS's (at::bmm in conv2d.cpp). A thread per element,
// consecutive threads on consecutive output positions (im2col) or input
// columns (col2im), so stores, and loads for stride 1, are coalesced.
#include <cuda_runtime.h>

#include "conv2d_kernels.h"

namespace d2l_ext::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void im2col_kernel(ConvKernelArgs a, const T* __restrict__ x, T* __restrict__ col) {
  const int64_t L = a.OH * a.OW;
  const int64_t total = a.C * a.kh * a.kw * a.images * L;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t l = i % L;
    const int64_t n = (i / L) % a.images;
    const int64_t row = i / (L * a.images);  // (c, ki, kj)
    const int64_t kj = row % a.kw, ki = (row / a.kw) % a.kh, c = row / (a.kw * a.kh);
    const int64_t iy = (l / a.OW) * a.sh - a.ph + ki * a.dh;
    const int64_t ix = (l % a.OW) * a.sw - a.pw + kj * a.dw;
    col[i] = (iy >= 0 && iy < a.H && ix >= 0 && ix < a.W) ? x[((n * a.C + c) * a.H + iy) * a.W + ix] : T(0);
  }
}

template <typename T>
__global__ void col2im_kernel(ConvKernelArgs a, const T* __restrict__ col, T* __restrict__ gx) {
  using A = typename AccOf<T>::type;
  const int64_t L = a.OH * a.OW;
  const int64_t total = a.images * a.C * a.H * a.W;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ix = i % a.W, iy = (i / a.W) % a.H;
    const int64_t c = (i / (a.W * a.H)) % a.C, n = i / (a.W * a.H * a.C);
    A sum = 0;
    for (int64_t ki = 0; ki < a.kh; ++ki) {
      const int64_t ty = iy + a.ph - ki * a.dh;  // oy * sh when this tap of output oy read (iy, .)
      if (ty < 0 || ty % a.sh != 0 || ty / a.sh >= a.OH) continue;
      const int64_t oy = ty / a.sh;
      for (int64_t kj = 0; kj < a.kw; ++kj) {
        const int64_t tx = ix + a.pw - kj * a.dw;
        if (tx < 0 || tx % a.sw != 0 || tx / a.sw >= a.OW) continue;
        const int64_t row = (c * a.kh + ki) * a.kw + kj;
        sum += static_cast<A>(col[(row * a.images + n) * L + oy * a.OW + tx / a.sw]);
      }
    }
    gx[i] = static_cast<T>(sum);
  }
}

unsigned blocks_for(int64_t total, int max_blocks) {
  const int64_t want = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(want < max_blocks ? (want > 0 ? want : 1) : max_blocks);
}

}  // namespace

cudaError_t launch_im2col(const ConvKernelArgs& a, const void* x, void* col, cudaStream_t stream) {
  const int64_t total = a.C * a.kh * a.kw * a.images * a.OH * a.OW;
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    im2col_kernel<T><<<blocks_for(total, a.max_blocks), kThreads, 0, stream>>>(a, static_cast<const T*>(x),
                                                                               static_cast<T*>(col));
  });
  return cudaGetLastError();
}

cudaError_t launch_col2im(const ConvKernelArgs& a, const void* col, void* gx, cudaStream_t stream) {
  const int64_t total = a.images * a.C * a.H * a.W;
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    col2im_kernel<T><<<blocks_for(total, a.max_blocks), kThreads, 0, stream>>>(a, static_cast<const T*>(col),
                                                                               static_cast<T*>(gx));
  });
  return cudaGetLastError();
}

}  // namespace d2l_ext::cuda
