// LibTorch-only test of the d2l_ext pooling ops, reached through the
// dispatcher as a LibTorch program would (see test_cross_entropy.cpp for the
// linking). Forward values and indices are compared with ATen's pooling,
// backward ops with autograd through ATen's. Exits nonzero on any failure.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <utility>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"

namespace {

// C++ signatures of the schemas in csrc/ops.cpp (int[2] -> IntArrayRef,
// SymInt[2] -> SymIntArrayRef, int? -> std::optional<int64_t>).
using MaxPoolFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                     at::IntArrayRef, at::IntArrayRef, bool);
using MaxPoolBackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, at::IntArrayRef,
                                     at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool);
using AvgPoolFn = at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, bool,
                             std::optional<int64_t>);
using AvgPoolBackwardFn = at::Tensor(const at::Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                     at::IntArrayRef, bool, bool, std::optional<int64_t>);
using AdaptiveAvgFn = at::Tensor(const at::Tensor&, c10::SymIntArrayRef);
using AdaptiveAvgBackwardFn = at::Tensor(const at::Tensor&, c10::SymIntArrayRef);
using AdaptiveMaxFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, c10::SymIntArrayRef);
using AdaptiveMaxBackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef);

using d2l_ext_test::report;

bool close(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && at::allclose(a, b, 1e-5, 1e-6);
}

template <typename Fn>
c10::TypedOperatorHandle<Fn> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

c10::SymIntArrayRef sym(const std::vector<c10::SymInt>& v) { return v; }

void run(const c10::Device& device, bool channels_last) {
  const std::string tag = std::string(device.is_cuda() ? "cuda" : "cpu") + (channels_last ? " channels_last" : "");
  auto max_pool = handle<MaxPoolFn>("d2l_ext::max_pool2d");
  auto max_bwd = handle<MaxPoolBackwardFn>("d2l_ext::_max_pool2d_backward");
  auto avg_pool = handle<AvgPoolFn>("d2l_ext::avg_pool2d");
  auto avg_bwd = handle<AvgPoolBackwardFn>("d2l_ext::_avg_pool2d_backward");
  auto aavg = handle<AdaptiveAvgFn>("d2l_ext::adaptive_avg_pool2d");
  auto aavg_bwd = handle<AdaptiveAvgBackwardFn>("d2l_ext::_adaptive_avg_pool2d_backward");
  auto amax = handle<AdaptiveMaxFn>("d2l_ext::adaptive_max_pool2d");
  auto amax_bwd = handle<AdaptiveMaxBackwardFn>("d2l_ext::_adaptive_max_pool2d_backward");

  auto x = torch::randn({3, 5, 13, 11}, torch::dtype(torch::kFloat).device(device));
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<c10::SymInt> hw = {13, 11};

  struct Win {
    std::vector<int64_t> k, s, p, d;
    bool ceil;
  };
  for (const Win& w : {Win{{3, 3}, {2, 2}, {1, 1}, {1, 1}, false}, Win{{2, 3}, {1, 2}, {0, 1}, {2, 1}, true},
                       Win{{2, 2}, {2, 2}, {0, 0}, {1, 1}, false}}) {
    const std::string name = tag + " max k=" + c10::str(at::IntArrayRef(w.k)) + " ceil=" + std::to_string(w.ceil);
    auto [out, off] = max_pool.call(x, w.k, w.s, w.p, w.d, w.ceil);
    auto [want, want_idx] = at::max_pool2d_with_indices(x, w.k, w.s, w.p, w.d, w.ceil);
    report(at::equal(out, want), name + ": values");
    report(off.scalar_type() == at::kByte, name + ": uint8 offsets");
    report(!channels_last || out.is_contiguous(at::MemoryFormat::ChannelsLast), name + ": keeps channels_last");
    auto g = torch::randn_like(want);
    auto gi = max_bwd.call(g, off, sym(hw), w.k, w.s, w.p, w.d, w.ceil);
    auto want_gi = at::max_pool2d_with_indices_backward(g, x, w.k, w.s, w.p, w.d, w.ceil, want_idx);
    report(close(gi, want_gi), name + ": backward");
    if (w.d[0] == 1 && w.d[1] == 1) {
      for (bool include_pad : {true, false}) {
        const std::string aname = tag + " avg k=" + c10::str(at::IntArrayRef(w.k)) + " pad=" +
                                  std::to_string(include_pad);
        auto a = avg_pool.call(x, w.k, w.s, w.p, w.ceil, include_pad, std::nullopt);
        report(close(a, at::avg_pool2d(x, w.k, w.s, w.p, w.ceil, include_pad)), aname + ": values");
        auto ga = avg_bwd.call(g, sym(hw), w.k, w.s, w.p, w.ceil, include_pad, std::nullopt);
        auto want_ga = at::avg_pool2d_backward(g, x, w.k, w.s, w.p, w.ceil, include_pad, std::nullopt);
        report(close(ga, want_ga), aname + ": backward");
      }
    }
  }
  for (const std::vector<c10::SymInt>& size : {std::vector<c10::SymInt>{1, 1}, std::vector<c10::SymInt>{4, 5}}) {
    const std::string name = tag + " adaptive " + std::to_string(size[0].expect_int()) + "x" +
                             std::to_string(size[1].expect_int());
    const std::vector<int64_t> out_size = {size[0].expect_int(), size[1].expect_int()};
    auto a = aavg.call(x, sym(size));
    auto want = at::adaptive_avg_pool2d(x, out_size);
    report(close(a, want), name + " avg: values");
    auto g = torch::randn_like(want);
    report(close(aavg_bwd.call(g, sym(hw)), at::_adaptive_avg_pool2d_backward(g, x)), name + " avg: backward");
    auto [m, off] = amax.call(x, sym(size));
    auto [want_m, want_idx] = at::adaptive_max_pool2d(x, out_size);
    report(at::equal(m, want_m), name + " max: values");
    report(close(amax_bwd.call(g, off, sym(hw)), at::adaptive_max_pool2d_backward(g, x, want_idx)),
           name + " max: backward");
  }
}

// The ops are differentiable from C++ too (csrc/autograd.cpp): backward()
// through each gives ATen's input gradient, in the input's layout.
void run_autograd(const c10::Device& device, bool channels_last) {
  const std::string tag = std::string(device.is_cuda() ? "cuda" : "cpu") + (channels_last ? " channels_last" : "");
  auto x = torch::randn({2, 3, 9, 8}, torch::dtype(torch::kDouble).device(device));
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> k = {3, 3}, s = {2, 2}, p = {1, 1}, d = {1, 1};
  const std::vector<c10::SymInt> size = {4, 3};
  auto grad_of = [&](const std::function<at::Tensor(const at::Tensor&)>& f) {
    auto leaf = x.detach().requires_grad_();
    auto out = f(leaf);
    auto g = at::arange(out.numel(), out.options()).view(out.sizes()).remainder(7);
    out.backward(g);
    return leaf.grad();
  };
  auto max_pool = handle<MaxPoolFn>("d2l_ext::max_pool2d");
  auto avg_pool = handle<AvgPoolFn>("d2l_ext::avg_pool2d");
  auto aavg = handle<AdaptiveAvgFn>("d2l_ext::adaptive_avg_pool2d");
  auto amax = handle<AdaptiveMaxFn>("d2l_ext::adaptive_max_pool2d");
  const std::vector<std::pair<std::string, std::pair<std::function<at::Tensor(const at::Tensor&)>,
                                                     std::function<at::Tensor(const at::Tensor&)>>>>
      cases = {
          {"max", {[&](const at::Tensor& t) { return std::get<0>(max_pool.call(t, k, s, p, d, false)); },
                   [&](const at::Tensor& t) { return at::max_pool2d(t, k, s, p, d, false); }}},
          {"avg", {[&](const at::Tensor& t) { return avg_pool.call(t, k, s, p, false, true, std::nullopt); },
                   [&](const at::Tensor& t) { return at::avg_pool2d(t, k, s, p, false, true); }}},
          {"adaptive avg", {[&](const at::Tensor& t) { return aavg.call(t, sym(size)); },
                            [&](const at::Tensor& t) { return at::adaptive_avg_pool2d(t, {4, 3}); }}},
          {"adaptive max", {[&](const at::Tensor& t) { return std::get<0>(amax.call(t, sym(size))); },
                            [&](const at::Tensor& t) { return std::get<0>(at::adaptive_max_pool2d(t, {4, 3})); }}},
      };
  for (const auto& [name, fns] : cases) {
    auto ours = grad_of(fns.first), want = grad_of(fns.second);
    report(ours.defined() && close(ours, want), tag + " " + name + ": autograd from C++");
    report(!channels_last || ours.is_contiguous(at::MemoryFormat::ChannelsLast),
           tag + " " + name + ": gradient keeps channels_last");
  }
}

}  // namespace

int main() {
  return d2l_ext_test::run_on_devices([](const c10::Device& device) {
    for (bool cl : {false, true}) run(device, cl);
    for (bool cl : {false, true}) run_autograd(device, cl);
  });
}
