// LibTorch-only test of d2l_ext::conv2d, reached through the dispatcher as a
// LibTorch program would (see test_cross_entropy.cpp for the linking): values
// against at::conv2d, and the three gradients through the op's C++ autograd
// against ATen's. Exits nonzero on any failure.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "checks.h"

namespace {

using Conv2dFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t);

using d2l_ext_test::report;

bool close(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && a.sizes() == b.sizes() && at::allclose(a, b, 1e-10, 1e-10);
}

struct Case {
  std::string name;
  std::vector<int64_t> x, w, stride, padding, dilation;
  int64_t groups;
};

void run(const c10::Device& device) {
  auto conv = c10::Dispatcher::singleton().findSchemaOrThrow("d2l_ext::conv2d", "").typed<Conv2dFn>();
  const std::string tag = device.is_cuda() ? "cuda" : "cpu";
  const std::vector<Case> cases = {
      {"LeNet c1", {4, 1, 28, 28}, {6, 1, 5, 5}, {1, 1}, {2, 2}, {1, 1}, 1},
      {"strided dilated groups", {2, 4, 9, 8}, {6, 2, 3, 2}, {2, 1}, {1, 0}, {1, 2}, 2},
      {"1x1", {3, 8, 5, 5}, {4, 8, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1},
      {"depthwise", {2, 6, 7, 7}, {6, 1, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 6},
  };
  for (const Case& c : cases) {
    const auto opts = torch::dtype(torch::kDouble).device(device);
    const auto x = torch::randn(c.x, opts), w = torch::randn(c.w, opts), b = torch::randn({c.w[0]}, opts);
    const auto y = conv.call(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    const auto want = at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    report(close(y, want), tag + " " + c.name + ": values");

    auto grads = [&](bool ours) {
      auto xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_(), bl = b.clone().requires_grad_();
      auto out = ours ? conv.call(xl, wl, bl, c.stride, c.padding, c.dilation, c.groups)
                      : at::conv2d(xl, wl, bl, c.stride, c.padding, c.dilation, c.groups);
      out.backward(at::arange(out.numel(), out.options()).view(out.sizes()).remainder(5) - 2);
      return std::vector<at::Tensor>{xl.grad(), wl.grad(), bl.grad()};
    };
    const auto ours = grads(true), theirs = grads(false);
    const char* names[] = {"input", "weight", "bias"};
    for (int i = 0; i < 3; ++i) report(close(ours[i], theirs[i]), tag + " " + c.name + ": " + names[i] + " gradient");
  }
}

}  // namespace

int main() { return d2l_ext_test::run_on_devices(run); }
