// LibTorch-only test of d2l_ext::cross_entropy and d2l_ext::_cross_entropy_backward.
//
// The ops are reached through the dispatcher, as a LibTorch program would: the
// executable references no symbol of libd2l_ext.so, it is linked with
// --no-as-needed so that loading it runs the TORCH_LIBRARY registrations.
// Results are compared with torch::nn::functional::cross_entropy (values) and
// autograd through it (gradients). Exits nonzero if any check fails.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace F = torch::nn::functional;

namespace {

// The C++ signatures the schemas in csrc/ops.cpp map to:
// Tensor -> const at::Tensor&, Tensor? -> const std::optional<at::Tensor>&,
// int -> int64_t, float -> double; (Tensor, Tensor, Tensor) -> std::tuple.
using CrossEntropyFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    int64_t reduction, int64_t ignore_index, double label_smoothing);
using CrossEntropyBackwardFn = at::Tensor(
    const at::Tensor& grad_loss, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, const at::Tensor& lse, const at::Tensor& total_weight,
    int64_t reduction, int64_t ignore_index, double label_smoothing);

int g_checks = 0;
int g_failures = 0;

void report(bool ok, const std::string& what, const std::string& detail = "") {
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(), detail.empty() ? "" : ": ",
              detail.c_str());
}

std::string max_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return "shape " + c10::str(a.sizes()) + ", want " + c10::str(b.sizes());
  if (a.scalar_type() != b.scalar_type())
    return std::string("dtype ") + c10::toString(a.scalar_type()) + ", want " + c10::toString(b.scalar_type());
  if (a.numel() == 0) return "empty";
  return "max |diff| " + std::to_string((a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>());
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                  const std::string& what) {
  const bool ok = got.sizes() == want.sizes() && got.scalar_type() == want.scalar_type() &&
                  at::allclose(got, want, rtol, atol);
  report(ok, what, ok ? "" : max_diff(got, want));
}

F::CrossEntropyFuncOptions::reduction_t reduction_enum(int64_t r) {
  if (r == 0) return torch::kNone;
  if (r == 1) return torch::kMean;
  return torch::kSum;
}

const char* reduction_name(int64_t r) { return r == 0 ? "none" : r == 1 ? "mean" : "sum"; }

struct Case {
  std::string name;
  std::vector<int64_t> shape;  // input (N, C, d1, ..., dk)
  at::ScalarType dtype;
  int64_t reduction;
  bool weighted;
  double label_smoothing;
  bool prob_target = false;
  int64_t ignore_index = -100;
  bool with_ignored = false;  // set some targets to ignore_index
  bool transposed = false;    // non-contiguous input (2-D only)
  torch::Device device = torch::kCPU;
};

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void run_case(const c10::TypedOperatorHandle<CrossEntropyFn>& ce,
              const c10::TypedOperatorHandle<CrossEntropyBackwardFn>& ce_bwd, const Case& c) {
  // Inputs are drawn on the CPU in float64 and then cast and moved, so every
  // case sees the same numbers whatever its dtype and device.
  const auto opts = torch::TensorOptions().dtype(c.dtype).device(c.device);
  const bool low_precision = c.dtype == at::kHalf || c.dtype == at::kBFloat16;
  // lse and total_weight are kept in the accumulation type: float64 for
  // float64 input, float32 otherwise.
  const auto acc = c.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t N = c.shape[0], C = c.shape[1];
  std::vector<int64_t> row_shape(c.shape);
  row_shape.erase(row_shape.begin() + 1);
  const auto f64 = torch::TensorOptions().dtype(at::kDouble);

  at::Tensor input;
  if (c.transposed) input = (torch::randn({C, N}, f64) * 3).to(opts).t();
  else input = (torch::randn(c.shape, f64) * 3).to(opts);

  at::Tensor target;
  if (c.prob_target) {
    target = torch::softmax(torch::randn(c.shape, f64), 1).to(opts);
  } else {
    target = torch::randint(0, C, row_shape, torch::kLong);
    if (c.with_ignored) {
      auto flat = target.view(-1);
      for (int64_t i = 0; i < flat.numel(); i += 7) flat[i] = c.ignore_index;
    }
    target = target.to(c.device);
  }
  std::optional<at::Tensor> weight;
  if (c.weighted) weight = (torch::rand({C}, f64) + 0.5).to(opts);
  at::Tensor grad_loss = (c.reduction == 0 ? torch::randn(row_shape, f64) : torch::randn({}, f64)).to(opts);

  double rtol = 1e-4, atol = 1e-5;
  if (c.dtype == at::kDouble) rtol = 1e-9, atol = 1e-11;
  if (c.dtype == at::kHalf) rtol = 1e-2, atol = 1e-3;
  if (c.dtype == at::kBFloat16) rtol = 4e-2, atol = 1e-2;
  const std::string tag = c.name + " [" + c.device.str() + ", " + std::string(c10::toString(c.dtype)) + ", " +
                          reduction_name(c.reduction) + (c.weighted ? ", weight" : "") +
                          (c.label_smoothing > 0 ? ", smoothing " + fmt(c.label_smoothing) : "") +
                          (c.prob_target ? ", prob target" : "") +
                          (c.with_ignored ? ", ignore_index " + std::to_string(c.ignore_index) : "") +
                          (c.transposed ? ", non-contiguous" : "") + "]";

  // Reference forward and backward through torch; for float16/bfloat16 in
  // float32 from the same (rounded) inputs, and compared in float32.
  const auto ref_dtype = low_precision ? at::kFloat : c.dtype;
  auto x = input.detach().to(ref_dtype).clone().requires_grad_(true);
  const at::Tensor ref_target = c.prob_target ? target.to(ref_dtype) : target;
  auto fopts = F::CrossEntropyFuncOptions()
                   .reduction(reduction_enum(c.reduction))
                   .ignore_index(c.ignore_index)
                   .label_smoothing(c.label_smoothing);
  if (weight) fopts.weight(weight->to(ref_dtype));
  at::Tensor want = F::cross_entropy(x, ref_target, fopts);
  at::Tensor want_grad = torch::autograd::grad({want}, {x}, {grad_loss.to(ref_dtype)})[0];

  // d2l_ext.
  at::Tensor loss, lse, total_weight;
  try {
    std::tie(loss, lse, total_weight) =
        ce.call(input, target, weight, c.reduction, c.ignore_index, c.label_smoothing);
  } catch (const std::exception& e) {
    report(false, "forward  " + tag, std::string("threw: ") + e.what());
    return;
  }
  report(loss.scalar_type() == c.dtype && loss.device() == c.device, "loss dtype and device " + tag);
  expect_close(loss.to(ref_dtype), want.detach(), rtol, atol, "loss     " + tag);

  // lse: log-sum-exp over classes (0 for ignored rows).
  at::Tensor want_lse = torch::logsumexp(input.to(acc), 1);
  if (!c.prob_target) want_lse = torch::where(target == c.ignore_index, torch::zeros_like(want_lse), want_lse);
  expect_close(lse, want_lse, low_precision ? 1e-4 : rtol, low_precision ? 1e-5 : atol, "lse      " + tag);

  // total_weight: the "mean" divisor.
  at::Tensor want_tw;
  if (c.prob_target) {
    want_tw = torch::full({}, static_cast<double>(target.numel() / C), opts.dtype(acc));
  } else {
    const at::Tensor kept = target != c.ignore_index;
    const at::Tensor safe_t = torch::where(kept, target, torch::zeros_like(target));
    const at::Tensor w_rows = weight ? weight->to(acc).index_select(0, safe_t.view(-1)).view(safe_t.sizes())
                                     : torch::ones(safe_t.sizes(), opts.dtype(acc));
    want_tw = (w_rows * kept.to(acc)).sum();
  }
  expect_close(total_weight.reshape({}).to(acc), want_tw, rtol, atol, "total_w  " + tag);

  try {
    at::Tensor grad = ce_bwd.call(grad_loss, input, target, weight, lse, total_weight, c.reduction,
                                  c.ignore_index, c.label_smoothing);
    report(grad.scalar_type() == c.dtype && grad.device() == c.device, "grad dtype and device " + tag);
    expect_close(grad.to(ref_dtype), want_grad, rtol, atol, "grad     " + tag);
  } catch (const std::exception& e) {
    report(false, "backward " + tag, std::string("threw: ") + e.what());
  }
}

// `fn` must throw an exception of type E (a c10::Error subclass, or c10::Error itself).
template <typename E, typename Fn>
void expect_throws(const std::string& what, Fn&& fn) {
  try {
    fn();
    report(false, what, "did not throw");
  } catch (const E& e) {
    const std::string msg = e.what_without_backtrace();
    report(true, what, "threw: " + msg.substr(0, msg.find('\n')));
  } catch (const std::exception& e) {
    report(false, what, std::string("threw the wrong type: ") + e.what());
  }
}

}  // namespace

int main() {
  torch::manual_seed(0);
  std::printf("torch %s, %d intra-op threads\n", TORCH_VERSION, at::get_num_threads());

  std::optional<c10::OperatorHandle> ce_handle, bwd_handle;
  try {
    ce_handle = c10::Dispatcher::singleton().findSchemaOrThrow("d2l_ext::cross_entropy", "");
    bwd_handle = c10::Dispatcher::singleton().findSchemaOrThrow("d2l_ext::_cross_entropy_backward", "");
  } catch (const c10::Error& e) {
    std::printf("FAIL  d2l_ext ops are not registered (is libd2l_ext.so loaded?): %s\n",
                e.what_without_backtrace());
    return 1;
  }
  report(ce_handle->hasKernelForDispatchKey(c10::DispatchKey::CPU), "d2l_ext::cross_entropy has a CPU kernel");
  report(bwd_handle->hasKernelForDispatchKey(c10::DispatchKey::CPU),
         "d2l_ext::_cross_entropy_backward has a CPU kernel");
#ifdef D2L_EXT_TEST_EXPECT_CUDA
  report(ce_handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA), "d2l_ext::cross_entropy has a CUDA kernel");
  report(bwd_handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA),
         "d2l_ext::_cross_entropy_backward has a CUDA kernel");
#endif
  // typed() checks these C++ signatures against the registered schemas.
  auto ce = ce_handle->typed<CrossEntropyFn>();
  auto ce_bwd = bwd_handle->typed<CrossEntropyBackwardFn>();
  report(true, "typed handles match the schemas");

  std::vector<Case> cases;
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (int64_t red : {0, 1, 2}) {
      cases.push_back({"N=64 C=10", {64, 10}, dtype, red, false, 0.0});
      cases.push_back({"N=64 C=10", {64, 10}, dtype, red, true, 0.1});
      cases.push_back({"spatial N=4 C=10 6x5", {4, 10, 6, 5}, dtype, red, false, 0.0});
      cases.push_back({"spatial N=4 C=10 6x5", {4, 10, 6, 5}, dtype, red, true, 0.2});
    }
    cases.push_back({"N=64 C=10", {64, 10}, dtype, 1, false, 0.0, false, -100, true});
    cases.push_back({"N=64 C=10", {64, 10}, dtype, 1, true, 0.1, false, 3, true});
    cases.push_back({"spatial N=4 C=10 6x5", {4, 10, 6, 5}, dtype, 0, true, 0.1, false, -1, true});
    cases.push_back({"N=64 C=10", {64, 10}, dtype, 1, true, 0.1, true});
    cases.push_back({"spatial N=4 C=10 6x5", {4, 10, 6, 5}, dtype, 2, false, 0.0, true});
    cases.push_back({"N=64 C=10", {64, 10}, dtype, 1, true, 0.0, false, -100, false, true});
    cases.push_back({"N=4096 C=1000 (threaded)", {4096, 1000}, dtype, 1, true, 0.1});
    cases.push_back({"N=3 C=100000 (wide rows)", {3, 100000}, dtype, 0, false, 0.0});
  }

  // The same cases on the GPU, plus float16/bfloat16, where there is one and
  // the library was built with its CUDA kernels.
  const bool cuda_kernel = ce_handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA);
  const bool run_cuda = cuda_kernel && torch::cuda::is_available();
  std::printf("CUDA kernels %s, CUDA device %s: %s the CUDA cases\n", cuda_kernel ? "built" : "not built",
              torch::cuda::is_available() ? "present" : "absent", run_cuda ? "running" : "skipping");
  if (run_cuda) {
    const size_t n_cpu = cases.size();
    for (size_t i = 0; i < n_cpu; ++i) {
      Case c = cases[i];
      c.device = torch::Device(torch::kCUDA, 0);
      cases.push_back(c);
      if (c.dtype == at::kFloat && !c.transposed) {
        for (auto low : {at::kHalf, at::kBFloat16}) {
          c.dtype = low;
          cases.push_back(c);
        }
      }
    }
  }
  for (const auto& c : cases) run_case(ce, ce_bwd, c);

  // Errors.
  std::vector<torch::Device> devices{torch::kCPU};
  if (run_cuda) devices.emplace_back(torch::kCUDA, 0);
  for (const auto& dev : devices) {
    const std::string on = " (" + dev.str() + ")";
    const auto x = torch::randn({64, 10}).to(dev);
    for (int64_t bad : {int64_t{10}, int64_t{-5}}) {
      auto t = torch::randint(0, 10, {64}, torch::kLong);
      t[17] = bad;
      t = t.to(dev);
      expect_throws<c10::IndexError>(
          "target " + std::to_string(bad) + " out of range for C=10 throws c10::IndexError" + on,
          [&] { ce.call(x, t, std::nullopt, 1, -100, 0.0); });
    }
    {
      const auto big = torch::randn({20000, 10}).to(dev);
      auto t = torch::randint(0, 10, {20000}, torch::kLong);
      t[19999] = 10;
      t = t.to(dev);
      expect_throws<c10::IndexError>("out-of-range target among 20000 rows throws c10::IndexError" + on,
                                     [&] { ce.call(big, t, std::nullopt, 1, -100, 0.0); });
    }
    expect_throws<c10::Error>("int32 target throws c10::Error" + on, [&] {
      ce.call(x, torch::zeros({64}, torch::dtype(torch::kInt).device(dev)), std::nullopt, 1, -100, 0.0);
    });
    expect_throws<c10::Error>("weight of the wrong length throws c10::Error" + on, [&] {
      ce.call(x, torch::zeros({64}, torch::dtype(torch::kLong).device(dev)),
              torch::ones({9}, torch::device(dev)), 1, -100, 0.0);
    });
  }
  expect_throws<c10::Error>("float16 input on CPU throws c10::Error", [&] {
    ce.call(torch::randn({64, 10}).to(at::kHalf), torch::zeros({64}, torch::kLong), std::nullopt, 1, -100, 0.0);
  });

  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
