// CPU kernels of conv2d (2-D cross-correlation) and its backward.
//
// The im2col form of the book's corr2d: for one image and one group, every
// window of the input becomes a column of a (C/groups * kh * kw) x (OH * OW)
// matrix, and the group's output channels are one matrix product of the
// weights (O/groups x C/groups*kh*kw) with it, done by at::mm (BLAS). A 1x1
// convolution with stride 1 and no padding skips the copy: the input already
// is that matrix.
//
// Work is split over blocks of images (at::parallel_for); a block's columns
// sit side by side so that layers with few output positions still make a wide
// product; each task owns one column buffer, reused block after block, so it
// stays in cache between its fill and the product. Backward:
//   * input gradient: columns = W^T x grad_output per image, then col2im adds
//     every column back onto the pixels its window read;
//   * weight gradient: grad_output x columns^T summed over images, into one
//     accumulator per thread (no two threads write the same memory), then
//     summed;
//   * bias gradient: grad_output summed over N, OH, OW.
//
// Float32 layers with stride 1 and at most 8 output channels (LeNet's first)
// take a direct kernel instead (conv2d_direct.h): im2col's copy and a 6-row
// GEMM cost more there than the arithmetic. Its forward also computes the
// input gradient (a convolution of grad_output with the rotated weights) when
// the input has at most 8 channels, and it has its own weight gradient.
// On AVX-512 the other float32 ungrouped layers with stride 1 (and the
// strided 3x3 ones, forward and weight gradient) run on the tiles of
// conv2d_tiles.h: direct convolution with 16 output channels in the lanes.
// Without AVX-512, the direct kernel takes up to 16 channels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "../conv2d.h"
#include "../finite.h"

namespace d2l_ext {
namespace direct {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx2,fma")
#define D2L_DIRECT_NS avx512
#define D2L_DIRECT_MAX_OB 16
#define D2L_DIRECT_WOB 4
#include "conv2d_direct.h"
#undef D2L_DIRECT_WOB
#undef D2L_DIRECT_MAX_OB
#undef D2L_DIRECT_NS
#include "conv2d_tiles.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define D2L_DIRECT_NS avx2
#define D2L_DIRECT_MAX_OB 8
#define D2L_DIRECT_WOB 1
#include "conv2d_direct.h"
#undef D2L_DIRECT_WOB
#undef D2L_DIRECT_MAX_OB
#undef D2L_DIRECT_NS
#pragma GCC pop_options

using ImageFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                         int64_t, int64_t, int64_t, const float*, float*, int64_t, int64_t, std::vector<float>&);
using WeightFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                          const float*, int64_t, int64_t, int64_t, int64_t, float*, std::vector<float>&,
                          std::vector<float>&);

// The best copy this CPU runs (fn == nullptr: neither; im2col + GEMM then),
// how many output channels its forward keeps in registers at most, and its
// weight gradient's output channels per block.
struct Kernel {
  ImageFn fn = nullptr;
  int64_t max_ob = 0;
  WeightFn weight = nullptr;
  int64_t weight_ob = 0;
  bool tiles = false;  // the AVX-512 tiles of conv2d_tiles.h for the wide layers
};

// D2L_EXT_DIRECT_CONV=off turns the direct kernels off (im2col + GEMM for
// every layer), =avx2 picks the AVX2 copy on an AVX-512 CPU (no tiles: the
// tests run every path on one machine), =notiles keeps the AVX-512 copy for
// few channels but gives the wide layers to im2col.
inline Kernel kernel() {
  static const Kernel k = [] {
    __builtin_cpu_init();
    const char* env = std::getenv("D2L_EXT_DIRECT_CONV");
    const std::string choice = env ? env : "";
    if (choice == "off") return Kernel{};
    if (choice != "avx2" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
      return Kernel{&avx512::image, 16, &avx512::weight_image, 4, choice != "notiles"};
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return Kernel{&avx2::image, 4, &avx2::weight_image, 1};
    }
    return Kernel{};
  }();
  return k;
}

// Output channels per register block: the smallest of 4, 8, 16 holding all of
// them, capped by what the CPU's copy keeps in registers.
inline int64_t block_channels(int64_t out_channels, int64_t max_ob) {
  const int64_t ob = out_channels <= 4 ? 4 : out_channels <= 8 ? 8 : 16;
  return std::min(ob, max_ob);
}

// Weights (any strides) packed for the kernel: wt[((c * kh + ky) * kw + kx) * Opad + o], the
// output channels zero-padded to Opad. With flip, the packing of the input
// gradient's convolution: channels swapped and the window rotated by 180
// degrees (w'[c][o][ky][kx] = w[o][c][kh - 1 - ky][kw - 1 - kx]).
inline at::Tensor pack_weights(const at::Tensor& w, int64_t Opad, bool flip) {
  at::Tensor v = flip ? w.flip({2, 3}) : w.transpose(0, 1);  // (Cin', Cout', kh, kw)
  v = v.permute({0, 2, 3, 1});                                // (Cin', kh, kw, Cout')
  const int64_t cout = v.size(3);
  at::Tensor packed = at::zeros({v.size(0), v.size(1), v.size(2), Opad}, w.options());
  packed.narrow(3, 0, cout).copy_(v);
  return packed;
}

}  // namespace direct

namespace {

// The direct kernel takes float32 stride-1, dilation-1, ungrouped convolutions
// with at most 8 output channels (16 without AVX-512; more fill the tiles'
// lanes, or make a GEMM worth its im2col copy) and at most 512 taps per output.
// Measured (one thread): LeNet c2's 16 outputs 2.15 -> 1.36 ms forward on the
// tiles, its 6-channel input gradient 4.5 -> 7.8 ms (so it stays here).
bool direct_fits(const ConvGeometry& g, const at::Tensor& input, int64_t out_channels) {
  return input.scalar_type() == at::kFloat && g.groups == 1 && g.sh == 1 && g.sw == 1 && g.dh == 1 &&
         g.dw == 1 && out_channels <= (direct::kernel().tiles ? 8 : 16) && g.K() <= 512 &&
         direct::kernel().fn != nullptr;
}

enum class Pass { kForward, kInputGrad, kWeightGrad };

// The tiles take the other float32, dilation-1, ungrouped convolutions:
// stride 1, or stride 2 with a window of more than one tap and at least 16
// input channels (ResNet's downsampling 3x3; the one-channel stems stay on
// im2col, and a strided 1x1 is a GEMM on a cheap copy, which measured faster).
// Their input gradient needs stride 1 and padding below the window (grad_output
// is padded by k - 1 - p), their weight gradient a window at most 11 wide. A 1x1 layer needs no im2col copy, so a GEMM is the better choice
// unless the images are small (< 256 positions, GoogLeNet's 12 x 12: narrow
// products) and, forward or input gradient, the pass sums >= 128 channels (a
// tile's transposed store costs too much on fewer). Measured, one thread,
// batch 32 (ms, tiles vs GEMM): 64->64 @24 forward 1.15 vs 1.04, weight
// gradient 1.23 vs 1.11; 192->64 @12 forward 0.72 vs 0.83, input gradient 1.07
// vs 0.86, weight gradient 0.65 vs 0.90.
bool tiles_fit(const ConvGeometry& g, const at::Tensor& input, Pass pass) {
  const bool stride =
      (g.sh == 1 && g.sw == 1) || (g.sh == 2 && g.sw == 2 && g.C >= 16 && g.kh * g.kw > 1);
  if (g.kh * g.kw == 1) {
    if (g.L() >= 256) return false;
    if (pass == Pass::kForward && g.C < 128) return false;
    if (pass == Pass::kInputGrad && g.O < 128) return false;
  }
  if (pass == Pass::kInputGrad && (g.sh != 1 || g.ph >= g.kh || g.pw >= g.kw)) return false;
  if (pass == Pass::kWeightGrad && g.kw > direct::tiles::kMaxKw) return false;
  return input.scalar_type() == at::kFloat && g.groups == 1 && stride && g.dh == 1 && g.dw == 1 && g.N > 0 &&
         direct::kernel().tiles;
}

// The input zero-padded for the tiles (the input itself without padding).
at::Tensor tiles_padded(const ConvGeometry& g, const at::Tensor& input) {
  return g.ph == 0 && g.pw == 0 ? input : at::constant_pad_nd(input, {g.pw, g.pw, g.ph, g.ph}, 0);
}

// at::parallel_for's worker threads do not inherit the caller's
// below-autograd dispatch state, so each task sets it again before its at::mm
// calls (else autograd would see the op's inputs, which may require grad).
using BelowAutograd = at::AutoDispatchBelowADInplaceOrView;

// Outputs ox in [lo, hi) whose tap at input column offset x0 (ix = ox * s + x0)
// lands inside [0, size); the others read padding.
inline void valid_range(int64_t x0, int64_t s, int64_t size, int64_t n_out, int64_t& lo, int64_t& hi) {
  lo = x0 >= 0 ? 0 : (-x0 + s - 1) / s;
  hi = size - x0 <= 0 ? 0 : (size - x0 + s - 1) / s;
  lo = std::min(lo, n_out);
  hi = std::max(std::min(hi, n_out), lo);
}

// x: one group of one image, (C/groups, H, W); col: its (K, OH * OW) columns,
// rows ld elements apart (ld > OH * OW when several images share a block).
template <typename T>
void im2col(const ConvGeometry& g, const T* x, T* col, int64_t ld) {
  for (int64_t c = 0; c < g.Cg(); ++c) {
    const T* plane = x + c * g.H * g.W;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        T* row = col + ((c * g.kh + ki) * g.kw + kj) * ld;
        const int64_t x0 = kj * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(x0, g.sw, g.W, g.OW, lo, hi);
        for (int64_t oy = 0; oy < g.OH; ++oy) {
          T* dst = row + oy * g.OW;
          const int64_t iy = oy * g.sh - g.ph + ki * g.dh;
          if (iy < 0 || iy >= g.H) {
            std::fill(dst, dst + g.OW, T(0));
            continue;
          }
          const T* src = plane + iy * g.W + x0;
          std::fill(dst, dst + lo, T(0));
          if (g.sw == 1) {
            std::memcpy(dst + lo, src + lo, sizeof(T) * (hi - lo));
          } else {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] = src[ox * g.sw];
          }
          std::fill(dst + hi, dst + g.OW, T(0));
        }
      }
    }
  }
}

// The adjoint of im2col: gx (C/groups, H, W) += every column entry at the
// pixel it was read from (padding entries are dropped). gx must start zeroed.
template <typename T>
void col2im(const ConvGeometry& g, const T* col, int64_t ld, T* gx) {
  for (int64_t c = 0; c < g.Cg(); ++c) {
    T* plane = gx + c * g.H * g.W;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const T* row = col + ((c * g.kh + ki) * g.kw + kj) * ld;
        const int64_t x0 = kj * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(x0, g.sw, g.W, g.OW, lo, hi);
        for (int64_t oy = 0; oy < g.OH; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ki * g.dh;
          if (iy < 0 || iy >= g.H) continue;
          const T* src = row + oy * g.OW;
          T* dst = plane + iy * g.W + x0;
          if (g.sw == 1) {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] += src[ox];
          } else {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox * g.sw] += src[ox];
          }
        }
      }
    }
  }
}

// Images per block: a block's columns sit side by side, (K, images * OH * OW),
// so that layers with few output positions (ResNet's last stage: 3 x 3) still
// give at::mm a wide product; at most ~2 MB of columns per block.
int64_t block_images(const ConvGeometry& g, int64_t element_size) {
  if (g.N == 0) return 1;
  constexpr int64_t kMinColumns = 256;
  const int64_t by_width = (kMinColumns + g.L() - 1) / g.L();
  const int64_t by_memory = std::max<int64_t>(1, (int64_t{2} << 20) / std::max<int64_t>(1, g.K() * g.L() * element_size));
  const int64_t nb = std::max<int64_t>(1, std::min({by_width, by_memory, g.N}));
  // Blocks in a multiple of the thread count, so that every thread gets the
  // same number of images (32 images of 3 x 3 outputs: 16 + 16, not 29 + 3).
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t blocks = (g.N + nb - 1) / nb;
  const int64_t balanced = g.N >= threads ? (blocks + threads - 1) / threads * threads : blocks;
  return std::max<int64_t>(1, (g.N + balanced - 1) / balanced);
}

void check_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, " (CPU kernel): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64 for the CPU kernel, got ", t.scalar_type());
}

// One block of images [n0, n0 + nb) and one group: its columns, (K, nb * L),
// image j in columns [j * L, (j + 1) * L). A 1x1 stride-1 convolution of a
// single image needs no copy: its input is the matrix.
template <typename T>
at::Tensor block_columns(const ConvGeometry& g, const at::Tensor& input, int64_t n0, int64_t nb, int64_t grp,
                         at::Tensor& buffer) {
  if (g.pointwise() && nb == 1) return input[n0].view({g.C, g.L()}).narrow(0, grp * g.Cg(), g.Cg());
  if (!buffer.defined()) buffer = at::empty({g.K(), nb * g.L()}, input.options());
  at::Tensor col = buffer.narrow(1, 0, nb * g.L());
  const T* x = input.const_data_ptr<T>();
  for (int64_t j = 0; j < nb; ++j) {
    im2col<T>(g, x + ((n0 + j) * g.C + grp * g.Cg()) * g.H * g.W, col.data_ptr<T>() + j * g.L(), col.stride(0));
  }
  return col;
}

// grad_output of a block and group as one (O/groups, nb * L) matrix, image j in
// columns [j * L, (j + 1) * L): a view when nb == 1, else a copy.
at::Tensor block_rows(const ConvGeometry& g, const at::Tensor& gy, int64_t n0, int64_t nb, int64_t grp) {
  const at::Tensor part = gy.narrow(0, n0, nb).view({nb, g.O, g.L()}).narrow(1, grp * g.Og(), g.Og());
  if (nb == 1) return part[0];
  return part.transpose(0, 1).reshape({g.Og(), nb * g.L()});
}

at::Tensor conv2d_cpu(const at::Tensor& input_, const at::Tensor& weight_, const std::optional<at::Tensor>& bias_,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "d2l_ext.conv2d";
  const ConvGeometry g = check_conv2d_args(op, input_, weight_, bias_, stride, padding, dilation, groups);
  check_cpu(op, input_, "input");
  check_cpu(op, weight_, "weight");
  const at::MemoryFormat fmt = conv_output_format(input_, weight_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({g.O, g.K()});
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.N, g.O, g.OH, g.OW}, input.options());
  const int64_t nb = block_images(g, input.element_size());
  const int64_t blocks = (g.N + nb - 1) / nb;
  if (g.N > 0 && direct_fits(g, input, g.O)) {
    const direct::Kernel k = direct::kernel();
    const int64_t ob = direct::block_channels(g.O, k.max_ob);
    const int64_t Opad = (g.O + ob - 1) / ob * ob;
    const at::Tensor wt = direct::pack_weights(weight_, Opad, false);
    at::Tensor b = at::zeros({Opad}, input.options());
    if (has_bias) b.narrow(0, 0, g.O).copy_(bias);
    const float* x = input.const_data_ptr<float>();
    float* y = out.data_ptr<float>();
    at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch;
      for (int64_t n = begin; n < end; ++n) {
        k.fn(x + n * g.C * g.H * g.W, g.C, g.H, g.W, g.ph, g.pw, g.kh, g.kw, wt.const_data_ptr<float>(), g.O, Opad,
             ob, b.const_data_ptr<float>(), y + n * g.O * g.L(), g.OH, g.OW, scratch);
      }
    });
  } else if (tiles_fit(g, input, Pass::kForward)) {
    const at::Tensor xp = tiles_padded(g, input);
    const int64_t blocks = (g.O + 15) / 16;
    const at::Tensor wp = at::empty({blocks, g.K(), 16}, input.options());
    direct::tiles::pack_forward(weight.const_data_ptr<float>(), g.O, g.C, g.kh * g.kw, wp.data_ptr<float>());
    at::Tensor b = at::zeros({blocks * 16}, input.options());
    if (has_bias) b.narrow(0, 0, g.O).copy_(bias);
    direct::tiles::forward(xp.const_data_ptr<float>(), g.N, g.C, xp.size(2), xp.size(3), g.kh, g.kw, g.sh, g.OH,
                           g.OW, wp.const_data_ptr<float>(), b.const_data_ptr<float>(), g.O, out.data_ptr<float>());
  } else if (g.N > 0) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2l_ext_conv2d_cpu", [&] {
      at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        const BelowAutograd below;
        at::Tensor buffer, product;
        for (int64_t b = begin; b < end; ++b) {
          const int64_t n0 = b * nb, n = std::min(nb, g.N - n0);
          const at::Tensor out_b = out.narrow(0, n0, n).view({n, g.O, g.L()});
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const at::Tensor cols = block_columns<scalar_t>(g, input, n0, n, grp, buffer);
            const at::Tensor w_g = weight.narrow(0, grp * g.Og(), g.Og());
            const at::Tensor bias_g = has_bias ? bias.narrow(0, grp * g.Og(), g.Og()).unsqueeze(1) : at::Tensor();
            if (n == 1) {
              at::Tensor out_g = out_b[0].narrow(0, grp * g.Og(), g.Og());
              has_bias ? at::addmm_out(out_g, bias_g, w_g, cols) : at::mm_out(out_g, w_g, cols);
            } else {
              if (!product.defined()) product = at::empty({g.Og(), nb * g.L()}, input.options());
              at::Tensor prod = product.narrow(1, 0, n * g.L());
              has_bias ? at::addmm_out(prod, bias_g, w_g, cols) : at::mm_out(prod, w_g, cols);
              out_b.narrow(1, grp * g.Og(), g.Og()).copy_(prod.view({g.Og(), n, g.L()}).transpose(0, 1));
            }
          }
        }
      });
    });
  }
  return fmt == at::MemoryFormat::ChannelsLast ? out.contiguous(fmt) : out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  constexpr const char* op = "d2l_ext._conv2d_backward";
  const ConvGeometry g =
      check_conv2d_backward_args(op, grad_output_, input_, weight_, stride, padding, dilation, groups);
  check_cpu(op, input_, "input");
  check_cpu(op, weight_, "weight");
  check_cpu(op, grad_output_, "grad_output");
  const at::Tensor gy = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({g.O, g.K()});
  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[2]) grad_bias = gy.sum({0, 2, 3});
  if (output_mask[1]) grad_weight = at::zeros({g.O, g.K()}, weight.options());
  const int64_t nb = block_images(g, input.element_size());
  const int64_t blocks = (g.N + nb - 1) / nb;
  // The input gradient is the convolution of grad_output, padded by (kh - 1 -
  // ph, kw - 1 - pw), with the channel-swapped, rotated weights: the direct
  // kernel's job when the input has few channels.
  // It pads grad_output with zeros that torch's col2im never multiplies: with an inf or NaN weight,
  // 0 * w would spread a NaN over the whole input gradient, so such weights take the GEMM path.
  const bool direct_input = output_mask[0] && g.N > 0 && direct_fits(g, input, g.C) && g.ph < g.kh &&
                            g.pw < g.kw && all_finite(weight);
  if (direct_input) {
    const direct::Kernel k = direct::kernel();
    const int64_t ob = direct::block_channels(g.C, k.max_ob);
    const int64_t Cpad = (g.C + ob - 1) / ob * ob;
    const at::Tensor wt = direct::pack_weights(weight_, Cpad, true);
    const at::Tensor zero_bias = at::zeros({Cpad}, input.options());
    grad_input = at::empty_like(input, at::MemoryFormat::Contiguous);
    const float* dy = gy.const_data_ptr<float>();
    float* dx = grad_input.data_ptr<float>();
    at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch;
      for (int64_t n = begin; n < end; ++n) {
        k.fn(dy + n * g.O * g.L(), g.O, g.OH, g.OW, g.kh - 1 - g.ph, g.kw - 1 - g.pw, g.kh, g.kw,
             wt.const_data_ptr<float>(), g.C, Cpad, ob, zero_bias.const_data_ptr<float>(), dx + n * g.C * g.H * g.W,
             g.H, g.W, scratch);
      }
    });
    output_mask[0] = false;  // done; what is left below is the weight gradient
  }
  at::Tensor wp_input;  // the tiles' packed weights for the input gradient, when they take it
  if (output_mask[0] && tiles_fit(g, input, Pass::kInputGrad)) {
    wp_input = at::empty({(g.C + 15) / 16, g.O * g.kh * g.kw, 16}, input.options());
    if (!direct::tiles::pack_input_grad(weight.const_data_ptr<float>(), g.O, g.C, g.kh * g.kw,
                                        wp_input.data_ptr<float>())) {
      wp_input = at::Tensor();  // an inf or NaN weight: the GEMM path below
    }
  }
  if (wp_input.defined()) {
    // The same convolution of grad_output, padded by (kh - 1 - ph, kw - 1 - pw), on the tiles.
    const at::Tensor gyp =
        at::constant_pad_nd(gy, {g.kw - 1 - g.pw, g.kw - 1 - g.pw, g.kh - 1 - g.ph, g.kh - 1 - g.ph}, 0);
    const at::Tensor zero_bias = at::zeros({wp_input.size(0) * 16}, input.options());
    grad_input = at::empty_like(input, at::MemoryFormat::Contiguous);
    direct::tiles::forward(gyp.const_data_ptr<float>(), g.N, g.O, gyp.size(2), gyp.size(3), g.kh, g.kw, 1, g.H,
                           g.W, wp_input.const_data_ptr<float>(), zero_bias.const_data_ptr<float>(), g.C,
                           grad_input.data_ptr<float>());
    output_mask[0] = false;
  } else if (output_mask[0]) {
    grad_input = at::zeros_like(input);
  }
  if (output_mask[1] && !output_mask[0] && g.N > 0 && direct_fits(g, input, g.O)) {
    // Per thread, vectors of 16 partial sums for every (tap, output channel);
    // summed over threads and lanes at the end.
    const direct::Kernel k = direct::kernel();
    const int64_t Opad = (g.O + k.weight_ob - 1) / k.weight_ob * k.weight_ob;
    const int64_t per_thread = g.K() * Opad * 16;
    const int64_t threads = at::get_num_threads();
    at::Tensor partial = at::zeros({threads, g.Cg(), g.kh, g.kw, Opad, 16}, input.options());
    const float* x = input.const_data_ptr<float>();
    const float* dy = gy.const_data_ptr<float>();
    at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch, gscratch;
      float* acc = partial.data_ptr<float>() + at::get_thread_num() * per_thread;
      for (int64_t n = begin; n < end; ++n) {
        k.weight(x + n * g.C * g.H * g.W, g.C, g.H, g.W, g.ph, g.pw, g.kh, g.kw, dy + n * g.O * g.L(), g.O, Opad,
                 g.OH, g.OW, acc, scratch, gscratch);
      }
    });
    // (C, kh, kw, Opad) -> (O, C, kh, kw)
    grad_weight = partial.sum({0, 5}).narrow(3, 0, g.O).permute({3, 0, 1, 2}).contiguous().view({g.O, g.K()});
    output_mask[1] = false;
  } else if (output_mask[1] && tiles_fit(g, input, Pass::kWeightGrad)) {
    // grad_output in blocks of 16 channels, (O / 16, N * OH * OW, 16), for the tiles' vector loads.
    const int64_t blocks = (g.O + 15) / 16;
    const at::Tensor gb = at::empty({blocks, g.N * g.L(), 16}, input.options());
    direct::tiles::block_output_grad(gy.const_data_ptr<float>(), g.N, g.O, g.L(), gb.data_ptr<float>());
    const at::Tensor xp = tiles_padded(g, input);
    grad_weight = at::empty({g.O, g.K()}, weight.options());
    direct::tiles::weight(xp.const_data_ptr<float>(), g.N, g.C, xp.size(2), xp.size(3), g.kh, g.kw, g.sh, g.OH,
                          g.OW, gb.const_data_ptr<float>(), g.O, grad_weight.data_ptr<float>());
    output_mask[1] = false;
  }
  if (g.N > 0 && (output_mask[0] || output_mask[1])) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2l_ext_conv2d_backward_cpu", [&] {
      // One weight-gradient accumulator per thread: at::parallel_for runs each
      // range on one thread, whose number indexes its slice. A thread's first block
      // writes its slice (no zero fill: the slices of ResNet-18's layers add up to
      // 88 MB a step on two threads); only a slice no block wrote is zeroed.
      const int64_t threads = at::get_num_threads();
      at::Tensor partial = output_mask[1] ? at::empty({threads, g.O, g.K()}, weight.options()) : at::Tensor();
      std::vector<char> written(static_cast<size_t>(threads), 0);  // by thread; each writes its own
      at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        const BelowAutograd below;
        at::Tensor buffer, gcol_buffer;
        const int tid = at::get_thread_num();
        at::Tensor acc = output_mask[1] ? partial[tid] : at::Tensor();
        for (int64_t b = begin; b < end; ++b) {
          const bool first = !written[tid];
          const int64_t n0 = b * nb, n = std::min(nb, g.N - n0);
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const at::Tensor gy_g = block_rows(g, gy, n0, n, grp);
            const at::Tensor w_g = weight.narrow(0, grp * g.Og(), g.Og());
            if (output_mask[0]) {
              if (g.pointwise() && n == 1) {
                at::Tensor gx_g = grad_input[n0].view({g.C, g.L()}).narrow(0, grp * g.Cg(), g.Cg());
                at::mm_out(gx_g, w_g.t(), gy_g);
              } else {
                if (!gcol_buffer.defined()) gcol_buffer = at::empty({g.K(), nb * g.L()}, input.options());
                at::Tensor gcol = gcol_buffer.narrow(1, 0, n * g.L());
                at::mm_out(gcol, w_g.t(), gy_g);
                for (int64_t j = 0; j < n; ++j) {
                  col2im<scalar_t>(g, gcol.const_data_ptr<scalar_t>() + j * g.L(), gcol.stride(0),
                                   grad_input.data_ptr<scalar_t>() + ((n0 + j) * g.C + grp * g.Cg()) * g.H * g.W);
                }
              }
            }
            if (output_mask[1]) {
              const at::Tensor cols = block_columns<scalar_t>(g, input, n0, n, grp, buffer);
              at::Tensor acc_g = acc.narrow(0, grp * g.Og(), g.Og());
              first ? at::mm_out(acc_g, gy_g, cols.t()) : acc_g.addmm_(gy_g, cols.t());
            }
          }
          written[tid] = 1;
        }
      });
      if (output_mask[1]) {
        for (int64_t t = 0; t < threads; ++t)
          if (!written[t]) partial[t].zero_();  // a thread with no block (fewer blocks than threads)
        grad_weight = partial.sum(0);
      }
    });
  }
  if (grad_weight.defined()) grad_weight = grad_weight.view(weight_.sizes());
  if (grad_input.defined() && conv_is_channels_last(input_)) {
    grad_input = grad_input.contiguous(at::MemoryFormat::ChannelsLast);
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2l_ext, CPU, m) {
  m.impl("conv2d", &conv2d_cpu);
  m.impl("_conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace d2l_ext
