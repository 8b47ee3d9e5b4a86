// Input checks shared by the attention ops over the paged KV cache (before any read).
#pragma once

#include <ATen/ATen.h>

namespace parrot {

// q: [M, Hq, D] bf16 or fp32; caches: [num_blocks, block_size, Hkv, D], contiguous bf16,
// the same sizes; Hq a multiple of Hkv.
inline void check_paged_inputs(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "bad shapes");
  TORCH_CHECK(k_cache.scalar_type() == at::kBFloat16 && v_cache.scalar_type() == at::kBFloat16 &&
              k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous bf16");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kFloat, "q must be bf16 or fp32");
  TORCH_CHECK(q.size(1) >= 1 && k_cache.size(2) >= 1 && q.size(1) % k_cache.size(2) == 0 && k_cache.size(3) == q.size(2),
              "unsupported head shape");
}

// The first `n` block ids of a run all lie in the cache: the kernels trust them.
template <typename T>
inline void check_block_ids(const T* ids, int64_t n, int64_t num_blocks) {
  for (int64_t j = 0; j < n; ++j) TORCH_CHECK(ids[j] >= 0 && ids[j] < num_blocks, "block id out of range");
}

}  // namespace parrot
