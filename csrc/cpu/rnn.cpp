// CPU kernels of the recurrent layers: the whole recurrence of a layer and
// direction (the input projection, the layers, directions and weight
// gradients are the shared code of csrc/rnn.cpp).
//
// Threads split the batch when each gets at least 8 rows: the rows of a batch
// never meet in a recurrence, so each of P threads runs every step on its own
// rows (the product with all of W_hh, packed once and shared, then the cell
// step), forward and backward, with no barrier between steps. With fewer rows
// they split the hidden units: per step each thread multiplies h_{t-1} (B, H)
// by its units' rows of W_hh (for each gate), adds the product onto those
// units' gates and runs the element-wise cell step for them; the threads then
// meet once (an OpenMP barrier) because every unit of the next step reads all
// of h_t. Backward is the mirror image: each thread turns the carried gradient
// of its units into their gate gradients, multiplies them by the same rows of
// W_hh (a partial dh_{t-1} over all units), and the next step sums the P
// partials for its own units. Measured on the 2-core machine (B = 32, H = 256
// LSTM): one MKL GEMM per step scales poorly across the two cores (a 1.5x
// gain), split units do better, and the split batch better still, most of all
// while the host makes the two cores' barriers slow (benchmarks/NOTES.md).
//
// float32 rows run eight units at a time with AVX2 + FMA where the CPU has
// them; float64 and the ranges' tails run the scalar policy. The row functions
// (csrc/cpu/rnn_cells.h) are compiled twice, for the baseline ISA and for
// AVX2, and the AVX2 copy is picked at run time, so the library still loads
// on a CPU without AVX2.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <tuple>
#include <type_traits>
#include <vector>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>

#include "../rnn.h"
#include "vec_avx2.h"

// The Fortran BLAS of the torch build (MKL or OpenBLAS export these), weak so
// that a torch without them still loads the library: the GEMMs then go
// through at::mm_out on views.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace d2l_ext::cpu {
namespace {

// One value at a time: float64, and every range's tail.
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
  static V relu_grad(V a, V d) { return a <= T(0) ? T(0) : d; }  // torch: NaN passes the gradient
};

// One step's rows (B of them, H units, G gates per unit), as raw pointers.
template <typename T>
struct CellStep {
  RnnMode mode;
  int64_t B, H, G;
  T* gates;            // (B, G * H): pre-activations in (hidden part added, but for GRU), activations out
  const T* hidden;     // GRU: W_hh h_prev + b_hh (B, G * H)
  const T* h_prev;     // (B, H)
  const T* c_prev;     // LSTM
  T* h;                // (B, H) out
  T* extra;            // (B, H) out: c (LSTM), W_hn h_prev + b_hn (GRU)
};

template <typename T>
struct CellGradStep {
  RnnMode mode;
  int64_t B, H, G;
  const T* acts;
  const T* grad_out;  // or null
  int64_t grad_out_stride;
  T* dh;              // in: gradient carried to h_t; out (GRU): z * dh_t
  T* dc;              // LSTM, in/out
  const T* h_prev;
  const T* c_prev;
  const T* h;
  const T* extra;
  T* d_gates;
  T* d_hidden;        // GRU
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
// on the AVX2 exp of vec_avx2.h (about 1 ulp). The reciprocal is the 12-bit
// estimate refined by two Newton steps, r + r (1 - d r) with the residual
// exact in an FMA (error ~ 2^-48 before rounding, so 1 / 1 is 1 and a
// saturated gate is 0 or 1 as in torch): four FMAs instead of a division,
// which costs more on these cores. A few ulp in all.
struct Avx2Math {
  using V = F8;
  static constexpr int64_t width = 8;
  static V load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v.v); }
  static V set(float x) { return {_mm256_set1_ps(x)}; }
  static __m256 reciprocal(__m256 d) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 r = _mm256_rcp_ps(d);
    r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, one), r);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, one), r);
  }
  static V sigmoid(V x) {
    // exp(-x) is at most e^88.4 (the exp clamps), so 1 + e stays finite.
    const __m256 e = avx2::exp(_mm256_sub_ps(_mm256_setzero_ps(), x.v));
    return {reciprocal(_mm256_add_ps(_mm256_set1_ps(1.0f), e))};
  }
  // tanh(x) = 2 sigmoid(2x) - 1 loses the low bits of small results to the subtraction, so for
  // |x| < 0.4 the Taylor series to x^11 is used instead (truncation below 3e-8 there).
  static V tanh(V x) {
    const V s = sigmoid({_mm256_add_ps(x.v, x.v)});
    const __m256 big = _mm256_fmsub_ps(_mm256_set1_ps(2.0f), s.v, _mm256_set1_ps(1.0f));
    const __m256 x2 = _mm256_mul_ps(x.v, x.v);
    __m256 p = _mm256_set1_ps(-1382.0f / 155925.0f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(62.0f / 2835.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-17.0f / 315.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.0f / 15.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3.0f));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), x.v, x.v);
    const __m256 abs_x = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x.v);
    return {_mm256_blendv_ps(big, small, _mm256_cmp_ps(abs_x, _mm256_set1_ps(0.4f), _CMP_LT_OQ))};
  }
  // max(0, x) returns its second operand when one is NaN, so NaN stays NaN.
  static V relu(V x) { return {_mm256_max_ps(_mm256_setzero_ps(), x.v)}; }
  static V relu_grad(V a, V d) {  // zero where a <= 0 (false for NaN: the gradient passes, as torch's)
    return {_mm256_andnot_ps(_mm256_cmp_ps(a.v, _mm256_setzero_ps(), _CMP_LE_OQ), d.v)};
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

// Row-major C (M, N; row stride ldc) = A (M, K; lda) @ (B^T if trans_b: B is (N, K), else B (K, N)); ldb)
// + beta C, on the BLAS when the torch build exports it.
template <typename T>
void gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
          T* C, int64_t ldc) {
  // Column-major view: C^T (N, M) = op(B)^T (N, K) @ A^T (K, M).
  const char ta = trans_b ? 'T' : 'N', tb = 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_) return sgemm_(&ta, &tb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  } else {
    if (dgemm_) return dgemm_(&ta, &tb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  }
  // No BLAS symbols: at::addmm_out on views of the same memory (below autograd, in whatever thread).
  at::AutoDispatchBelowADInplaceOrView guard;
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor a = at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opts);
  at::Tensor b = trans_b ? at::from_blob(const_cast<T*>(B), {N, K}, {ldb, 1}, opts).t()
                         : at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  at::addmm_out(c, c, a, b, beta, 1);
}

template <typename T>
void forward_units(const CellStep<T>& s, int64_t u0, int64_t u1) {
#ifdef D2L_EXT_HAVE_AVX2
  if (avx2::cpu_has_avx2()) return avx2_cells::forward_units<T>(s, u0, u1);
#endif
  generic::forward_units<T>(s, u0, u1);
}

template <typename T>
void backward_units(const CellGradStep<T>& s, int64_t u0, int64_t u1) {
#ifdef D2L_EXT_HAVE_AVX2
  if (avx2::cpu_has_avx2()) return avx2_cells::backward_units<T>(s, u0, u1);
#endif
  generic::backward_units<T>(s, u0, u1);
}

// ---------------------------------------------------------------- the per-step products
// A step multiplies a (B, K) block by a slice of W_hh that does not change over the T steps. MKL
// repacks that slice on every call and, on this machine's AMD cores, runs an AVX2 kernel at
// ~75 GFLOP/s (45 on a 128-column gate slice); packed once into 32-column panels and multiplied
// by the 8 x 32 AVX-512 tile below, the same products run at ~95 (~75 on 128 columns), measured
// in isolation (benchmarks/NOTES.md). float32 on CPUs with AVX-512F only; else the BLAS.
#ifdef D2L_EXT_HAVE_AVX2
namespace avx512 {

inline bool available() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// C (rows <= 8, cols <= 32; row stride ldc) = [C +] A (rows, K; lda) @ panel (K, 32); with segs > 1,
// the sum over s < segs of A_s @ panel_s, A_s = A + s * a_seg (K columns each) and panel_s the s-th
// (K, 32) block of the panel: the gates' products of the backward, summed in registers. With
// kTransA, A is given transposed: element (r, k) at A[k * lda + r] (the weight gradient's dG^T).
template <bool kTransA = false>
__attribute__((target("avx512f"))) void tile(int64_t rows, int64_t cols, int64_t K, const float* A, int64_t lda,
                                             const float* panel, float* C, int64_t ldc, bool accumulate,
                                             int64_t segs = 1, int64_t a_seg = 0) {
  const auto a = [lda](const float* As, int64_t r, int64_t k) { return kTransA ? As[k * lda + r] : As[r * lda + k]; };
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1) : 0;
  __m512 acc[8][2];
  for (int64_t r = 0; r < 8; ++r) {
    const bool load = accumulate && r < rows;
    acc[r][0] = load ? _mm512_maskz_loadu_ps(m0, C + r * ldc) : _mm512_setzero_ps();
    acc[r][1] = load ? _mm512_maskz_loadu_ps(m1, C + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t sg = 0; sg < segs; ++sg) {
    const float* As = A + sg * a_seg;
    const float* ps = panel + sg * K * 32;
    if (rows == 8) {
      for (int64_t k = 0; k < K; ++k) {
        const __m512 b0 = _mm512_loadu_ps(ps + k * 32), b1 = _mm512_loadu_ps(ps + k * 32 + 16);
#pragma GCC unroll 8
        for (int64_t r = 0; r < 8; ++r) {
          const __m512 ar = _mm512_set1_ps(a(As, r, k));
          acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
      }
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const __m512 b0 = _mm512_loadu_ps(ps + k * 32), b1 = _mm512_loadu_ps(ps + k * 32 + 16);
        for (int64_t r = 0; r < rows; ++r) {
          const __m512 ar = _mm512_set1_ps(a(As, r, k));
          acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    _mm512_mask_storeu_ps(C + r * ldc, m0, acc[r][0]);
    _mm512_mask_storeu_ps(C + r * ldc + 16, m1, acc[r][1]);
  }
}

}  // namespace avx512
#endif

// A right operand (K, N) packed into ceil(N / 32) panels of (K, 32) floats, zero-padded: the
// forward's W^T, from W (N, K), or the backward's segs row blocks of W itself (see below).
class Panels {
 public:
  // The forward's operand: W is (N, K), row stride ldw, and the product is A @ W^T.
  Panels(int64_t N, int64_t K, const float* W, int64_t ldw) : Panels(N, K, 1, 0, W, ldw, true) {}
  // The backward's: segs row blocks of W (K x N each, row stride ldw), block s holding rows
  // [s * seg_stride, s * seg_stride + K); each panel holds the blocks in turn.
  Panels(int64_t segs, int64_t seg_stride, int64_t N, int64_t K, const float* W, int64_t ldw)
      : Panels(N, K, segs, seg_stride, W, ldw, false) {}

  int64_t count() const { return (N_ + 31) / 32; }

  // Packs panels [p0, p1) (the constructor packs none: threads may share the work).
  void pack(int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t cols = std::min<int64_t>(32, N_ - p * 32);
      for (int64_t sg = 0; sg < segs_; ++sg)
        for (int64_t k = 0; k < K_; ++k) {
          float* dst = data_.get() + ((p * segs_ + sg) * K_ + k) * 32;
          if (transposed_) {
            for (int64_t c = 0; c < cols; ++c) dst[c] = W_[(p * 32 + c) * ldw_ + k];
          } else {
            const float* row = W_ + (sg * seg_stride_ + k) * ldw_ + p * 32;
            for (int64_t c = 0; c < cols; ++c) dst[c] = row[c];
          }
          std::fill(dst + cols, dst + 32, 0.0f);
        }
    }
  }

  // C (M, N; ldc) = [C +] A (M, K; lda) @ W; segmented: C = sum_s A_s @ W_s, A_s = A + s * a_seg.
  void multiply(int64_t M, const float* A, int64_t lda, float* C, int64_t ldc, bool accumulate,
                int64_t a_seg = 0) const {
#ifdef D2L_EXT_HAVE_AVX2
    for (int64_t p = 0; p * 32 < N_; ++p)
      for (int64_t r = 0; r < M; r += 8)
        avx512::tile(std::min<int64_t>(8, M - r), std::min<int64_t>(32, N_ - p * 32), K_, A + r * lda, lda,
                     data_.get() + p * segs_ * K_ * 32, C + r * ldc + p * 32, ldc, accumulate, segs_, a_seg);
#endif
  }

 private:
  Panels(int64_t N, int64_t K, int64_t segs, int64_t seg_stride, const float* W, int64_t ldw, bool transposed)
      : N_(N), K_(K), segs_(segs), seg_stride_(seg_stride), ldw_(ldw), transposed_(transposed), W_(W),
        data_(std::make_unique_for_overwrite<float[]>(static_cast<size_t>((N + 31) / 32 * 32 * K * segs))) {}
  int64_t N_, K_, segs_, seg_stride_, ldw_;
  bool transposed_;
  const float* W_;
  std::unique_ptr<float[]> data_;
};

// The per-step products of one thread, over its units [u0, u1) of H (G gates): forward
// out[:, g H + u0 : g H + u1] += h_prev @ W_hh[g H + u0 : g H + u1]^T for every gate g (out's row
// stride G H), backward mine = sum_g d_hidden[:, g H + u0 : g H + u1] @ W_hh[g H + u0 : g H + u1].
// Packed panels when the CPU and the type allow, else the BLAS; a thread left alone (its range
// changed) takes the BLAS with every unit.
template <typename T>
class StepProducts {
 public:
  // steps: how many products the packing serves (a cell's single step is cheaper on the BLAS:
  // packing reads W_hh's slice once more than a product does).
  // shared: the panels are left unpacked for the threads that share them to pack (pack_share).
  StepProducts(bool backward, const T* w, int64_t G, int64_t H, int64_t u0, int64_t u1, int64_t steps,
               bool shared = false)
      : w_(w), G_(G), H_(H), u0_(u0), u1_(u1) {
    if constexpr (std::is_same_v<T, float>) {
#ifdef D2L_EXT_HAVE_AVX2
      if (u1 <= u0 || steps < kMinSteps || !avx512::available()) return;

      const int64_t n = u1 - u0;
      if (n == H && !backward) {  // one product over all G H columns
        packed_.emplace_back(G * H, H, w, H);
      } else if (backward) {  // one segmented operand: the G gates' rows of this thread's units
        packed_.emplace_back(G, H, H, n, w + u0 * H, H);
      } else {
        for (int64_t g = 0; g < G; ++g) packed_.emplace_back(n, H, w + (g * H + u0) * H, H);
      }
      if (!shared) pack_share(0, 1);
#endif
    }
  }

  // Thread p of np packs its share of every operand's panels.
  void pack_share(int p, int np) {
    for (auto& op : packed_) op.pack(op.count() * p / np, op.count() * (p + 1) / np);
  }

  void forward(int64_t B, const T* h_prev, T* out, int64_t u0, int64_t u1) const {
    const int64_t GH = G_ * H_, n = u1 - u0;
    if constexpr (std::is_same_v<T, float>) {
      if (!packed_.empty() && u0 == u0_ && u1 == u1_) {
        if (packed_.size() == 1 && n == H_) return packed_[0].multiply(B, h_prev, H_, out, GH, true);
        for (int64_t g = 0; g < G_; ++g) packed_[g].multiply(B, h_prev, H_, out + g * H_ + u0, GH, true);
        return;
      }
    }
    if (n == H_) return gemm<T>(true, B, GH, H_, h_prev, H_, w_, H_, T(1), out, GH);
    for (int64_t g = 0; g < G_; ++g)
      gemm<T>(true, B, n, H_, h_prev, H_, w_ + (g * H_ + u0) * H_, H_, T(1), out + g * H_ + u0, GH);
  }

  void backward(int64_t B, const T* d_hidden, T* mine, int64_t u0, int64_t u1) const {
    const int64_t GH = G_ * H_, n = u1 - u0;
    if constexpr (std::is_same_v<T, float>) {
      if (!packed_.empty() && u0 == u0_ && u1 == u1_) {
        return packed_[0].multiply(B, d_hidden + u0, GH, mine, H_, false, H_);
      }
    }
    if (n == H_) return gemm<T>(false, B, H_, GH, d_hidden, GH, w_, H_, T(0), mine, H_);
    for (int64_t g = 0; g < G_; ++g)
      gemm<T>(false, B, H_, n, d_hidden + g * H_ + u0, GH, w_ + (g * H_ + u0) * H_, H_, g == 0 ? T(0) : T(1), mine,
              H_);
  }

 private:
  static constexpr int64_t kMinSteps = 8;
  const T* w_;
  int64_t G_, H_, u0_, u1_;
  std::vector<Panels> packed_;
};

// Threads for a recurrence: all of torch's, when a step has enough work to pay for a barrier
// (about 2^17 multiply-adds) and every thread gets at least 16 units.
int recurrence_threads(int64_t B, int64_t G, int64_t H) {
  if (at::in_parallel_region()) return 1;
  const int64_t want = std::min<int64_t>(at::get_num_threads(), H / 16);
  return B * G * H * H >= (int64_t{1} << 17) && want > 1 ? static_cast<int>(want) : 1;
}

// Threads that split the batch instead (0: split the units): when every thread gets at least 8
// rows (a whole tile of the products). Rows of the batch never meet in a recurrence, so each
// thread then runs the whole recurrence on its rows with no barrier and no partial sums; it
// reads all of W_hh each step (from the shared packed copy), where a split of the units reads
// only its own rows of W_hh but waits for the other threads every step.
int batch_split_threads(int64_t B, int64_t G, int64_t H) {
  const int threads = recurrence_threads(B, G, H);
  return threads > 1 && B >= 8 * threads ? threads : 0;
}

// The units (or rows) of thread p of np: contiguous ranges, multiples of 8 (whole vectors) but the last.
std::pair<int64_t, int64_t> unit_range(int p, int np, int64_t H) {
  const int64_t chunk = ((H + np - 1) / np + 7) / 8 * 8;
  const int64_t u0 = std::min<int64_t>(H, p * chunk);
  return {u0, std::min<int64_t>(H, u0 + chunk)};
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Runs body(p, np) on np threads (np <= threads; a nested call gets one).
template <typename F>
void on_threads(int threads, const F& body) {
  if (threads <= 1) return body(0, 1);
#pragma omp parallel num_threads(threads)
  body(omp_get_thread_num(), omp_get_num_threads());
}

inline void barrier(int np) {
  if (np > 1) {
#pragma omp barrier
  }
}

// Ends the split of a recurrence when the other threads keep thread 0 waiting: on a machine
// whose cores are busy with other processes a descheduled thread holds every step's barrier
// for a time slice (milliseconds, where a step takes ~0.1 ms), and one thread alone is then
// much faster. Thread 0 times its own work and its waits at the barriers; once it has waited
// longer than it worked (after two steps), it records, before the barrier of step s, that the
// split ends after that barrier. Every thread reads that step after its barrier (a late thread
// still reading after the barrier of step s - 1 sees a later step), so all agree: thread 0
// carries on alone, the others stop.
class Pacer {
 public:
  using Clock = std::chrono::steady_clock;
  void start_step(int p) {
    if (p == 0) mark_ = Clock::now();
  }
  // Before the barrier of step s (thread 0 decides).
  void before_barrier(int p, int64_t s) {
    if (p != 0) return;
    arrive_ = Clock::now();
    busy_ += arrive_ - mark_;
    if (s >= 2 && wait_ > busy_ && solo_from_.load(std::memory_order_relaxed) > s)
      solo_from_.store(s, std::memory_order_relaxed);
  }
  // After the barrier of step s: whether the rest of the recurrence runs on thread 0 alone.
  bool after_barrier(int p, int64_t s) {
    if (p == 0) wait_ += Clock::now() - arrive_;
    return solo_from_.load(std::memory_order_relaxed) <= s;
  }

 private:
  std::atomic<int64_t> solo_from_{std::numeric_limits<int64_t>::max()};
  Clock::time_point mark_, arrive_;
  Clock::duration busy_{0}, wait_{0};
};

// dW_hh (G H, N) = sum_t dHidden_t^T h_prev(t) for one direction, on the AVX-512 tile instead of
// one MKL GEMM (which takes its AVX2 kernel on these AMD cores, ~88 GFLOP/s a core on this
// product): the layer's backward went from 0.90 to 0.86 of torch's time (benchmarks/NOTES.md;
// for the convolution's GEMMs the same tile was slower than MKL). The h rows are packed once, in
// dHidden's row order, into panels of 32 columns; threads split the G H rows of dW_hh (8 at a
// time) and walk K in blocks of kKBlock, so that a
// block of the panels (kKBlock x N floats) and a thread's rows of dW_hh stay in its L2. Every
// element sums its K terms in one fixed order: the result does not depend on the threads.
// float32 on AVX-512F CPUs; returns false (nothing done) otherwise.
bool hidden_weight_grad_cpu(const at::Tensor& d_hidden, const at::Tensor& hs, const at::Tensor& h0, bool reverse,
                            at::Tensor& grad_w_hh) {
#ifdef D2L_EXT_HAVE_AVX2
  if (d_hidden.scalar_type() != at::kFloat || !avx512::available() || !d_hidden.is_contiguous() ||
      !hs.is_contiguous() || !h0.is_contiguous() || !grad_w_hh.is_contiguous())
    return false;
  const int64_t T_ = d_hidden.size(0), B = d_hidden.size(1), M = d_hidden.size(2), N = hs.size(2), K = T_ * B;
  if (K == 0 || N == 0) {  // an empty batch: a sum of no terms
    grad_w_hh.zero_();
    return true;
  }
  const int64_t panels = (N + 31) / 32;
  const float* dg = d_hidden.const_data_ptr<float>();
  const float* h = hs.const_data_ptr<float>();
  const float* first = h0.const_data_ptr<float>();
  float* C = grad_w_hh.data_ptr<float>();
  // Row (t, b) of dHidden pairs with row b of the h before step t (h0 for the direction's first step).
  auto h_row = [&](int64_t k) {
    const int64_t t = k / B, b = k % B, t_prev = reverse ? t + 1 : t - 1;
    return (t_prev < 0 || t_prev >= T_ ? first : h + t_prev * B * N) + b * N;
  };
  std::unique_ptr<float[]> packed = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(panels * K * 32));
  constexpr int64_t kKBlock = 256;
  const int threads = at::in_parallel_region() ? 1 : static_cast<int>(std::min<int64_t>(at::get_num_threads(), M / 8));
  on_threads(threads, [&](int p, int np) {
    const auto [k0_, k1_] = unit_range(p, np, K);  // pack a share of the rows
    for (int64_t k = k0_; k < k1_; ++k) {
      const float* src = h_row(k);
      for (int64_t pn = 0; pn < panels; ++pn) {
        float* dst = packed.get() + (pn * K + k) * 32;
        const int64_t cols = std::min<int64_t>(32, N - pn * 32);
        if (cols == 32) {
          for (int64_t j = 0; j < 32; ++j) dst[j] = src[pn * 32 + j];
        } else {
          for (int64_t j = 0; j < 32; ++j) dst[j] = j < cols ? src[pn * 32 + j] : 0.0f;
        }
      }
    }
    barrier(np);  // every row packed
    // 16 rows of dW_hh (two tiles) at a time; their K block of dHidden^T is copied into `a` first:
    // in place its rows lie G H floats apart (4 KB for H = 256), all in the same few L1 sets.
    std::array<float, kKBlock * 16> a;
    const auto [m0, m1] = unit_range(p, np, M);
    for (int64_t k0 = 0; k0 < K; k0 += kKBlock) {
      const int64_t kn = std::min(kKBlock, K - k0);
      for (int64_t m = m0; m < m1; m += 16) {
        const int64_t rows = std::min<int64_t>(16, m1 - m);
        for (int64_t k = 0; k < kn; ++k) {
          const float* src = dg + (k0 + k) * M + m;
          if (rows == 16) {
            for (int64_t j = 0; j < 16; ++j) a[k * 16 + j] = src[j];  // a fixed count: vector moves, no call
          } else {
            for (int64_t j = 0; j < rows; ++j) a[k * 16 + j] = src[j];
          }
        }
        for (int64_t pn = 0; pn < panels; ++pn)
          for (int64_t r = 0; r < rows; r += 8)
            avx512::tile<true>(std::min<int64_t>(8, rows - r), std::min<int64_t>(32, N - pn * 32), kn, &a[r], 16,
                               packed.get() + (pn * K + k0) * 32, C + (m + r) * N + pn * 32, N, k0 > 0);
      }
    }
  });
  return true;
#else
  return false;
#endif
}

// Raw views of a recurrence's tensors, shared by both splits.
template <typename T>
struct ForwardView {
  explicit ForwardView(const RnnRecurrence& r)
      : T_(r.acts.size(0)), B(r.acts.size(1)), H(r.hs.size(2)), G(rnn_gates(r.mode)), GH(G * H),
        gru(r.mode == RnnMode::Gru), lstm(r.mode == RnnMode::Lstm), acts(ptr<T>(r.acts)), hs(ptr<T>(r.hs)),
        extra(ptr<T>(r.extra)), h0(ptr<T>(r.h0)), c0(ptr<T>(r.c0)), w(ptr<T>(r.w_hh)), b_hh(ptr<T>(r.b_hh)) {}
  int64_t T_, B, H, G, GH;
  bool gru, lstm;
  T *acts, *hs, *extra;
  const T *h0, *c0, *w, *b_hh;
};

template <typename T>
struct BackwardView {
  explicit BackwardView(const RnnRecurrenceBackward& r)
      : T_(r.acts.size(0)), B(r.acts.size(1)), H(r.hs.size(2)), G(rnn_gates(r.mode)), GH(G * H),
        gru(r.mode == RnnMode::Gru), lstm(r.mode == RnnMode::Lstm), acts(ptr<T>(r.acts)), hs(ptr<T>(r.hs)),
        extra(ptr<T>(r.extra)), h0(ptr<T>(r.h0)), c0(ptr<T>(r.c0)), w(ptr<T>(r.w_hh)), grad_out(ptr<T>(r.grad_out)),
        go_t(r.grad_out.defined() ? r.grad_out.stride(0) : 0), go_row(r.grad_out.defined() ? r.grad_out.stride(1) : 0),
        dh(ptr<T>(r.dh)), dc(ptr<T>(r.dc)), d_gates(ptr<T>(r.d_gates)), d_hidden(ptr<T>(r.d_hidden)) {}
  int64_t T_, B, H, G, GH;
  bool gru, lstm;
  const T *acts, *hs, *extra, *h0, *c0, *w, *grad_out;
  int64_t go_t, go_row;
  T *dh, *dc, *d_gates, *d_hidden;
};

// Runs body(b0, b1) on up to `threads` threads, each with its rows [b0, b1) of the batch (none
// for an empty share), once they have packed the shared products' panels together.
template <typename T, typename F>
void on_row_shares(int threads, int64_t B, StepProducts<T>& products, const F& body) {
  on_threads(threads, [&](int p, int np) {
    products.pack_share(p, np);
    barrier(np);  // every panel packed
    const auto [b0, b1] = unit_range(p, np, B);
    if (b1 > b0) body(b0, b1);
  });
}

// The recurrences with the batch split (batch_split_threads): thread p runs every step on its
// rows [b0, b1); the cell functions take (rows, H) blocks with the full row strides.
template <typename T>
void forward_recurrence_rows(const RnnRecurrence& r, int threads) {
  const ForwardView<T> v(r);
  at::Tensor hidden_t = v.gru ? at::empty({v.B, v.GH}, r.acts.options()) : at::Tensor();
  T* hidden = ptr<T>(hidden_t);
  StepProducts<T> products(false, v.w, v.G, v.H, 0, v.H, v.T_, true);
  on_row_shares(threads, v.B, products, [&](int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    T* hid = v.gru ? hidden + b0 * v.GH : nullptr;
    for (int64_t s = 0; s < v.T_; ++s) {
      const int64_t t = r.reverse ? v.T_ - 1 - s : s, t_prev = r.reverse ? t + 1 : t - 1;
      T* gates = v.acts + (t * v.B + b0) * v.GH;
      const T* h_prev = (s == 0 ? v.h0 : v.hs + t_prev * v.B * v.H) + b0 * v.H;
      if (v.gru) {  // W_hh h_prev + b_hh goes to `hidden`
        for (int64_t b = 0; b < rows; ++b)
          for (int64_t j = 0; j < v.GH; ++j) hid[b * v.GH + j] = v.b_hh ? v.b_hh[j] : T(0);
      }
      products.forward(rows, h_prev, v.gru ? hid : gates, 0, v.H);
      const CellStep<T> step{r.mode, rows, v.H, v.G, gates, hid, h_prev,
                             v.lstm ? (s == 0 ? v.c0 : v.extra + t_prev * v.B * v.H) + b0 * v.H : nullptr,
                             v.hs + (t * v.B + b0) * v.H, v.extra ? v.extra + (t * v.B + b0) * v.H : nullptr};
      forward_units<T>(step, 0, v.H);
    }
  });
}

template <typename T>
void backward_recurrence_rows(const RnnRecurrenceBackward& r, int threads) {
  const BackwardView<T> v(r);
  StepProducts<T> products(true, v.w, v.G, v.H, 0, v.H, v.T_, true);
  on_row_shares(threads, v.B, products, [&](int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    std::vector<T> product(v.gru ? static_cast<size_t>(rows * v.H) : 0);  // GRU: dHidden_t W_hh of these rows
    for (int64_t s = 0; s < v.T_; ++s) {
      const int64_t t = r.reverse ? s : v.T_ - 1 - s, t_prev = r.reverse ? t + 1 : t - 1;
      const bool first = s == v.T_ - 1;  // the forward's first step: h_prev is h0
      const int64_t at = t * v.B + b0;   // row b0 of step t
      const int64_t prev = t_prev * v.B + b0;  // row b0 of the step before (in the forward's order)
      const CellGradStep<T> step{r.mode, rows, v.H, v.G, v.acts + at * v.GH,
                                 v.grad_out ? v.grad_out + t * v.go_t + b0 * v.go_row : nullptr, v.go_row,
                                 v.dh + b0 * v.H, v.lstm ? v.dc + b0 * v.H : nullptr,
                                 first ? v.h0 + b0 * v.H : v.hs + prev * v.H,
                                 v.lstm ? (first ? v.c0 + b0 * v.H : v.extra + prev * v.H) : nullptr, v.hs + at * v.H,
                                 v.extra ? v.extra + at * v.H : nullptr, v.d_gates + at * v.GH, v.d_hidden + at * v.GH};
      backward_units<T>(step, 0, v.H);
      // dh_{t-1} of these rows = dHidden_t W_hh (GRU: + z * dh_t, which the cell step left in dh;
      // the product is added after it is summed, as the unit split does, so that the result does
      // not depend on the number of threads).
      T* dh_rows = v.dh + b0 * v.H;
      if (!v.gru) {
        products.backward(rows, v.d_hidden + at * v.GH, dh_rows, 0, v.H);
        continue;
      }
      products.backward(rows, v.d_hidden + at * v.GH, product.data(), 0, v.H);
      for (int64_t i = 0; i < rows * v.H; ++i) dh_rows[i] += product[i];
    }
  });
}

template <typename T>
void forward_recurrence(const RnnRecurrence& r) {
  if (const int threads = batch_split_threads(r.acts.size(1), rnn_gates(r.mode), r.hs.size(2)))
    return forward_recurrence_rows<T>(r, threads);
  const ForwardView<T> v(r);
  at::Tensor hidden_t = v.gru ? at::empty({v.B, v.GH}, r.acts.options()) : at::Tensor();
  T* hidden = ptr<T>(hidden_t);
  Pacer pacer;
  on_threads(recurrence_threads(v.B, v.G, v.H), [&](int p, int np) {
    auto [u0, u1] = unit_range(p, np, v.H);
    const StepProducts<T> products(false, v.w, v.G, v.H, u0, u1, v.T_);
    for (int64_t s = 0; s < v.T_; ++s) {
      pacer.start_step(p);
      const int64_t n = u1 - u0;
      const int64_t t = r.reverse ? v.T_ - 1 - s : s, t_prev = r.reverse ? t + 1 : t - 1;
      T* gates = v.acts + t * v.B * v.GH;
      const T* h_prev = s == 0 ? v.h0 : v.hs + t_prev * v.B * v.H;
      if (n > 0) {
        // The hidden projection of this thread's units, gate by gate (all gates at once when one thread
        // owns every unit): into the gates (beta 1), or for GRU into `hidden`, started at b_hh.
        T* out = v.gru ? hidden : gates;
        if (v.gru) {
          for (int64_t b = 0; b < v.B; ++b)
            for (int64_t g = 0; g < v.G; ++g)
              for (int64_t j = u0; j < u1; ++j) out[b * v.GH + g * v.H + j] = v.b_hh ? v.b_hh[g * v.H + j] : T(0);
        }
        products.forward(v.B, h_prev, out, u0, u1);
        const CellStep<T> step{r.mode, v.B, v.H, v.G, gates, hidden, h_prev,
                               v.lstm ? (s == 0 ? v.c0 : v.extra + t_prev * v.B * v.H) : nullptr, v.hs + t * v.B * v.H,
                               v.extra ? v.extra + t * v.B * v.H : nullptr};
        forward_units<T>(step, u0, u1);
      }
      if (np > 1) {
        pacer.before_barrier(p, s);
        barrier(np);  // h_t complete before any thread multiplies it
        if (pacer.after_barrier(p, s)) {
          if (p != 0) break;
          np = 1;
          std::tie(u0, u1) = unit_range(0, 1, v.H);
        }
      }
    }
  });
}

template <typename T>
void backward_recurrence(const RnnRecurrenceBackward& r) {
  if (const int threads = batch_split_threads(r.acts.size(1), rnn_gates(r.mode), r.hs.size(2)))
    return backward_recurrence_rows<T>(r, threads);
  const BackwardView<T> v(r);
  const int threads = recurrence_threads(v.B, v.G, v.H);
  // Each thread's partial dh_{t-1} (B, H), two sets used by turns so that one barrier per step suffices.
  at::Tensor partial_t = at::empty({2, threads, v.B, v.H}, r.acts.options());
  T* partial = ptr<T>(partial_t);
  Pacer pacer;
  on_threads(threads, [&](int p, int np) {
    auto [u0, u1] = unit_range(p, np, v.H);
    int np_prev = np;  // how many partials the previous step wrote
    const StepProducts<T> products(true, v.w, v.G, v.H, u0, u1, v.T_);
    // dh for this thread's units: the sum of the previous step's partials (+ z * dh for GRU, already in dh).
    // Row by row over whole vectors: the other threads' partials arrive from their caches, and
    // contiguous loads let those transfers overlap (a scalar loop waited on each in turn).
    auto gather = [&](const T* parts) {
      const int64_t n = u1 - u0;
      for (int64_t b = 0; b < v.B; ++b) {
        T* __restrict out = v.dh + b * v.H + u0;
        const T* __restrict first_part = parts + b * v.H + u0;
        if (v.gru) {
          for (int64_t j = 0; j < n; ++j) out[j] += first_part[j];
        } else {
          for (int64_t j = 0; j < n; ++j) out[j] = first_part[j];
        }
        for (int q = 1; q < np_prev; ++q) {
          const T* __restrict part = parts + (q * v.B + b) * v.H + u0;
          for (int64_t j = 0; j < n; ++j) out[j] += part[j];
        }
      }
    };
    for (int64_t s = 0; s < v.T_; ++s) {
      pacer.start_step(p);
      const int64_t n = u1 - u0;
      const int64_t t = r.reverse ? s : v.T_ - 1 - s, t_prev = r.reverse ? t + 1 : t - 1;
      const bool first = s == v.T_ - 1;  // the forward's first step: h_prev is h0
      T* mine = partial + ((s & 1) * threads + p) * v.B * v.H;
      if (s > 0) gather(partial + ((s - 1) & 1) * threads * v.B * v.H);
      np_prev = np;
      if (n > 0) {
        const CellGradStep<T> step{r.mode, v.B, v.H, v.G, v.acts + t * v.B * v.GH,
                                   v.grad_out ? v.grad_out + t * v.go_t : nullptr, v.go_row, v.dh, v.dc,
                                   first ? v.h0 : v.hs + t_prev * v.B * v.H,
                                   v.lstm ? (first ? v.c0 : v.extra + t_prev * v.B * v.H) : nullptr,
                                   v.hs + t * v.B * v.H,
                                   v.extra ? v.extra + t * v.B * v.H : nullptr, v.d_gates + t * v.B * v.GH,
                                   v.d_hidden + t * v.B * v.GH};
        backward_units<T>(step, u0, u1);
        const T* dhid = v.d_hidden + t * v.B * v.GH;
        products.backward(v.B, dhid, mine, u0, u1);
      } else {
        std::fill(mine, mine + v.B * v.H, T(0));
      }
      if (np > 1) {
        pacer.before_barrier(p, s);
        barrier(np);  // every partial of this step written before any thread sums them
        if (pacer.after_barrier(p, s)) {
          if (p != 0) return;  // thread 0 sums this step's partials and goes on alone
          np = 1;
          std::tie(u0, u1) = unit_range(0, 1, v.H);
        }
      }
    }
    gather(partial + ((v.T_ - 1) & 1) * threads * v.B * v.H);  // the gradient of h0
  });
}

void forward_recurrence_cpu(const RnnRecurrence& r) {
  if (r.acts.scalar_type() == at::kDouble) return forward_recurrence<double>(r);
  forward_recurrence<float>(r);
}

void backward_recurrence_cpu(const RnnRecurrenceBackward& r) {
  TORCH_CHECK(!r.grad_out.defined() || r.grad_out.stride(2) == 1, "d2l_ext.rnn (CPU): grad_out rows must be dense");
  if (r.acts.scalar_type() == at::kDouble) return backward_recurrence<double>(r);
  backward_recurrence<float>(r);
}

void check_cpu_dtype(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "d2l_ext.rnn (CPU): ", what, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "d2l_ext.rnn (CPU): ", what, " must be float32 or float64 for the CPU kernels, got ", t.scalar_type());
}

// One step over every row and unit (the shared loop's per-step path: an LSTM with a projection).
template <typename T>
void forward_step(const RnnStepForward& s) {
  const CellStep<T> step{s.mode,          s.h.size(0),   s.h.size(1),   rnn_gates(s.mode), ptr<T>(s.gates),
                         ptr<T>(s.hidden), ptr<T>(s.h_prev), ptr<T>(s.c_prev), ptr<T>(s.h),     ptr<T>(s.extra)};
  forward_units<T>(step, 0, step.H);
}

template <typename T>
void backward_step(const RnnStepBackward& s) {
  TORCH_CHECK(s.dh.is_contiguous() && (!s.grad_out.defined() || s.grad_out.stride(1) == 1),
              "d2l_ext.rnn (CPU): step gradients must be dense");
  const CellGradStep<T> step{s.mode,
                             s.dh.size(0),
                             s.dh.size(1),
                             rnn_gates(s.mode),
                             ptr<T>(s.acts),
                             ptr<T>(s.grad_out),
                             s.grad_out.defined() ? s.grad_out.stride(0) : 0,
                             ptr<T>(s.dh),
                             ptr<T>(s.dc),
                             ptr<T>(s.h_prev),
                             ptr<T>(s.c_prev),
                             ptr<T>(s.h),
                             ptr<T>(s.extra),
                             ptr<T>(s.d_gates),
                             ptr<T>(s.d_hidden)};
  backward_units<T>(step, 0, step.H);
}

void forward_step_cpu(const RnnStepForward& s) {
  if (s.gates.scalar_type() == at::kDouble) return forward_step<double>(s);
  forward_step<float>(s);
}

void backward_step_cpu(const RnnStepBackward& s) {
  if (s.acts.scalar_type() == at::kDouble) return backward_step<double>(s);
  backward_step<float>(s);
}

// Whole recurrences; the per-step functions serve the LSTM with a projection.
constexpr RnnPointwise kCpuKernels{&forward_step_cpu, &backward_step_cpu, &forward_recurrence_cpu,
                                   &backward_recurrence_cpu, &hidden_weight_grad_cpu};

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
