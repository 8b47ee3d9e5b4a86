// Decode attention over the paged KV cache, read in place (no gather), AVX2 + FMA (the
// scores and p @ V 16 dims a vector where the CPU has AVX-512).
//
// q: [B, Hq, D] (one query per sequence), caches: [num_blocks, block_size, Hkv, D], bf16.
// block_tables: [B, max_blocks] int32, kv_lens: [B] int32. Work items are (sequence,
// split): an item reads each of its cache rows once for all heads. Within it, a row group
// is the G query heads of one kv head (a divisor of the GQA group when that is larger
// than 8), which share every converted key and value, with G a template parameter so
// their accumulators stay in registers. Long sequences split their keys when there are
// fewer items than threads can keep busy (the partial states merge by log-sum-exp, as
// vLLM's paged attention v2 does).
// Returns out [B, Hq, D] in q's dtype and lse [B, Hq] float32 (base e).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops.h"
#include "paged_checks.h"
#include "parallel.h"
#include "vec.h"

namespace parrot {
namespace {

constexpr int MAX_ROWS = 8;  // query heads attended together (a GQA group, or a divisor of it)
constexpr int MAX_SPLITS = 64;
constexpr int MAX_DIM = 256;
constexpr int CHUNK = 16;  // keys scored before each softmax update
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

struct Shape {
  int64_t num_kv_heads, group, dim, block_size;  // group: query heads per kv head
};

// Partial attention state of one (sequence, row group, split): G rows of D.
struct State {
  float* acc;  // [g, D], unnormalized
  float* max;  // [g]
  float* sum;  // [g]
};

// Horizontal sums of U accumulators (U = 1, 2 or 4) into out[0:U]: one reduction tree for
// all of them (a hsum per score cost as much as the score's FMAs).
template <int U>
static inline void hsum_n(const __m256* a, float* out) {
  if constexpr (U == 4) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  } else if constexpr (U == 2) {
    __m256 h = _mm256_hadd_ps(a[0], a[1]);  // [a0 01, a0 23, a1 01, a1 23 | same for 4..7]
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_hadd_ps(s, s);
    _mm_storel_pi(reinterpret_cast<__m64*>(out), s);
  } else {
    out[0] = hsum(a[0]);
  }
}

#ifdef __AVX512F__
// 16 bf16 -> 16 fp32 (one vector of 16 dims), and a vector folded to 8 lanes (its halves
// added) for the AVX2 reduction trees.
static inline __m512 load_bf16_512(const uint16_t* p) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
static inline __m256 fold(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#endif

// Scores of `n` keys for the G query rows (q pre-scaled, fp32 [G, D]), U keys at a time:
// U * G independent accumulators (in registers: G is a template parameter) hide the FMA
// latency, and each converted key serves all G rows.
template <int G, int U>
void score_keys(int64_t D, const float* q, const uint16_t* const* keys, float* out /*[G, CHUNK]*/) {
#ifdef __AVX512F__  // 16 dims a vector (D % 16 == 0)
  __m512 a[G][U];
  for (int j = 0; j < G; ++j)
    for (int u = 0; u < U; ++u) a[j][u] = _mm512_setzero_ps();
  for (int64_t c = 0; c < D; c += 16) {
    __m512 k[U];
    for (int u = 0; u < U; ++u) k[u] = load_bf16_512(keys[u] + c);
    for (int j = 0; j < G; ++j) {
      __m512 qv = _mm512_loadu_ps(q + j * D + c);
      for (int u = 0; u < U; ++u) a[j][u] = _mm512_fmadd_ps(qv, k[u], a[j][u]);
    }
  }
  for (int j = 0; j < G; ++j) {
    __m256 folded[U];
    for (int u = 0; u < U; ++u) folded[u] = fold(a[j][u]);
    hsum_n<U>(folded, out + j * CHUNK);
  }
#else
  __m256 a[G][U];
  for (int j = 0; j < G; ++j)
    for (int u = 0; u < U; ++u) a[j][u] = _mm256_setzero_ps();
  for (int64_t c = 0; c < D; c += 8) {
    __m256 k[U];
    for (int u = 0; u < U; ++u) k[u] = load_bf16(keys[u] + c);
    for (int j = 0; j < G; ++j) {
      __m256 qv = _mm256_loadu_ps(q + j * D + c);
      for (int u = 0; u < U; ++u) a[j][u] = _mm256_fmadd_ps(qv, k[u], a[j][u]);
    }
  }
  for (int j = 0; j < G; ++j) hsum_n<U>(a[j], out + j * CHUNK);
#endif
}

template <int G>
void score(int64_t D, const float* q, const uint16_t* const* keys, int n, float* out /*[G, CHUNK]*/) {
  // U * G accumulators + U keys + a query: 17 registers at G = 3 (with AVX2's 16 one
  // spills; AVX-512 has 32), <= 15 else
  constexpr int U = G <= 3 ? 4 : G <= 6 ? 2 : 1;
  int i = 0;
  for (; i + U <= n; i += U) score_keys<G, U>(D, q, keys + i, out + i);
  for (; i < n; ++i) score_keys<G, 1>(D, q, keys + i, out + i);
}

// Online softmax update with one chunk of scores, then acc += p @ V.
template <int G>
void accumulate(int64_t D, float* scores, const uint16_t* const* values, int n, State st) {
  alignas(32) float p[G][CHUNK];
  for (int j = 0; j < G; ++j) {
    float* sj = scores + j * CHUNK;
    for (int i = n; i < CHUNK; ++i) sj[i] = NEG_INF;
    __m256 s0 = _mm256_loadu_ps(sj), s1 = _mm256_loadu_ps(sj + 8);
    __m256 nan = _mm256_or_ps(_mm256_cmp_ps(s0, s0, _CMP_UNORD_Q), _mm256_cmp_ps(s1, s1, _CMP_UNORD_Q));
    float m = _mm256_movemask_ps(nan) ? std::numeric_limits<float>::quiet_NaN()  // NaN propagates
                                      : std::max(st.max[j], hmax(_mm256_max_ps(s0, s1)));
    float rescale = st.max[j] == NEG_INF ? 0.0f : std::exp(st.max[j] - m);
    __m256 mv = _mm256_set1_ps(m);
    __m256 p0 = exp_ps(_mm256_sub_ps(s0, mv));
    __m256 p1 = exp_ps(_mm256_sub_ps(s1, mv));
    _mm256_store_ps(p[j], p0);
    _mm256_store_ps(p[j] + 8, p1);
    st.sum[j] = st.sum[j] * rescale + hsum(_mm256_add_ps(p0, p1));
    st.max[j] = m;
    if (rescale != 1.0f) {
      __m256 r = _mm256_set1_ps(rescale);
      for (int64_t c = 0; c < D; c += 8) _mm256_storeu_ps(st.acc + j * D + c, _mm256_mul_ps(r, _mm256_loadu_ps(st.acc + j * D + c)));
    }
  }
  // 16 dims of every row at a time (2 * G accumulators), and even and odd keys in separate
  // accumulators where registers allow (G <= 3): each broadcast weight serves 16 lanes,
  // and no chain of n dependent FMAs waits on the FMA latency. (At G = 7-8, 2G + 3
  // registers spill a few; measured only at G = 3.)
#ifdef __AVX512F__  // the same with one vector for the 16 dims
  for (int64_t c = 0; c < D; c += 16) {
    constexpr int CHAINS = G <= 4 ? 2 : 1;
    __m512 a[CHAINS][G];
    for (int j = 0; j < G; ++j) {
      a[0][j] = _mm512_loadu_ps(st.acc + j * D + c);
      if constexpr (CHAINS == 2) a[CHAINS - 1][j] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + CHAINS <= n; i += CHAINS)
      for (int u = 0; u < CHAINS; ++u) {
        __m512 v = load_bf16_512(values[i + u] + c);
        for (int j = 0; j < G; ++j) a[u][j] = _mm512_fmadd_ps(_mm512_set1_ps(p[j][i + u]), v, a[u][j]);
      }
    for (; i < n; ++i) {
      __m512 v = load_bf16_512(values[i] + c);
      for (int j = 0; j < G; ++j) a[0][j] = _mm512_fmadd_ps(_mm512_set1_ps(p[j][i]), v, a[0][j]);
    }
    for (int j = 0; j < G; ++j)
      _mm512_storeu_ps(st.acc + j * D + c, CHAINS == 2 ? _mm512_add_ps(a[0][j], a[CHAINS - 1][j]) : a[0][j]);
  }
#else
  constexpr int CHAINS = G <= 3 ? 2 : 1;
  for (int64_t c = 0; c < D; c += 16) {
    __m256 a[CHAINS][G][2];
    for (int j = 0; j < G; ++j)
      for (int h = 0; h < 2; ++h) {
        a[0][j][h] = _mm256_loadu_ps(st.acc + j * D + c + 8 * h);
        if constexpr (CHAINS == 2) a[CHAINS - 1][j][h] = _mm256_setzero_ps();
      }
    int i = 0;
    for (; i + CHAINS <= n; i += CHAINS)
      for (int u = 0; u < CHAINS; ++u) {
        __m256 v0 = load_bf16(values[i + u] + c), v1 = load_bf16(values[i + u] + c + 8);
        for (int j = 0; j < G; ++j) {
          __m256 w = _mm256_broadcast_ss(&p[j][i + u]);
          a[u][j][0] = _mm256_fmadd_ps(w, v0, a[u][j][0]);
          a[u][j][1] = _mm256_fmadd_ps(w, v1, a[u][j][1]);
        }
      }
    for (; i < n; ++i) {
      __m256 v0 = load_bf16(values[i] + c), v1 = load_bf16(values[i] + c + 8);
      for (int j = 0; j < G; ++j) {
        __m256 w = _mm256_broadcast_ss(&p[j][i]);
        a[0][j][0] = _mm256_fmadd_ps(w, v0, a[0][j][0]);
        a[0][j][1] = _mm256_fmadd_ps(w, v1, a[0][j][1]);
      }
    }
    for (int j = 0; j < G; ++j)
      for (int h = 0; h < 2; ++h) {
        __m256 sum = CHAINS == 2 ? _mm256_add_ps(a[0][j][h], a[CHAINS - 1][j][h]) : a[0][j][h];
        _mm256_storeu_ps(st.acc + j * D + c + 8 * h, sum);
      }
  }
#endif
}

// Merge the S partial states of one row group, normalize, write out [G, D] and lse [G].
template <int G, typename T>
void finish(int64_t D, const State* parts, int64_t num_splits, T* out, float* lse) {
  for (int j = 0; j < G; ++j) {
    float m = NEG_INF;
    for (int64_t p = 0; p < num_splits; ++p) m = std::max(m, parts[p].max[j]);
    float total = 0.0f, w[MAX_SPLITS];
    for (int64_t p = 0; p < num_splits; ++p) {
      w[p] = parts[p].max[j] == NEG_INF ? 0.0f : std::exp(parts[p].max[j] - m);
      total += w[p] * parts[p].sum[j];
    }
    for (int64_t d = 0; d < D; ++d) {
      float v = 0.0f;
      for (int64_t p = 0; p < num_splits; ++p) v += w[p] * parts[p].acc[j * D + d];
      out[j * D + d] = static_cast<T>(v / total);
    }
    lse[j] = m + std::log(total);
  }
}

int64_t choose_splits(int64_t items, int64_t max_len) {
  int64_t threads = at::get_num_threads(), want = 4 * threads;
  if (items >= want) return 1;
  int64_t by_len = std::max<int64_t>(1, max_len / 256);  // >= 256 keys per split
  return std::min<int64_t>({(want + items - 1) / items, by_len, MAX_SPLITS});
}

// Query heads per row group: the largest divisor of the GQA group that is <= MAX_ROWS.
int64_t rows_per_group(int64_t group) {
  for (int64_t r = std::min<int64_t>(group, MAX_ROWS); r > 1; --r)
    if (group % r == 0) return r;
  return 1;
}

struct Problem {
  Shape s;
  int64_t B, Hq, R, S, G;  // R row groups of G query heads per sequence, S splits
  const uint16_t *k, *v;
  const int32_t *tables, *lens;
  int64_t table_stride;
  float scale;
  float *acc, *stats;

  State state(int64_t b, int64_t r, int64_t p) const {  // sequence b, row group r, split p
    int64_t item = (b * R + r) * S + p;
    float* st = stats + item * 2 * G;
    return State{acc + item * G * s.dim, st, st + G};
  }
};

// Keys [t0, t1) of sequence b for all its row groups: each chunk of cache rows (all kv
// heads of a position are contiguous) is read once, by one thread, for every head.
template <int G, typename T>
void attend_range(const Problem& pb, int64_t b, const T* q_seq, int64_t t0, int64_t t1, int64_t split) {
  const Shape& s = pb.s;
  const int64_t D = s.dim, row_stride = s.num_kv_heads * D, heads_per_kv = pb.Hq / s.num_kv_heads;
  thread_local std::vector<float> q_buf;
  q_buf.resize(pb.Hq * D);
  float* q = q_buf.data();  // [Hq, D], scaled
  for (int64_t e = 0; e < pb.Hq * D; ++e) q[e] = static_cast<float>(q_seq[e]) * pb.scale;
  const int32_t* table = pb.tables + b * pb.table_stride;
  auto rows_at = [&](int64_t t, int64_t* slots) {  // cache row offsets of keys [t, t + CHUNK)
    int n = 0;
    int64_t block = t / s.block_size, offset = t % s.block_size;  // one division per chunk
    for (; n < CHUNK && t < t1; ++n, ++t) {
      slots[n] = (static_cast<int64_t>(table[block]) * s.block_size + offset) * row_stride;
      if (++offset == s.block_size) offset = 0, ++block;
    }
    return n;
  };
  for (int64_t r = 0; r < pb.R; ++r) {
    State st = pb.state(b, r, split);
    for (int j = 0; j < G; ++j) st.max[j] = NEG_INF, st.sum[j] = 0.0f;
    std::fill(st.acc, st.acc + G * D, 0.0f);
  }
  alignas(32) float scores[G * CHUNK];
  int64_t slots[CHUNK], next_slots[CHUNK];
  const uint16_t* keys[CHUNK];
  const uint16_t* values[CHUNK];
  int n = rows_at(t0, slots);
  for (int64_t t = t0; t < t1; t += CHUNK) {
    // The next chunk's rows are fetched (into L2) while this one computes: block tables
    // scatter them, so the hardware prefetcher cannot guess them. Into L1 (T0) they held
    // the core's fill buffers: perf put ~half of the attention's samples on the
    // prefetches; T1 cut the attention's samples by 5-8% against the projections'.
    int next = t + CHUNK < t1 ? rows_at(t + CHUNK, next_slots) : 0;
    for (int64_t r = 0; r < pb.R; ++r) {
      // a share of them before each row group: a burst of every prefetch at once fills
      // the core's miss buffers and stalls it until they land
      for (int i = r * next / pb.R; i < (r + 1) * next / pb.R; ++i)
        for (int64_t byte = 0; byte < row_stride * 2; byte += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(pb.k + next_slots[i]) + byte, _MM_HINT_T1);
          _mm_prefetch(reinterpret_cast<const char*>(pb.v + next_slots[i]) + byte, _MM_HINT_T1);
        }
      int64_t head = r * G / heads_per_kv;
      for (int i = 0; i < n; ++i) keys[i] = pb.k + slots[i] + head * D, values[i] = pb.v + slots[i] + head * D;
      score<G>(D, q + r * G * D, keys, n, scores);
      accumulate<G>(D, scores, values, n, pb.state(b, r, split));
    }
    std::copy(next_slots, next_slots + next, slots);
    n = next;
  }
}

template <int G, typename T>
void run(const Problem& pb, const T* q, T* out, float* lse) {
  const int64_t D = pb.s.dim, S = pb.S;
  parallel_items(pb.B * S, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t b = i / S, p = i % S, len = pb.lens[b];
      int64_t per = (len + S - 1) / S, t0 = std::min(len, p * per), t1 = std::min(len, t0 + per);
      attend_range<G>(pb, b, q + b * pb.Hq * D, t0, t1, p);
      if (S > 1) continue;
      for (int64_t r = 0; r < pb.R; ++r) {
        State st = pb.state(b, r, 0);
        int64_t row = b * pb.Hq + r * G;
        finish<G>(D, &st, 1, out + row * D, lse + row);
      }
    }
  });
  if (S == 1) return;
  at::parallel_for(0, pb.B * pb.R, 1, [&](int64_t i0, int64_t i1) {
    State parts[MAX_SPLITS];
    for (int64_t i = i0; i < i1; ++i) {
      int64_t b = i / pb.R, r = i % pb.R;
      for (int64_t p = 0; p < S; ++p) parts[p] = pb.state(b, r, p);
      int64_t row = b * pb.Hq + r * G;
      finish<G>(D, parts, S, out + row * D, lse + row);
    }
  });
}

template <typename T>
void dispatch(const Problem& pb, const T* q, T* out, float* lse) {
  switch (pb.G) {
    case 1: return run<1>(pb, q, out, lse);
    case 2: return run<2>(pb, q, out, lse);
    case 3: return run<3>(pb, q, out, lse);
    case 4: return run<4>(pb, q, out, lse);
    case 5: return run<5>(pb, q, out, lse);
    case 6: return run<6>(pb, q, out, lse);
    case 7: return run<7>(pb, q, out, lse);
    default: return run<8>(pb, q, out, lse);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> paged_decode_attention(
    const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& block_tables, const at::Tensor& kv_lens, double scale) {
  check_paged_inputs(q_in, k_cache, v_cache);
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && kv_lens.scalar_type() == at::kInt, "int32 tables");
  const int64_t B = q_in.size(0), Hq = q_in.size(1), D = q_in.size(2), Hkv = k_cache.size(2);
  TORCH_CHECK(D % 16 == 0 && D <= MAX_DIM, "unsupported head shape: head_dim must be a multiple of 16, <= 256");
  at::Tensor q = q_in.contiguous(), tables = block_tables.contiguous(), lens = kv_lens.contiguous();
  TORCH_CHECK(lens.numel() == B && tables.size(0) == B && B >= 1, "one block table and kv_len per sequence");
  const int64_t G = rows_per_group(Hq / Hkv), R = Hq / G;
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) max_len = std::max<int64_t>(max_len, lens.data_ptr<int32_t>()[b]);
  TORCH_CHECK(max_len <= tables.size(1) * k_cache.size(1), "a kv_len exceeds its block table");
  for (int64_t b = 0; b < B; ++b)  // every block a sequence reads is in the cache
    check_block_ids(tables.data_ptr<int32_t>() + b * tables.size(1),
                    (lens.data_ptr<int32_t>()[b] + k_cache.size(1) - 1) / k_cache.size(1), k_cache.size(0));
  const int64_t S = choose_splits(B, max_len);
  auto f32 = q.options().dtype(at::kFloat);
  at::Tensor acc = at::empty({B * R * S, G * D}, f32), stats = at::empty({B * R * S, 2, G}, f32);
  at::Tensor out = at::empty({B, Hq, D}, q.options()), lse = at::empty({B, Hq}, f32);
  Problem pb{Shape{Hkv, Hq / Hkv, D, k_cache.size(1)}, B, Hq, R, S, G,
             reinterpret_cast<const uint16_t*>(k_cache.data_ptr()), reinterpret_cast<const uint16_t*>(v_cache.data_ptr()),
             tables.data_ptr<int32_t>(), lens.data_ptr<int32_t>(), tables.size(1), static_cast<float>(scale),
             acc.data_ptr<float>(), stats.data_ptr<float>()};
  if (q.scalar_type() == at::kFloat) dispatch(pb, q.data_ptr<float>(), out.data_ptr<float>(), lse.data_ptr<float>());
  else dispatch(pb, q.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), lse.data_ptr<float>());
  return {out, lse};
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, "
        "Tensor kv_lens, float scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }

}  // namespace parrot
