// Many-query attention over one run of paged KV, read in place, AVX2 + FMA (flash style):
// a prefill chunk (causal, bottom-right aligned) or a cascade group's queries over their
// shared prefix (every key visible).
//
// q: [M, Hq, D]; caches: [num_blocks, block_size, Hkv, D] bf16; blocks: [n] int64, the
// run's physical blocks in order; kv_len keys. Causal: query i sits at position
// kv_len - M + i and sees keys <= it. Work items are (tile of TQ queries, kv head, key
// split). A tile's R = TQ x G rows (G query heads per kv head) are the columns of a
// transposed score block, S^T[key, row] = K[key] . Q^T[:, row], computed with the
// linear's outer-product micro-kernel (6 keys x 16 rows; 12 with AVX-512): each chunk of
// keys is widened once with vector loads (no transpose), the online softmax runs over a
// vector of rows at a time, and P @ V broadcasts P^T's entries. Where the linear runs on
// bf16 dot products (AMD's AVX-512-BF16) both GEMMs do too, on the keys as they lie (the dot
// path below). Few items (a cascade group's handful of queries) split their keys so every
// thread has work; the splits merge by log-sum-exp; threads claim items as they come free.
// Returns out [M, Hq, D] in q's dtype and lse [M, Hq] float32 (base e).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gemm_tile.h"
#include "linear_pairs.h"
#include "ops.h"
#include "paged_checks.h"
#include "parallel.h"

namespace parrot {
namespace {

constexpr int64_t CK = 96;  // keys per chunk: 16 micro-kernel tiles of 6
constexpr int64_t TQ = 16;  // query positions per work item
constexpr int64_t MIN_SPLIT_KEYS = 2 * CK;  // a key split is at least this long
constexpr float NEG = -std::numeric_limits<float>::infinity();

struct Run {
  const uint16_t *k, *v;
  const int64_t* blocks;
  int64_t block_size, num_kv_heads, dim, kv_len, num_q, num_heads, group;
  bool causal;
  float scale;
  bool dot;  // bf16 dot products (see the dot path below)
};

// Scratch of one work item (thread-local). RP: the tile's rows rounded up to 16.
struct Tile {
  std::vector<float> qt, kc, vc, st, acc, max, sum, rescale, visible;
  std::vector<int32_t> qp, vp, pp;  // the dot path's pairs of bf16 (see there)
  // qt [D, RP], kc / vc [CK, D], st [CK, RP] (S^T, then P^T), acc [RP, D]; per row: max,
  // sum, rescale, visible (keys < visible are visible, as a float for vector compares)
  void resize(int64_t RP, int64_t D) {
    st.resize(CK * RP), acc.assign(RP * D, 0.0f), max.assign(RP, NEG), sum.assign(RP, 0.0f);
    rescale.resize(RP), visible.resize(RP);
  }
};

// Partial states of the key splits: [splits, M, Hq] rows of acc (unnormalized), max, sum.
struct Parts {
  float *acc, *max, *sum;
};

// Keys [t0, t0 + n) of kv head `head`, widened to fp32 rows of kc and vc.
void load_chunk(const Run& run, int64_t head, int64_t t0, int64_t n, Tile& tile) {
  const int64_t D = run.dim;
  for (int64_t i = 0; i < n; ++i) {
    int64_t t = t0 + i, slot = run.blocks[t / run.block_size] * run.block_size + t % run.block_size;
    const uint16_t* k = run.k + (slot * run.num_kv_heads + head) * D;
    const uint16_t* v = run.v + (slot * run.num_kv_heads + head) * D;
    for (int64_t d = 0; d < D; d += 8) {
      _mm256_storeu_ps(tile.kc.data() + i * D + d, load_bf16(k + d));
      _mm256_storeu_ps(tile.vc.data() + i * D + d, load_bf16(v + d));
    }
  }
}

// Online softmax over the chunk's n keys for every row (a vector of rows at a time), the
// scores times `scale` first; keys at or past a row's `visible` are masked when `mask`.
// Leaves P^T in st and the rows' rescale factors (then applied to acc).
#ifdef __AVX512F__
void softmax_rows(int64_t RP, int64_t t0, int64_t n, bool mask, float scale, Tile& tile) {
  const __m512 neg = _mm512_set1_ps(NEG), zero = _mm512_setzero_ps(), by = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < RP; j += 16) {
    __m512 m_old = _mm512_loadu_ps(tile.max.data() + j), m = m_old;
    const __m512 vis = _mm512_loadu_ps(tile.visible.data() + j);
    __mmask16 nan = 0;
    for (int64_t i = 0; i < n; ++i) {
      float* s = tile.st.data() + i * RP + j;
      __m512 v = _mm512_mul_ps(_mm512_loadu_ps(s), by);
      if (mask) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(_mm512_set1_ps(float(t0 + i)), vis, _CMP_GE_OQ), neg);
      _mm512_storeu_ps(s, v);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      m = _mm512_max_ps(m, v);
    }
    m = _mm512_mask_mov_ps(m, nan, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));  // a NaN propagates
    // Rows with nothing visible yet keep max -inf: subtract 0 there (their p and rescale are 0).
    const __m512 base = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(m, neg, _CMP_EQ_OQ), zero);
    __m512 total = zero;
    for (int64_t i = 0; i < n; ++i) {
      float* s = tile.st.data() + i * RP + j;
      __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(s), base));
      _mm512_storeu_ps(s, p);
      total = _mm512_add_ps(total, p);
    }
    __m512 rescale = exp512(_mm512_sub_ps(m_old, base));
    _mm512_storeu_ps(tile.sum.data() + j, _mm512_fmadd_ps(_mm512_loadu_ps(tile.sum.data() + j), rescale, total));
    _mm512_storeu_ps(tile.max.data() + j, m);
    _mm512_storeu_ps(tile.rescale.data() + j, rescale);
  }
}
#else
void softmax_rows(int64_t RP, int64_t t0, int64_t n, bool mask, float scale, Tile& tile) {
  const __m256 neg = _mm256_set1_ps(NEG), zero = _mm256_setzero_ps(), by = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < RP; j += 8) {
    __m256 m_old = _mm256_loadu_ps(tile.max.data() + j), m = m_old, nan = zero;
    const __m256 vis = _mm256_loadu_ps(tile.visible.data() + j);
    for (int64_t i = 0; i < n; ++i) {
      float* s = tile.st.data() + i * RP + j;
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s), by);
      if (mask) v = _mm256_blendv_ps(v, neg, _mm256_cmp_ps(_mm256_set1_ps(float(t0 + i)), vis, _CMP_GE_OQ));
      _mm256_storeu_ps(s, v);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      m = _mm256_max_ps(m, v);
    }
    m = _mm256_blendv_ps(m, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), nan);  // a NaN propagates
    // Rows with nothing visible yet keep max -inf: subtract 0 there (their p and rescale are 0).
    const __m256 base = _mm256_blendv_ps(m, zero, _mm256_cmp_ps(m, neg, _CMP_EQ_OQ));
    __m256 total = zero;
    for (int64_t i = 0; i < n; ++i) {
      float* s = tile.st.data() + i * RP + j;
      __m256 p = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s), base));
      _mm256_storeu_ps(s, p);
      total = _mm256_add_ps(total, p);
    }
    __m256 rescale = exp_ps(_mm256_sub_ps(m_old, base));
    _mm256_storeu_ps(tile.sum.data() + j, _mm256_fmadd_ps(_mm256_loadu_ps(tile.sum.data() + j), rescale, total));
    _mm256_storeu_ps(tile.max.data() + j, m);
    _mm256_storeu_ps(tile.rescale.data() + j, rescale);
  }
}
#endif

void softmax_chunk(int64_t RP, int64_t R, int64_t D, int64_t t0, int64_t n, bool mask, float scale, Tile& tile) {
  softmax_rows(RP, t0, n, mask, scale, tile);
  for (int64_t r = 0; r < R; ++r) {
    float f = tile.rescale[r];
    if (f == 1.0f) continue;
    __m256 fv = _mm256_set1_ps(f);
    float* acc = tile.acc.data() + r * D;
    for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(acc + d, _mm256_mul_ps(fv, _mm256_loadu_ps(acc + d)));
  }
}

// The tile's rows are query-major, then the kv head's G query heads: row i * G + j is
// query q0 + i, head head * G + j. Each row's visible keys (padding rows: all of them).
void set_visible(const Run& run, int64_t q0, int64_t nq, int64_t RP, Tile& tile) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < run.group; ++j)
      tile.visible[i * run.group + j] = float(run.causal ? run.kv_len - run.num_q + q0 + i + 1 : run.kv_len);
  for (int64_t row = nq * run.group; row < RP; ++row) tile.visible[row] = float(run.kv_len);
}

// The tile's rows -> Q^T in fp32, scaled.
template <typename T>
void load_queries(const Run& run, const T* q, int64_t q0, int64_t nq, int64_t head, int64_t RP, Tile& tile) {
  const int64_t D = run.dim, G = run.group;
  tile.qt.assign(D * RP, 0.0f);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      const T* src = q + ((q0 + i) * run.num_heads + head * G + j) * D;
      for (int64_t d = 0; d < D; ++d) tile.qt[d * RP + i * G + j] = static_cast<float>(src[d]) * run.scale;
    }
}

#ifdef PARROT_LINEAR_DOT
// The dot path (bf16 queries, D a multiple of 32, `linear_tiles` on dot products: AMD's
// AVX-512-BF16): the two GEMMs in vdpbf16ps, bf16 pairs multiplied exactly and summed in
// fp32. S^T = K . Q^T runs on the linear's tiles (linear_pairs.h) with the keys' rows, read
// in the cache as they are, for x (a key's (d, d + 1) is one 32-bit broadcast) and the
// queries packed as a weight: qp [RP / 16][D / 2][16] pairs, unscaled (exact), the scale
// applied to the scores. P @ V rounds P to bf16 (as FlashInfer's P @ V does): pp [n / 2][RP]
// pairs (the probabilities of keys 2j, 2j + 1 of a row), vp [D / 16][n / 2][16] pairs (the
// values of keys 2j, 2j + 1 of a dim), both repacked from the chunk in vector shuffles.
namespace dot {

void load_queries(const Run& run, const c10::BFloat16* q, int64_t q0, int64_t nq, int64_t head, int64_t RP,
                  Tile& tile) {
  const int64_t D = run.dim, G = run.group, P = D / 2;
  tile.qp.assign(RP * P, 0);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      const int64_t row = i * G + j;
      const auto* src = reinterpret_cast<const int32_t*>(q + ((q0 + i) * run.num_heads + head * G + j) * D);
      int32_t* dst = tile.qp.data() + (row / 16) * P * 16 + row % 16;
      for (int64_t p = 0; p < P; ++p) dst[p * 16] = src[p];
    }
}

// st[i, 0:RP] = K[t0 + i] . Q^T for the chunk's n keys, in runs within a cache block.
void scores(const Run& run, int64_t head, int64_t t0, int64_t n, int64_t RP, Tile& tile) {
  const int64_t D = run.dim, P = D / 2, ld = run.num_kv_heads * D, bs = run.block_size;
  const uint16_t* qp = reinterpret_cast<const uint16_t*>(tile.qp.data());
  for (int64_t t = t0; t < t0 + n;) {
    const int64_t off = t % bs, len = std::min(bs - off, t0 + n - t);
    const uint16_t* keys = run.k + ((run.blocks[t / bs] * bs + off) * run.num_kv_heads + head) * D;
    for (int64_t i = 0; i < len; i += pairs::kMaxRows) {
      const int rows = static_cast<int>(std::min<int64_t>(pairs::kMaxRows, len - i));
      for (int64_t c = 0; c < RP; c += 32)
        pairs::tiles(rows, keys + i * ld, ld, qp + c * P * 2, std::min<int64_t>(2, (RP - c) / 16), P,
                     tile.st.data() + (t - t0 + i) * RP + c, RP, nullptr);
    }
    t += len;
  }
}

// Word i of a and word i of b side by side (a0, b0, a1, b1, ...): words 0..15 of a and b
// (lo) or words 16..31 (hi). halves(x): x's words 0..15 and 16..31 so paired.
alignas(64) constexpr int16_t kPairLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                             8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) constexpr int16_t kPairHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                             24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
alignas(64) constexpr int16_t kHalves[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                             8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
static inline __m512i index_of(const int16_t* idx) { return _mm512_load_si512(idx); }
static inline __m512i interleave_lo(__m512i a, __m512i b) { return _mm512_permutex2var_epi16(a, index_of(kPairLo), b); }
static inline __m512i interleave_hi(__m512i a, __m512i b) { return _mm512_permutex2var_epi16(a, index_of(kPairHi), b); }
static inline __m512i halves(__m512i x) { return _mm512_permutexvar_epi16(index_of(kHalves), x); }

// P^T (fp32 st) -> pp, V of the chunk's keys -> vp; an odd last key is paired with zeros.
void pack_pv(const Run& run, int64_t head, int64_t t0, int64_t n, int64_t RP, Tile& tile) {
  const int64_t D = run.dim, J = (n + 1) / 2, bs = run.block_size;
  tile.pp.resize(J * RP), tile.vp.resize(D * J);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < J; ++j)
    for (int64_t c = 0; c < RP; c += 16) {
      const __m512 a = _mm512_loadu_ps(tile.st.data() + 2 * j * RP + c);
      const __m512 b = 2 * j + 1 < n ? _mm512_loadu_ps(tile.st.data() + (2 * j + 1) * RP + c) : zero;
      const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // words 0..15: a, 16..31: b
      _mm512_storeu_si512(tile.pp.data() + j * RP + c, halves(both));
    }
  auto value_row = [&](int64_t i) {
    const int64_t t = t0 + i, slot = run.blocks[t / bs] * bs + t % bs;
    return run.v + (slot * run.num_kv_heads + head) * D;
  };
  for (int64_t j = 0; j < J; ++j) {
    const uint16_t* v0 = value_row(2 * j);
    const uint16_t* v1 = 2 * j + 1 < n ? value_row(2 * j + 1) : nullptr;
    for (int64_t d = 0; d < D; d += 32) {
      const __m512i a = _mm512_loadu_si512(v0 + d), b = v1 ? _mm512_loadu_si512(v1 + d) : _mm512_setzero_si512();
      _mm512_storeu_si512(tile.vp.data() + ((d / 16) * J + j) * 16, interleave_lo(a, b));
      _mm512_storeu_si512(tile.vp.data() + ((d / 16 + 1) * J + j) * 16, interleave_hi(a, b));
    }
  }
}

// acc[r, 16 b : 16 b + 16] += sum_j pp(j, r) . vp(b, j) for R rows and NB blocks of dims.
#define PARROT_PV_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
template <int R, int NB>
void pv_tile(const int32_t* pp, int64_t RP, const int32_t* vp, int64_t J, float* acc, int64_t D) {
#define DECL(r)                                                                                    __m512 c##r##0, c##r##1, c##r##2, c##r##3;                                                       if constexpr (R > r) {                                                                             c##r##0 = _mm512_loadu_ps(acc + r * D);                                                          if constexpr (NB > 1) c##r##1 = _mm512_loadu_ps(acc + r * D + 16);                               if constexpr (NB > 2) c##r##2 = _mm512_loadu_ps(acc + r * D + 32);                               if constexpr (NB > 3) c##r##3 = _mm512_loadu_ps(acc + r * D + 48);                             }
  PARROT_PV_ROWS(DECL)
#undef DECL
  for (int64_t j = 0; j < J; ++j) {
    const int32_t* v = vp + j * 16;
    const __m512bh v0 = (__m512bh)_mm512_loadu_si512(v);
    const __m512bh v1 = NB > 1 ? (__m512bh)_mm512_loadu_si512(v + J * 16) : v0;
    const __m512bh v2 = NB > 2 ? (__m512bh)_mm512_loadu_si512(v + 2 * J * 16) : v0;
    const __m512bh v3 = NB > 3 ? (__m512bh)_mm512_loadu_si512(v + 3 * J * 16) : v0;
#define STEP(r)                                                                     if constexpr (R > r) {                                                            const __m512bh p = (__m512bh)_mm512_set1_epi32(pp[j * RP + r]);                 c##r##0 = _mm512_dpbf16_ps(c##r##0, p, v0);                                     if constexpr (NB > 1) c##r##1 = _mm512_dpbf16_ps(c##r##1, p, v1);               if constexpr (NB > 2) c##r##2 = _mm512_dpbf16_ps(c##r##2, p, v2);               if constexpr (NB > 3) c##r##3 = _mm512_dpbf16_ps(c##r##3, p, v3);             }
    PARROT_PV_ROWS(STEP)
#undef STEP
  }
#define STORE(r)                                                                  if constexpr (R > r) {                                                            _mm512_storeu_ps(acc + r * D, c##r##0);                                         if constexpr (NB > 1) _mm512_storeu_ps(acc + r * D + 16, c##r##1);              if constexpr (NB > 2) _mm512_storeu_ps(acc + r * D + 32, c##r##2);              if constexpr (NB > 3) _mm512_storeu_ps(acc + r * D + 48, c##r##3);            }
  PARROT_PV_ROWS(STORE)
#undef STORE
}
#undef PARROT_PV_ROWS

template <int NB>
void pv_rows(int64_t R, const int32_t* pp, int64_t RP, const int32_t* vp, int64_t J, float* acc, int64_t D) {
  for (int64_t r = 0; r < R; r += 6) {
    const int32_t* p = pp + r;
    float* a = acc + r * D;
    switch (std::min<int64_t>(6, R - r)) {
      case 1: pv_tile<1, NB>(p, RP, vp, J, a, D); break;
      case 2: pv_tile<2, NB>(p, RP, vp, J, a, D); break;
      case 3: pv_tile<3, NB>(p, RP, vp, J, a, D); break;
      case 4: pv_tile<4, NB>(p, RP, vp, J, a, D); break;
      case 5: pv_tile<5, NB>(p, RP, vp, J, a, D); break;
      default: pv_tile<6, NB>(p, RP, vp, J, a, D); break;
    }
  }
}

// acc += P @ V over the chunk's n keys, four blocks of 16 dims at a time (D % 32 == 0).
void pv(int64_t R, int64_t RP, int64_t D, int64_t n, Tile& tile) {
  const int64_t J = (n + 1) / 2;
  for (int64_t b = 0; b < D / 16; b += 4) {
    const int32_t* vp = tile.vp.data() + b * J * 16;
    float* acc = tile.acc.data() + b * 16;
    if (D / 16 - b >= 4) pv_rows<4>(R, tile.pp.data(), RP, vp, J, acc, D);
    else pv_rows<2>(R, tile.pp.data(), RP, vp, J, acc, D);  // D % 32 == 0: two blocks left
  }
}

}  // namespace dot
#endif

// Attention of one tile's rows over keys [k0, k1) (clipped to what its last row sees).
template <typename T>
void attend_tile(const Run& run, const T* q, int64_t q0, int64_t head, int64_t k0, int64_t k1, Tile& tile) {
  const int64_t D = run.dim, nq = std::min(TQ, run.num_q - q0), R = nq * run.group, RP = (R + 15) / 16 * 16;
  tile.resize(RP, D);
  set_visible(run, q0, nq, RP, tile);
  const int64_t first = static_cast<int64_t>(tile.visible[0]), end = std::min<int64_t>(k1, tile.visible[R - 1]);
#ifdef PARROT_LINEAR_DOT
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    if (run.dot) {
      dot::load_queries(run, q, q0, nq, head, RP, tile);
      for (int64_t t0 = k0; t0 < end; t0 += CK) {
        const int64_t n = std::min(CK, end - t0);
        dot::scores(run, head, t0, n, RP, tile);
        softmax_chunk(RP, R, D, t0, n, run.causal && t0 + n > first, run.scale, tile);
        dot::pack_pv(run, head, t0, n, RP, tile);
        dot::pv(R, RP, D, n, tile);
      }
      return;
    }
  }
#endif
  load_queries(run, q, q0, nq, head, RP, tile);
  tile.kc.resize(CK * D), tile.vc.resize(CK * D);
  for (int64_t t0 = k0; t0 < end; t0 += CK) {
    const int64_t n = std::min(CK, end - t0);
    load_chunk(run, head, t0, n, tile);
    for (int64_t c = 0; c < RP; c += 16)  // S^T = K . Q^T
      gemm_rows<false>(n, tile.kc.data(), D, tile.qt.data() + c, RP, D, tile.st.data() + c, RP);
    softmax_chunk(RP, R, D, t0, n, run.causal && t0 + n > first, 1.0f, tile);  // Q^T holds the scale
    for (int64_t c = 0; c < D; c += 16)  // acc += P @ V, P read from P^T
      gemm_rows<true, true>(R, tile.st.data(), RP, tile.vc.data() + c, D, n, tile.acc.data() + c, D);
  }
}

// The tile's final rows (one split): out and lse.
template <typename T>
void write_rows(const Run& run, const Tile& tile, int64_t q0, int64_t head, T* out, float* lse) {
  const int64_t D = run.dim, G = run.group, nq = std::min(TQ, run.num_q - q0);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      int64_t row = i * G + j, at = (q0 + i) * run.num_heads + head * G + j;
      float inv = 1.0f / tile.sum[row];
      for (int64_t d = 0; d < D; ++d) out[at * D + d] = static_cast<T>(tile.acc[row * D + d] * inv);
      lse[at] = tile.max[row] + std::log(tile.sum[row]);
    }
}

// The tile's partial rows of split `split` into parts.
void write_part(const Run& run, const Tile& tile, int64_t q0, int64_t head, int64_t split, Parts parts) {
  const int64_t D = run.dim, G = run.group, nq = std::min(TQ, run.num_q - q0);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      int64_t row = i * G + j, at = (split * run.num_q + q0 + i) * run.num_heads + head * G + j;
      std::copy(tile.acc.begin() + row * D, tile.acc.begin() + (row + 1) * D, parts.acc + at * D);
      parts.max[at] = tile.max[row], parts.sum[at] = tile.sum[row];
    }
}

// Row `at` ((query, head)) of every split merged: out and lse. A split the row saw nothing
// of has max -inf and weighs 0; a NaN max propagates.
template <typename T>
void merge_row(const Run& run, Parts parts, int64_t splits, int64_t at, T* out, float* lse) {
  const int64_t D = run.dim, stride = run.num_q * run.num_heads;
  float m = NEG;
  for (int64_t s = 0; s < splits; ++s) {
    float x = parts.max[s * stride + at];
    m = (x > m || x != x) ? x : m;
  }
  alignas(32) float acc[256] = {};
  float total = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    int64_t p = s * stride + at;
    float w = parts.max[p] == NEG ? 0.0f : std::exp(parts.max[p] - m);
    total += w * parts.sum[p];
    for (int64_t d = 0; d < D; ++d) acc[d] += w * parts.acc[p * D + d];
  }
  for (int64_t d = 0; d < D; ++d) out[at * D + d] = static_cast<T>(acc[d] / total);
  lse[at] = m + std::log(total);
}

// Keys per split for `items` work items: enough splits for every thread to have four (they
// are claimed as threads come free: see parallel.h), each
// split a whole number of chunks and at least MIN_SPLIT_KEYS long (the last one may be
// shorter); kv_len itself when one split serves.
int64_t split_span(int64_t items, int64_t kv_len) {
  const int64_t want = (4 * at::get_num_threads() + items - 1) / items;
  const int64_t splits = std::max<int64_t>(1, std::min(want, kv_len / MIN_SPLIT_KEYS));
  return splits == 1 ? kv_len : ((kv_len + splits - 1) / splits + CK - 1) / CK * CK;
}

template <typename T>
void run_items(const Run& run, const T* q, T* out, float* lse, int64_t tiles, int64_t span, Parts parts) {
  const int64_t splits = (run.kv_len + span - 1) / span;
  parallel_items(tiles * run.num_kv_heads * splits, 1, [&](int64_t i0, int64_t i1) {
    thread_local Tile tile;
    for (int64_t i = i0; i < i1; ++i) {
      // Causal tiles paired first-with-last (0, T-1, 1, T-2, ...): the threads' contiguous
      // shares of items then hold equal numbers of keys.
      int64_t split = i % splits, head = (i / splits) % run.num_kv_heads, pos = i / splits / run.num_kv_heads;
      int64_t tile_id = !run.causal ? pos : (pos % 2 == 0 ? pos / 2 : tiles - 1 - pos / 2);
      attend_tile(run, q, tile_id * TQ, head, split * span, std::min(run.kv_len, (split + 1) * span), tile);
      if (splits == 1)
        write_rows(run, tile, tile_id * TQ, head, out, lse);
      else
        write_part(run, tile, tile_id * TQ, head, split, parts);
    }
  });
  if (splits == 1) return;
  at::parallel_for(0, run.num_q * run.num_heads, 16, [&](int64_t a0, int64_t a1) {
    for (int64_t at = a0; at < a1; ++at) merge_row(run, parts, splits, at, out, lse);
  });
}

// Whether the GEMMs run on bf16 dot products (see the dot path): bf16 queries, D % 32 == 0,
// and the linear's tiles on dot products (`linear_tiles`).
bool uses_dot_products(at::ScalarType q_dtype, int64_t D) {
#ifdef PARROT_LINEAR_DOT
  return q_dtype == at::kBFloat16 && D % 32 == 0 && pairs::dot_products_for_bf16();
#else
  return false;
#endif
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> paged_prefill_attention(
    const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& blocks_in,
    int64_t kv_len, bool causal, double scale) {
  check_paged_inputs(q_in, k_cache, v_cache);
  at::Tensor q = q_in.contiguous(), blocks = blocks_in.to(at::kLong).contiguous();
  const int64_t M = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k_cache.size(2), bs = k_cache.size(1);
  TORCH_CHECK(Hq / Hkv <= 16 && D % 16 == 0 && D <= 256, "unsupported head shape");
  TORCH_CHECK(kv_len >= 1 && blocks.numel() * bs >= kv_len && (!causal || M <= kv_len), "kv_len does not fit the blocks");
  check_block_ids(blocks.data_ptr<int64_t>(), (kv_len + bs - 1) / bs, k_cache.size(0));
  Run run{reinterpret_cast<const uint16_t*>(k_cache.data_ptr()), reinterpret_cast<const uint16_t*>(v_cache.data_ptr()),
          blocks.data_ptr<int64_t>(), bs, Hkv, D, kv_len, M, Hq, Hq / Hkv, causal, static_cast<float>(scale),
          uses_dot_products(q.scalar_type(), D)};
  at::Tensor out = at::empty({M, Hq, D}, q.options()), lse = at::empty({M, Hq}, q.options().dtype(at::kFloat));
  if (M == 0) return {out, lse};
  const int64_t tiles = (M + TQ - 1) / TQ, span = split_span(tiles * Hkv, kv_len), splits = (kv_len + span - 1) / span;
  at::Tensor part_acc, part_stats;
  Parts parts{nullptr, nullptr, nullptr};
  if (splits > 1) {
    part_acc = at::empty({splits, M, Hq, D}, lse.options()), part_stats = at::empty({2, splits, M, Hq}, lse.options());
    parts = {part_acc.data_ptr<float>(), part_stats[0].data_ptr<float>(), part_stats[1].data_ptr<float>()};
  }
  if (q.scalar_type() == at::kFloat)
    run_items(run, q.data_ptr<float>(), out.data_ptr<float>(), lse.data_ptr<float>(), tiles, span, parts);
  else
    run_items(run, q.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), lse.data_ptr<float>(), tiles, span,
              parts);
  return {out, lse};
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("paged_prefill_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor blocks, int kv_len, "
        "bool causal, float scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) { m.impl("paged_prefill_attention", &paged_prefill_attention); }

}  // namespace parrot
