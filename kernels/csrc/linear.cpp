// bf16-weight linear for AVX2 CPUs (no AVX-512-BF16, no AMX): y = x @ W^T (+ bias).
//
// The weight is prepacked once as [ceil(N / 16), K, 16] bf16: for each block of 16 output
// channels, the 16 weights of input k are contiguous (in kUnpackOrder, so one load and two
// unpacks widen them to fp32), and the micro-kernel is an outer product (a broadcast of
// x[m, k] times 16 weights) with no horizontal sums. Accumulation is fp32; the output is
// rounded to x's dtype once.
// Rows are taken in tiles of 6 (12 accumulators), output blocks are split over threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "gemm_tile.h"
#include "ops.h"

namespace parrot {
namespace {

constexpr int64_t NB = 16;  // output channels per packed block
constexpr int64_t MR = 6;   // rows per micro-kernel tile
constexpr int64_t M_CHUNK = 96;  // rows per pass over the weight (keeps x's chunk in L2)

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

// `next`: the weights of the thread's next block, prefetched during the last pass over
// this one (with several row tiles, the later passes compute from cache while the
// memory would idle).
void run_tile(int rows, const float* x, int64_t ldx, const uint16_t* w, int64_t K, float* out, int64_t ldo,
              const uint16_t* next) {
  switch (rows) {
    case 1: return tile_row(x, w, K, out, next);
    default: return gemm_rows<false>(rows, x, ldx, w, NB, K, out, ldo,
                                     reinterpret_cast<const char*>(next), NB * sizeof(uint16_t));
  }
}

// One block of 16 output channels for rows [m0, m1): fp32 tile results, then bias and
// the rounding to the output dtype.
template <typename T>
void block(const float* x, int64_t K, const uint16_t* w, const uint16_t* next, const float* bias, int64_t n0,
           int64_t N, int64_t m0, int64_t m1, T* y) {
  alignas(32) float acc[MR * NB];
  int64_t width = std::min(NB, N - n0);
  int64_t num_tiles = (m1 - m0 + MR - 1) / MR, tile_rows = (m1 - m0 + num_tiles - 1) / num_tiles;
  for (int64_t m = m0; m < m1; m += tile_rows) {  // equal tiles: 8 rows run as 4 + 4, not 6 + 2
    int rows = static_cast<int>(std::min(tile_rows, m1 - m));
    run_tile(rows, x + m * K, K, w, K, acc, NB, m + tile_rows >= m1 ? next : nullptr);
    for (int r = 0; r < rows; ++r) {
      T* dst = y + (m + r) * N + n0;
      for (int64_t j = 0; j < width; ++j) {
        float v = acc[r * NB + j] + (bias ? bias[n0 + j] : 0.0f);
        if constexpr (std::is_same_v<T, float>) dst[j] = v;
        else dst[j] = c10::BFloat16(v);
      }
    }
  }
}

}  // namespace

at::Tensor pack_linear_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kBFloat16, "weight must be 2-D bf16");
  int64_t N = weight.size(0), K = weight.size(1), blocks = (N + NB - 1) / NB;
  at::Tensor padded = at::zeros({blocks * NB, K}, weight.options());
  padded.narrow(0, 0, N).copy_(weight);
  at::Tensor order = at::tensor(std::vector<int64_t>(kUnpackOrder, kUnpackOrder + NB));
  return padded.view({blocks, NB, K}).index_select(1, order).transpose(1, 2).contiguous();  // [blocks, K, 16]
}

at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& packed, int64_t N,
                         const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && packed.dim() == 3 && packed.size(2) == NB, "bad shapes for linear_packed");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat, "x must be bf16 or fp32");
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.is_contiguous(), "packed weight must be contiguous bf16");
  int64_t M = x.size(0), K = x.size(1), blocks = packed.size(0);
  TORCH_CHECK(packed.size(1) == K && blocks * NB >= N && (blocks - 1) * NB < N, "packed weight does not match x / N");
  // x in fp32 for the tiles: a bf16 x is widened here (a torch conversion per call cost
  // more in dispatch than its work at decode sizes)
  thread_local std::vector<float> widened;
  at::Tensor xf;
  const float* xp;
  if (x.scalar_type() == at::kBFloat16 && x.is_contiguous()) {
    widened.resize(M * K);
    const uint16_t* src = reinterpret_cast<const uint16_t*>(x.data_ptr());
    int64_t e = 0;
    for (; e + 8 <= M * K; e += 8) _mm256_storeu_ps(widened.data() + e, load_bf16(src + e));
    for (; e < M * K; ++e) widened[e] = bf16_to_float(src[e]);
    xp = widened.data();
  } else {
    xf = x.to(at::kFloat).contiguous();
    xp = xf.data_ptr<float>();
  }
  at::Tensor bf;
  if (bias.has_value()) bf = bias->to(at::kFloat).contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  const float* bp = bias.has_value() ? bf.data_ptr<float>() : nullptr;
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(packed.data_ptr());
  for (int64_t m0 = 0; m0 < M; m0 += M_CHUNK) {
    int64_t m1 = std::min(M, m0 + M_CHUNK);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const uint16_t* w = wp + b * K * NB;
        const uint16_t* next = b + 1 < b1 ? w + K * NB : nullptr;
        if (y.scalar_type() == at::kFloat) block(xp, K, w, next, bp, b * NB, N, m0, m1, y.data_ptr<float>());
        else block(xp, K, w, next, bp, b * NB, N, m0, m1, y.data_ptr<c10::BFloat16>());
      }
    });
  }
  return y;
}

TORCH_LIBRARY_FRAGMENT(parrot, m) {
  m.def("pack_linear_weight(Tensor weight) -> Tensor");
  m.def("linear_packed(Tensor x, Tensor packed, int n, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(parrot, CPU, m) {
  m.impl("pack_linear_weight", &pack_linear_weight);
  m.impl("linear_packed", &linear_packed);
}

}  // namespace parrot
