// LibTorch-only test of d2l_ext::rnn, reached through the dispatcher as a
// LibTorch program would (see test_cross_entropy.cpp for the linking): the
// outputs and final states of LSTM, GRU and tanh layers (2 layers,
// bidirectional) against at::lstm / at::gru / at::rnn_tanh, and every
// gradient through the op's C++ autograd against ATen's. Exits nonzero on any
// failure.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"

namespace {

using RnnFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, at::TensorList, int64_t, bool, int64_t,
    bool, at::TensorList);

using d2l_ext_test::report;

bool close(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() && at::allclose(a, b, 1e-10, 1e-10);
}

// (output, h_n, c_n or undefined) of ATen's layer on the same leaves.
std::vector<at::Tensor> aten_layer(int64_t mode, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                   const std::vector<at::Tensor>& w, int64_t L) {
  if (mode == 2) {
    auto [out, hy, cy] = at::lstm(x, {h0, c0}, w, true, L, 0.0, true, true, false);
    return {out, hy, cy};
  }
  auto [out, hy] = mode == 3 ? at::gru(x, h0, w, true, L, 0.0, true, true, false)
                             : at::rnn_tanh(x, h0, w, true, L, 0.0, true, true, false);
  return {out, hy, at::Tensor()};
}

void run(const c10::Device& device) {
  auto rnn = c10::Dispatcher::singleton().findSchemaOrThrow("d2l_ext::rnn", "").typed<RnnFn>();
  const std::string tag = device.is_cuda() ? "cuda" : "cpu";
  const int64_t T = 5, B = 3, I = 4, H = 6, L = 2, D = 2;
  const char* names[] = {"tanh", "relu", "lstm", "gru"};
  for (int64_t mode : {0, 2, 3}) {
    const int64_t G = mode == 2 ? 4 : mode == 3 ? 3 : 1;
    const auto opts = torch::dtype(torch::kDouble).device(device);
    const auto x = torch::randn({T, B, I}, opts), h0 = torch::randn({L * D, B, H}, opts);
    const auto c0 = torch::randn({L * D, B, H}, opts);
    std::vector<at::Tensor> w;
    for (int64_t l = 0; l < L; ++l)
      for (int64_t d = 0; d < D; ++d) {
        w.push_back(torch::randn({G * H, l == 0 ? I : D * H}, opts) * 0.4);
        w.push_back(torch::randn({G * H, H}, opts) * 0.4);
        w.push_back(torch::randn({G * H}, opts) * 0.4);
        w.push_back(torch::randn({G * H}, opts) * 0.4);
      }
    const std::string what = tag + " " + names[mode] + " 2 layers bidirectional: ";

    auto run_side = [&](bool ours) {
      std::vector<at::Tensor> leaves = {x.clone().requires_grad_(), h0.clone().requires_grad_(),
                                        c0.clone().requires_grad_()};
      for (const auto& t : w) leaves.push_back(t.clone().requires_grad_());
      const std::vector<at::Tensor> wl(leaves.begin() + 3, leaves.end());
      std::vector<at::Tensor> outs;
      if (ours) {
        auto [out, hy, cy, reserve] = rnn.call(leaves[0], leaves[1], mode == 2 ? std::optional<at::Tensor>(leaves[2])
                                                                              : std::nullopt,
                                               wl, mode, true, L, true, {});
        outs = {out, hy, mode == 2 ? cy : at::Tensor()};
      } else {
        outs = aten_layer(mode, leaves[0], leaves[1], leaves[2], wl, L);
      }
      at::Tensor loss = (outs[0] * outs[0]).sum() + (outs[1] * 0.5).sum();
      if (mode == 2) loss = loss + (outs[2] * outs[2]).sum();
      loss.backward();
      std::vector<at::Tensor> result = {outs[0].detach(), outs[1].detach()};
      for (size_t i = 0; i < leaves.size(); ++i) {
        if (i == 2 && mode != 2) continue;  // c0 is LSTM's
        result.push_back(leaves[i].grad());
      }
      return result;
    };
    const auto ours = run_side(true), theirs = run_side(false);
    report(close(ours[0], theirs[0]), what + "output");
    report(close(ours[1], theirs[1]), what + "h_n");
    bool grads_ok = ours.size() == theirs.size();
    for (size_t i = 2; grads_ok && i < ours.size(); ++i) grads_ok = close(ours[i], theirs[i]);
    report(grads_ok, what + "gradients of input, states and all " + std::to_string(w.size()) + " weights");
  }
}

}  // namespace

int main() { return d2l_ext_test::run_on_devices(run); }
