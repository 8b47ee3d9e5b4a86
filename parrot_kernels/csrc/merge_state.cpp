// Merge a partial attention state into another, in place (a cascade's levels), AVX2.
//
// out [M, H, D] (bf16 or fp32) and lse [M, H] float32 hold state a; o_b [M, H, D] (same
// dtype) and lse_b [M, H] state b, over a disjoint set of keys. Afterwards out and lse hold
// their merge: weights exp(lse_x - max) in fp32, the result rounded to out's dtype once.
// lse = -inf marks an empty part (weight 0); two empty parts stay empty without NaN.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "vec.h"

namespace parrot {
namespace {

constexpr float NEG = -std::numeric_limits<float>::infinity();

static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 load8(const c10::BFloat16* p) { return load_bf16(reinterpret_cast<const uint16_t*>(p)); }
static inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline void store8(c10::BFloat16* p, __m256 v) { store_bf16(reinterpret_cast<uint16_t*>(p), v); }

template <typename T>
void merge_rows(int64_t r0, int64_t r1, int64_t D, T* out, float* lse, const T* o_b, const float* lse_b) {
  for (int64_t r = r0; r < r1; ++r) {
    float a = lse[r], b = lse_b[r], m = std::max(a, b), wa, wb, total;
    if (a != a || b != b) {  // a NaN propagates
      m = wa = wb = total = std::numeric_limits<float>::quiet_NaN();
    } else if (m == NEG) {
      continue;  // both empty: a stays as it is
    } else {
      wa = a == NEG ? 0.0f : std::exp(a - m), wb = b == NEG ? 0.0f : std::exp(b - m), total = wa + wb;
    }
    const __m256 va = _mm256_set1_ps(wa / total), vb = _mm256_set1_ps(wb / total);
    for (int64_t d = 0; d < D; d += 8)
      store8(out + r * D + d, _mm256_fmadd_ps(va, load8(out + r * D + d), _mm256_mul_ps(vb, load8(o_b + r * D + d))));
    lse[r] = m + std::log(total);
  }
}

}  // namespace

void merge_attention_state_(at::Tensor& out, at::Tensor& lse, const at::Tensor& o_b, const at::Tensor& lse_b) {
  TORCH_CHECK(out.dim() == 3 && o_b.sizes() == out.sizes() && lse.dim() == 2 && lse_b.sizes() == lse.sizes() &&
              lse.size(0) == out.size(0) && lse.size(1) == out.size(1), "bad shapes");
  TORCH_CHECK(out.is_contiguous() && lse.is_contiguous() && o_b.is_contiguous() && lse_b.is_contiguous(),
              "inputs must be contiguous");
  TORCH_CHECK(out.scalar_type() == o_b.scalar_type() && lse.scalar_type() == at::kFloat &&
              lse_b.scalar_type() == at::kFloat, "out and o_b share a dtype; lse is float32");
  TORCH_CHECK(out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kFloat, "out must be bf16 or fp32");
  const int64_t rows = out.size(0) * out.size(1), D = out.size(2);
  TORCH_CHECK(D % 8 == 0, "head_dim must be a multiple of 8");
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    if (out.scalar_type() == at::kFloat)
      merge_rows(r0, r1, D, out.data_ptr<float>(), lse.data_ptr<float>(), o_b.data_ptr<float>(), lse_b.data_ptr<float>());
    else
      merge_rows(r0, r1, D, out.data_ptr<c10::BFloat16>(), lse.data_ptr<float>(), o_b.data_ptr<c10::BFloat16>(),
                 lse_b.data_ptr<float>());
  });
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("merge_attention_state_(Tensor(a!) out, Tensor(b!) lse, Tensor o_b, Tensor lse_b) -> ()");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) { m.impl("merge_attention_state_", &merge_attention_state_); }

}  // namespace parrot
