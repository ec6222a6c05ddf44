// The CPU convolution's matrix products: register-tiled micro-kernels on operands the convolution lays out for
// them (cpu/gemm.cpp says how fast and why not a BLAS).
//
//   C[M, N] (row pitch ldc)  =  A * B   (or  C += A * B  with `accumulate`)
//
// A(i, k) = a[i * rsa + k * csa]: any strides, so the weights, their transpose and a row-major column matrix are
// used where they lie. B is packed in panels of NR columns: panel p holds B(k, p * NR + t) at
// bp[(p * K + k) * NR + t], zeros past column N (pack_panels writes it).
//
// Every C(i, j) is the same ordered sum, sum over k = 0 .. K-1 in order, in one multiply-add chain, whatever i
// and j, the tile it falls in or the thread that computes it: a convolution's output does not depend on where
// it lies in its block, so tiled inference gives the whole picture's pixels bit for bit.
#pragma once

#include <cstdint>
#include <string>

namespace magmasr::cpu {

/// Columns per packed panel of B for gemm_wide (4 x 24 tiles: the long side along B's columns) and gemm_narrow
/// (6 x 16 tiles: more rows of A per tile, for few columns such as a gradient's output channels).
constexpr int64_t kWideNR = 24;
constexpr int64_t kNarrowNR = 16;

void gemm_wide(int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa, const float* bp, float* c,
               int64_t ldc, bool accumulate);
void gemm_narrow(int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa, const float* bp, float* c,
                 int64_t ldc, bool accumulate);

/// gemm_wide (C = A * B, no accumulation) with B read where it lies instead of packed: B(k, n) = base[off[k] + n],
/// as the column matrix of a convolution is a window of its (padded) input, tap k at offset off[k] and output
/// column n one float further per column. Reads base[off[k] .. off[k] + N - 1 + kTapsReadPast] (whole panels of
/// 24, or of 48 with the AVX-512 kernel). The same sums.
constexpr int64_t kTapsReadPast = 48;
void gemm_wide_taps(int64_t M, int64_t N, int64_t K, const float* a, int64_t rsa, int64_t csa, const float* base,
                    const int64_t* off, float* c, int64_t ldc);

/// gemm_narrow (B packed in panels of 16) with A's rows read in place, in segments of `seg` floats `pitch` apart:
/// A(i, k) = base[aoff[i] + (k / seg) * pitch + k % seg], as the rows of a convolution's column matrix are windows
/// of its (padded) input, tap i at offset aoff[i], one segment per output row (seg = K: one plain row).
void gemm_narrow_taps(int64_t M, int64_t N, int64_t K, const float* base, const int64_t* aoff, int64_t seg,
                      int64_t pitch, const float* bp, float* c, int64_t ldc, bool accumulate);

/// Packs B[K, N], B(k, n) = b[k * rsb + n * csb] (a row-major matrix: csb = 1; the transpose of one: rsb = 1),
/// into panels of NR columns: ceil(N / NR) * K * NR floats at bp.
void pack_panels(int64_t K, int64_t N, const float* b, int64_t rsb, int64_t csb, int64_t NR, float* bp);

/// The micro-kernels in use: "avx512" (the AVX2 ones, and for gemm_wide_taps of K >= 256 an 8 x 48 kernel of
/// 16-wide vectors: the same bits), "avx2" (AVX2 + FMA) or "generic" (portable C++, the same sums without fused
/// multiply-adds), the best the processor runs by default. MAGMASR_CPU_KERNELS=avx2 or =generic in the
/// environment caps the choice.
std::string gemm_kernels();
/// Selects the micro-kernels ("avx512", "avx2", "generic", or "auto": the processor's best); false (and no change)
/// for a set the processor cannot run. For tests, which run each; not thread-safe against running products.
bool set_gemm_kernels(const std::string& which);

}  // namespace magmasr::cpu
