// Direct convolution of one image, float32, stride 1, dilation 1: the body of
// the CPU kernels for layers with few output channels (the book's LeNet, the
// 5x5 branches of GoogLeNet), where im2col + GEMM spends most of its time
// copying windows and BLAS runs at a fraction of its speed on a 6- or 16-row
// product.
//
// Included twice by conv2d.cpp, inside `#pragma GCC target(...)` for AVX-512
// and for AVX2 + FMA, with D2L_DIRECT_NS naming the namespace of each copy and
// D2L_DIRECT_MAX_OB the most output channels one pass keeps in registers
// (D2L_DIRECT_WOB: in the weight gradient, which holds 5 taps of each).
//
// The image is first copied into a zero-padded scratch plane per channel, so
// the inner loop has no bounds checks: each output row is cut into chunks of
// 16 columns; a chunk of OB output channels is OB vectors of 16 floats held in
// registers while every (c, ky, kx) tap adds weight * (16 inputs). One load of
// 16 inputs feeds OB fused multiply-adds.

namespace D2L_DIRECT_NS {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // v16 never crosses a call between the two copies

typedef float v16 __attribute__((vector_size(64)));

inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Output channels [o0, o0 + OB) of rows [0, OH): out[o][oy][ox] = bias[o] +
// sum over (c, ky, kx) of wt[((c * kh + ky) * kw + kx) * Opad + o] *
// xp[(c * Hp + oy + ky) * Wp + ox + kx]. Channels >= O are computed (their
// packed weights are zero) but not stored.
template <int OB>
void channel_block(const float* xp, int64_t C, int64_t Hp, int64_t Wp, int64_t kh, int64_t kw, const float* wt,
                   int64_t Opad, const float* bias, int64_t o0, int64_t O, float* out, int64_t OH, int64_t OW) {
  const int64_t stored = std::min<int64_t>(OB, O - o0);
  for (int64_t oy = 0; oy < OH; ++oy) {
    for (int64_t x0 = 0; x0 < OW; x0 += 16) {
      v16 acc[OB];
      for (int ob = 0; ob < OB; ++ob) acc[ob] = v16{} + bias[o0 + ob];
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t ky = 0; ky < kh; ++ky) {
          const float* row = xp + (c * Hp + oy + ky) * Wp + x0;
          const float* w = wt + (c * kh + ky) * kw * Opad + o0;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const v16 xv = load16(row + kx);
#pragma GCC unroll 16
            for (int ob = 0; ob < OB; ++ob) acc[ob] += xv * w[kx * Opad + ob];
          }
        }
      }
      const int64_t n = std::min<int64_t>(16, OW - x0);
      for (int64_t ob = 0; ob < stored; ++ob) {
        std::memcpy(out + ((o0 + ob) * OH + oy) * OW + x0, &acc[ob], n * sizeof(float));
      }
    }
  }
}

// One image: x (C, H, W) -> out (O, OH, OW) with OH = H + 2 ph - kh + 1 and
// OW likewise; wt packed as above with Opad a multiple of ob (4, 8 or 16,
// at most D2L_DIRECT_MAX_OB); bias has Opad entries; scratch is reused.
inline void image(const float* x, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t kh, int64_t kw,
                  const float* wt, int64_t O, int64_t Opad, int64_t ob, const float* bias, float* out, int64_t OH,
                  int64_t OW, std::vector<float>& scratch) {
  const int64_t Hp = H + 2 * ph;
  const int64_t Wp = (OW + 15) / 16 * 16 + kw - 1;  // every 16-wide load stays inside
  scratch.assign(static_cast<size_t>(C * Hp * Wp), 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t y = 0; y < H; ++y) {
      std::memcpy(scratch.data() + (c * Hp + y + ph) * Wp + pw, x + (c * H + y) * W, W * sizeof(float));
    }
  }
  for (int64_t o0 = 0; o0 < O; o0 += ob) {
    switch (ob) {
      case 4:
        channel_block<4>(scratch.data(), C, Hp, Wp, kh, kw, wt, Opad, bias, o0, O, out, OH, OW);
        break;
      case 8:
        channel_block<8>(scratch.data(), C, Hp, Wp, kh, kw, wt, Opad, bias, o0, O, out, OH, OW);
        break;
#if D2L_DIRECT_MAX_OB >= 16
      case 16:
        channel_block<16>(scratch.data(), C, Hp, Wp, kh, kw, wt, Opad, bias, o0, O, out, OH, OW);
        break;
#endif
      default:
        TORCH_CHECK(false, "d2l_ext.conv2d: direct kernel has no ", ob, "-channel block");
    }
  }
}

// The weight gradient, one image at a time: acc[((c * kh + ky) * kw + kx) *
// Opad + o] (vectors of 16 partial sums, summed across lanes at the end) +=
// sum over (oy, ox) of gy[o][oy][ox] * xp[c][oy + ky][ox + kx]. gyp holds gy
// with each row zero-padded from its `valid` = OW columns to OWp (a multiple of
// 16) so whole vectors can be read. Taps [kx0, kx0 + KW) of one (c, ky) and channels [o0, o0 + OB): the
// KW * OB sums stay in registers, each gy vector is loaded once for KW taps.
template <int KW, int OB>
void weight_block(const float* xp, int64_t Hp, int64_t Wp, const float* gyp, int64_t OH, int64_t OWp, int64_t valid,
                  int64_t c, int64_t ky, int64_t kx0, int64_t kw, int64_t o0, int64_t Opad, float* acc_mem) {
  v16 acc[KW][OB];
  const int64_t tap0 = ky * kw + kx0;  // within channel c's taps
  float* at = acc_mem + (tap0 * Opad + o0) * 16;
  for (int kx = 0; kx < KW; ++kx) {
    for (int ob = 0; ob < OB; ++ob) acc[kx][ob] = load16(at + (kx * Opad + ob) * 16);
  }
  // The last chunk of a row reaches past OW, where gy is padded with zeros: its x lanes there are
  // zeroed too, since an inf or NaN input there times 0 would put a NaN into taps that never read it.
  typedef int v16i __attribute__((vector_size(64)));
  const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const int64_t full = valid / 16 * 16;
  const v16i keep = lane < static_cast<int>(valid - full);
  auto chunk = [&](const float* row, int64_t oy, int64_t x0, auto tail) {
    v16 gv[OB];
    for (int ob = 0; ob < OB; ++ob) gv[ob] = load16(gyp + ((o0 + ob) * OH + oy) * OWp + x0);
#pragma GCC unroll 8
    for (int kx = 0; kx < KW; ++kx) {
      v16 xv = load16(row + x0 + kx);
      if constexpr (decltype(tail)::value) xv = keep ? xv : v16{};
#pragma GCC unroll 16
      for (int ob = 0; ob < OB; ++ob) acc[kx][ob] += xv * gv[ob];
    }
  };
  for (int64_t oy = 0; oy < OH; ++oy) {
    const float* row = xp + (c * Hp + oy + ky) * Wp + kx0;
    for (int64_t x0 = 0; x0 < full; x0 += 16) chunk(row, oy, x0, std::false_type{});
    if (full < valid) chunk(row, oy, full, std::true_type{});
  }
  for (int kx = 0; kx < KW; ++kx) {
    for (int ob = 0; ob < OB; ++ob) std::memcpy(at + (kx * Opad + ob) * 16, &acc[kx][ob], sizeof(v16));
  }
}

// One image's weight-gradient sums into acc (C * kh * kw * Opad vectors of 16,
// this thread's own); x (C, H, W) and gy (O, OH, OW) as in image(); Opad a
// multiple of D2L_DIRECT_WOB.
inline void weight_image(const float* x, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t kh,
                         int64_t kw, const float* gy, int64_t O, int64_t Opad, int64_t OH, int64_t OW, float* acc,
                         std::vector<float>& scratch, std::vector<float>& gscratch) {
  const int64_t Hp = H + 2 * ph;
  const int64_t OWp = (OW + 15) / 16 * 16;
  const int64_t Wp = OWp + kw - 1;
  scratch.assign(static_cast<size_t>(C * Hp * Wp), 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t y = 0; y < H; ++y) {
      std::memcpy(scratch.data() + (c * Hp + y + ph) * Wp + pw, x + (c * H + y) * W, W * sizeof(float));
    }
  }
  gscratch.assign(static_cast<size_t>(Opad * OH * OWp), 0.0f);
  for (int64_t o = 0; o < O; ++o) {
    for (int64_t y = 0; y < OH; ++y) {
      std::memcpy(gscratch.data() + (o * OH + y) * OWp, gy + (o * OH + y) * OW, OW * sizeof(float));
    }
  }
  constexpr int OB = D2L_DIRECT_WOB;
  for (int64_t c = 0; c < C; ++c) {
    float* acc_c = acc + c * kh * kw * Opad * 16;
    for (int64_t ky = 0; ky < kh; ++ky) {
      for (int64_t o0 = 0; o0 < Opad; o0 += OB) {
        int64_t kx0 = 0;
        for (; kx0 + 5 <= kw; kx0 += 5) {
          weight_block<5, OB>(scratch.data(), Hp, Wp, gscratch.data(), OH, OWp, OW, c, ky, kx0, kw, o0, Opad,
                                acc_c);
        }
        for (; kx0 + 3 <= kw; kx0 += 3) {
          weight_block<3, OB>(scratch.data(), Hp, Wp, gscratch.data(), OH, OWp, OW, c, ky, kx0, kw, o0, Opad,
                                acc_c);
        }
        for (; kx0 < kw; ++kx0) {
          weight_block<1, OB>(scratch.data(), Hp, Wp, gscratch.data(), OH, OWp, OW, c, ky, kx0, kw, o0, Opad,
                                acc_c);
        }
      }
    }
  }
}

#pragma GCC diagnostic pop

}  // namespace D2L_DIRECT_NS
