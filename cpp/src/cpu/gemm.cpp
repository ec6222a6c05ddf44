// Register-tiled matrix products for the CPU convolution (the interface and the order of the sums: gemm.hpp).
//
// Why not the BLAS: the convolution's products are small and flat (a block of 264 output positions times the
// 32-64 output channels of our layers, over 800-1600 taps), where OpenBLAS reached 53 GFLOP/s on one core of
// an AMD EPYC (Zen 4, AVX2) against 80 on large squares: it packs both operands on every call, and its kernels
// sum some columns in another order than others (the convolution had to pad each block with zero columns to
// keep tiled inference exact). Here the convolution builds B already packed, A is read where it lies, and every
// output is one multiply-add chain. The same 4 x 24 tile loop reached 71-77 GFLOP/s on that core.
//
// Micro-kernels: a tile of C stays in registers for the whole sum over k; per k, NR / 8 vector loads of the B
// panel, MR broadcasts of A and MR * NR / 8 fused multiply-adds.
//   wide   (4 x 24): 12 accumulators, 3 loads + 4 broadcasts per 12 FMAs (forward and backward-data)
//   narrow (6 x 16): 12 accumulators, 2 loads + 6 broadcasts per 12 FMAs (backward-weight: C is taps x channels;
//                    A's rows, the taps, read in place from the convolution's input one output row at a time)
//   wide, taps (4 x 24): the wide kernel with B's row k read in place at base + off[k] (the convolution's input,
//                        no packing; one more load, the offset, per k); with AVX-512 and K >= 256, 8 x 48 of
//                        16-wide vectors (below)
// With 16 vector registers both leave room for the B vectors and one broadcast. The AVX2 kernels are chosen at
// run time when the processor has AVX2 and FMA; elsewhere (or with MAGMASR_CPU_KERNELS=generic) portable C++
// loops compute the same ordered sums.
#include "cpu/gemm.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MAGMASR_GEMM_AVX2 1
#endif

namespace magmasr::cpu {
namespace {

// A micro-kernel: C[MR, NR] (pitch ldc) = or += sum over k of A(i, k) * B(k, t). A's row i starts at a + i * rsa,
// or with row offsets `aoff` at a + aoff[i] (the taps of a convolution's input, read in place), and steps by csa,
// and by `skip` more after every `seg` steps (A's row read in segments: a convolution's output rows, without the
// columns between them; seg = K for a plain row); B's row k is bp + k * NR (a packed panel) or, with tap offsets
// `off`, bp + off[k] (likewise). Only gemm_narrow_taps reads A in segments: the wide kernels (4 x 24, 8 x 48) are
// always given one (seg = K, skip = 0) and ignore them.
using MicroKernel = void (*)(int64_t K, const float* a, int64_t rsa, int64_t csa, int64_t seg, int64_t skip,
                             const int64_t* aoff, const float* bp, const int64_t* off, float* c, int64_t ldc,
                             bool accumulate);

inline const float* a_row(const float* a, int64_t rsa, const int64_t* aoff, int i) {
  return aoff ? a + aoff[i] : a + i * rsa;
}

template <int NR, bool kTaps>
inline const float* b_row(const float* bp, const int64_t* off, int64_t k) {
  return kTaps ? bp + off[k] : bp + k * NR;
}

template <int MR, int NR, bool kTaps>
void micro_generic(int64_t K, const float* a, int64_t rsa, int64_t csa, int64_t seg, int64_t skip, const int64_t* aoff,
                   const float* bp, const int64_t* off, float* c, int64_t ldc, bool accumulate) {
  const float* rows[MR];
  for (int i = 0; i < MR; ++i) rows[i] = a_row(a, rsa, aoff, i);
  float acc[MR][NR] = {};
  for (int64_t k0 = 0; k0 < K; k0 += seg) {
    const int64_t k1 = std::min(K, k0 + seg);
    for (int64_t k = k0; k < k1; ++k) {
      const float* b = b_row<NR, kTaps>(bp, off, k);
      for (int i = 0; i < MR; ++i) {
        const float ai = *rows[i];
        rows[i] += csa;
        for (int t = 0; t < NR; ++t) acc[i][t] += ai * b[t];
      }
    }
    for (int i = 0; i < MR; ++i) rows[i] += skip;
  }
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NR; ++t) c[i * ldc + t] = accumulate ? c[i * ldc + t] + acc[i][t] : acc[i][t];
}

#ifdef MAGMASR_GEMM_AVX2
#define MAGMASR_AVX2 __attribute__((target("avx2,fma")))

MAGMASR_AVX2 inline void store_row(float* c, __m256 v, bool accumulate) {
  _mm256_storeu_ps(c, accumulate ? _mm256_add_ps(_mm256_loadu_ps(c), v) : v);
}

// Row i of a tile: broadcast A(i, k), multiply-add it into the row's accumulators with the panel's vectors.
#define MAGMASR_ROW3(i)                                    \
  {                                                        \
    const __m256 s = _mm256_broadcast_ss(a##i);            \
    c##i##0 = _mm256_fmadd_ps(s, b0, c##i##0);             \
    c##i##1 = _mm256_fmadd_ps(s, b1, c##i##1);             \
    c##i##2 = _mm256_fmadd_ps(s, b2, c##i##2);             \
    a##i += csa;                                           \
  }
#define MAGMASR_ROW2(i)                                    \
  {                                                        \
    const __m256 s = _mm256_broadcast_ss(a##i);            \
    c##i##0 = _mm256_fmadd_ps(s, b0, c##i##0);             \
    c##i##1 = _mm256_fmadd_ps(s, b1, c##i##1);             \
    a##i += csa;                                           \
  }

template <bool kTaps>
MAGMASR_AVX2 void micro_avx2_4x24(int64_t K, const float* a, int64_t rsa, int64_t csa, int64_t /*seg*/,
                                  int64_t /*skip*/, const int64_t* aoff, const float* bp, const int64_t* off, float* c,
                                  int64_t ldc, bool accumulate) {
  const float *a0 = a_row(a, rsa, aoff, 0), *a1 = a_row(a, rsa, aoff, 1), *a2 = a_row(a, rsa, aoff, 2),
              *a3 = a_row(a, rsa, aoff, 3);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  for (int64_t k = 0; k < K; ++k) {
    const float* b = b_row<24, kTaps>(bp, off, k);
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16);
    MAGMASR_ROW3(0)
    MAGMASR_ROW3(1)
    MAGMASR_ROW3(2)
    MAGMASR_ROW3(3)
  }
  const __m256 rows[4][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
  for (int i = 0; i < 4; ++i)
    for (int v = 0; v < 3; ++v) store_row(c + i * ldc + 8 * v, rows[i][v], accumulate);
}

MAGMASR_AVX2 void micro_avx2_6x16(int64_t K, const float* a, int64_t rsa, int64_t csa, int64_t seg, int64_t skip,
                                  const int64_t* aoff, const float* bp, const int64_t* /*off*/, float* c, int64_t ldc,
                                  bool accumulate) {
  const float *a0 = a_row(a, rsa, aoff, 0), *a1 = a_row(a, rsa, aoff, 1), *a2 = a_row(a, rsa, aoff, 2),
              *a3 = a_row(a, rsa, aoff, 3), *a4 = a_row(a, rsa, aoff, 4), *a5 = a_row(a, rsa, aoff, 5);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k0 = 0; k0 < K; k0 += seg) {
    const int64_t k1 = std::min(K, k0 + seg);
    for (int64_t k = k0; k < k1; ++k) {
      const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
      bp += 16;
      MAGMASR_ROW2(0)
      MAGMASR_ROW2(1)
      MAGMASR_ROW2(2)
      MAGMASR_ROW2(3)
      MAGMASR_ROW2(4)
      MAGMASR_ROW2(5)
    }
    a0 += skip; a1 += skip; a2 += skip; a3 += skip; a4 += skip; a5 += skip;
  }
  const __m256 rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < 6; ++i)
    for (int v = 0; v < 2; ++v) store_row(c + i * ldc + 8 * v, rows[i][v], accumulate);
}
// 8 x 48 with AVX-512 (taps only): 16-wide vectors, 24 accumulators in the 32 registers; per k, 3 loads of B (48
// columns) and 8 broadcasts for 24 fused multiply-adds. Each lane is the same multiply-add chain as in the AVX2
// kernels, so the bits are theirs. 1.05-1.11x faster than 4 x 24 on Zen 4 (which splits each 512-bit operation in
// two) on layers of K >= 256 taps, slower on SRCNN's first layer (K = 81): used from K = kZmmMinTaps.
#define MAGMASR_AVX512 __attribute__((target("avx512f,avx2,fma")))
constexpr int64_t kZmmMinTaps = 256;
#define MAGMASR_ZROW3(i)                                   \
  {                                                        \
    const __m512 s = _mm512_set1_ps(*a##i);                \
    c##i##0 = _mm512_fmadd_ps(s, b0, c##i##0);             \
    c##i##1 = _mm512_fmadd_ps(s, b1, c##i##1);             \
    c##i##2 = _mm512_fmadd_ps(s, b2, c##i##2);             \
    a##i += csa;                                           \
  }
template <bool kTaps>
MAGMASR_AVX512 void micro_avx512_8x48(int64_t K, const float* a, int64_t rsa, int64_t csa, int64_t /*seg*/,
                                      int64_t /*skip*/, const int64_t* aoff, const float* bp, const int64_t* off,
                                      float* c, int64_t ldc, bool accumulate) {
  const float *a0 = a_row(a, rsa, aoff, 0), *a1 = a_row(a, rsa, aoff, 1), *a2 = a_row(a, rsa, aoff, 2),
              *a3 = a_row(a, rsa, aoff, 3), *a4 = a_row(a, rsa, aoff, 4), *a5 = a_row(a, rsa, aoff, 5),
              *a6 = a_row(a, rsa, aoff, 6), *a7 = a_row(a, rsa, aoff, 7);
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  __m512 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  __m512 c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00, c52 = c00;
  __m512 c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
  for (int64_t k = 0; k < K; ++k) {
    const float* b = b_row<48, kTaps>(bp, off, k);
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32);
    MAGMASR_ZROW3(0)
    MAGMASR_ZROW3(1)
    MAGMASR_ZROW3(2)
    MAGMASR_ZROW3(3)
    MAGMASR_ZROW3(4)
    MAGMASR_ZROW3(5)
    MAGMASR_ZROW3(6)
    MAGMASR_ZROW3(7)
  }
  const __m512 rows[8][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                             {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
  for (int i = 0; i < 8; ++i)
    for (int v = 0; v < 3; ++v) {
      float* ci = c + i * ldc + 16 * v;
      _mm512_storeu_ps(ci, accumulate ? _mm512_add_ps(_mm512_loadu_ps(ci), rows[i][v]) : rows[i][v]);
    }
}
#undef MAGMASR_ZROW3
#undef MAGMASR_ROW3
#undef MAGMASR_ROW2
#endif

// The kernel sets, in order: each one's processor has the features of the ones before it.
enum class Isa { Generic, Avx2, Avx512 };

Isa cpu_best() {
#ifdef MAGMASR_GEMM_AVX2
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::Generic;
  return __builtin_cpu_supports("avx512f") ? Isa::Avx512 : Isa::Avx2;
#else
  return Isa::Generic;
#endif
}

std::atomic<Isa>& isa_selected() {
  static std::atomic<Isa> isa([] {
    const char* env = std::getenv("MAGMASR_CPU_KERNELS");
    const Isa best = cpu_best();
    if (env && std::strcmp(env, "generic") == 0) return Isa::Generic;
    if (env && std::strcmp(env, "avx2") == 0) return std::min(best, Isa::Avx2);
    return best;
  }());
  return isa;
}

bool use_avx2() { return isa_selected().load(std::memory_order_relaxed) >= Isa::Avx2; }
bool use_avx512() { return isa_selected().load(std::memory_order_relaxed) == Isa::Avx512; }

// C = A * B over tiles of MR x NR. A partial last row tile reads its rows from a zero-padded copy of them (the
// kernel always reads MR rows), and partial tiles are computed into a local tile whose valid part is copied.
// A: row i at a + i * rsa, or with row offsets `aoff` at a + aoff[i]. B: packed panels at bp (off null), or with
// tap offsets `off`, panel p's row k at bp + p * NR + off[k].
template <int MR, int NR>
void gemm_tiles(MicroKernel micro, int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa,
                int64_t seg, int64_t skip, const int64_t* aoff, const float* bp, const int64_t* off, float* c,
                int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const int64_t panels = (N + NR - 1) / NR, full_rows = M / MR * MR;
  std::vector<float> tail;  // the last rows of A, zero-padded to MR rows, row-major (one segment)
  if (full_rows < M) {
    tail.assign(size_t(MR * K), 0.0f);
    for (int64_t i = full_rows; i < M; ++i) {
      const float* row = aoff ? a + aoff[i] : a + i * rsa;
      float* dst = tail.data() + (i - full_rows) * K;
      for (int64_t k0 = 0; k0 < K; k0 += seg, row += skip)
        for (int64_t k = k0; k < std::min(K, k0 + seg); ++k, row += csa) dst[k] = *row;
    }
  }
  alignas(32) float tile[MR * NR];
  auto run_tile = [&](int64_t i0, int64_t p) {
    const int64_t n0 = p * NR, rows = std::min<int64_t>(MR, M - i0), cols = std::min<int64_t>(NR, N - n0);
    const bool full = rows == MR;
    const float* ai = !full ? tail.data() : aoff ? a : a + i0 * rsa;
    const int64_t rs = full ? rsa : K, cs = full ? csa : 1, sg = full ? seg : K, sk = full ? skip : 0;
    const int64_t* ao = full && aoff ? aoff + i0 : nullptr;
    float* ci = c + i0 * ldc + n0;
    const float* panel = off ? bp + p * NR : bp + p * K * NR;
    if (full && cols == NR) return micro(K, ai, rs, cs, sg, sk, ao, panel, off, ci, ldc, accumulate);
    micro(K, ai, rs, cs, sg, sk, ao, panel, off, tile, NR, false);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t t = 0; t < cols; ++t) ci[i * ldc + t] = accumulate ? ci[i * ldc + t] + tile[i * NR + t] : tile[i * NR + t];
  };
  // With few panels (a gradient's channels), a tile row of A is used for all of them while it is in cache;
  // otherwise a panel of B stays in cache for all the rows of A (read in place: its window of the input).
  if (!off && panels * K * NR <= (int64_t(64) << 10)) {
    for (int64_t i0 = 0; i0 < M; i0 += MR)
      for (int64_t p = 0; p < panels; ++p) run_tile(i0, p);
  } else {
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t i0 = 0; i0 < M; i0 += MR) run_tile(i0, p);
  }
}

// The tiles of MR x NR with the AVX2 micro-kernel `avx2` where the processor runs it, else the portable one.
template <int MR, int NR, bool kTaps = false>
void gemm_with(MicroKernel avx2, int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa,
               int64_t seg, int64_t skip, const int64_t* aoff, const float* bp, const int64_t* off, float* c,
               int64_t ldc, bool accumulate) {
  gemm_tiles<MR, NR>(avx2 && use_avx2() ? avx2 : micro_generic<MR, NR, kTaps>, M, N, K, a, rsa, csa, seg, skip, aoff,
                     bp, off, c, ldc, accumulate);
}

#ifdef MAGMASR_GEMM_AVX2
constexpr MicroKernel kAvx2Wide = micro_avx2_4x24<false>, kAvx2WideTaps = micro_avx2_4x24<true>,
                      kAvx2Narrow = micro_avx2_6x16;
#else
constexpr MicroKernel kAvx2Wide = nullptr, kAvx2WideTaps = nullptr, kAvx2Narrow = nullptr;
#endif

}  // namespace

void gemm_wide(int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa, const float* bp, float* c,
               int64_t ldc, bool accumulate) {
  gemm_with<4, 24>(kAvx2Wide, M, N, K, a, rsa, csa, K, 0, nullptr, bp, nullptr, c, ldc, accumulate);
}

void gemm_wide_taps(int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa, const float* base,
                    const int64_t* off, float* c, int64_t ldc) {
#ifdef MAGMASR_GEMM_AVX2
  if (K >= kZmmMinTaps && use_avx512())
    return gemm_tiles<8, 48>(micro_avx512_8x48<true>, M, N, K, a, rsa, csa, K, 0, nullptr, base, off, c, ldc, false);
#endif
  gemm_with<4, 24, true>(kAvx2WideTaps, M, N, K, a, rsa, csa, K, 0, nullptr, base, off, c, ldc, false);
}

void gemm_narrow(int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa, const float* bp, float* c,
                 int64_t ldc, bool accumulate) {
  gemm_with<6, 16>(kAvx2Narrow, M, N, K, a, rsa, csa, K, 0, nullptr, bp, nullptr, c, ldc, accumulate);
}

void gemm_narrow_taps(int64_t M, int64_t N, int64_t K, const float* base, const int64_t* aoff, int64_t seg,
                      int64_t pitch, const float* bp, float* c, int64_t ldc, bool accumulate) {
  gemm_with<6, 16>(kAvx2Narrow, M, N, K, base, 0, 1, seg, pitch - seg, aoff, bp, nullptr, c, ldc, accumulate);
}

void pack_panels(int64_t K, int64_t N, const float* b, int64_t rsb, int64_t csb, int64_t NR, float* bp) {
  const int64_t panels = (N + NR - 1) / NR;
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * NR, cols = std::min(NR, N - n0);
    float* dst = bp + p * K * NR;
    for (int64_t k = 0; k < K; ++k, dst += NR) {
      const float* src = b + k * rsb + n0 * csb;
      if (csb == 1)
        std::memcpy(dst, src, sizeof(float) * size_t(cols));
      else
        for (int64_t t = 0; t < cols; ++t) dst[t] = src[t * csb];
      std::fill(dst + cols, dst + NR, 0.0f);
    }
  }
}

std::string gemm_kernels() { return use_avx512() ? "avx512" : use_avx2() ? "avx2" : "generic"; }

bool set_gemm_kernels(const std::string& which) {
  const Isa best = cpu_best();
  Isa want;
  if (which == "generic") want = Isa::Generic;
  else if (which == "avx2") want = Isa::Avx2;
  else if (which == "avx512") want = Isa::Avx512;
  else if (which == "auto") want = best;
  else return false;
  if (want > best) return false;
  isa_selected() = want;
  return true;
}

}  // namespace magmasr::cpu
