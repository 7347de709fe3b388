// Direct convolution with the output channels in the vector lanes: the CPU
// kernels for the wide float32 layers (ResNet's and GoogLeNet's 3x3 and 5x5
// convolutions, stride 1), where im2col + BLAS runs at ~80 GFLOP/s a core and
// oneDNN's blocked kernels at ~120.
//
// Included once by conv2d.cpp inside `#pragma GCC target("avx512f,...")`
// (namespace d2l_ext::direct::tiles); AVX-512 only: its 32 registers hold the
// 24-28 accumulators of a tile. Without AVX-512 these layers keep im2col.
//
// Forward (and the input gradient, the same product on the zero-padded output
// gradient with rotated, channel-swapped weights). A tile is OB blocks of 16
// output channels (one register each; OB = 2 where there are two) x R output
// rows x Q output columns, OB * R * Q <= 28 accumulator registers. The rows
// are any R rows of the (n, oy) rows of the output, each with its own pointer
// into the zero-padded input, so a tile of a 3 x 3 output (ResNet's last
// stage) spans images. For every (c, ky, kx) tap: one load of 16 weights per
// block, then per output position one input broadcast from memory feeding OB
// fused multiply-adds: no im2col copy.
//
// Weight gradient. gw[o][c][ky][kx] = sum over (n, oy, ox) of gy[n][o][oy][ox]
// * xp[n][c][oy + ky][ox + kx]: a tile is 16 output channels x RT (channel,
// ky) pairs x KW taps kx, RT * KW <= 28 accumulators; per output position
// one load of 16 output-gradient values (gy copied once into (O/16, N*OH*OW,
// 16) blocks) feeds RT * KW FMAs with broadcast inputs. No partial sums
// across threads: a tile owns its weights' gradient.
//
// Padding and the output-gradient blocks are made by the caller (at::
// tensors); everything here is float32 and contiguous.

namespace tiles {

// -O3's predictive commoning would carry the inputs of one kx tap over to the
// next (they are the same addresses shifted by one) in extra registers, which
// pushes the accumulators out to the stack: the tiles are written so that
// every input is one broadcast operand of its FMA.
#pragma GCC push_options
#pragma GCC optimize("no-predictive-commoning")

constexpr int kMaxAcc = 28;   // accumulator registers of a tile
constexpr int kMaxRows = 8;   // rows of a forward tile (their pointers live in registers)
constexpr int kMaxCols = 28;  // columns of a forward tile
constexpr int kMaxPairs = 9;  // (channel, ky) pairs of a weight tile
constexpr int kMaxKw = 11;    // widest kernel the weight-gradient tiles take

// Rows of a forward tile with Q columns and OB blocks of 16 output channels.
constexpr int tile_rows(int q, int ob) {
  return std::max(1, std::min(kMaxRows, kMaxAcc / ob / q));
}
// (channel, ky) pairs of a weight tile for a window kw wide.
constexpr int tile_pairs(int kw) { return std::max(1, std::min(kMaxPairs, kMaxAcc / kw)); }


// ---------------------------------------------------------------- packing

// In place: r[k] becomes column k of the 16 x 16 matrix whose rows were r[0..15].
inline void transpose16(__m512 r[16]) {
  __m512 a[16], b[16];
  for (int k = 0; k < 8; ++k) {  // 32-bit pairs within 128-bit lanes
    a[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // 64-bit pairs: b[4k + m] holds columns m, m+4, m+8, m+12 of rows 4k..4k+3
    const __m512d a0 = _mm512_castps_pd(a[4 * k]), a1 = _mm512_castps_pd(a[4 * k + 1]);
    const __m512d a2 = _mm512_castps_pd(a[4 * k + 2]), a3 = _mm512_castps_pd(a[4 * k + 3]);
    b[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    b[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    b[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    b[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  for (int m = 0; m < 4; ++m) {  // 128-bit lanes across the four row groups
    const __m512 c0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88), c1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xdd);
    const __m512 d0 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
    const __m512 d1 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xdd);
    r[m] = _mm512_shuffle_f32x4(c0, d0, 0x88);
    r[m + 4] = _mm512_shuffle_f32x4(c1, d1, 0x88);
    r[m + 8] = _mm512_shuffle_f32x4(c0, d0, 0xdd);
    r[m + 12] = _mm512_shuffle_f32x4(c1, d1, 0xdd);
  }
}

inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// Rows [16 ob, 16 ob + lanes) of src (rows K floats long, contiguous) interleaved
// into dst[i * 16 + l] = src[16 ob + l][i], lanes >= `lanes` zero: 16 x 16
// transposes, 16 rows of 16 values in, 16 vectors of 16 channels out.
inline void interleave_block(const float* src, int64_t K, int64_t ob, int64_t lanes, float* dst) {
  __m512 r[16];
  for (int64_t i0 = 0; i0 < K; i0 += 16) {
    const int64_t n = std::min<int64_t>(16, K - i0);
    const __mmask16 m = first_lanes(n);
    for (int64_t l = 0; l < 16; ++l) {
      r[l] = l < lanes ? _mm512_maskz_loadu_ps(m, src + (ob * 16 + l) * K + i0) : _mm512_setzero_ps();
    }
    transpose16(r);
    for (int64_t k = 0; k < n; ++k) _mm512_storeu_ps(dst + (i0 + k) * 16, r[k]);
  }
}

// Weights w (O, C, T = kh * kw taps), contiguous, into the forward tiles' blocks:
// out[((ob * C + c) * T + t) * 16 + l] = w[ob * 16 + l][c][t], zero for channels >= O.
inline void pack_forward(const float* w, int64_t O, int64_t C, int64_t T, float* out) {
  const int64_t blocks = (O + 15) / 16, K = C * T;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ob = begin; ob < end; ++ob) {
      interleave_block(w, K, ob, std::min<int64_t>(16, O - ob * 16), out + ob * K * 16);
    }
  });
}

// The input gradient's weights: channels swapped and the window rotated by 180
// degrees, out[((cb * O + o) * T + t) * 16 + l] = w[o][cb * 16 + l][T - 1 - t],
// zero for channels >= C; one 16 x 16 transpose per (cb, o) and 16 taps.
// Returns whether every weight is finite (else the caller takes another path:
// the padding zeros times an inf would be NaN where torch's col2im never
// multiplies).
inline bool pack_input_grad(const float* w, int64_t O, int64_t C, int64_t T, float* out) {
  const int64_t blocks = (C + 15) / 16;
  std::atomic<bool> finite{true};
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    __m512 r[16];
    __mmask16 ok = 0xFFFF;  // lanes where every x - x so far was 0 (x finite)
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t lanes = std::min<int64_t>(16, C - cb * 16);
      for (int64_t o = 0; o < O; ++o) {
        const float* src = w + (o * C + cb * 16) * T;  // row l: channel cb * 16 + l, T taps
        float* dst = out + (cb * O + o) * T * 16;
        for (int64_t t0 = 0; t0 < T; t0 += 16) {
          // Taps [t0, t0 + n) of the rotated window read source taps T - 1 - t: load the
          // source range [T - t0 - n, T - t0), reversed again below.
          const int64_t n = std::min<int64_t>(16, T - t0), s0 = T - t0 - n;
          const __mmask16 m = first_lanes(n);
          for (int64_t l = 0; l < 16; ++l) {
            r[l] = l < lanes ? _mm512_maskz_loadu_ps(m, src + l * T + s0) : _mm512_setzero_ps();
            ok &= _mm512_mask_cmp_ps_mask(m, _mm512_sub_ps(r[l], r[l]), _mm512_setzero_ps(), _CMP_EQ_OQ) | ~m;
          }
          transpose16(r);  // r[k]: source tap s0 + k of the 16 channels
          for (int64_t k = 0; k < n; ++k) _mm512_storeu_ps(dst + (t0 + n - 1 - k) * 16, r[k]);
        }
      }
    }
    if (ok != 0xFFFF) finite = false;
  });
  return finite;
}

// The output gradient gy (N, O, L) in blocks of 16 channels for the weight
// tiles: out[((ob * N + n) * L + p) * 16 + l] = gy[n][ob * 16 + l][p], zero for
// channels >= O.
inline void block_output_grad(const float* gy, int64_t N, int64_t O, int64_t L, float* out) {
  const int64_t blocks = (O + 15) / 16;
  at::parallel_for(0, blocks * N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t ob = job / N, n = job % N;
      interleave_block(gy + n * O * L, L, ob, std::min<int64_t>(16, O - ob * 16), out + job * L * 16);
    }
  });
}

// ---------------------------------------------------------------- forward tile

// tmp[(i * Q + j) * 16 + l] = bias[l] + sum over (c, ky, kx) of
// w[((c * kh + ky) * kw + kx) * 16 + l] * rows[i][c * plane + ky * Wp + kx + j].
// KW > 0: the window is KW wide (3: ResNet's), its taps unrolled with constant
// offsets; KW == 0: kw at run time. S: the stride (1 or 2), column j
// of a row reads input column j * S (+ kx). OB: blocks of 16 output channels
// (1 or 2; block k's weights at w + k * wstride): with 2, each broadcast input
// feeds two FMAs, half the loads per FMA.
template <int R, int Q, int KW, int S, int OB>
void forward_tile_kw(const float* const* rows, int64_t C, int64_t plane, int64_t Wp, int64_t kh, int64_t kw,
                     const float* w, int64_t wstride, const float* bias, float* tmp) {
  __m512 acc[OB][R][Q];
  for (int k = 0; k < OB; ++k) {
    const __m512 b = _mm512_loadu_ps(bias + k * 16);
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < Q; ++j) acc[k][i][j] = b;
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t ky = 0; ky < kh; ++ky) {
      const int64_t off0 = c * plane + ky * Wp;
      const float* p[R];
      for (int i = 0; i < R; ++i) p[i] = rows[i] + off0;
      auto tap = [&](int64_t kx) {
        __m512 wv[OB];
        for (int k = 0; k < OB; ++k) wv[k] = _mm512_loadu_ps(w + k * wstride + kx * 16);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
          // An opaque copy of the row pointer: the compiler must not see that tap kx + 1 reads
          // what tap kx read one column on (it would keep those inputs in registers it lacks).
          const float* q = p[i] + kx;
          asm("" : "+r"(q));
#pragma GCC unroll 28
          for (int j = 0; j < Q; ++j) {
            const __m512 x = _mm512_set1_ps(q[j * S]);
            for (int k = 0; k < OB; ++k) acc[k][i][j] = _mm512_fmadd_ps(wv[k], x, acc[k][i][j]);
          }
        }
      };
      if constexpr (KW > 0) {
#pragma GCC unroll 5
        for (int kx = 0; kx < KW; ++kx) tap(kx);
        w += KW * 16;
      } else {
        for (int64_t kx = 0; kx < kw; ++kx) tap(kx);
        w += kw * 16;
      }
    }
  }
  for (int k = 0; k < OB; ++k)
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < Q; ++j) _mm512_storeu_ps(tmp + ((k * R + i) * Q + j) * 16, acc[k][i][j]);
}

// Only the 3-wide stride-1 window is unrolled (2-3 % faster on ResNet's 3x3
// layers; unrolling 5-wide windows measured no gain), to keep the number of
// instances (and the build time) down.
template <int R, int Q, int OB>
void forward_tile(const float* const* rows, int64_t C, int64_t plane, int64_t Wp, int64_t kh, int64_t kw,
                  int64_t stride, const float* w, int64_t wstride, const float* bias, float* tmp) {
  if (stride == 2) return forward_tile_kw<R, Q, 0, 2, OB>(rows, C, plane, Wp, kh, kw, w, wstride, bias, tmp);
  if (kw == 3) return forward_tile_kw<R, Q, 3, 1, OB>(rows, C, plane, Wp, kh, kw, w, wstride, bias, tmp);
  forward_tile_kw<R, Q, 0, 1, OB>(rows, C, plane, Wp, kh, kw, w, wstride, bias, tmp);
}

using ForwardFn = void (*)(const float* const*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           const float*, int64_t, const float*, float*);

// The tiles the driver picks: R = tile_rows(Q) rows (a last, shorter group of
// rows repeats a row), or one row of fewer columns (the last chunk of a long row);
// with one block, also the two-block shapes (an odd last block of channels).
constexpr bool forward_used(int r, int q, int ob) {
  return r == tile_rows(q, ob) || r == 1 || (ob == 1 && r == tile_rows(q, 2));
}

template <int R, int OB, int... Qs>
constexpr std::array<ForwardFn, sizeof...(Qs)> forward_row(std::integer_sequence<int, Qs...>) {
  // Q = Qs + 1; unused shapes are nullptr (and not compiled).
  return {{(forward_used(R, Qs + 1, OB) ? &forward_tile<R, (forward_used(R, Qs + 1, OB) ? Qs + 1 : 1), OB>
                                       : nullptr)...}};
}

template <int OB, int... Rs>
constexpr std::array<std::array<ForwardFn, kMaxCols>, sizeof...(Rs)> forward_table(std::integer_sequence<int, Rs...>) {
  return {{forward_row<Rs + 1, OB>(std::make_integer_sequence<int, kMaxCols>{})...}};
}

// forward_kernels<OB>()[R - 1][Q - 1]
template <int OB>
const auto& forward_kernels() {
  static const auto table = forward_table<OB>(std::make_integer_sequence<int, kMaxRows>{});
  return table;
}

// y (N, O, OH, OW) = the correlation (stride 1 or 2) of xp (N, C, Hp, Wp), the
// input already zero-padded (OH <= (Hp - kh) / stride + 1, OW likewise), with wp
// packed as (ceil(O / 16), C, kh, kw, 16) (channels >= O zero), plus bias
// (ceil(O / 16) * 16).
inline void forward(const float* xp, int64_t N, int64_t C, int64_t Hp, int64_t Wp, int64_t kh, int64_t kw,
                    int64_t stride, int64_t OH, int64_t OW, const float* wp, const float* bias, int64_t O,
                    float* y) {
  TORCH_CHECK(stride == 1 || stride == 2, "d2l_ext.conv2d: the CPU tiles take stride 1 or 2, got ", stride);
  if (N == 0 || OH <= 0 || OW <= 0 || O == 0) return;
  const int64_t blocks = (O + 15) / 16;
  // Two blocks of 16 output channels a tile where there are two: 14 accumulators
  // per block. Columns: the whole row when it fits, else equal chunks of at most
  // 12 (24 with one block).
  const int64_t OB = blocks >= 2 ? 2 : 1;
  const int64_t per_block = kMaxAcc / OB, widest = OB == 2 ? 12 : 24;
  const int64_t col_chunks = OW <= per_block ? 1 : (OW + widest - 1) / widest;
  const int64_t Q = (OW + col_chunks - 1) / col_chunks;
  const int64_t R = tile_rows(static_cast<int>(Q), static_cast<int>(OB));
  TORCH_INTERNAL_ASSERT(col_chunks == 1 || R == 1, "conv2d tiles: chunks of a row are one-row tiles");
  const int64_t rows_total = N * OH;
  const int64_t row_groups = (rows_total + R - 1) / R;
  const int64_t pairs = (blocks + OB - 1) / OB;
  const int64_t plane = Hp * Wp, image = C * plane, wblock = C * kh * kw * 16;
  const auto& one = forward_kernels<1>();
  const auto& two = forward_kernels<2>();
  // A thread's consecutive jobs share what is bigger: the same rows of the
  // input with successive blocks of weights, or (more weights than input: the
  // last stages of ResNet) the same blocks of weights with successive rows.
  const bool rows_major = C * kh * kw * blocks * 16 <= N * image;
  at::parallel_for(0, row_groups * pairs, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float tmp[kMaxAcc * 16];
    __m512 r[16];
    const float* rows[kMaxRows];
    int64_t n_of[kMaxRows], oy_of[kMaxRows];
    for (int64_t job = begin; job < end; ++job) {
      const int64_t g = rows_major ? job / pairs : job % row_groups;
      const int64_t ob0 = (rows_major ? job % pairs : job / row_groups) * OB;
      const int64_t nb = std::min(OB, blocks - ob0);
      const int64_t r0 = g * R, rn = std::min(R, rows_total - r0);
      for (int64_t i = 0; i < rn; ++i) {
        n_of[i] = (r0 + i) / OH;
        oy_of[i] = (r0 + i) % OH;
      }
      for (int64_t x0 = 0; x0 < OW; x0 += Q) {
        const int64_t q = std::min(Q, OW - x0);
        const int64_t rk = q == Q ? R : 1;  // rows the kernel computes (a short chunk: R == 1)
        for (int64_t i = 0; i < rk; ++i) {
          const int64_t s = std::min(i, rn - 1);  // rows past the last repeat it, unstored
          rows[i] = xp + n_of[s] * image + oy_of[s] * stride * Wp + x0 * stride;
        }
        const ForwardFn fn = (nb == 2 ? two : one)[rk - 1][q - 1];
        TORCH_INTERNAL_ASSERT(fn != nullptr, "conv2d tiles: no forward tile of ", rk, " x ", q, " x ", nb);
        fn(rows, C, plane, Wp, kh, kw, stride, wp + ob0 * wblock, wblock, bias + ob0 * 16, tmp);
        // Row i's q vectors of 16 channels, transposed 16 columns at a time into the
        // channels' rows of y.
        for (int64_t k = 0; k < nb; ++k) {
          const int64_t ob = ob0 + k, lanes = std::min<int64_t>(16, O - ob * 16);
          for (int64_t i = 0; i < rn; ++i) {
            float* out = y + ((n_of[i] * O + ob * 16) * OH + oy_of[i]) * OW + x0;
            const float* t = tmp + (k * rk + i) * q * 16;
            for (int64_t j0 = 0; j0 < q; j0 += 16) {
              const int64_t n = std::min<int64_t>(16, q - j0);
              for (int64_t j = 0; j < 16; ++j) r[j] = j < n ? _mm512_load_ps(t + (j0 + j) * 16) : _mm512_setzero_ps();
              transpose16(r);
              const __mmask16 m = first_lanes(n);
              for (int64_t l = 0; l < lanes; ++l) _mm512_mask_storeu_ps(out + l * OH * OW + j0, m, r[l]);
            }
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------- weight tile

// tmp[(r * KW + kx) * 16 + l] = sum over (n, oy, ox) of g[((n * OH + oy) * OW + ox) * 16 + l] *
// xp[n * image + base[r] + oy * S * Wp + ox * S + kx].
template <int RT, int KW, int S>
void weight_tile_s(const float* g, const float* xp, const int64_t* base, int64_t N, int64_t OH, int64_t OW,
                   int64_t image, int64_t Wp, float* tmp) {
  __m512 acc[RT][KW];
  for (int r = 0; r < RT; ++r)
    for (int kx = 0; kx < KW; ++kx) acc[r][kx] = _mm512_setzero_ps();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t oy = 0; oy < OH; ++oy) {
      const float* p[RT];
      for (int r = 0; r < RT; ++r) p[r] = xp + n * image + base[r] + oy * S * Wp;
      for (int64_t ox = 0; ox < OW; ++ox, g += 16) {
        const __m512 gv = _mm512_loadu_ps(g);
#pragma GCC unroll 9
        for (int r = 0; r < RT; ++r) {
#pragma GCC unroll 11
          for (int kx = 0; kx < KW; ++kx) acc[r][kx] = _mm512_fmadd_ps(gv, _mm512_set1_ps(p[r][ox * S + kx]), acc[r][kx]);
        }
      }
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int kx = 0; kx < KW; ++kx) _mm512_storeu_ps(tmp + (r * KW + kx) * 16, acc[r][kx]);
}

template <int RT, int KW>
void weight_tile(const float* g, const float* xp, const int64_t* base, int64_t N, int64_t OH, int64_t OW,
                 int64_t image, int64_t Wp, int64_t stride, float* tmp) {
  if (stride == 2) return weight_tile_s<RT, KW, 2>(g, xp, base, N, OH, OW, image, Wp, tmp);
  weight_tile_s<RT, KW, 1>(g, xp, base, N, OH, OW, image, Wp, tmp);
}

using WeightTileFn = void (*)(const float*, const float*, const int64_t*, int64_t, int64_t, int64_t, int64_t,
                              int64_t, int64_t, float*);

// One tile shape per window width: RT = tile_pairs(KW) (a last, shorter chunk
// of pairs repeats a pair, unstored).
template <int KW, int... Rs>
constexpr std::array<WeightTileFn, sizeof...(Rs)> weight_row(std::integer_sequence<int, Rs...>) {
  return {{((Rs + 1 == tile_pairs(KW)) ? &weight_tile<(Rs + 1 == tile_pairs(KW) ? Rs + 1 : 1), KW> : nullptr)...}};
}

template <int... Ks>
constexpr std::array<std::array<WeightTileFn, kMaxPairs>, sizeof...(Ks)> weight_table(std::integer_sequence<int, Ks...>) {
  return {{weight_row<Ks + 1>(std::make_integer_sequence<int, kMaxPairs>{})...}};
}

// weight_kernels[KW - 1][RT - 1]
inline const auto& weight_kernels() {
  static const auto table = weight_table(std::make_integer_sequence<int, kMaxKw>{});
  return table;
}

// gw (O, C, kh, kw) = the weight gradient of the correlation (stride 1 or 2)
// of xp (N, C, Hp, Wp, zero-padded) whose (N, O, OH, OW) output gradient is gb,
// laid out as (ceil(O / 16), N * OH * OW, 16) blocks (channels >= O zero).
// kw <= kMaxKw.
inline void weight(const float* xp, int64_t N, int64_t C, int64_t Hp, int64_t Wp, int64_t kh, int64_t kw,
                   int64_t stride, int64_t OH, int64_t OW, const float* gb, int64_t O, float* gw) {
  TORCH_CHECK((stride == 1 || stride == 2) && kw <= kMaxKw, "d2l_ext.conv2d: no CPU weight tile for stride ",
              stride, " and a window ", kw, " wide");
  const int64_t RT = tile_pairs(static_cast<int>(kw));
  const int64_t pairs = C * kh;
  const int64_t chunks = (pairs + RT - 1) / RT;
  const int64_t blocks = (O + 15) / 16;
  const int64_t plane = Hp * Wp, image = C * plane, positions = N * OH * OW;
  const auto& table = weight_kernels();
  // Jobs ordered block major: a thread's consecutive jobs reuse one block of
  // the output gradient (kept in cache) with successive input channels.
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float tmp[kMaxAcc * 16];
    int64_t base[kMaxPairs], c_of[kMaxPairs], ky_of[kMaxPairs];
    for (int64_t job = begin; job < end; ++job) {
      const int64_t ob = job / chunks, ch = job % chunks;
      const int64_t p0 = ch * RT, rt = std::min(RT, pairs - p0);
      for (int64_t r = 0; r < RT; ++r) {
        const int64_t pair = p0 + std::min(r, rt - 1);  // pairs past the last repeat it, unstored
        c_of[r] = pair / kh;
        ky_of[r] = pair % kh;
        base[r] = c_of[r] * plane + ky_of[r] * Wp;
      }
      const WeightTileFn fn = table[kw - 1][RT - 1];
      TORCH_INTERNAL_ASSERT(fn != nullptr, "conv2d tiles: no weight tile of ", RT, " x ", kw);
      fn(gb + ob * positions * 16, xp, base, N, OH, OW, image, Wp, stride, tmp);
      const int64_t lanes = std::min<int64_t>(16, O - ob * 16);
      for (int64_t l = 0; l < lanes; ++l) {
        float* out = gw + (ob * 16 + l) * C * kh * kw;
        for (int64_t r = 0; r < rt; ++r) {
          float* o = out + (c_of[r] * kh + ky_of[r]) * kw;
          for (int64_t kx = 0; kx < kw; ++kx) o[kx] = tmp[(r * kw + kx) * 16 + l];
        }
      }
    }
  });
}

#pragma GCC pop_options

}  // namespace tiles
