// The kernels' entry points, declared once: the torch.ops registrations and C++ callers (a
// whole step's layers in decoder_layers.cpp) use the same functions.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace parrot {

// linear.cpp: y = x @ W^T (+ bias), W prepacked by pack_linear_weight as [ceil(N / 16), K, 16]
// (K padded to even where the build uses AVX-512-BF16); packed_rows reads rows of W back.
at::Tensor pack_linear_weight(const at::Tensor& weight);
at::Tensor packed_rows(const at::Tensor& packed, const at::Tensor& ids, int64_t K);
at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& packed, int64_t N,
                         const c10::optional<at::Tensor>& bias);

// elementwise.cpp: RMS norm (residual += x in place first, when given), SiLU(gate) * up, and
// RoPE on q and k with k and v written into the paged cache.
at::Tensor rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual, const at::Tensor& weight,
                    double eps);
at::Tensor silu_mul(const at::Tensor& gate_up);
at::Tensor rope_write_kv(const at::Tensor& qkv, const at::Tensor& positions, const at::Tensor& cos_sin,
                         const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& slots,
                         int64_t num_heads);

// attention.cpp: one query per sequence over its paged KV, read in place -> (out, lse).
std::tuple<at::Tensor, at::Tensor> paged_decode_attention(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& block_tables, const at::Tensor& kv_lens, double scale);

// prefill_attention.cpp: M queries over kv_len keys in `blocks`, read in place (causal: the
// queries are the last M positions) -> (out, lse).
std::tuple<at::Tensor, at::Tensor> paged_prefill_attention(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& blocks,
    int64_t kv_len, bool causal, double scale);

// merge_state.cpp: (out, lse) <- the log-sum-exp merge of (out, lse) and (o_b, lse_b), in place.
void merge_attention_state_(at::Tensor& out, at::Tensor& lse, const at::Tensor& o_b, const at::Tensor& lse_b);

}  // namespace parrot
