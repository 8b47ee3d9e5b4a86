// A decode step's decoder layers in one call: the kernels of LlamaModel._forward_fused, in the
// same order and with the same arguments, called from C++. At decode sizes the work per kernel
// is tens of microseconds and Python with the dispatcher added a few per call, ~10 calls per
// layer: this removes them (the "whole-step runner" of a compiled step). Only plain decode
// steps come here (one query per sequence, attention read in place); prefills and cascade
// steps keep the Python path, which stays the reference.
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

constexpr int64_t PER_LAYER = 6;

at::Tensor decode_layers(const at::Tensor& x, at::TensorList weights, at::IntArrayRef out_features,
                         const at::Tensor& positions, const at::Tensor& cos_sin, const at::Tensor& kv_cache,
                         const at::Tensor& slots, const at::Tensor& block_tables, const at::Tensor& kv_lens,
                         int64_t num_heads, double eps) {
  const int64_t num_weights = static_cast<int64_t>(weights.size()), layers = (num_weights - 1) / PER_LAYER;
  TORCH_CHECK(num_weights >= 1 + PER_LAYER && (num_weights - 1) % PER_LAYER == 0,
              "decode_layers: weights must be 6 per layer plus the final norm, got ", num_weights);
  TORCH_CHECK(out_features.size() == 4, "decode_layers: out_features of qkv, o, gate_up, down");
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.size(0) == layers && kv_cache.size(1) == 2,
              "decode_layers: kv_cache must be [layers, 2, blocks, block_size, kv_heads, head_dim] for ", layers,
              " layers");
  TORCH_CHECK(x.dim() == 2 && positions.numel() == x.size(0) && kv_lens.numel() == x.size(0),
              "decode_layers: one token, position and kv_len per sequence");
  const int64_t T = x.size(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kv_cache.size(5)));
  const c10::optional<at::Tensor> no_bias;
  at::Tensor h = x;
  c10::optional<at::Tensor> residual;  // none before the first layer: x itself becomes it
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* w = weights.data() + l * PER_LAYER;
    at::Tensor k_cache = kv_cache.select(0, l).select(0, 0), v_cache = kv_cache.select(0, l).select(0, 1);
    at::Tensor qkv = linear_packed(rms_norm(h, residual, w[0], eps), w[1], out_features[0], no_bias);
    at::Tensor q = rope_write_kv(qkv, positions, cos_sin, k_cache, v_cache, slots, num_heads);
    at::Tensor attn = std::get<0>(paged_decode_attention(q, k_cache, v_cache, block_tables, kv_lens, scale));
    at::Tensor o = linear_packed(attn.view({T, -1}), w[2], out_features[1], no_bias);
    if (!residual.has_value()) residual = h;
    at::Tensor gate_up = linear_packed(rms_norm(o, residual, w[3], eps), w[4], out_features[2], no_bias);
    h = linear_packed(silu_mul(gate_up), w[5], out_features[3], no_bias);
  }
  return rms_norm(h, residual, weights[num_weights - 1], eps);
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("decode_layers(Tensor(a!) x, Tensor[] weights, int[] out_features, Tensor positions, Tensor cos_sin, "
        "Tensor(b!) kv_cache, Tensor slots, Tensor block_tables, Tensor kv_lens, int num_heads, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) { m.impl("decode_layers", &decode_layers); }

}  // namespace parrot
