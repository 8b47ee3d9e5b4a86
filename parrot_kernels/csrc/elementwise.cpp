// The small per-layer ops of a Llama decoder, fused, bf16 in and out (AVX2 + FMA):
// RMS norm (optionally adding the residual first), SiLU(gate) * up, and RoPE applied to
// q and k with k and v written straight into the paged cache. Each rounds to bf16 where
// the eager torch path rounds, so the two paths agree to a bf16 step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "ops.h"
#include "vec.h"

namespace parrot {
namespace {

const uint16_t* u16(const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data_ptr()); }
uint16_t* u16_mut(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr()); }

void check_bf16_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == at::kBFloat16 && t.stride(1) == 1, name,
              " must be a 2-D bf16 tensor with contiguous rows");
}

// out = bf16(bf16(x * rsqrt(mean(x^2) + eps)) * w), one row of H (H % 8 == 0).
void norm_row(const uint16_t* x, const uint16_t* w, uint16_t* out, int64_t H, float eps) {
  __m256 ss = _mm256_setzero_ps();
  for (int64_t c = 0; c < H; c += 8) {
    __m256 v = load_bf16(x + c);
    ss = _mm256_fmadd_ps(v, v, ss);
  }
  __m256 inv = _mm256_set1_ps(1.0f / std::sqrt(hsum(ss) / H + eps));
  for (int64_t c = 0; c < H; c += 8) {
    __m256 normed = round_bf16(_mm256_mul_ps(load_bf16(x + c), inv));
    store_bf16(out + c, _mm256_mul_ps(normed, load_bf16(w + c)));
  }
}

}  // namespace

// x: [T, H] -> RMS-normed [T, H]. With `residual`: residual = bf16(x + residual) in place
// first, and the sum is normed (vLLM's fused_add_rms_norm).
at::Tensor rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual, const at::Tensor& weight,
                    double eps) {
  check_bf16_rows(x, "x");
  const int64_t T = x.size(0), H = x.size(1);
  TORCH_CHECK(H % 8 == 0 && weight.is_contiguous() && weight.numel() == H && weight.scalar_type() == at::kBFloat16,
              "rms_norm: weight must be bf16 [H], H % 8 == 0");
  if (residual.has_value()) {
    check_bf16_rows(*residual, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes(), "rms_norm: residual must have x's shape");
  }
  at::Tensor out = at::empty({T, H}, x.options());
  at::parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const uint16_t* src = u16(x) + t * x.stride(0);
      if (residual.has_value()) {
        uint16_t* r = u16_mut(*residual) + t * residual->stride(0);
        for (int64_t c = 0; c < H; c += 8) store_bf16(r + c, _mm256_add_ps(load_bf16(src + c), load_bf16(r + c)));
        src = r;
      }
      norm_row(src, u16(weight), u16_mut(out) + t * H, H, static_cast<float>(eps));
    }
  });
  return out;
}

// gate_up: [T, 2I] (gate | up) -> bf16(bf16(silu(gate)) * up): [T, I].
at::Tensor silu_mul(const at::Tensor& gate_up) {
  check_bf16_rows(gate_up, "gate_up");
  const int64_t T = gate_up.size(0), I = gate_up.size(1) / 2;
  TORCH_CHECK(I % 8 == 0 && gate_up.size(1) == 2 * I, "silu_mul: width must be a multiple of 16");
  at::Tensor out = at::empty({T, I}, gate_up.options());
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  at::parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const uint16_t* g = u16(gate_up) + t * gate_up.stride(0);
      uint16_t* o = u16_mut(out) + t * I;
      for (int64_t c = 0; c < I; c += 8) {
        __m256 x = load_bf16(g + c);
        __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(zero, x))));
        store_bf16(o + c, _mm256_mul_ps(round_bf16(silu), load_bf16(g + I + c)));
      }
    }
  });
  return out;
}

// qkv: [T, (Hq + 2 Hkv) * D] -> q: [T, Hq, D] rotated (neox halves); k rotated and v are
// stored at cache slots `slots` ([T] int64) of k_cache / v_cache [num_blocks, bs, Hkv, D].
// cos_sin: [max_pos, D] float32, cos of the D/2 frequencies then their sin.
at::Tensor rope_write_kv(const at::Tensor& qkv, const at::Tensor& positions, const at::Tensor& cos_sin,
                         const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& slots,
                         int64_t num_heads) {
  check_bf16_rows(qkv, "qkv");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.scalar_type() == at::kBFloat16,
              "caches must be contiguous bf16");
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong, "int64 positions/slots");
  const int64_t T = qkv.size(0), Hkv = k_cache.size(2), D = k_cache.size(3), half = D / 2;
  TORCH_CHECK(qkv.size(1) == (num_heads + 2 * Hkv) * D && half % 8 == 0 && cos_sin.size(1) == D, "bad shapes");
  TORCH_CHECK(positions.numel() == T && slots.numel() == T, "one position and one slot per token");
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == at::kBFloat16 &&
              cos_sin.scalar_type() == at::kFloat, "v_cache must match k_cache; cos_sin float32");
  at::Tensor q = at::empty({T, num_heads, D}, qkv.options());
  at::Tensor pos = positions.contiguous(), sl = slots.contiguous(), cs = cos_sin.contiguous();
  const int64_t num_slots = k_cache.size(0) * k_cache.size(1);
  for (int64_t t = 0; t < T; ++t) {  // the writes below trust these
    TORCH_CHECK(sl.data_ptr<int64_t>()[t] >= 0 && sl.data_ptr<int64_t>()[t] < num_slots, "slot out of range");
    TORCH_CHECK(pos.data_ptr<int64_t>()[t] >= 0 && pos.data_ptr<int64_t>()[t] < cs.size(0), "position out of range");
  }
  at::parallel_for(0, T, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const uint16_t* row = u16(qkv) + t * qkv.stride(0);
      const float* cos = cs.data_ptr<float>() + pos.data_ptr<int64_t>()[t] * D;
      const float* sin = cos + half;
      int64_t slot = sl.data_ptr<int64_t>()[t];
      auto rotate = [&](const uint16_t* src, uint16_t* dst) {
        for (int64_t c = 0; c < half; c += 8) {
          __m256 x1 = load_bf16(src + c), x2 = load_bf16(src + half + c);
          __m256 cv = _mm256_loadu_ps(cos + c), sv = _mm256_loadu_ps(sin + c);
          store_bf16(dst + c, _mm256_fmsub_ps(x1, cv, _mm256_mul_ps(x2, sv)));
          store_bf16(dst + half + c, _mm256_fmadd_ps(x2, cv, _mm256_mul_ps(x1, sv)));
        }
      };
      for (int64_t h = 0; h < num_heads; ++h) rotate(row + h * D, u16_mut(q) + (t * num_heads + h) * D);
      const uint16_t* k = row + num_heads * D;
      const uint16_t* v = k + Hkv * D;
      for (int64_t h = 0; h < Hkv; ++h) rotate(k + h * D, u16_mut(k_cache) + (slot * Hkv + h) * D);
      std::memcpy(u16_mut(v_cache) + slot * Hkv * D, v, Hkv * D * sizeof(uint16_t));
    }
  });
  return q;
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("rms_norm(Tensor x, Tensor(a!)? residual, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul(Tensor gate_up) -> Tensor");
  m.def("rope_write_kv(Tensor qkv, Tensor positions, Tensor cos_sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "Tensor slots, int num_heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("silu_mul", &silu_mul);
  m.impl("rope_write_kv", &rope_write_kv);
}

}  // namespace parrot
