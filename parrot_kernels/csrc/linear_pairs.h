// The linear's micro-kernels for CPUs with AVX-512: FMA on widened weights (an fp32 x; AVX-512F),
// or, where the CPU has AVX-512-BF16 (PARROT_LINEAR_DOT), vdpbf16ps (a bf16 x; 16 fp32 lanes,
// each += the dot product of two bf16 pairs, 32 multiply-adds per instruction).
//
// Layout ("pairs"): a block of 16 output channels is stored as [K / 2][16][2] bf16, the
// weights of inputs 2p and 2p + 1 for channel j side by side, so one 64-byte load (a cache
// line) holds a pair step for the whole block, and x's pair (x[2p], x[2p + 1]) is one 32-bit
// broadcast. K is padded to even with zero weights (and x read through a padded copy).
// Accumulation is fp32 as in the AVX2 kernel; the products of two bf16 are exact in fp32,
// so the two layouts differ only in the order of the fp32 sums.
#pragma once

#if defined(__AVX512F__)
#define PARROT_LINEAR_PAIRS 1
#if defined(__AVX512BF16__)
#define PARROT_LINEAR_DOT 1
#endif

#include <immintrin.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace parrot {
namespace pairs {

#ifdef PARROT_LINEAR_DOT
static inline __m512bh weights(const uint16_t* w) { return (__m512bh)_mm512_loadu_si512(w); }

static inline __m512bh pair_of(const uint16_t* x) {
  int32_t both;
  std::memcpy(&both, x, sizeof(both));
  return (__m512bh)_mm512_set1_epi32(both);
}
#endif

// The pair's weights widened to fp32 (a bf16 is the high half of an fp32): inputs 2p and 2p + 1.
static inline __m512 even_of(__m512i w) { return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)); }
static inline __m512 odd_of(__m512i w) {
  return _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))));
}

// A tile: R <= 8 rows of x against one or two blocks (TWO: the block at w and the next one,
// w + P * 32; 32 outputs, so one broadcast of x serves two weight vectors). Accumulators are
// named locals (an array of them gcc may keep on the stack): a<r> block 0, b<r> block 1.
// `next` (the thread's next unit) is prefetched, two cache lines per pair step.
#define PARROT_PAIR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

template <int R, bool TWO, typename X>
void tile(const X* x, int64_t ldx, const uint16_t* w, int64_t P, float* out, int64_t ldo, const uint16_t* next) {
#define DECL(r) __m512 a##r = _mm512_setzero_ps(), b##r = _mm512_setzero_ps();
  PARROT_PAIR_ROWS(DECL)
#undef DECL
  const uint16_t* w1 = w + P * 32;
  for (int64_t p = 0; p < P; ++p) {
    if (next) {
      _mm_prefetch(reinterpret_cast<const char*>(next + p * 64), _MM_HINT_T0);
      if (TWO) _mm_prefetch(reinterpret_cast<const char*>(next + p * 64 + 32), _MM_HINT_T0);
    }
    if constexpr (std::is_same_v<X, float>) {
      __m512i v0 = _mm512_loadu_si512(w + p * 32), v1 = TWO ? _mm512_loadu_si512(w1 + p * 32) : v0;
      __m512 e0 = even_of(v0), o0 = odd_of(v0), e1 = even_of(v1), o1 = odd_of(v1);
#define STEP(r)                                                                                  \
      if constexpr (R > r) {                                                                     \
        __m512 xe = _mm512_set1_ps(x[r * ldx + 2 * p]), xo = _mm512_set1_ps(x[r * ldx + 2 * p + 1]); \
        a##r = _mm512_fmadd_ps(xo, o0, _mm512_fmadd_ps(xe, e0, a##r));                            \
        if (TWO) b##r = _mm512_fmadd_ps(xo, o1, _mm512_fmadd_ps(xe, e1, b##r));                   \
      }
      PARROT_PAIR_ROWS(STEP)
#undef STEP
    } else {
#ifndef PARROT_LINEAR_DOT
      static_assert(std::is_same_v<X, float>, "bf16 x needs AVX-512-BF16's dot products");
#else
      __m512bh v0 = weights(w + p * 32), v1 = TWO ? weights(w1 + p * 32) : v0;
#define STEP(r)                                                       \
      if constexpr (R > r) {                                          \
        __m512bh xp = pair_of(x + r * ldx + 2 * p);                   \
        a##r = _mm512_dpbf16_ps(a##r, xp, v0);                        \
        if (TWO) b##r = _mm512_dpbf16_ps(b##r, xp, v1);               \
      }
      PARROT_PAIR_ROWS(STEP)
#undef STEP
#endif
    }
  }
#define STORE(r)                                             \
  if constexpr (R > r) {                                     \
    _mm512_storeu_ps(out + r * ldo, a##r);                   \
    if (TWO) _mm512_storeu_ps(out + r * ldo + 16, b##r);     \
  }
  PARROT_PAIR_ROWS(STORE)
#undef STORE
}
#undef PARROT_PAIR_ROWS

constexpr int kMaxRows = 8;
constexpr int kBlocksPerTile = 2;

template <bool TWO, typename X>
void rows_of(int rows, const X* x, int64_t ldx, const uint16_t* w, int64_t P, float* out, int64_t ldo,
             const uint16_t* next) {
  switch (rows) {
    case 1: return tile<1, TWO>(x, ldx, w, P, out, ldo, next);
    case 2: return tile<2, TWO>(x, ldx, w, P, out, ldo, next);
    case 3: return tile<3, TWO>(x, ldx, w, P, out, ldo, next);
    case 4: return tile<4, TWO>(x, ldx, w, P, out, ldo, next);
    case 5: return tile<5, TWO>(x, ldx, w, P, out, ldo, next);
    case 6: return tile<6, TWO>(x, ldx, w, P, out, ldo, next);
    case 7: return tile<7, TWO>(x, ldx, w, P, out, ldo, next);
    default: return tile<8, TWO>(x, ldx, w, P, out, ldo, next);
  }
}

// `rows` (<= kMaxRows) rows of x against `blocks` (1 or 2) consecutive blocks.
template <typename X>
void tiles(int rows, const X* x, int64_t ldx, const uint16_t* w, int64_t blocks, int64_t P, float* out,
          int64_t ldo, const uint16_t* next) {
  if (blocks == 2) rows_of<true>(rows, x, ldx, w, P, out, ldo, next);
  else rows_of<false>(rows, x, ldx, w, P, out, ldo, next);
}

// Which tiles take a bf16 x. vdpbf16ps is one instruction for 32 multiply-adds, but its
// throughput differs by vendor: on this project's Intel Xeon (AVX-512-BF16, no AMX) it ran
// at ~0.5 a cycle, a quarter of two FMAs' rate, so the FMA tiles on widened weights are
// faster there; AMD's Zen 4 issues it at the FMA's rate (not measured here), twice the FMA
// tiles' multiply-adds. `linear_tiles` (linear.cpp) can set either, for tests and A/Bs.
enum class Bf16Tiles { automatic, fma, dot };
inline std::atomic<Bf16Tiles> bf16_tiles{Bf16Tiles::automatic};

// AVX-512 without BF16 (an Intel Xeon whose hypervisor hides it) has the FMA tiles only.
static inline bool dot_products_for_bf16() {
#ifdef PARROT_LINEAR_DOT
  static const bool amd = __builtin_cpu_is("amd");
  Bf16Tiles t = bf16_tiles.load(std::memory_order_relaxed);
  return t == Bf16Tiles::dot || (t == Bf16Tiles::automatic && amd);
#else
  return false;
#endif
}

}  // namespace pairs
}  // namespace parrot

#endif
