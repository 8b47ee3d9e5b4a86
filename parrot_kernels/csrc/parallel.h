// Work items over the intra-op threads, claimed as they go: each thread takes the next
// `chunk` items from a shared counter until none are left. On a 2-core machine the engine's
// event loop (Python) runs beside the kernels and takes a core for a millisecond now and
// then; with at::parallel_for's fixed shares the whole call then waits for the thread it
// delayed, with claimed items the other thread does its share.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace parrot {

// f(i0, i1) over [0, n) in pieces of <= chunk items, in increasing order per thread.
template <typename F>
void parallel_items(int64_t n, int64_t chunk, const F& f) {
  chunk = std::max<int64_t>(1, chunk);
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk);
  if (threads <= 1 || at::in_parallel_region()) {
    if (n > 0) f(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t i0 = next.fetch_add(chunk); i0 < n; i0 = next.fetch_add(chunk)) f(i0, std::min(n, i0 + chunk));
  });
}

}  // namespace parrot
