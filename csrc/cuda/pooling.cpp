// CUDA host side of the pooling ops: the backend PoolOps (csrc/pooling_ops.h)
// calls, mapping tensors onto the plain launch arguments of
// pooling_kernels.h. Checks, layouts and allocation are shared with the CPU.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../pooling_ops.h"
#include "common.h"
#include "pooling_kernels.h"

namespace d2l_ext {
namespace {

struct CudaPool {
  static void check(const char* op, const at::Tensor& t, const char* name, PoolKind /*kind*/) {
    TORCH_CHECK(t.is_cuda(), op, " (CUDA kernel): ", name, " must be a CUDA tensor, got ", t.device());
    cuda::dtype_of(t, op, name);  // float32, float64, float16, bfloat16 for every op
  }

  static cuda::PoolKernelArgs kernel_args(const PoolArgs& a, const at::Tensor& t) {
    return {cuda::dtype_of(t, "d2l_ext pooling"),
            a.N,
            a.C,
            a.h,
            a.w,
            a.channels_last,
            a.include_pad,
            a.divisor_override,
            a.offset_u8,
            cuda::multiprocessor_count() * 16};
  }

  static void max_forward(const PoolArgs& a, const at::Tensor& x, at::Tensor& y, at::Tensor& off) {
    const c10::cuda::CUDAGuard guard(x.device());
    C10_CUDA_CHECK(cuda::launch_max_pool_forward(kernel_args(a, x), x.const_data_ptr(), y.data_ptr(),
                                                 off.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  }

  static void max_backward(const PoolArgs& a, const at::Tensor& gy, const at::Tensor& off, at::Tensor& gx) {
    const c10::cuda::CUDAGuard guard(gy.device());
    C10_CUDA_CHECK(cuda::launch_max_pool_backward(kernel_args(a, gy), gy.const_data_ptr(), off.const_data_ptr(),
                                                  gx.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  }

  static void avg_forward(const PoolArgs& a, const at::Tensor& x, at::Tensor& y) {
    const c10::cuda::CUDAGuard guard(x.device());
    C10_CUDA_CHECK(cuda::launch_avg_pool_forward(kernel_args(a, x), x.const_data_ptr(), y.data_ptr(),
                                                 c10::cuda::getCurrentCUDAStream()));
  }

  static void avg_backward(const PoolArgs& a, const at::Tensor& gy, at::Tensor& gx) {
    const c10::cuda::CUDAGuard guard(gy.device());
    C10_CUDA_CHECK(cuda::launch_avg_pool_backward(kernel_args(a, gy), gy.const_data_ptr(), gx.data_ptr(),
                                                  c10::cuda::getCurrentCUDAStream()));
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CUDA, m) {
  D2L_EXT_REGISTER_POOLING(m, CudaPool);
}

}  // namespace d2l_ext
