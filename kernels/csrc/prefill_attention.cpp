// Many-query attention over one run of paged KV, read in place, AVX2 + FMA (flash style):
// a prefill chunk (causal, bottom-right aligned) or a cascade group's queries over their
// shared prefix (every key visible).
//
// q: [M, Hq, D]; caches: [num_blocks, block_size, Hkv, D] bf16; blocks: [n] int64, the
// run's physical blocks in order; kv_len keys. Causal: query i sits at position
// kv_len - M + i and sees keys <= it. Work items are (tile of TQ queries, kv head): the
// tile's TQ x G rows (G query heads per kv head) score each chunk of CK keys with the same
// outer-product micro-kernel as the linear (6 rows x 16 keys), then accumulate P @ V.
// Returns out [M, Hq, D] in q's dtype and lse [M, Hq] float32 (base e).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gemm_tile.h"
#include "paged_checks.h"

namespace parrot {
namespace {

constexpr int64_t CK = 64;  // keys per chunk (softmax bookkeeping is per chunk and row)
constexpr int64_t SUB = 16;  // keys per micro-kernel tile (two vectors)
constexpr int64_t TQ = 16;  // query positions per work item
constexpr float NEG = -std::numeric_limits<float>::infinity();

struct Run {
  const uint16_t *k, *v;
  const int64_t* blocks;
  int64_t block_size, num_kv_heads, dim, kv_len, num_q, num_heads, group;
  bool causal;
  float scale;
};

// Scratch of one work item (thread-local): the tile's rows and one chunk of keys.
struct Tile {
  std::vector<float> q, kt, vc, s, acc, max, sum;  // q [R, D], kt [D, CK], vc [CK, D], s [R, CK], acc [R, D]
  void resize(int64_t rows, int64_t D) {
    q.resize(rows * D), kt.resize(D * CK), vc.resize(CK * D), s.resize(rows * CK), acc.resize(rows * D);
    max.resize(rows), sum.resize(rows);
  }
};

// s[:, 0:n] = q . kt[:, 0:n] (n rounded up to 16; kt's padding columns are zero).
void score_rows(int64_t rows, int64_t n, const float* q, int64_t D, const float* kt, float* s) {
  for (int64_t k0 = 0; k0 < n; k0 += SUB) gemm_rows<false>(rows, q, D, kt + k0, CK, D, s + k0, CK);
}

// acc[:, :] += p[:, 0:n] @ vc[0:n, :].
void accumulate_rows(int64_t rows, int64_t n, const float* p, const float* vc, int64_t D, float* acc) {
  for (int64_t c = 0; c < D; c += 16) gemm_rows<true>(rows, p, CK, vc + c, D, n, acc + c, D);
}

// One chunk of keys [t0, t0 + n) of kv head `head` into kt (transposed) and vc, fp32.
void load_chunk(const Run& run, int64_t head, int64_t t0, int64_t n, Tile& tile) {
  const int64_t D = run.dim;
  for (int64_t i = 0; i < CK; ++i) {
    if (i >= n) {  // padding keys: zero (their scores are masked to -inf)
      for (int64_t d = 0; d < D; ++d) tile.kt[d * CK + i] = 0.0f;
      std::fill(tile.vc.begin() + i * D, tile.vc.begin() + (i + 1) * D, 0.0f);
      continue;
    }
    int64_t t = t0 + i, slot = run.blocks[t / run.block_size] * run.block_size + t % run.block_size;
    const uint16_t* k = run.k + (slot * run.num_kv_heads + head) * D;
    const uint16_t* v = run.v + (slot * run.num_kv_heads + head) * D;
    for (int64_t d = 0; d < D; d += 8) {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, load_bf16(k + d));
      for (int e = 0; e < 8; ++e) tile.kt[(d + e) * CK + i] = tmp[e];
      _mm256_storeu_ps(tile.vc.data() + i * D + d, load_bf16(v + d));
    }
  }
}

// Online softmax over one chunk for each row; rows see keys < visible[row]. Leaves the
// probabilities in s (0 where masked) and rescales acc.
void softmax_chunk(int64_t rows, int64_t t0, const int64_t* visible, int64_t D, Tile& tile) {
  const __m256 neg = _mm256_set1_ps(NEG);
  for (int64_t r = 0; r < rows; ++r) {
    float* s = tile.s.data() + r * CK;
    int64_t n = std::clamp<int64_t>(visible[r] - t0, 0, CK);
    for (int64_t i = n; i < CK; ++i) s[i] = NEG;
    __m256 mv = neg;
    for (int64_t i = 0; i < CK; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + i));
    float m_old = tile.max[r], m = std::max(m_old, hmax(mv));
    for (int64_t i = 0; i < n; ++i) m = s[i] != s[i] ? s[i] : m;  // a NaN score propagates
    if (m == NEG) {  // nothing visible yet in this row
      std::fill(s, s + CK, 0.0f);
      continue;
    }
    mv = _mm256_set1_ps(m);
    __m256 total = _mm256_setzero_ps();
    for (int64_t i = 0; i < CK; i += 8) {
      __m256 p = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
      _mm256_storeu_ps(s + i, p);
      total = _mm256_add_ps(total, p);
    }
    float rescale = m_old == NEG ? 0.0f : std::exp(m_old - m);
    tile.sum[r] = tile.sum[r] * rescale + hsum(total);
    tile.max[r] = m;
    if (rescale != 1.0f) {
      __m256 rv = _mm256_set1_ps(rescale);
      float* acc = tile.acc.data() + r * D;
      for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(acc + d, _mm256_mul_ps(rv, _mm256_loadu_ps(acc + d)));
    }
  }
}

template <typename T>
void attend_tile(const Run& run, const T* q, int64_t q0, int64_t head, T* out, float* lse, Tile& tile) {
  const int64_t D = run.dim, G = run.group, nq = std::min(TQ, run.num_q - q0), rows = nq * G;
  tile.resize(rows, D);
  int64_t visible[TQ * 16];  // per row: keys < visible are visible (rows: query-major, then head)
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      int64_t row = i * G + j, h = head * G + j;
      const T* src = q + ((q0 + i) * run.num_heads + h) * D;
      for (int64_t d = 0; d < D; ++d) tile.q[row * D + d] = static_cast<float>(src[d]) * run.scale;
      visible[row] = run.causal ? run.kv_len - run.num_q + q0 + i + 1 : run.kv_len;
    }
  std::fill(tile.max.begin(), tile.max.end(), NEG);
  std::fill(tile.sum.begin(), tile.sum.end(), 0.0f);
  std::fill(tile.acc.begin(), tile.acc.end(), 0.0f);
  const int64_t last = visible[rows - 1];  // the tile's last row sees the most keys
  for (int64_t t0 = 0; t0 < last; t0 += CK) {
    int64_t n = std::min(CK, run.kv_len - t0);
    load_chunk(run, head, t0, n, tile);
    score_rows(rows, n, tile.q.data(), D, tile.kt.data(), tile.s.data());
    softmax_chunk(rows, t0, visible, D, tile);
    accumulate_rows(rows, n, tile.s.data(), tile.vc.data(), D, tile.acc.data());
  }
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < G; ++j) {
      int64_t row = i * G + j, h = head * G + j;
      float inv = 1.0f / tile.sum[row];
      T* dst = out + ((q0 + i) * run.num_heads + h) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<T>(tile.acc[row * D + d] * inv);
      lse[(q0 + i) * run.num_heads + h] = tile.max[row] + std::log(tile.sum[row]);
    }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> paged_prefill_attention(
    const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& blocks_in,
    int64_t kv_len, bool causal, double scale) {
  check_paged_inputs(q_in, k_cache, v_cache);
  at::Tensor q = q_in.contiguous(), blocks = blocks_in.to(at::kLong).contiguous();
  const int64_t M = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k_cache.size(2), bs = k_cache.size(1);
  TORCH_CHECK(Hq / Hkv <= 16 && D % 16 == 0, "unsupported head shape");
  TORCH_CHECK(kv_len >= 1 && blocks.numel() * bs >= kv_len && (!causal || M <= kv_len), "kv_len does not fit the blocks");
  check_block_ids(blocks.data_ptr<int64_t>(), (kv_len + bs - 1) / bs, k_cache.size(0));
  Run run{reinterpret_cast<const uint16_t*>(k_cache.data_ptr()), reinterpret_cast<const uint16_t*>(v_cache.data_ptr()),
          blocks.data_ptr<int64_t>(), bs, Hkv, D, kv_len, M, Hq, Hq / Hkv, causal, static_cast<float>(scale)};
  at::Tensor out = at::empty({M, Hq, D}, q.options()), lse = at::empty({M, Hq}, q.options().dtype(at::kFloat));
  const int64_t tiles = (M + TQ - 1) / TQ;
  at::parallel_for(0, tiles * Hkv, 1, [&](int64_t i0, int64_t i1) {
    thread_local Tile tile;
    for (int64_t i = i0; i < i1; ++i) {
      // Causal tiles paired first-with-last (0, T-1, 1, T-2, ...): the threads' contiguous
      // shares of items then hold equal numbers of keys.
      int64_t pos = i / Hkv, head = i % Hkv;
      int64_t tile_id = !causal ? pos : (pos % 2 == 0 ? pos / 2 : tiles - 1 - pos / 2);
      if (q.scalar_type() == at::kFloat)
        attend_tile(run, q.data_ptr<float>(), tile_id * TQ, head, out.data_ptr<float>(), lse.data_ptr<float>(), tile);
      else
        attend_tile(run, q.data_ptr<c10::BFloat16>(), tile_id * TQ, head, out.data_ptr<c10::BFloat16>(),
                    lse.data_ptr<float>(), tile);
    }
  });
  return {out, lse};
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("paged_prefill_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor blocks, int kv_len, "
        "bool causal, float scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) { m.impl("paged_prefill_attention", &paged_prefill_attention); }

}  // namespace parrot
