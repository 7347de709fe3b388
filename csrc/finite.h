// Whether every element of a CPU floating-point tensor is finite: a plain loop over its contiguous
// data, for the small tensors (weights) the kernels' host code checks before a fast path whose
// padding zeros would turn an inf or NaN into NaN where torch's result has a number.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>

namespace d2l_ext {

inline bool all_finite(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "all_finite", [&] {
    const scalar_t* p = c.const_data_ptr<scalar_t>();
    bool ok = true;
    for (int64_t i = 0, n = c.numel(); i < n; ++i) ok &= std::isfinite(p[i]);
    return ok;
  });
}

}  // namespace d2l_ext
