// Many-query attention over one run of paged KV, read in place, AVX2 + FMA (flash style):
// a prefill chunk (causal, bottom-right aligned) or a cascade group's queries over their
// shared prefix (every key visible).
//
// q: [M, Hq, D]; caches: [num_blocks, block_size, Hkv, D] bf16; blocks: [n] int64, the
// run's physical blocks in order; kv_len keys. Causal: query i sits at position
// kv_len - M + i and sees keys <= it. Work items are (tile of TQ queries, kv head, key
// split). A tile's R = TQ x G rows (G query heads per kv head) are the columns of a
// transposed score block, S^T[key, row] = K[key] . Q^T[:, row], computed with the
// linear's outer-product micro-kernel (6 keys x 16 rows): each chunk of keys is widened
// once with vector loads (no transpose), the online softmax runs over 8 rows per vector,
// and P @ V broadcasts P^T's entries. Few items (a cascade group's handful of queries)
// split their keys so every thread has work; the splits merge by log-sum-exp.
// Returns out [M, Hq, D] in q's dtype and lse [M, Hq] float32 (base e).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gemm_tile.h"
#include "ops.h"
#include "paged_checks.h"

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
};

// Scratch of one work item (thread-local). RP: the tile's rows rounded up to 16.
struct Tile {
  std::vector<float> qt, kc, vc, st, acc, max, sum, rescale, visible;
  // qt [D, RP], kc / vc [CK, D], st [CK, RP] (S^T, then P^T), acc [RP, D]; per row: max,
  // sum, rescale, visible (keys < visible are visible, as a float for vector compares)
  void resize(int64_t RP, int64_t D) {
    qt.assign(D * RP, 0.0f), kc.resize(CK * D), vc.resize(CK * D), st.resize(CK * RP);
    acc.assign(RP * D, 0.0f), max.assign(RP, NEG), sum.assign(RP, 0.0f), rescale.resize(RP), visible.resize(RP);
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

// Online softmax over the chunk's n keys for every row (8 rows per vector); keys at or
// past a row's `visible` are masked when `mask`. Leaves P^T in st and rescales acc.
void softmax_chunk(int64_t RP, int64_t R, int64_t D, int64_t t0, int64_t n, bool mask, Tile& tile) {
  const __m256 neg = _mm256_set1_ps(NEG), zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < RP; j += 8) {
    __m256 m_old = _mm256_loadu_ps(tile.max.data() + j), m = m_old, nan = zero;
    const __m256 vis = _mm256_loadu_ps(tile.visible.data() + j);
    for (int64_t i = 0; i < n; ++i) {
      float* s = tile.st.data() + i * RP + j;
      __m256 v = _mm256_loadu_ps(s);
      if (mask) {
        v = _mm256_blendv_ps(v, neg, _mm256_cmp_ps(_mm256_set1_ps(float(t0 + i)), vis, _CMP_GE_OQ));
        _mm256_storeu_ps(s, v);
      }
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
  for (int64_t r = 0; r < R; ++r) {
    float f = tile.rescale[r];
    if (f == 1.0f) continue;
    __m256 fv = _mm256_set1_ps(f);
    float* acc = tile.acc.data() + r * D;
    for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(acc + d, _mm256_mul_ps(fv, _mm256_loadu_ps(acc + d)));
  }
}

// Rows of the tile (query-major, then the kv head's G query heads) -> Q^T, scaled.
template <typename T>
void load_queries(const Run& run, const T* q, int64_t q0, int64_t nq, int64_t head, int64_t RP, Tile& tile) {
  const int64_t D = run.dim, G = run.group;
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      int64_t row = i * G + j;
      const T* src = q + ((q0 + i) * run.num_heads + head * G + j) * D;
      for (int64_t d = 0; d < D; ++d) tile.qt[d * RP + row] = static_cast<float>(src[d]) * run.scale;
      tile.visible[row] = float(run.causal ? run.kv_len - run.num_q + q0 + i + 1 : run.kv_len);
    }
  for (int64_t row = nq * G; row < RP; ++row) tile.visible[row] = float(run.kv_len);  // padding rows
}

// Attention of one tile's rows over keys [k0, k1) (clipped to what its last row sees).
template <typename T>
void attend_tile(const Run& run, const T* q, int64_t q0, int64_t head, int64_t k0, int64_t k1, Tile& tile) {
  const int64_t D = run.dim, nq = std::min(TQ, run.num_q - q0), R = nq * run.group, RP = (R + 15) / 16 * 16;
  tile.resize(RP, D);
  load_queries(run, q, q0, nq, head, RP, tile);
  const int64_t first = static_cast<int64_t>(tile.visible[0]), end = std::min<int64_t>(k1, tile.visible[R - 1]);
  for (int64_t t0 = k0; t0 < end; t0 += CK) {
    const int64_t n = std::min(CK, end - t0);
    load_chunk(run, head, t0, n, tile);
    for (int64_t c = 0; c < RP; c += 16)  // S^T = K . Q^T
      gemm_rows<false>(n, tile.kc.data(), D, tile.qt.data() + c, RP, D, tile.st.data() + c, RP);
    softmax_chunk(RP, R, D, t0, n, run.causal && t0 + n > first, tile);
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

// Keys per split for `items` work items: enough splits for every thread to have two, each
// split a whole number of chunks and at least MIN_SPLIT_KEYS long (the last one may be
// shorter); kv_len itself when one split serves.
int64_t split_span(int64_t items, int64_t kv_len) {
  const int64_t want = (2 * at::get_num_threads() + items - 1) / items;
  const int64_t splits = std::max<int64_t>(1, std::min(want, kv_len / MIN_SPLIT_KEYS));
  return splits == 1 ? kv_len : ((kv_len + splits - 1) / splits + CK - 1) / CK * CK;
}

template <typename T>
void run_items(const Run& run, const T* q, T* out, float* lse, int64_t tiles, int64_t span, Parts parts) {
  const int64_t splits = (run.kv_len + span - 1) / span;
  at::parallel_for(0, tiles * run.num_kv_heads * splits, 1, [&](int64_t i0, int64_t i1) {
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
          blocks.data_ptr<int64_t>(), bs, Hkv, D, kv_len, M, Hq, Hq / Hkv, causal, static_cast<float>(scale)};
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
