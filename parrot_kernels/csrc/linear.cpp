// bf16-weight linear: y = x @ W^T (+ bias), fp32 accumulation, the output rounded to x's
// dtype once. Output channels in blocks of 16, the blocks split over threads.
//
// Two layouts of the prepacked weight, chosen when the kernels are built (-march=native):
// - AVX2 + FMA: [ceil(N / 16), K, 16] bf16: for each block of 16 output channels, the 16
//   weights of input k are contiguous (in kUnpackOrder, so one load and two unpacks widen
//   them to fp32), and the micro-kernel is an outer product (a broadcast of x[m, k] times 16
//   weights) with no horizontal sums; rows in tiles of 6 (12 accumulators).
// - AVX-512: the same shape with K padded to even, each block stored as [K / 2][16][2]
//   (linear_pairs.h); tiles of 8 rows x 2 blocks, FMA on widened weights, or bf16 dot
//   products where the CPU has AVX-512-BF16.
// Only this file knows the layout: packed_rows reads weight rows back out of it (a tied
// embedding reads the head's copy).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "gemm_tile.h"
#include "linear_pairs.h"
#include "ops.h"
#include "parallel.h"

namespace parrot {
namespace {

constexpr int64_t NB = 16;  // output channels per packed block
#ifdef PARROT_LINEAR_PAIRS
constexpr int64_t KSTEP = 2;  // K padded to pairs
constexpr int64_t MR = pairs::kMaxRows;
constexpr int64_t UB = pairs::kBlocksPerTile;  // blocks per tile (a thread's unit of work)
#else
constexpr int64_t KSTEP = 1;
constexpr int64_t MR = 6;   // rows per micro-kernel tile
constexpr int64_t UB = 1;
#endif
constexpr int64_t M_CHUNK = 96;  // rows per pass over the weight (keeps x's chunk in L2)

#ifndef PARROT_LINEAR_PAIRS
// One row (decode at batch 1): memory-bound, so four independent accumulator pairs keep
// enough loads in flight (one pair would wait on the FMA latency every k).
void tile_row(const float* x, const uint16_t* w, int64_t K, float* out, const uint16_t* next) {
  __m256 c[8];
  for (auto& v : c) v = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    if (next) {  // two cache lines of the next block per four k
      _mm_prefetch(reinterpret_cast<const char*>(next + k * NB), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(next + (k + 2) * NB), _MM_HINT_T0);
    }
    for (int u = 0; u < 4; ++u) {
      __m256 a = _mm256_broadcast_ss(x + k + u), b0, b1;
      load_bf16x16(w + (k + u) * NB, b0, b1);
      c[2 * u] = _mm256_fmadd_ps(a, b0, c[2 * u]);
      c[2 * u + 1] = _mm256_fmadd_ps(a, b1, c[2 * u + 1]);
    }
  }
  for (; k < K; ++k) {
    __m256 a = _mm256_broadcast_ss(x + k), b0, b1;
    load_bf16x16(w + k * NB, b0, b1);
    c[0] = _mm256_fmadd_ps(a, b0, c[0]);
    c[1] = _mm256_fmadd_ps(a, b1, c[1]);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[4], c[6])));
  _mm256_storeu_ps(out + 8, _mm256_add_ps(_mm256_add_ps(c[1], c[3]), _mm256_add_ps(c[5], c[7])));
}
#endif

// `next`: the weights of the thread's next block, prefetched during the last pass over
// this one (with several row tiles, the later passes compute from cache while the
// memory would idle). x rows are ldx apart; K is the packed (padded) K.
template <typename X>
void run_tile(int rows, const X* x, int64_t ldx, const uint16_t* w, int64_t blocks, int64_t K, float* out,
              int64_t ldo, const uint16_t* next) {
#ifdef PARROT_LINEAR_PAIRS
  pairs::tiles(rows, x, ldx, w, blocks, K / 2, out, ldo, next);
#else
  static_assert(std::is_same_v<X, float>, "the AVX2 tiles take fp32 x");
  if (rows == 1) return tile_row(x, w, K, out, next);
  gemm_rows<false>(rows, x, ldx, w, NB, K, out, ldo, reinterpret_cast<const char*>(next), NB * sizeof(uint16_t));
#endif
}

// dst[0:width] = acc (+ bias), rounded to T as torch rounds (8 lanes at a time).
template <typename T>
void store_row(const float* acc, const float* bias, int64_t width, T* dst) {
  int64_t j = 0;
  for (; j + 8 <= width; j += 8) {
    __m256 v = _mm256_loadu_ps(acc + j);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    if constexpr (std::is_same_v<T, float>) _mm256_storeu_ps(dst + j, v);
    else store_bf16(reinterpret_cast<uint16_t*>(dst + j), v);
  }
  for (; j < width; ++j) {
    float v = acc[j] + (bias ? bias[j] : 0.0f);
    if constexpr (std::is_same_v<T, float>) dst[j] = v;
    else dst[j] = c10::BFloat16(v);
  }
}

// One unit (UB blocks of 16 output channels from n0, fewer at the end) for rows [m0, m1):
// fp32 tile results, then bias and the rounding to the output dtype.
template <typename T, typename X>
void unit(const X* x, int64_t K, const uint16_t* w, int64_t blocks, const uint16_t* next, const float* bias,
          int64_t n0, int64_t N, int64_t m0, int64_t m1, T* y) {
  alignas(64) float acc[MR * NB * UB];
  int64_t width = std::min(blocks * NB, N - n0);
  int64_t num_tiles = (m1 - m0 + MR - 1) / MR, tile_rows = (m1 - m0 + num_tiles - 1) / num_tiles;
  for (int64_t m = m0; m < m1; m += tile_rows) {  // equal tiles: 8 rows in 6-row tiles run as 4 + 4, not 6 + 2
    int rows = static_cast<int>(std::min(tile_rows, m1 - m));
    run_tile(rows, x + m * K, K, w, blocks, K, acc, NB * UB, m + tile_rows >= m1 ? next : nullptr);
    for (int r = 0; r < rows; ++r) store_row(acc + r * NB * UB, bias ? bias + n0 : nullptr, width, y + (m + r) * N + n0);
  }
}

// The rows [0, M) of y in passes of M_CHUNK rows (keeps x's chunk in L2) over all units, as
// one list of (pass, unit) items claimed by the threads as they come free (parallel.h), in
// runs of about an eighth of a thread's share; a unit prefetches the next of its run. One
// parallel region a call: a thread waits for the other once, not once a pass (M = 256:
// 169-185 GFLOP/s, from 120-154 with a region a pass).
template <typename X>
void linear_rows(const X* xp, int64_t ldx, const uint16_t* wp, int64_t blocks, const float* bp, int64_t N,
                 int64_t M, at::Tensor& y) {
  const int64_t units = (blocks + UB - 1) / UB, passes = (M + M_CHUNK - 1) / M_CHUNK;
  const int64_t run = units / (8 * at::get_num_threads());
  parallel_items(passes * units, run, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t pass = i / units, u = i % units, m0 = pass * M_CHUNK, m1 = std::min(M, m0 + M_CHUNK);
      const uint16_t* w = wp + u * UB * ldx * NB;
      const int64_t nb = std::min(UB, blocks - u * UB);
      const uint16_t* next = u + 1 < units && i + 1 < i1 ? w + UB * ldx * NB : nullptr;
      if (y.scalar_type() == at::kFloat) unit(xp, ldx, w, nb, next, bp, u * UB * NB, N, m0, m1, y.data_ptr<float>());
      else unit(xp, ldx, w, nb, next, bp, u * UB * NB, N, m0, m1, y.data_ptr<c10::BFloat16>());
    }
  });
}

// x as the tiles read it: [M, padded K] rows of X (x's own memory where it already is that).
// A bf16 x is widened here for fp32 tiles (a torch conversion per call cost more in dispatch);
// bf16 tiles take only a bf16 x.
template <typename X>
const X* staged(const at::Tensor& x, int64_t K_padded, std::vector<X>& buffer) {
  constexpr bool fp32_tiles = std::is_same_v<X, float>;
  const bool fp32_x = x.scalar_type() == at::kFloat;
  TORCH_CHECK(fp32_tiles || !fp32_x, "bf16 tiles take a bf16 x");
  const int64_t M = x.size(0), K = x.size(1);
  if (fp32_x == fp32_tiles && x.is_contiguous() && K == K_padded) return reinterpret_cast<const X*>(x.data_ptr());
  buffer.assign(M * K_padded, X(0));
  at::Tensor src = x.contiguous();
  for (int64_t m = 0; m < M; ++m) {
    X* dst = buffer.data() + m * K_padded;
    if constexpr (fp32_tiles) {
      if (fp32_x) {
        std::copy_n(src.data_ptr<float>() + m * K, K, dst);
        continue;
      }
    }
    const uint16_t* row = reinterpret_cast<const uint16_t*>(src.data_ptr()) + m * K;
    if constexpr (fp32_tiles) {
      int64_t k = 0;
      for (; k + 8 <= K; k += 8) _mm256_storeu_ps(dst + k, load_bf16(row + k));
      for (; k < K; ++k) dst[k] = bf16_to_float(row[k]);
    } else {
      std::copy_n(row, K, dst);
    }
  }
  return buffer.data();
}

int64_t padded_k(int64_t K) { return (K + KSTEP - 1) / KSTEP * KSTEP; }

}  // namespace

at::Tensor pack_linear_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kBFloat16, "weight must be 2-D bf16");
  int64_t N = weight.size(0), K = weight.size(1), blocks = (N + NB - 1) / NB, Kp = padded_k(K);
  at::Tensor padded = at::zeros({blocks * NB, Kp}, weight.options());
  padded.narrow(0, 0, N).narrow(1, 0, K).copy_(weight);
#ifdef PARROT_LINEAR_PAIRS
  // [blocks, 16, K/2, 2] -> [blocks, K/2, 16, 2], seen as [blocks, K, 16]
  return padded.view({blocks, NB, Kp / 2, 2}).permute({0, 2, 1, 3}).contiguous().view({blocks, Kp, NB});
#else
  at::Tensor order = at::tensor(std::vector<int64_t>(kUnpackOrder, kUnpackOrder + NB));
  return padded.view({blocks, NB, K}).index_select(1, order).transpose(1, 2).contiguous();  // [blocks, K, 16]
#endif
}

at::Tensor packed_rows(const at::Tensor& packed, const at::Tensor& ids, int64_t K) {
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == NB && packed.size(1) == padded_k(K) &&
                  packed.scalar_type() == at::kBFloat16 && packed.is_contiguous(),
              "packed_rows: not a packed weight of ", K, " inputs");
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == at::kLong, "packed_rows: ids must be 1-D int64");
  const int64_t rows = packed.size(0) * NB, Kp = packed.size(1);
  at::Tensor idx = ids.contiguous(), out = at::empty({ids.size(0), K}, packed.options());
  const int64_t* id = idx.data_ptr<int64_t>();
  const uint16_t* w = reinterpret_cast<const uint16_t*>(packed.data_ptr());
  uint16_t* o = reinterpret_cast<uint16_t*>(out.data_ptr());
  for (int64_t i = 0; i < ids.size(0); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < rows, "packed_rows: id ", id[i], " out of range [0, ", rows, ")");
    const uint16_t* blk = w + (id[i] / NB) * Kp * NB;
    const int64_t j = id[i] % NB;
    for (int64_t k = 0; k < K; ++k) {
#ifdef PARROT_LINEAR_PAIRS
      o[i * K + k] = blk[(k / 2) * 2 * NB + j * 2 + (k % 2)];
#else
      o[i * K + k] = blk[k * NB + kUnpackOrder[j]];
#endif
    }
  }
  return out;
}

at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& packed, int64_t N,
                         const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && packed.dim() == 3 && packed.size(2) == NB, "bad shapes for linear_packed");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat, "x must be bf16 or fp32");
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.is_contiguous(), "packed weight must be contiguous bf16");
  int64_t M = x.size(0), K = x.size(1), blocks = packed.size(0), Kp = padded_k(K);
  TORCH_CHECK(packed.size(1) == Kp && blocks * NB >= N && (blocks - 1) * NB < N, "packed weight does not match x / N");
  at::Tensor bf;
  if (bias.has_value()) bf = bias->to(at::kFloat).contiguous();
  const float* bp = bias.has_value() ? bf.data_ptr<float>() : nullptr;
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(packed.data_ptr());
  at::Tensor y = at::empty({M, N}, x.options());
  thread_local std::vector<float> x_fp32;
#ifdef PARROT_LINEAR_DOT
  thread_local std::vector<uint16_t> x_bf16;
  if (x.scalar_type() == at::kBFloat16 && pairs::dot_products_for_bf16()) {
    linear_rows(staged(x, Kp, x_bf16), Kp, wp, blocks, bp, N, M, y);
    return y;
  }
#endif
  linear_rows(staged(x, Kp, x_fp32), Kp, wp, blocks, bp, N, M, y);
  return y;
}

// The tiles a bf16 x runs on: "avx2", "avx512-fma" or "avx512-dot". `mode` ("auto", "fma",
// "dot"; AVX-512 builds only, "dot" with AVX-512-BF16) sets them first.
std::string linear_tiles(const c10::optional<c10::string_view>& mode) {
#ifdef PARROT_LINEAR_PAIRS
  if (mode.has_value()) {
    const std::string m(*mode);
    TORCH_CHECK(m == "auto" || m == "fma" || m == "dot", "linear_tiles: mode must be auto, fma or dot, got ", m);
#ifndef PARROT_LINEAR_DOT
    TORCH_CHECK(m != "dot", "linear_tiles: this CPU has no AVX-512-BF16 (dot products); its tiles are avx512-fma");
#endif
    pairs::bf16_tiles = m == "fma" ? pairs::Bf16Tiles::fma : m == "dot" ? pairs::Bf16Tiles::dot
                                                                       : pairs::Bf16Tiles::automatic;
  }
  return pairs::dot_products_for_bf16() ? "avx512-dot" : "avx512-fma";
#else
  TORCH_CHECK(!mode.has_value() || *mode == "auto", "linear_tiles: this build has only the AVX2 tiles");
  return "avx2";
#endif
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("linear_tiles(str? mode=None) -> str", &linear_tiles);  // no tensors: one kernel for every key
  m.def("pack_linear_weight(Tensor weight) -> Tensor");
  m.def("packed_rows(Tensor packed, Tensor ids, int k) -> Tensor");
  m.def("linear_packed(Tensor x, Tensor packed, int n, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) {
  m.impl("pack_linear_weight", &pack_linear_weight);
  m.impl("packed_rows", &packed_rows);
  m.impl("linear_packed", &linear_packed);
}

}  // namespace parrot
