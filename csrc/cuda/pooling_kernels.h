// The launch interface between the CUDA host side of the pooling ops
// (pooling.cpp: checks, layouts, allocation, errors, all shared with the CPU
// backend through csrc/pooling_ops.h) and their kernels (pooling_kernels.cu).
// Plain data only; the launchers never throw, they return the launch status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../pooling.h"
#include "common.h"

namespace d2l_ext::cuda {

struct PoolKernelArgs {
  DType dtype;
  int64_t N, C;
  PoolAxis h, w;
  bool channels_last;     // tensors are (N, H, W, C) in memory, else (N, C, H, W)
  bool include_pad;       // average pooling: divisor counts the zero padding
  int64_t divisor_override;  // average pooling: 0 = window size
  bool offset_u8;         // max pooling: offsets uint8, else int32
  int max_blocks;         // grid cap; kernels loop over the rest
};

// Forward: one thread per output element. y: (N, C, OH, OW) in the layout;
// offset: the winner's tap code (max only).
cudaError_t launch_max_pool_forward(const PoolKernelArgs& a, const void* x, void* y, void* offset,
                                    cudaStream_t stream);
cudaError_t launch_avg_pool_forward(const PoolKernelArgs& a, const void* x, void* y, cudaStream_t stream);

// Backward: one thread per input element gathers from the outputs whose
// windows hold it (deterministic, no atomics), writing every element of gx.
cudaError_t launch_max_pool_backward(const PoolKernelArgs& a, const void* gy, const void* offset, void* gx,
                                     cudaStream_t stream);
cudaError_t launch_avg_pool_backward(const PoolKernelArgs& a, const void* gy, void* gx, cudaStream_t stream);

}  // namespace d2l_ext::cuda
