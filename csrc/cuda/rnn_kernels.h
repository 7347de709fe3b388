// The launch interface of the recurrent cells' element-wise steps on CUDA
// (rnn_kernels.cu), called by the host side (rnn.cpp) once per time step of
// the shared time loop (csrc/rnn.cpp). Plain data only; the launchers never
// throw, they return the launch status. Pointers follow RnnStepForward /
// RnnStepBackward (csrc/rnn.h); absent ones are null.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace d2l_ext::cuda {

enum class CellKind : int { Tanh = 0, Relu = 1, Lstm = 2, Gru = 3 };

struct CellStepArgs {
  DType dtype;
  CellKind kind;
  int64_t B, H;
  int64_t grad_out_stride;  // row stride of grad_out (backward)
  int max_blocks;
};

cudaError_t launch_cell_forward(const CellStepArgs& a, void* gates, const void* hidden, const void* h_prev,
                                const void* c_prev, void* h, void* extra, cudaStream_t stream);

cudaError_t launch_cell_backward(const CellStepArgs& a, const void* acts, const void* grad_out, void* dh, void* dc,
                                 const void* h_prev, const void* c_prev, const void* h, const void* extra,
                                 void* d_gates, void* d_hidden, cudaStream_t stream);

}  // namespace d2l_ext::cuda
