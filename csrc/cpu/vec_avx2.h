// Row primitives on float32 with AVX2 + FMA, for the CPU kernels.
//
// The library is compiled for the baseline x86-64 ISA so that it loads on any
// CPU; these functions carry a target attribute instead, and callers pick them
// at run time with cpu_has_avx2(). Everything here works on one contiguous row.
#pragma once

#include <cstdint>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define D2L_EXT_HAVE_AVX2 1
#include <immintrin.h>

#include <cmath>
#include <limits>

#define D2L_EXT_AVX2_FN __attribute__((target("avx2,fma")))

namespace d2l_ext::cpu::avx2 {

inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

// exp(x) for 8 floats: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-7
// polynomial (the Cephes expf coefficients), 2^n by writing the exponent bits.
// About 1 ulp for normal results; underflows to 0 below -88.37; NaN stays NaN
// (the clamps are ordered so that NaN passes through max/min).
D2L_EXT_AVX2_FN inline __m256 exp(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-88.3762626647949f);
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  // ln2 split in two so that n * ln2_hi is exact.
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 x2 = _mm256_mul_ps(x, x);
  y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i n = _mm256_cvttps_epi32(fx);
  n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

D2L_EXT_AVX2_FN inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

D2L_EXT_AVX2_FN inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// max_i x[i]
D2L_EXT_AVX2_FN inline float row_max(const float* x, int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  __m256 m0 = _mm256_set1_ps(ninf), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    m2 = _mm256_max_ps(m2, _mm256_loadu_ps(x + i + 16));
    m3 = _mm256_max_ps(m3, _mm256_loadu_ps(x + i + 24));
  }
  for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
  float m = hmax(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// sum_i exp(x[i] - shift); four independent accumulators keep the FMA units busy
// and make the float32 sum accurate to ~sqrt(n / 32) ulp rather than ~n.
D2L_EXT_AVX2_FN inline float row_sum_exp(const float* x, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
    s1 = _mm256_add_ps(s1, exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh)));
    s2 = _mm256_add_ps(s2, exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 16), sh)));
    s3 = _mm256_add_ps(s3, exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 24), sh)));
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_add_ps(s0, exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += std::exp(x[i] - shift);
  return s;
}

// sum_i x[i] * w[i], or sum_i x[i] when w is null.
D2L_EXT_AVX2_FN inline float row_dot(const float* x, const float* w, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  if (w) {
    for (; i + 16 <= n; i += 16) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(w + i + 8), s1);
    }
  } else {
    for (; i + 16 <= n; i += 16) {
      s0 = _mm256_add_ps(_mm256_loadu_ps(x + i), s0);
      s1 = _mm256_add_ps(_mm256_loadu_ps(x + i + 8), s1);
    }
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += w ? x[i] * w[i] : x[i];
  return s;
}

// out[i] = a * exp(x[i] - lse) - b * w[i]   (w[i] taken as 1 when w is null)
D2L_EXT_AVX2_FN inline void row_softmax_grad(float* out, const float* x, int64_t n, float lse,
                                             float a, float b, const float* w) {
  const __m256 vl = _mm256_set1_ps(lse), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 p = exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vl));
    const __m256 bw = w ? _mm256_mul_ps(vb, _mm256_loadu_ps(w + i)) : vb;
    _mm256_storeu_ps(out + i, _mm256_fmsub_ps(va, p, bw));
  }
  for (; i < n; ++i) out[i] = a * std::exp(x[i] - lse) - (w ? b * w[i] : b);
}


// sum_i a[i] * b[i] * w[i], or sum_i a[i] * b[i] when w is null.
D2L_EXT_AVX2_FN inline float row_dot3(const float* a, const float* b, const float* w, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 p0 = _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    __m256 p1 = _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    if (w) {
      s0 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(w + i), s0);
      s1 = _mm256_fmadd_ps(p1, _mm256_loadu_ps(w + i + 8), s1);
    } else {
      s0 = _mm256_add_ps(s0, p0);
      s1 = _mm256_add_ps(s1, p1);
    }
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i] * (w ? w[i] : 1.f);
  return s;
}

// out[i] = a * exp(x[i] - lse) - w[i] * (b1 * q[i] + b2)   (w[i] = 1 when w is null):
// the soft-target gradient with q' = (1 - eps) q + eps / C folded into b1, b2.
D2L_EXT_AVX2_FN inline void row_softmax_grad_prob(float* out, const float* x, const float* q, int64_t n,
                                                  float lse, float a, float b1, float b2, const float* w) {
  const __m256 vl = _mm256_set1_ps(lse), va = _mm256_set1_ps(a), vb1 = _mm256_set1_ps(b1),
               vb2 = _mm256_set1_ps(b2);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 p = exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vl));
    __m256 t = _mm256_fmadd_ps(vb1, _mm256_loadu_ps(q + i), vb2);
    if (w) t = _mm256_mul_ps(t, _mm256_loadu_ps(w + i));
    _mm256_storeu_ps(out + i, _mm256_fmsub_ps(va, p, t));
  }
  for (; i < n; ++i) out[i] = a * std::exp(x[i] - lse) - (w ? w[i] : 1.f) * (b1 * q[i] + b2);
}

// Eight examples at once for spatial input (N, C, S): `x` points at class 0
// of eight consecutive positions, and class c of them sits at x + c * S.

// lse[j] = log sum_c exp(x[c * S + j]), j < 8.
D2L_EXT_AVX2_FN inline void lse8(const float* x, int64_t C, int64_t S, float* lse) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = 0; c < C; ++c) m = _mm256_max_ps(m, _mm256_loadu_ps(x + c * S));
  const __m256 shift = m;  // as in row_sum_exp: an all -inf lane gives NaN, like torch
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t c = 0;
  for (; c + 2 <= C; c += 2) {
    s0 = _mm256_add_ps(s0, exp(_mm256_sub_ps(_mm256_loadu_ps(x + c * S), shift)));
    s1 = _mm256_add_ps(s1, exp(_mm256_sub_ps(_mm256_loadu_ps(x + (c + 1) * S), shift)));
  }
  if (c < C) s0 = _mm256_add_ps(s0, exp(_mm256_sub_ps(_mm256_loadu_ps(x + c * S), shift)));
  alignas(32) float sum[8], sh[8];
  _mm256_store_ps(sum, _mm256_add_ps(s0, s1));
  _mm256_store_ps(sh, shift);
  for (int j = 0; j < 8; ++j) lse[j] = sh[j] + std::log(sum[j]);
}

// out[j] = sum_c w[c] * x[c * S + j] (w[c] = 1 when w is null).
D2L_EXT_AVX2_FN inline void weighted_sum8(const float* x, int64_t C, int64_t S, const float* w, float* out) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    const __m256 v = _mm256_loadu_ps(x + c * S);
    acc = w ? _mm256_fmadd_ps(_mm256_set1_ps(w[c]), v, acc) : _mm256_add_ps(acc, v);
  }
  _mm256_storeu_ps(out, acc);
}

// out[c * S + j] = a[j] * exp(x[c * S + j] - lse[j]) - b[j] * w[c], and 0 in the
// lanes where keep[j] is 0 (ignored examples: 0 even for NaN logits).
D2L_EXT_AVX2_FN inline void softmax_grad8(float* out, const float* x, int64_t C, int64_t S, const float* lse,
                                         const float* a, const float* b, const float* w, const int32_t* keep) {
  const __m256 vl = _mm256_loadu_ps(lse), va = _mm256_loadu_ps(a), vb = _mm256_loadu_ps(b);
  const __m256 kept = _mm256_castsi256_ps(
      _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(keep)), _mm256_setzero_si256()));
  for (int64_t c = 0; c < C; ++c) {
    const __m256 p = exp(_mm256_sub_ps(_mm256_loadu_ps(x + c * S), vl));
    const __m256 bw = w ? _mm256_mul_ps(vb, _mm256_set1_ps(w[c])) : vb;
    _mm256_storeu_ps(out + c * S, _mm256_and_ps(kept, _mm256_fmsub_ps(va, p, bw)));
  }
}

// The eight rows r[0..7] become the eight columns (an 8 x 8 transpose in registers).
D2L_EXT_AVX2_FN inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);  // rows 2i, 2i+1 interleaved: cols 0,1 | 4,5
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);  // cols 2,3 | 6,7
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3 (h = 0) and 4-7: s[4h + k] holds cols k | k + 4
    s[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2f128_ps(s[k], s[4 + k], 0x20);
    r[k + 4] = _mm256_permute2f128_ps(s[k], s[4 + k], 0x31);
  }
}

// block[c * 8 + j] = x[j * C + c] for eight rows of C values (the layout of lse8 with S = 8).
D2L_EXT_AVX2_FN inline void rows_to_block8(const float* x, int64_t C, float* block) {
  int64_t c0 = 0;
  for (; c0 + 8 <= C; c0 += 8) {
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(x + j * C + c0);
    transpose8x8(r);
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(block + (c0 + i) * 8, r[i]);
  }
  for (int64_t j = 0; j < 8; ++j)
    for (int64_t c = c0; c < C; ++c) block[c * 8 + j] = x[j * C + c];
}

// The reverse: x[j * C + c] = block[c * 8 + j].
D2L_EXT_AVX2_FN inline void block8_to_rows(const float* block, int64_t C, float* x) {
  int64_t c0 = 0;
  for (; c0 + 8 <= C; c0 += 8) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(block + (c0 + i) * 8);
    transpose8x8(r);
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(x + j * C + c0, r[j]);
  }
  for (int64_t j = 0; j < 8; ++j)
    for (int64_t c = c0; c < C; ++c) x[j * C + c] = block[c * 8 + j];
}

}  // namespace d2l_ext::cpu::avx2

#endif
