// Window arithmetic and argument checks shared by the CPU and CUDA kernels of
// the 2-D pooling ops (max_pool2d, avg_pool2d, adaptive_avg_pool2d,
// adaptive_max_pool2d and their backwards), so that every backend reads the
// same windows and accepts the same arguments.
//
// Every pooling op here is separable in its window bounds: output (oh, ow)
// reads input rows base_h(oh) + t*dil_h for taps t in [lo_h(oh), hi_h(oh)),
// and columns likewise, where the tap range is already clipped to the input
// (padding is never read). A PoolAxis describes one axis, regular (kernel,
// stride, padding, dilation) or adaptive (torch's floor/ceil bounds).
//
// Max pooling remembers its winner as an offset inside the window, tap_h *
// taps_w + tap_w, stored as uint8 when the window has at most 256 taps (int32
// otherwise) instead of torch's int64 flat index.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace d2l_ext {

struct PoolAxis {
  int in = 0, out = 0;
  int kernel = 1, stride = 1, pad = 0, dilation = 1;
  bool adaptive = false;

  // Taps per window (an upper bound for adaptive windows): the row length of
  // the offset encoding.
  C10_HOST_DEVICE int taps() const {
    if (!adaptive) return kernel;
    return out > 0 ? (in + out - 1) / out + 1 : 1;
  }

  // Window of output o: taps t in [lo, hi) read input base + t * dilation.
  C10_HOST_DEVICE void window(int o, int& base, int& lo, int& hi) const {
    if (adaptive) {
      // torch: start = floor(o * in / out), end = ceil((o + 1) * in / out).
      base = static_cast<int>((static_cast<int64_t>(o) * in) / out);
      const int end = static_cast<int>(((static_cast<int64_t>(o) + 1) * in + out - 1) / out);
      lo = 0;
      hi = end - base;
      return;
    }
    base = o * stride - pad;
    lo = base < 0 ? (-base + dilation - 1) / dilation : 0;
    const int last = in - 1 - base;  // taps t with base + t * dilation <= in - 1
    hi = last < 0 ? 0 : last / dilation + 1;
    if (hi > kernel) hi = kernel;
    if (lo > hi) lo = hi;
  }

  // Average pooling's window size on this axis: with count_include_pad the
  // window clipped to the padded input (torch's pool_size), else the taps
  // that read the input. Average pooling has no dilation.
  C10_HOST_DEVICE int count(int o, bool include_pad) const {
    int base, lo, hi;
    window(o, base, lo, hi);
    if (adaptive || !include_pad) return hi - lo;
    const int end = base + kernel < in + pad ? base + kernel : in + pad;
    return end - base;
  }

  // Outputs whose window may contain input i: [first, last). Exact for
  // average and adaptive pooling; for dilated max pooling a superset (the
  // offset then decides).
  C10_HOST_DEVICE void outputs_touching(int i, int& first, int& last) const {
    if (adaptive) {
      first = static_cast<int>((static_cast<int64_t>(i) * out) / in);
      last = static_cast<int>(((static_cast<int64_t>(i) + 1) * out + in - 1) / in);
      if (last > out) last = out;
      return;
    }
    // o * stride - pad <= i  and  o * stride - pad + (kernel - 1) * dilation >= i
    const int reach = i + pad - (kernel - 1) * dilation;
    first = reach <= 0 ? 0 : (reach + stride - 1) / stride;
    last = (i + pad) / stride + 1;
    if (last > out) last = out;
    if (first > last) first = last;
  }
};

// torch's pooling_output_shape: floor (or ceil) of the strided window count,
// where a ceil-mode window must start inside the input or its left padding.
inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                                bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // floor division (span may be negative)
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// Offsets fit in uint8 when a window has at most 256 taps.
inline bool offsets_fit_uint8(const PoolAxis& h, const PoolAxis& w) {
  return static_cast<int64_t>(h.taps()) * w.taps() <= 256;
}


}  // namespace d2l_ext
