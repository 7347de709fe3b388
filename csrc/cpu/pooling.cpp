// CPU kernels of the 2-D pooling ops: max_pool2d, avg_pool2d,
// adaptive_max_pool2d, adaptive_avg_pool2d and their backwards.
//
// One set of kernels serves all four ops: a window is described per axis
// (PoolAxis, csrc/pooling.h), tabulated once per call, so regular and adaptive
// pooling differ only in their tables. Two layouts:
//   * contiguous (N, C, H, W): a task owns whole planes; forward reads each
//     window, backward zeroes its plane and scatters into it (no two tasks
//     touch one plane, so overlapping windows need no atomics);
//   * channels-last (N, H, W, C): the channel loop is innermost and
//     contiguous, so the compiler vectorises it; forward tasks own output
//     rows, backward tasks own (image, channel block) slabs.
// Argument checks, layouts and allocation are shared with the CUDA backend
// (csrc/pooling_ops.h); this file holds the kernels.
// Max pooling stores the winner as a small window offset (uint8 for up to 256
// taps) rather than an int64 index: 1/8 of torch's index memory.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../pooling_ops.h"
#include "memory.h"
#include "vec_avx2.h"

namespace d2l_ext {
namespace {

// Window bounds of every output along one axis (see PoolAxis::window).
// [inner_begin, inner_end): the outputs of a regular axis whose whole window
// reads the input (no padding, no clipping); empty for adaptive axes.
struct AxisTable {
  std::vector<int> base, lo, hi, count;
  int inner_begin = 0, inner_end = 0;
  AxisTable(const PoolAxis& a, bool include_pad)
      : base(a.out), lo(a.out), hi(a.out), count(a.out) {
    for (int o = 0; o < a.out; ++o) {
      a.window(o, base[o], lo[o], hi[o]);
      count[o] = a.count(o, include_pad);
    }
    if (a.adaptive) return;
    int o = 0;
    while (o < a.out && !(lo[o] == 0 && hi[o] == a.kernel)) ++o;
    inner_begin = inner_end = o;
    while (inner_end < a.out && lo[inner_end] == 0 && hi[inner_end] == a.kernel) ++inner_end;
  }
};

struct Geometry {
  int64_t N, C;
  PoolAxis h, w;
  AxisTable th, tw;
  int taps_w;  // row length of the offset code tap_h * taps_w + tap_w
  Geometry(int64_t n, int64_t c, const PoolAxis& h_, const PoolAxis& w_, bool include_pad = true)
      : N(n), C(c), h(h_), w(w_), th(h_, include_pad), tw(w_, include_pad), taps_w(w_.taps()) {}
  int64_t planes() const { return N * C; }
  int64_t in_plane() const { return static_cast<int64_t>(h.in) * w.in; }
  int64_t out_plane() const { return static_cast<int64_t>(h.out) * w.out; }
};

template <typename T>
inline bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::isnan(v);
  } else {
    return false;
  }
}

template <typename T>
constexpr T lowest() {
  if constexpr (std::is_floating_point_v<T>) {
    return -std::numeric_limits<T>::infinity();
  } else {
    return std::numeric_limits<T>::lowest();
  }
}

// at::parallel_for over [0, n), each task's body compiled twice: for the
// baseline ISA and, picked at run time, for AVX2 (flatten inlines the body and
// its callees into the wrapper, so the compiler vectorises the channel and
// output loops with 256-bit registers).
template <typename Body>
__attribute__((flatten)) void call_base(const Body& body, int64_t begin, int64_t end) {
  body(begin, end);
}
#ifdef D2L_EXT_HAVE_AVX2
template <typename Body>
__attribute__((target("avx2,fma"), flatten)) void call_avx2(const Body& body, int64_t begin, int64_t end) {
  body(begin, end);
}
#endif

template <typename Body>
void parallel_tasks(int64_t n, int64_t grain, const Body& body) {
#ifdef D2L_EXT_HAVE_AVX2
  if (cpu::avx2::cpu_has_avx2()) {
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { call_avx2(body, begin, end); });
    return;
  }
#endif
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { call_base(body, begin, end); });
}

// Planes per task: enough work per task to amortise scheduling.
int64_t plane_grain(int64_t plane_work) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, plane_work)); }

// Channels per backward task in channels-last layout.
constexpr int64_t kChannelBlock = 64;

// The window offset of the first tap that reads the input (torch starts its
// search there, so an all -inf window reports its first valid element).
inline int first_code(int hl, int hh, int wl, int wh, int taps_w) {
  return (hl < hh && wl < wh) ? hl * taps_w + wl : 0;
}

// ------------------------------------------------------------------ max pooling

// One tap of a max window over a run of n outputs whose windows lie inside
// the input: output i reads src[i * stride]. Branch-free (random data makes
// the winner unpredictable) so the compiler vectorises it; a compile-time
// stride lets strided loads become shuffles.
template <int kStride, typename T>
inline void max_tap_run(const T* src, int stride, int n, int here, T* best, int32_t* code) {
  const int s = kStride > 0 ? kStride : stride;
  for (int i = 0; i < n; ++i) {
    const T v = src[static_cast<int64_t>(i) * s];
    const bool take = (v > best[i]) | is_nan(v);  // torch's rule: a larger value or a NaN wins
    best[i] = take ? v : best[i];
    code[i] = take ? here : code[i];
  }
}

// GCC vector types (8 x float32, 8 x int32) for the float32 fast paths.
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

// Max of n contiguous values with torch's tie rules (first maximum, last
// NaN), as (value, index); index -1 when no value beats -inf (the caller keeps
// its default). Eight interleaved lanes, merged at the end, so that wide
// windows (max-over-time pooling) vectorise.
template <typename T>
inline void max_scan(const T* row, int n, T& best_out, int& idx_out) {
  constexpr int L = 8;
  T b[L];
  int k[L];
  for (int j = 0; j < L; ++j) {
    b[j] = lowest<T>();
    k[j] = -1;
  }
  int i = 0;
  if constexpr (std::is_same_v<T, float>) {
    // GCC vector extensions: one 8-float register per lane set, whatever the
    // target (the compiler left the plain loop scalar).
    v8f vb;
    v8i vk;
    std::memcpy(&vb, b, sizeof vb);
    std::memcpy(&vk, k, sizeof vk);
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (; i + L <= n; i += L) {
      v8f v;
      std::memcpy(&v, row + i, sizeof v);
      const v8i take = (v > vb) | (v != v);
      vb = take ? v : vb;
      vk = take ? lane + i : vk;
    }
    std::memcpy(b, &vb, sizeof vb);
    std::memcpy(k, &vk, sizeof vk);
  } else {
    for (; i + L <= n; i += L) {
      for (int j = 0; j < L; ++j) {
        const T v = row[i + j];
        const bool take = (v > b[j]) | is_nan(v);
        b[j] = take ? v : b[j];
        k[j] = take ? i + j : k[j];
      }
    }
  }
  T best = lowest<T>();
  int idx = -1, nan_idx = -1;
  for (int j = 0; j < L; ++j) {
    if (k[j] < 0) continue;
    if (is_nan(b[j])) {
      nan_idx = std::max(nan_idx, k[j]);
    } else if (b[j] > best || (b[j] == best && k[j] < idx)) {
      best = b[j];
      idx = k[j];
    }
  }
  if (nan_idx >= 0) {
    best = row[nan_idx];
    idx = nan_idx;
  }
  for (; i < n; ++i) {  // the tail comes after every lane element: the sequential rule
    const T v = row[i];
    if (v > best || is_nan(v)) {
      best = v;
      idx = i;
    }
  }
  best_out = best;
  idx_out = idx;
}

// Windows at least this wide (contiguous taps) are scanned with max_scan.
constexpr int kWideWindow = 16;

// max_tap_run over whole vectors only: runs of 8, then (n >= 8) the last 8
// outputs again, overlapping the previous run. A tap seen twice by an output
// changes nothing (a value never beats itself; a NaN re-takes with the same
// code), so no scalar tail runs; short rows (AlexNet's 12-wide) gain most.
// Interior outputs [ia, ib) of one output row, float32, eight at a time with
// the running max and code in registers across all the window's taps (the
// tap-run loop re-reads them from memory for every tap). The last block
// overlaps the one before (recomputed from scratch: same values). Needs
// ib - ia >= 8.
inline void max_blocks8(const float* xp, int64_t plane, int W, int hb, int hl, int hh, int dh, const int* wbase,
                        int ia, int ib, int sw, int dw, int TW, float* best, int32_t* code) {
  const v8i first = v8i{} + first_code(hl, hh, 0, TW, TW);
  for (int j = ia;; j += 8) {
    if (j + 8 > ib) j = ib - 8;
    v8f b = v8f{} - std::numeric_limits<float>::infinity();
    v8i c = first;
    for (int t = hl; t < hh; ++t) {
      const float* row = xp + static_cast<int64_t>(hb + t * dh) * W + wbase[j];
      for (int u = 0; u < TW; ++u) {
        const float* src = row + u * dw;
        v8f v;
        if (sw == 1) {
          std::memcpy(&v, src, sizeof v);
        } else if (sw == 2 && (src - xp) + 16 <= plane) {
          v8f lo, hi;
          std::memcpy(&lo, src, sizeof lo);
          std::memcpy(&hi, src + 8, sizeof hi);
          v = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
        } else {
          for (int k = 0; k < 8; ++k) v[k] = src[static_cast<int64_t>(k) * sw];
        }
        const v8i take = (v > b) | (v != v);  // torch's rule: a larger value or a NaN wins
        b = take ? v : b;
        c = take ? v8i{} + (t * TW + u) : c;
      }
    }
    std::memcpy(best + j, &b, sizeof b);
    std::memcpy(code + j, &c, sizeof c);
    if (j + 8 >= ib) break;
  }
}

template <typename T>
inline void max_window(const T* xp, int W, int hb, int hl, int hh, int dh, int wb, int wl, int wh, int dw, int TW,
                       T& best_out, int& code_out) {
  T best = lowest<T>();
  int code = first_code(hl, hh, wl, wh, TW);
  for (int t = hl; t < hh; ++t) {
    const T* row = xp + static_cast<int64_t>(hb + t * dh) * W + wb;
    if (dw == 1 && wh - wl >= kWideWindow) {
      T v;
      int u;
      max_scan(row + wl, wh - wl, v, u);
      if (u >= 0 && (v > best || is_nan(v))) {
        best = v;
        code = t * TW + wl + u;
      }
      continue;
    }
    for (int u = wl; u < wh; ++u) {
      const T v = row[u * dw];
      const bool take = (v > best) | is_nan(v);
      best = take ? v : best;
      code = take ? t * TW + u : code;
    }
  }
  best_out = best;
  code_out = code;
}

template <typename T, typename Off>
void max_forward_nchw(const Geometry& g, const T* x, T* y, Off* off) {
  const int H = g.h.in, W = g.w.in, OH = g.h.out, OW = g.w.out, TW = g.taps_w;
  const int dh = g.h.dilation, dw = g.w.dilation, sw = g.w.stride;
  // Outputs [ia, ib) along W have whole windows inside the input: those run
  // tap by tap over the row of outputs; the edges run window by window.
  // (Wide windows skip the runs: each is scanned as a whole instead.)
  const bool wide = dw == 1 && TW >= kWideWindow;
  const int ia = wide ? 0 : g.tw.inner_begin, ib = wide ? 0 : g.tw.inner_end;
  parallel_tasks(g.planes(), plane_grain(g.in_plane()), [&](int64_t begin, int64_t end) {
    std::vector<T> best(std::max(OW, 1));
    std::vector<int32_t> code(std::max(OW, 1));
    for (int64_t p = begin; p < end; ++p) {
      const T* xp = x + p * H * W;
      T* yp = y + p * OH * OW;
      Off* op = off + p * OH * OW;
      for (int oh = 0; oh < OH; ++oh) {
        const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
        for (int ow = 0; ow < OW; ++ow) {
          if (ow == ia && ib > ia) ow = ib;
          if (ow >= OW) break;
          int c;
          max_window(xp, W, hb, hl, hh, dh, g.tw.base[ow], g.tw.lo[ow], g.tw.hi[ow], dw, TW, best[ow], c);
          code[ow] = c;
        }
        bool blocked = false;
        if constexpr (std::is_same_v<T, float>) {
          if (ib - ia >= 8) {
            max_blocks8(xp, static_cast<int64_t>(H) * W, W, hb, hl, hh, dh, g.tw.base.data(), ia, ib, sw, dw, TW,
                        best.data(), code.data());
            blocked = true;
          }
        }
        if (ib > ia && !blocked) {
          const int n = ib - ia, first = first_code(hl, hh, 0, TW, TW);
          std::fill(best.begin() + ia, best.begin() + ib, lowest<T>());
          std::fill(code.begin() + ia, code.begin() + ib, first);
          for (int t = hl; t < hh; ++t) {
            const T* row = xp + static_cast<int64_t>(hb + t * dh) * W + g.tw.base[ia];
            for (int u = 0; u < TW; ++u) {
              const T* src = row + u * dw;
              const int here = t * TW + u;
              if (sw == 1) {
                max_tap_run<1>(src, sw, n, here, best.data() + ia, code.data() + ia);
              } else if (sw == 2) {
                max_tap_run<2>(src, sw, n, here, best.data() + ia, code.data() + ia);
              } else {
                max_tap_run<0>(src, sw, n, here, best.data() + ia, code.data() + ia);
              }
            }
          }
        }
        // Through restrict pointers: a uint8 store may alias anything.
        const T* __restrict b = best.data();
        const int32_t* __restrict c = code.data();
        T* __restrict yr = yp + oh * OW;
        Off* __restrict orow = op + oh * OW;
        for (int ow = 0; ow < OW; ++ow) {
          yr[ow] = b[ow];
          orow[ow] = static_cast<Off>(c[ow]);
        }
      }
    }
  });
}

template <typename T, typename Off>
void max_forward_nhwc(const Geometry& g, const T* x, T* y, Off* off) {
  const int64_t C = g.C;
  const int H = g.h.in, W = g.w.in, OH = g.h.out, OW = g.w.out, TW = g.taps_w;
  const int dh = g.h.dilation, dw = g.w.dilation;
  constexpr int64_t CB = kChannelBlock;
  parallel_tasks(g.N * OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, OW * C)),
                   [&](int64_t begin, int64_t end) {
    T best[CB];
    int code[CB];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / OH;
      const int oh = static_cast<int>(r % OH);
      const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
      for (int ow = 0; ow < OW; ++ow) {
        const int wb = g.tw.base[ow], wl = g.tw.lo[ow], wh = g.tw.hi[ow];
        const int64_t o = (r * OW + ow) * C;
        for (int64_t c0 = 0; c0 < C; c0 += CB) {
          const int64_t cn = std::min(CB, C - c0);
          const int start = first_code(hl, hh, wl, wh, TW);
          for (int64_t c = 0; c < cn; ++c) {
            best[c] = lowest<T>();
            code[c] = start;
          }
          for (int t = hl; t < hh; ++t) {
            for (int u = wl; u < wh; ++u) {
              const T* xv = x + ((n * H + hb + t * dh) * W + wb + u * dw) * C + c0;
              const int here = t * TW + u;
              for (int64_t c = 0; c < cn; ++c) {
                const T v = xv[c];
                const bool take = v > best[c] || is_nan(v);
                best[c] = take ? v : best[c];
                code[c] = take ? here : code[c];
              }
            }
          }
          // Through restrict pointers: a uint8 store may alias anything.
          T* __restrict yo = y + o + c0;
          Off* __restrict oo = off + o + c0;
          for (int64_t c = 0; c < cn; ++c) {
            yo[c] = best[c];
            oo[c] = static_cast<Off>(code[c]);
          }
        }
      }
    }
  });
}

// Where offset `code` of output (oh, ow) points in its input plane, or -1
// when it lies outside the window's valid taps (an empty window).
inline int64_t decode(const Geometry& g, int oh, int ow, int code) {
  const int t = code / g.taps_w, u = code - t * g.taps_w;
  if (t < g.th.lo[oh] || t >= g.th.hi[oh] || u < g.tw.lo[ow] || u >= g.tw.hi[ow]) return -1;
  return static_cast<int64_t>(g.th.base[oh] + t * g.h.dilation) * g.w.in + g.tw.base[ow] + u * g.w.dilation;
}

template <typename T, typename Off>
void max_backward_nchw(const Geometry& g, const T* gy, const Off* off, T* gx) {
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const int OW = g.w.out, W = g.w.in, TW = g.taps_w;
  // Inside the input (rows [ha, hb) x columns [ia, ib) of outputs) a code
  // maps to the window start plus a fixed step: tabulate the steps once.
  const int ha = g.th.inner_begin, hb = g.th.inner_end, ia = g.tw.inner_begin, ib = g.tw.inner_end;
  const int codes = g.h.taps() * TW;
  std::vector<int64_t> step(codes <= 256 ? codes : 0);
  for (int c = 0; c < static_cast<int>(step.size()); ++c) {
    step[c] = static_cast<int64_t>(c / TW) * g.h.dilation * W + (c % TW) * g.w.dilation;
  }
  const bool table = !step.empty();
  parallel_tasks(g.planes(), plane_grain(in_plane), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* gp = gx + p * in_plane;
      std::fill(gp, gp + in_plane, T(0));
      const T* gyp = gy + p * out_plane;
      const Off* op = off + p * out_plane;
      for (int oh = 0; oh < g.h.out; ++oh) {
        const bool inner_row = table && oh >= ha && oh < hb;
        const int64_t row = static_cast<int64_t>(g.th.base[oh]) * W;
        for (int ow = 0; ow < OW; ++ow) {
          const int code = static_cast<int>(op[oh * OW + ow]);
          if (inner_row && ow >= ia && ow < ib) {
            gp[row + g.tw.base[ow] + step[code]] += gyp[oh * OW + ow];
          } else {
            const int64_t i = decode(g, oh, ow, code);
            if (i >= 0) gp[i] += gyp[oh * OW + ow];
          }
        }
      }
    }
  });
}

template <typename T, typename Off>
void max_backward_nhwc(const Geometry& g, const T* gy, const Off* off, T* gx) {
  const int64_t C = g.C, in_plane = g.in_plane();
  const int OH = g.h.out, OW = g.w.out, W = g.w.in, TW = g.taps_w, dh = g.h.dilation, dw = g.w.dilation;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  const int codes = g.h.taps() * TW;
  const bool small = codes <= 256;
  parallel_tasks(g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    int64_t where[256];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock;
      const int64_t cn = std::min(kChannelBlock, C - c0);
      T* gn = gx + n * in_plane * C + c0;
      for (int64_t i = 0; i < in_plane; ++i) std::fill(gn + i * C, gn + i * C + cn, T(0));
      for (int oh = 0; oh < OH; ++oh) {
        for (int ow = 0; ow < OW; ++ow) {
          const int64_t o = ((n * OH + oh) * OW + ow) * C + c0;
          const Off* __restrict oc = off + o;
          const T* __restrict go = gy + o;
          if (small) {
            // Every channel of this output has the same window: resolve its
            // codes to input offsets once, then each channel is one lookup.
            const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
            const int wb = g.tw.base[ow], wl = g.tw.lo[ow], wh = g.tw.hi[ow];
            std::fill(where, where + codes, int64_t(-1));
            for (int t = hl; t < hh; ++t) {
              for (int u = wl; u < wh; ++u) {
                where[t * TW + u] = (static_cast<int64_t>(hb + t * dh) * W + wb + u * dw) * C;
              }
            }
            for (int64_t c = 0; c < cn; ++c) {
              const int64_t i = where[static_cast<int>(oc[c])];
              if (i >= 0) gn[i + c] += go[c];
            }
          } else {
            for (int64_t c = 0; c < cn; ++c) {
              const int64_t i = decode(g, oh, ow, static_cast<int>(oc[c]));
              if (i >= 0) gn[i * C + c] += go[c];
            }
          }
        }
      }
    }
  });
}

// -------------------------------------------------------------- average pooling

// acc: the sum's type (double for double, int64 for integers, else float),
// as torch's CPU kernels; integer averages truncate like C++ division.
template <typename T>
using acc_t = std::conditional_t<std::is_floating_point_v<T>, std::conditional_t<std::is_same_v<T, double>, double, float>, int64_t>;

inline int64_t divisor(const Geometry& g, int oh, int ow, int64_t divisor_override) {
  return divisor_override != 0 ? divisor_override : static_cast<int64_t>(g.th.count[oh]) * g.tw.count[ow];
}

// Whether output (0, 0) is the only one and its window is the whole plane
// (global pooling): then a plane is one contiguous sum.
bool is_global(const Geometry& g) {
  return g.h.out == 1 && g.w.out == 1 && g.h.dilation == 1 && g.w.dilation == 1 && g.th.base[0] + g.th.lo[0] == 0 &&
         g.th.hi[0] - g.th.lo[0] == g.h.in && g.tw.base[0] + g.tw.lo[0] == 0 && g.tw.hi[0] - g.tw.lo[0] == g.w.in;
}

// Sum of n contiguous values in 8 interleaved partial sums (vectorisable).
template <typename A, typename T>
inline A contiguous_sum(const T* x, int64_t n) {
  A part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) part[j] += static_cast<A>(x[i + j]);
  }
  A sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; i < n; ++i) sum += static_cast<A>(x[i]);
  return sum;
}

// One tap of an average window over a run of n outputs: sum[i] += src[i * stride].
template <int kStride, typename T, typename A>
inline void add_tap_run(const T* src, int stride, int n, A* __restrict sum) {
  const int s = kStride > 0 ? kStride : stride;
  for (int i = 0; i < n; ++i) sum[i] += static_cast<A>(src[static_cast<int64_t>(i) * s]);
}

template <typename T>
void avg_forward_nchw(const Geometry& g, const T* x, T* y, int64_t divisor_override) {
  using A = acc_t<T>;
  const int H = g.h.in, W = g.w.in, OH = g.h.out, OW = g.w.out;
  if (is_global(g)) {
    const int64_t n = g.in_plane();
    const A div = static_cast<A>(divisor(g, 0, 0, divisor_override));
    parallel_tasks(g.planes(), plane_grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) y[p] = static_cast<T>(contiguous_sum<A>(x + p * n, n) / div);
    });
    return;
  }
  // As max_forward_nchw: outputs [ia, ib) along W sum tap by tap over the
  // row (each output still adds its taps in window order), the edges window
  // by window.
  const int ia = g.tw.inner_begin, ib = g.tw.inner_end, sw = g.w.stride, KW = g.w.kernel;
  parallel_tasks(g.planes(), plane_grain(g.in_plane()), [&](int64_t begin, int64_t end) {
    std::vector<A> sums(std::max(OW, 1));
    for (int64_t p = begin; p < end; ++p) {
      const T* xp = x + p * H * W;
      T* yp = y + p * OH * OW;
      for (int oh = 0; oh < OH; ++oh) {
        const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
        A* __restrict sum = sums.data();
        for (int ow = 0; ow < OW; ++ow) {
          if (ow == ia && ib > ia) ow = ib;
          if (ow >= OW) break;
          const int wb = g.tw.base[ow], wl = g.tw.lo[ow], wh = g.tw.hi[ow];
          A acc = 0;
          for (int t = hl; t < hh; ++t) {
            const T* row = xp + static_cast<int64_t>(hb + t) * W + wb;
            for (int u = wl; u < wh; ++u) acc += static_cast<A>(row[u]);
          }
          sum[ow] = acc;
        }
        if (ib > ia) {
          const int n = ib - ia;
          std::fill(sum + ia, sum + ib, A(0));
          for (int t = hl; t < hh; ++t) {
            const T* row = xp + static_cast<int64_t>(hb + t) * W + g.tw.base[ia];
            for (int u = 0; u < KW; ++u) {
              if (sw == 1) {
                add_tap_run<1>(row + u, sw, n, sum + ia);
              } else if (sw == 2) {
                add_tap_run<2>(row + u, sw, n, sum + ia);
              } else {
                add_tap_run<0>(row + u, sw, n, sum + ia);
              }
            }
          }
        }
        T* __restrict yr = yp + oh * OW;
        if (divisor_override != 0) {
          for (int ow = 0; ow < OW; ++ow) yr[ow] = static_cast<T>(sum[ow] / static_cast<A>(divisor_override));
        } else {
          const A ch = static_cast<A>(g.th.count[oh]);
          const int* __restrict cw = g.tw.count.data();
          for (int ow = 0; ow < OW; ++ow) yr[ow] = static_cast<T>(sum[ow] / (ch * static_cast<A>(cw[ow])));
        }
      }
    }
  });
}

template <typename T>
void avg_forward_nhwc(const Geometry& g, const T* x, T* y, int64_t divisor_override) {
  using A = acc_t<T>;
  const int64_t C = g.C;
  const int H = g.h.in, W = g.w.in, OH = g.h.out, OW = g.w.out;
  constexpr int64_t CB = kChannelBlock;
  parallel_tasks(g.N * OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, OW * C)),
                   [&](int64_t begin, int64_t end) {
    A sum[CB];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / OH;
      const int oh = static_cast<int>(r % OH);
      const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
      for (int ow = 0; ow < OW; ++ow) {
        const int wb = g.tw.base[ow], wl = g.tw.lo[ow], wh = g.tw.hi[ow];
        const A div = static_cast<A>(divisor(g, oh, ow, divisor_override));
        const int64_t o = (r * OW + ow) * C;
        for (int64_t c0 = 0; c0 < C; c0 += CB) {
          const int64_t cn = std::min(CB, C - c0);
          for (int64_t c = 0; c < cn; ++c) sum[c] = 0;
          for (int t = hl; t < hh; ++t) {
            for (int u = wl; u < wh; ++u) {
              const T* xv = x + ((n * H + hb + t) * W + wb + u) * C + c0;
              for (int64_t c = 0; c < cn; ++c) sum[c] += static_cast<A>(xv[c]);
            }
          }
          for (int64_t c = 0; c < cn; ++c) y[o + c0 + c] = static_cast<T>(sum[c] / div);
        }
      }
    }
  });
}

template <typename T>
void avg_backward_nchw(const Geometry& g, const T* gy, T* gx, int64_t divisor_override) {
  const int W = g.w.in, OH = g.h.out, OW = g.w.out;
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  if (is_global(g)) {  // every input element gets grad / divisor
    const T div = static_cast<T>(divisor(g, 0, 0, divisor_override));
    parallel_tasks(g.planes(), plane_grain(in_plane), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) std::fill(gx + p * in_plane, gx + (p + 1) * in_plane, gy[p] / div);
    });
    return;
  }
  const int ia = g.tw.inner_begin, ib = g.tw.inner_end, sw = g.w.stride, KW = g.w.kernel;
  parallel_tasks(g.planes(), plane_grain(in_plane), [&](int64_t begin, int64_t end) {
    std::vector<T> share(std::max(OW, 1));
    for (int64_t p = begin; p < end; ++p) {
      T* gp = gx + p * in_plane;
      std::fill(gp, gp + in_plane, T(0));
      const T* gyp = gy + p * out_plane;
      for (int oh = 0; oh < OH; ++oh) {
        const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
        T* __restrict v = share.data();
        for (int ow = 0; ow < OW; ++ow) {
          v[ow] = gyp[oh * OW + ow] / static_cast<T>(divisor(g, oh, ow, divisor_override));
        }
        for (int t = hl; t < hh; ++t) {
          T* row = gp + static_cast<int64_t>(hb + t) * W;
          for (int ow = 0; ow < OW; ++ow) {  // edge windows
            if (ow == ia && ib > ia) ow = ib;
            if (ow >= OW) break;
            for (int u = g.tw.lo[ow]; u < g.tw.hi[ow]; ++u) row[g.tw.base[ow] + u] += v[ow];
          }
          if (ib > ia) {
            T* dst = row + g.tw.base[ia];
            const T* vi = v + ia;
            for (int u = 0; u < KW; ++u) {
              for (int i = 0; i < ib - ia; ++i) dst[static_cast<int64_t>(i) * sw + u] += vi[i];
            }
          }
        }
      }
    }
  });
}

template <typename T>
void avg_backward_nhwc(const Geometry& g, const T* gy, T* gx, int64_t divisor_override) {
  const int64_t C = g.C, in_plane = g.in_plane();
  const int W = g.w.in, OH = g.h.out, OW = g.w.out;
  if (is_global(g)) {  // every input element gets grad / divisor
    const T div = static_cast<T>(divisor(g, 0, 0, divisor_override));
    parallel_tasks(g.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t i = 0; i < in_plane; ++i) {
          T* __restrict dst = gx + (n * in_plane + i) * C;
          const T* __restrict src = gy + n * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = src[c] / div;
        }
      }
    });
    return;
  }
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  parallel_tasks(g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    T v[kChannelBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock;
      const int64_t cn = std::min(kChannelBlock, C - c0);
      T* gn = gx + n * in_plane * C + c0;
      for (int64_t i = 0; i < in_plane; ++i) std::fill(gn + i * C, gn + i * C + cn, T(0));
      for (int oh = 0; oh < OH; ++oh) {
        const int hb = g.th.base[oh], hl = g.th.lo[oh], hh = g.th.hi[oh];
        for (int ow = 0; ow < OW; ++ow) {
          const int wb = g.tw.base[ow], wl = g.tw.lo[ow], wh = g.tw.hi[ow];
          const T div = static_cast<T>(divisor(g, oh, ow, divisor_override));
          const T* go = gy + ((n * OH + oh) * OW + ow) * C + c0;
          for (int64_t c = 0; c < cn; ++c) v[c] = go[c] / div;
          for (int t = hl; t < hh; ++t) {
            for (int u = wl; u < wh; ++u) {
              T* gi = gn + ((hb + t) * static_cast<int64_t>(W) + wb + u) * C;
              for (int64_t c = 0; c < cn; ++c) gi[c] += v[c];
            }
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------ host side

// The CPU kernels run float32, float64 and, where torch's do, integers;
// d2l_ext.functional computes float16/bfloat16 on CPU in float32.
struct CpuPool {
  static void check(const char* op, const at::Tensor& t, const char* name, PoolKind kind) {
    TORCH_CHECK(t.device().is_cpu(), op, " (CPU kernel): ", name, " must be a CPU tensor, got ", t.device());
    const auto s = t.scalar_type();
    const bool ok = s == at::kFloat || s == at::kDouble ||
                    (kind == PoolKind::MaxForward && at::isIntegralType(s, /*includeBool=*/false)) ||
                    (kind == PoolKind::AvgForward && s == at::kLong);
    TORCH_CHECK(ok, op, " (CPU kernel): ", name, " must be float32 or float64",
                kind == PoolKind::MaxForward ? " (or an integer type)" : kind == PoolKind::AvgForward ? " (or int64)" : "",
                ", got ", s);
  }

  static void max_forward(const PoolArgs& a, const at::Tensor& x, at::Tensor& y, at::Tensor& off) {
    const Geometry g(a.N, a.C, a.h, a.w);
    AT_DISPATCH_ALL_TYPES(x.scalar_type(), "d2l_ext_max_pool2d_cpu", [&] {
      auto run = [&](auto* o) {
        using Off = std::remove_pointer_t<decltype(o)>;
        if (a.channels_last) {
          max_forward_nhwc<scalar_t, Off>(g, x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), o);
        } else {
          max_forward_nchw<scalar_t, Off>(g, x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), o);
        }
      };
      if (a.offset_u8) {
        run(off.data_ptr<uint8_t>());
      } else {
        run(off.data_ptr<int32_t>());
      }
    });
  }

  static void max_backward(const PoolArgs& a, const at::Tensor& gy, const at::Tensor& off, at::Tensor& gx) {
    const Geometry g(a.N, a.C, a.h, a.w);
    cpu::advise_huge_pages(gx.data_ptr(), gx.nbytes());
    AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "d2l_ext_max_pool2d_backward_cpu", [&] {
      auto run = [&](const auto* o) {
        using Off = std::remove_const_t<std::remove_pointer_t<decltype(o)>>;
        if (a.channels_last) {
          max_backward_nhwc<scalar_t, Off>(g, gy.const_data_ptr<scalar_t>(), o, gx.data_ptr<scalar_t>());
        } else {
          max_backward_nchw<scalar_t, Off>(g, gy.const_data_ptr<scalar_t>(), o, gx.data_ptr<scalar_t>());
        }
      };
      if (a.offset_u8) {
        run(off.const_data_ptr<uint8_t>());
      } else {
        run(off.const_data_ptr<int32_t>());
      }
    });
  }

  static void avg_forward(const PoolArgs& a, const at::Tensor& x, at::Tensor& y) {
    const Geometry g(a.N, a.C, a.h, a.w, a.include_pad);
    AT_DISPATCH_FLOATING_TYPES_AND(at::kLong, x.scalar_type(), "d2l_ext_avg_pool2d_cpu", [&] {
      if (a.channels_last) {
        avg_forward_nhwc<scalar_t>(g, x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), a.divisor_override);
      } else {
        avg_forward_nchw<scalar_t>(g, x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), a.divisor_override);
      }
    });
  }

  static void avg_backward(const PoolArgs& a, const at::Tensor& gy, at::Tensor& gx) {
    const Geometry g(a.N, a.C, a.h, a.w, a.include_pad);
    cpu::advise_huge_pages(gx.data_ptr(), gx.nbytes());
    AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "d2l_ext_avg_pool2d_backward_cpu", [&] {
      if (a.channels_last) {
        avg_backward_nhwc<scalar_t>(g, gy.const_data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), a.divisor_override);
      } else {
        avg_backward_nchw<scalar_t>(g, gy.const_data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), a.divisor_override);
      }
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CPU, m) {
  D2L_EXT_REGISTER_POOLING(m, CpuPool);
}

}  // namespace d2l_ext
