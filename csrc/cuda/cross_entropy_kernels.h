// The launch interface between the host code of d2l_ext::cross_entropy
// (cross_entropy.cpp, compiled by the C++ compiler: argument checks,
// allocation, errors) and its kernels (cross_entropy_kernels.cu, compiled by
// nvcc). Only plain data crosses it and the launchers never throw: they return
// the launch status, which the host side turns into an exception. Keeping every
// throw in code from one compiler avoids mixing two toolchains' exception and
// inline-function code in one library.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace d2l_ext::cuda {

struct CEKernelArgs {
  DType dtype;
  const void* input;          // (N, C, S) contiguous
  const int64_t* target;      // (N, S) class indices, or null
  const void* probs;          // (N, C, S) probabilities, or null
  const void* weight;         // (C,) or null
  const void* weight_sum;     // device scalar (acc type) sum_c w_c, or null
  int64_t N, C, S;
  int64_t ignore_index;
  double label_smoothing;
  int max_blocks;             // grid cap (a few waves of the device's SMs)
};

// Forward: per-row lse (acc type), row weights (acc type), and either per-row
// losses into loss_rows (acc type; reduction mean/sum) or loss_out (input
// dtype; reduction none); then total_weight (acc type) and, for mean/sum, the
// loss (input dtype). err = {flag, bad target}, or null to skip the record.
cudaError_t launch_cross_entropy_forward(const CEKernelArgs& a, void* loss_rows, void* loss_out,
                                         void* row_weight, void* lse, int64_t* err, int64_t reduction,
                                         void* loss_scalar, void* total_weight, cudaStream_t stream);

// Backward: grad (input dtype, (N, C, S)); grad_loss per row (reduction none)
// or a scalar; total_weight divides it for mean (null otherwise).
cudaError_t launch_cross_entropy_backward(const CEKernelArgs& a, const void* lse, const void* grad_loss,
                                          bool per_row, const void* total_weight, void* grad,
                                          cudaStream_t stream);

}  // namespace d2l_ext::cuda
