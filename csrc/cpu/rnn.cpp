// CPU kernels of the recurrent layers: the element-wise cell steps (the time
// loop and its GEMMs are csrc/rnn.cpp). float32 rows run eight units at a time
// with AVX2 + FMA where the CPU has them; float64 and the rows' tails run the
// scalar policy. The row functions (csrc/cpu/rnn_cells.h) are compiled twice,
// for the baseline ISA and for AVX2, and the AVX2 copy is picked at run time,
// so the library still loads on a CPU without AVX2.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../rnn.h"
#include "vec_avx2.h"

namespace d2l_ext::cpu {
namespace {

// One value at a time: float64, and every row's tail.
template <typename T>
struct ScalarMath {
  using V = T;
  static constexpr int64_t width = 1;
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V set(T x) { return x; }
  static V sigmoid(V x) { return T(1) / (T(1) + std::exp(-x)); }
  static V tanh(V x) { return std::tanh(x); }
  static V relu(V x) { return x < T(0) ? T(0) : x; }  // NaN stays NaN, as torch.relu
  static V relu_grad(V a, V d) { return a > T(0) ? d : T(0); }
};

namespace generic {
template <typename T>
struct FastMath {
  using type = ScalarMath<T>;
};
#include "rnn_cells.h"
}  // namespace generic

#ifdef D2L_EXT_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2_cells {

struct F8 {
  __m256 v;
};
inline F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }

// Eight floats: sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 sigmoid(2x) - 1
// on the AVX2 exp of vec_avx2.h (about 1 ulp), so a few ulp in all.
struct Avx2Math {
  using V = F8;
  static constexpr int64_t width = 8;
  static V load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v.v); }
  static V set(float x) { return {_mm256_set1_ps(x)}; }
  static V sigmoid(V x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = avx2::exp(_mm256_sub_ps(_mm256_setzero_ps(), x.v));
    return {_mm256_div_ps(one, _mm256_add_ps(one, e))};
  }
  static V tanh(V x) {
    const V s = sigmoid({_mm256_add_ps(x.v, x.v)});
    return {_mm256_fmsub_ps(_mm256_set1_ps(2.0f), s.v, _mm256_set1_ps(1.0f))};
  }
  // max(0, x) returns its second operand when one is NaN, so NaN stays NaN.
  static V relu(V x) { return {_mm256_max_ps(_mm256_setzero_ps(), x.v)}; }
  static V relu_grad(V a, V d) {
    return {_mm256_and_ps(_mm256_cmp_ps(a.v, _mm256_setzero_ps(), _CMP_GT_OQ), d.v)};
  }
};

template <typename T>
struct FastMath {
  using type = ScalarMath<T>;
};
template <>
struct FastMath<float> {
  using type = Avx2Math;
};
#include "rnn_cells.h"
}  // namespace avx2_cells
#pragma GCC pop_options
#endif

void check_cpu_dtype(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "d2l_ext.rnn (CPU): ", what, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "d2l_ext.rnn (CPU): ", what, " must be float32 or float64 for the CPU kernels, got ", t.scalar_type());
}

template <typename T>
void forward_step(const RnnStepForward& s) {
#ifdef D2L_EXT_HAVE_AVX2
  if (avx2::cpu_has_avx2()) return avx2_cells::forward_step<T>(s);
#endif
  generic::forward_step<T>(s);
}

template <typename T>
void backward_step(const RnnStepBackward& s) {
#ifdef D2L_EXT_HAVE_AVX2
  if (avx2::cpu_has_avx2()) return avx2_cells::backward_step<T>(s);
#endif
  generic::backward_step<T>(s);
}

void forward_cpu(const RnnStepForward& s) {
  if (s.h.scalar_type() == at::kDouble) return forward_step<double>(s);
  forward_step<float>(s);
}

void backward_cpu(const RnnStepBackward& s) {
  if (s.dh.scalar_type() == at::kDouble) return backward_step<double>(s);
  backward_step<float>(s);
}

constexpr RnnPointwise kCpuKernels{&forward_cpu, &backward_cpu};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_cpu(
    const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx, at::TensorList weights,
    int64_t mode, bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks) {
  check_cpu_dtype(input, "input");
  return rnn_forward(input, hx, cx, weights, mode, has_biases, num_layers, bidirectional, dropout_masks,
                     kCpuKernels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> rnn_backward_cpu(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const at::Tensor& input, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, at::TensorList weights, const at::Tensor& reserve, int64_t mode,
    bool has_biases, int64_t num_layers, bool bidirectional, at::TensorList dropout_masks, bool need_input_grad) {
  check_cpu_dtype(input, "input");
  return rnn_backward(grad_output, grad_hy, grad_cy, input, hx, cx, weights, reserve, mode, has_biases, num_layers,
                      bidirectional, dropout_masks, need_input_grad, kCpuKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CPU, m) {
  m.impl("rnn", &rnn_cpu);
  m.impl("_rnn_backward", &rnn_backward_cpu);
}

}  // namespace d2l_ext::cpu
