// What the CUDA files share. The element types the kernels take, named
// without any torch header so that the launch interfaces (*_kernels.h) stay
// plain data; on the host, dtype_of maps a tensor onto them and
// multiprocessor_count sizes grids; in .cu files, AccOf and dispatch.
#pragma once

#include <cuda_runtime.h>

#ifdef __CUDACC__
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#else
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#endif

namespace d2l_ext::cuda {

enum class DType { Float, Double, Half, BFloat16 };

#ifdef __CUDACC__
// Accumulation type: float32 for float32/float16/bfloat16, float64 for float64.
template <typename T>
struct AccOf { using type = float; };
template <>
struct AccOf<double> { using type = double; };

// Calls fn(scalar_t{}) for the run-time dtype.
template <typename Fn>
void dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float: fn(float{}); break;
    case DType::Double: fn(double{}); break;
    case DType::Half: fn(c10::Half{}); break;
    case DType::BFloat16: fn(c10::BFloat16{}); break;
  }
}
#else
inline DType dtype_of(const at::Tensor& t, const char* op, const char* name = "input") {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    default:
      TORCH_CHECK(false, op, ": ", name, " must be float32, float64, float16 or bfloat16 for the CUDA kernels, got ",
                  t.scalar_type());
  }
  return DType::Float;  // not reached
}

// Streaming multiprocessors of the current device (grids are a few waves of them).
inline int multiprocessor_count() {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}
#endif

}  // namespace d2l_ext::cuda
