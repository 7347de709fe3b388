// The launch interface between the CUDA host side of d2l_ext::conv2d
// (conv2d.cpp: checks, allocation, the matrix products through at::bmm /
// cuBLAS) and its two data-movement kernels (conv2d_kernels.cu). Plain data
// only; the launchers never throw, they return the launch status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace d2l_ext::cuda {

struct ConvKernelArgs {
  DType dtype;
  int64_t C, H, W;          // input channels and size
  int64_t kh, kw, OH, OW;   // kernel and output size
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t images;           // images in this chunk
  int max_blocks;           // grid cap; kernels loop over the rest
};

// col (C kh kw, images, OH OW): row (c, ki, kj), then image, then output
// position, so that a group's rows are one (C/groups kh kw) x (images OH OW)
// matrix. x: the chunk's images, (images, C, H, W) contiguous. Padding reads 0.
cudaError_t launch_im2col(const ConvKernelArgs& a, const void* x, void* col, cudaStream_t stream);

// The adjoint: gx (images, C, H, W) = for every input pixel, the sum of the
// col entries read from it (one thread per pixel gathers: no atomics, every
// element written once, deterministic).
cudaError_t launch_col2im(const ConvKernelArgs& a, const void* col, void* gx, cudaStream_t stream);

}  // namespace d2l_ext::cuda
