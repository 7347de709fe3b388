// Memory helpers shared by the CPU kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace d2l_ext::cpu {

// A freshly allocated multi-megabyte output is first touched by our kernel, and
// with 4 KiB pages that costs one page fault per 4 KiB (about as much time as
// computing the gradient itself). Where the kernel offers transparent huge
// pages on request, ask for them on the buffer's 2 MiB-aligned interior.
inline void advise_huge_pages(void* ptr, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  // Below 32 MiB glibc may serve the buffer from already-resident heap pages,
  // where the hint only adds compaction work; above, every buffer is a fresh mmap.
  if (bytes < 16 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: errors ignored
#else
  (void)ptr;
  (void)bytes;
#endif
}

}  // namespace d2l_ext::cpu
