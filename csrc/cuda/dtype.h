// The element types the CUDA kernels take, named without any torch header so
// that the launch interfaces (*_kernels.h) stay plain data; the host files map
// a tensor's scalar type onto them with dtype_of.
#pragma once

#ifndef __CUDACC__
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#endif

namespace d2l_ext::cuda {

enum class DType { Float, Double, Half, BFloat16 };

#ifndef __CUDACC__
inline DType dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    default:
      TORCH_CHECK(false, op, ": the CUDA kernels take float32, float64, float16 and bfloat16 tensors, got ",
                  t.scalar_type());
  }
  return DType::Float;  // not reached
}
#endif

}  // namespace d2l_ext::cuda
