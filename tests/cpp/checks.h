// What the LibTorch tests share: a tally of named checks, and a main() body that
// runs a test's cases on the CPU and, when one is visible, on a GPU, and turns
// the tally (or an exception) into the exit status.
#pragma once

#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <string>

namespace d2l_ext_test {

inline int g_checks = 0;
inline int g_failures = 0;

inline void report(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

// run(device) on the CPU, then on the GPU if there is one; 0 when every check passed.
inline int run_on_devices(const std::function<void(const c10::Device&)>& run) {
  torch::manual_seed(0);
  try {
    run(c10::Device(c10::kCPU));
    if (torch::cuda::is_available()) {
      run(c10::Device(c10::kCUDA));
    } else {
      std::printf("skip  CUDA cases: no GPU\n");
    }
  } catch (const c10::Error& e) {
    std::printf("FAIL  exception: %s\n", e.what_without_backtrace());
    return 1;
  }
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace d2l_ext_test
