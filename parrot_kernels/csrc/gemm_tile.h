// The outer-product micro-kernel shared by the linear and the prefill attention (AVX2; with
// AVX-512, fp32 w in 512-bit tiles):
// out[r, 0:16] (+)= sum_k x[r, k] * w[k, 0:16] for R <= 6 rows, w in fp32 or in bf16 (rows
// of 16 stored in kUnpackOrder). x[r, k] is x[r * ldx + k], or x[k * ldx + r] with XT (x
// stored transposed, as the prefill attention's probabilities are).
// `prefetch` (optional): memory the caller reads next, `prefetch_step` bytes of it touched
// per k, so a compute-bound pass pulls the next weights in while it runs.
#pragma once

#include <algorithm>
#include <type_traits>

#include "vec.h"

namespace parrot {

// w[k, 0:16] as two fp32 vectors; bf16 rows are stored in kUnpackOrder (see linear.cpp).
static inline void load16(const uint16_t* p, __m256& b0, __m256& b1) { load_bf16x16(p, b0, b1); }
static inline void load16(const float* p, __m256& b0, __m256& b1) {
  b0 = _mm256_loadu_ps(p), b1 = _mm256_loadu_ps(p + 8);
}

// Accumulators as named locals: an array of them is kept on the stack by gcc, and the
// stores then bound the loop. c<r>0 / c<r>1 hold row r's 16 outputs.
#define PARROT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <int R, bool ACCUMULATE, bool XT = false, typename W>
void gemm_tile(const float* x, int64_t ldx, const W* w, int64_t ldw, int64_t K, float* out, int64_t ldo,
               const char* prefetch = nullptr, int64_t prefetch_step = 0) {
#define DECL(r)                                                                                   \
  __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();                            \
  if constexpr (ACCUMULATE && R > r) {                                                            \
    c##r##0 = _mm256_loadu_ps(out + r * ldo), c##r##1 = _mm256_loadu_ps(out + r * ldo + 8);       \
  }
  PARROT_ROWS(DECL)
#undef DECL
  for (int64_t k = 0; k < K; ++k) {
    if (prefetch) _mm_prefetch(prefetch + k * prefetch_step, _MM_HINT_T0);
    __m256 b0, b1;
    load16(w + k * ldw, b0, b1);
#define STEP(r)                                                \
    if constexpr (R > r) {                                     \
      __m256 a = _mm256_broadcast_ss(XT ? x + k * ldx + r : x + r * ldx + k); \
      c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);               \
      c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);               \
    }
    PARROT_ROWS(STEP)
#undef STEP
  }
#define STORE(r)                                               \
  if constexpr (R > r) {                                       \
    _mm256_storeu_ps(out + r * ldo, c##r##0);                  \
    _mm256_storeu_ps(out + r * ldo + 8, c##r##1);              \
  }
  PARROT_ROWS(STORE)
#undef STORE
}

#ifdef __AVX512F__
// With AVX-512 and fp32 w: the 16 outputs of a row in one vector, R <= 12 rows a tile.
#define PARROT_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

template <int R, bool ACCUMULATE, bool XT>
void gemm_tile512(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* out, int64_t ldo) {
#define DECL(r)                                      \
  __m512 c##r = _mm512_setzero_ps();                 \
  if constexpr (ACCUMULATE && R > r) c##r = _mm512_loadu_ps(out + r * ldo);
  PARROT_ROWS12(DECL)
#undef DECL
  for (int64_t k = 0; k < K; ++k) {
    __m512 b = _mm512_loadu_ps(w + k * ldw);
#define STEP(r) \
    if constexpr (R > r) c##r = _mm512_fmadd_ps(_mm512_set1_ps(XT ? x[k * ldx + r] : x[r * ldx + k]), b, c##r);
    PARROT_ROWS12(STEP)
#undef STEP
  }
#define STORE(r) if constexpr (R > r) _mm512_storeu_ps(out + r * ldo, c##r);
  PARROT_ROWS12(STORE)
#undef STORE
}
#undef PARROT_ROWS12

template <bool ACCUMULATE, bool XT>
void gemm_rows512(int64_t rows, const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* out,
                  int64_t ldo) {
  for (int64_t r = 0; r < rows; r += 12) {
    const float* xr = XT ? x + r : x + r * ldx;
    float* o = out + r * ldo;
    switch (std::min<int64_t>(12, rows - r)) {
#define CASE(n) case n: gemm_tile512<n, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo); break;
      CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11)
#undef CASE
      default: gemm_tile512<12, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo); break;
    }
  }
}
#endif

// Any number of rows, in tiles of <= 6 (of <= 12 with AVX-512 and fp32 w: the prefill
// attention's, which passes no prefetch); the last tile's pass prefetches `prefetch`.
template <bool ACCUMULATE, bool XT = false, typename W>
void gemm_rows(int64_t rows, const float* x, int64_t ldx, const W* w, int64_t ldw, int64_t K, float* out,
               int64_t ldo, const char* prefetch = nullptr, int64_t prefetch_step = 0) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<W, float>) {
    gemm_rows512<ACCUMULATE, XT>(rows, x, ldx, w, ldw, K, out, ldo);
    return;
  }
#endif
  for (int64_t r = 0; r < rows; r += 6) {
    const float* xr = XT ? x + r : x + r * ldx;
    float* o = out + r * ldo;
    const char* pf = r + 6 >= rows ? prefetch : nullptr;
    switch (std::min<int64_t>(6, rows - r)) {
      case 1: gemm_tile<1, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo, pf, prefetch_step); break;
      case 2: gemm_tile<2, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo, pf, prefetch_step); break;
      case 3: gemm_tile<3, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo, pf, prefetch_step); break;
      case 4: gemm_tile<4, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo, pf, prefetch_step); break;
      case 5: gemm_tile<5, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo, pf, prefetch_step); break;
      default: gemm_tile<6, ACCUMULATE, XT>(xr, ldx, w, ldw, K, o, ldo, pf, prefetch_step); break;
    }
  }
}

}  // namespace parrot
