// A step's decoder layers in one call: the kernels of LlamaModel._forward_fused, in the same
// order and with the same arguments, called from C++. At decode sizes the work per kernel is
// tens of microseconds and Python with the dispatcher added a few per call, ~10 calls per
// layer: this removes them (the "whole-step runner" of a compiled step). Any step whose
// attention reads the cache in place with no cascade group comes here: decode rows in one
// paged_decode_attention call, each prefill chunk (causal) in one paged_prefill_attention
// call, as paged_attention.py does. A cascade step whose every group is one run of rows
// comes here too: the private level as above with its log-sum-exps, then each group's rows
// over its shared blocks (non-causal) merged in place, as cascade.py's in-place path does;
// any other cascade step keeps the Python path, which stays the reference.
//
// weights: per layer [input norm, qkv, o, post-attention norm, gate_up, down] (projections
// packed by pack_linear_weight, no biases), then the final norm. out_features: the N of qkv,
// o, gate_up, down. x [T, hidden] bf16 (the embeddings; like the Python path, it becomes the
// residual stream and is updated in place); kv_cache [layers, 2, blocks, block_size, Hkv, D].
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "ops.h"

namespace parrot {
namespace {

constexpr int64_t PER_LAYER = 6;

// The step's attention rows: decode sequences (one row each, at decode_rows, with their
// block tables) and prefill chunks (q_len rows from a start row, over their blocks).
struct StepRows {
  const at::Tensor &decode_rows, &block_tables, &kv_lens;
  at::IntArrayRef prefill_starts, prefill_lens, prefill_kv_lens;
  at::TensorList prefill_blocks;
  at::IntArrayRef group_starts, group_lens;  // cascade groups: one run of rows each,
  at::TensorList group_blocks;               // over their shared blocks (all keys visible)
  int64_t num_tokens;

  void check() const {
    const int64_t n = static_cast<int64_t>(prefill_starts.size());
    TORCH_CHECK(static_cast<int64_t>(prefill_lens.size()) == n && static_cast<int64_t>(prefill_kv_lens.size()) == n &&
                    static_cast<int64_t>(prefill_blocks.size()) == n,
                "decoder_layers: one start, length, kv_len and block list per prefill");
    int64_t rows = decode_rows.numel();
    TORCH_CHECK(kv_lens.numel() == rows && decode_rows.scalar_type() == at::kLong, "one kv_len per decode row");
    if (rows > 0) {
      auto r = decode_rows.contiguous();
      const int64_t* p = r.data_ptr<int64_t>();
      for (int64_t i = 0; i < rows; ++i) TORCH_CHECK(p[i] >= 0 && p[i] < num_tokens, "decode row out of range");
    }
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(prefill_lens[i] >= 1 && prefill_starts[i] >= 0 && prefill_starts[i] + prefill_lens[i] <= num_tokens,
                  "prefill rows out of range");
      rows += prefill_lens[i];
    }
    TORCH_CHECK(rows == num_tokens, "decoder_layers: decode and prefill rows must cover the step's ", num_tokens,
                " tokens, got ", rows);
    const int64_t g = static_cast<int64_t>(group_starts.size());
    TORCH_CHECK(static_cast<int64_t>(group_lens.size()) == g && static_cast<int64_t>(group_blocks.size()) == g,
                "decoder_layers: one start, length and block list per cascade group");
    for (int64_t i = 0; i < g; ++i)
      TORCH_CHECK(group_lens[i] >= 1 && group_starts[i] >= 0 && group_starts[i] + group_lens[i] <= num_tokens &&
                      group_blocks[i].numel() >= 1,
                  "cascade group rows out of range");
  }
};

// The private level (every row: decodes in one call, each prefill chunk in one) -> out
// and, only where a cascade group merges into it (`with_lse`), lse.
std::tuple<at::Tensor, at::Tensor> attend_rows(const at::Tensor& q, const at::Tensor& k_cache,
                                               const at::Tensor& v_cache, const StepRows& s, double scale,
                                               bool with_lse) {
  if (s.prefill_starts.empty())  // every row a decode, in order
    return paged_decode_attention(q, k_cache, v_cache, s.block_tables, s.kv_lens, scale);
  at::Tensor out = at::empty_like(q), lse;
  if (with_lse) lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  if (s.decode_rows.numel() > 0) {
    auto [o, l] =
        paged_decode_attention(q.index_select(0, s.decode_rows), k_cache, v_cache, s.block_tables, s.kv_lens, scale);
    out.index_copy_(0, s.decode_rows, o);
    if (with_lse) lse.index_copy_(0, s.decode_rows, l);
  }
  for (size_t i = 0; i < s.prefill_starts.size(); ++i) {
    const int64_t start = s.prefill_starts[i], len = s.prefill_lens[i];
    auto [o, l] = paged_prefill_attention(q.narrow(0, start, len), k_cache, v_cache, s.prefill_blocks[i],
                                          s.prefill_kv_lens[i], true, scale);
    out.narrow(0, start, len).copy_(o);
    if (with_lse) lse.narrow(0, start, len).copy_(l);
  }
  return {out, lse};
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, const StepRows& s,
                  double scale) {
  if (s.num_tokens == 0) return at::empty_like(q);
  auto [out, lse] = attend_rows(q, k_cache, v_cache, s, scale, !s.group_starts.empty());
  for (size_t i = 0; i < s.group_starts.size(); ++i) {
    const int64_t start = s.group_starts[i], len = s.group_lens[i];
    const at::Tensor& blocks = s.group_blocks[i];
    auto [o, l] = paged_prefill_attention(q.narrow(0, start, len), k_cache, v_cache, blocks,
                                          blocks.numel() * k_cache.size(1), false, scale);
    at::Tensor out_rows = out.narrow(0, start, len), lse_rows = lse.narrow(0, start, len);
    merge_attention_state_(out_rows, lse_rows, o, l);
  }
  return out;
}

}  // namespace

at::Tensor decoder_layers(const at::Tensor& x, at::TensorList weights, at::IntArrayRef out_features,
                          const at::Tensor& positions, const at::Tensor& cos_sin, const at::Tensor& kv_cache,
                          const at::Tensor& slots, const at::Tensor& decode_rows, const at::Tensor& block_tables,
                          const at::Tensor& kv_lens, at::IntArrayRef prefill_starts, at::IntArrayRef prefill_lens,
                          at::IntArrayRef prefill_kv_lens, at::TensorList prefill_blocks,
                          at::IntArrayRef group_starts, at::IntArrayRef group_lens, at::TensorList group_blocks,
                          int64_t num_heads, double eps) {
  const int64_t num_weights = static_cast<int64_t>(weights.size()), layers = (num_weights - 1) / PER_LAYER;
  TORCH_CHECK(num_weights >= 1 + PER_LAYER && (num_weights - 1) % PER_LAYER == 0,
              "decoder_layers: weights must be 6 per layer plus the final norm, got ", num_weights);
  TORCH_CHECK(out_features.size() == 4, "decoder_layers: out_features of qkv, o, gate_up, down");
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.size(0) == layers && kv_cache.size(1) == 2,
              "decoder_layers: kv_cache must be [layers, 2, blocks, block_size, kv_heads, head_dim] for ", layers,
              " layers");
  TORCH_CHECK(x.dim() == 2 && positions.numel() == x.size(0), "decoder_layers: one position per token");
  const int64_t T = x.size(0);
  const StepRows rows{decode_rows, block_tables, kv_lens, prefill_starts, prefill_lens, prefill_kv_lens,
                      prefill_blocks, group_starts, group_lens, group_blocks, T};
  rows.check();
  const double scale = 1.0 / std::sqrt(static_cast<double>(kv_cache.size(5)));
  const c10::optional<at::Tensor> no_bias;
  at::Tensor h = x;
  c10::optional<at::Tensor> residual;  // none before the first layer: x itself becomes it
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* w = weights.data() + l * PER_LAYER;
    at::Tensor k_cache = kv_cache.select(0, l).select(0, 0), v_cache = kv_cache.select(0, l).select(0, 1);
    at::Tensor qkv = linear_packed(rms_norm(h, residual, w[0], eps), w[1], out_features[0], no_bias);
    at::Tensor q = rope_write_kv(qkv, positions, cos_sin, k_cache, v_cache, slots, num_heads);
    at::Tensor o = linear_packed(attend(q, k_cache, v_cache, rows, scale).view({T, -1}), w[2], out_features[1], no_bias);
    if (!residual.has_value()) residual = h;
    at::Tensor gate_up = linear_packed(rms_norm(o, residual, w[3], eps), w[4], out_features[2], no_bias);
    h = linear_packed(silu_mul(gate_up), w[5], out_features[3], no_bias);
  }
  return rms_norm(h, residual, weights[num_weights - 1], eps);
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("decoder_layers(Tensor(a!) x, Tensor[] weights, int[] out_features, Tensor positions, Tensor cos_sin, "
        "Tensor(b!) kv_cache, Tensor slots, Tensor decode_rows, Tensor block_tables, Tensor kv_lens, "
        "int[] prefill_starts, int[] prefill_lens, int[] prefill_kv_lens, Tensor[] prefill_blocks, "
        "int[] group_starts, int[] group_lens, Tensor[] group_blocks, int num_heads, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) { m.impl("decoder_layers", &decoder_layers); }

}  // namespace parrot
