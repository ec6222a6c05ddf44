// CPU convolution: the reference for the CUDA kernels, and the fallback where there is no GPU.
//
// Strategy: vol2col + SGEMM. The output positions of the whole batch form one flat range q = n * P + p
// (P = oD * oH * oW); it is cut into chunks whose column matrix col[K, cols] (K = Cin * kD * kH * kW) fits a
// fixed budget, so a 4K frame with 64 channels and a batch of 128 small patches both become a few large
// GEMMs that OpenBLAS runs on every core. 2-D convolutions are the D = kD = 1 case of the same code.
//   forward:          tmp[Cout, cols] = W[Cout, K] * col          then y[n, co, p] = tmp + b (and ReLU)
//   backward-data:    dcol[K, cols] = W^T * dY[Cout, cols]       then col2vol accumulates into dx
//   backward-weight:  dW[Cout, K] += dY[Cout, cols] * col^T,      db[co] = sum of dy[n, co, :]
// Threads: every GEMM is split into column (or row) blocks, one per OpenMP thread, each a single-threaded
// OpenBLAS call. OpenBLAS's own thread pool is never used: on a small machine its spinning workers and
// OpenMP's competed for the cores and made a 33x33-patch training step 9x slower.
// Padding: Zeros skips samples outside the input; Replicate clamps the index into the input, and col2vol
// adds the gradient of those samples to the clamped border sample (the exact adjoint).
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.hpp"
#include "cpu/blas.hpp"

namespace magmasr::cpu {
namespace {

constexpr int64_t kColBudgetFloats = int64_t(8) << 20;  // 32 MiB of column matrix per chunk

int64_t chunk_columns(const ConvGeom& g) {
  const int64_t K = g.Cin * g.kernel_volume();
  const int64_t total = g.N * g.out_spatial();
  return std::max<int64_t>(1, std::min(total, kColBudgetFloats / std::max<int64_t>(K, 1)));
}

// C[M, N] = op(A)[M, K] * B[K, N] with B and C row-major of row stride ldb = ldc = N, in blocks of exactly
// kGemmBlock columns spread over the OpenMP threads; the last partial block goes through a zero-padded copy.
// Every OpenBLAS call thus has the same shape whatever N is, and OpenBLAS sums each column the same way in
// every call: a column's result does not depend on the image size, so tiled inference is bit-identical to
// whole-image inference. (Calls of varying N were not: OpenBLAS's small-matrix and tail kernels sum in
// another order, which changed about one result in three by 1 ulp on crops of a few hundred pixels.)
constexpr int64_t kGemmBlock = 256;

void gemm_split_cols(bool trans_a, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                     float* C) {
  blas_single_threaded();
  const int64_t blocks = (N + kGemmBlock - 1) / kGemmBlock;
#pragma omp parallel
  {
    std::vector<float> bpad, cpad;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t j0 = blk * kGemmBlock, n = std::min(kGemmBlock, N - j0);
      if (n == kGemmBlock) {
        sgemm(trans_a, false, M, kGemmBlock, K, 1.0f, A, lda, B + j0, N, 0.0f, C + j0, N);
        continue;
      }
      bpad.assign(size_t(K * kGemmBlock), 0.0f);
      cpad.resize(size_t(M * kGemmBlock));
      for (int64_t k = 0; k < K; ++k) std::copy(B + k * N + j0, B + k * N + j0 + n, bpad.data() + k * kGemmBlock);
      sgemm(trans_a, false, M, kGemmBlock, K, 1.0f, A, lda, bpad.data(), kGemmBlock, 0.0f, cpad.data(), kGemmBlock);
      for (int64_t m = 0; m < M; ++m) std::copy(cpad.data() + m * kGemmBlock, cpad.data() + m * kGemmBlock + n, C + m * N + j0);
    }
  }
}

// C[M, N] (+)= A[M, K] * B[N, K]^T, split over the N rows of B (columns of C) among the OpenMP threads.
void gemm_nt_split_rows(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float beta, float* C) {
  blas_single_threaded();
#pragma omp parallel
  {
#ifdef _OPENMP
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int64_t nt = 1, t = 0;
#endif
    const int64_t per = std::max<int64_t>(16, (N + nt - 1) / nt);
    const int64_t j0 = t * per, j1 = std::min(N, j0 + per);
    if (j0 < j1) sgemm(false, true, M, j1 - j0, K, 1.0f, A, K, B + j0 * K, K, beta, C + j0, N);
  }
}

inline int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Visits the columns [q0, q1) of the flat output range as runs along W: fn(n, od, oh, ow0, ow1, col_offset).
template <typename Fn>
void for_each_row_run(const ConvGeom& g, int64_t q0, int64_t q1, Fn&& fn) {
  const int64_t oH = g.oH(), oW = g.oW(), P = g.out_spatial();
  int64_t q = q0;
  while (q < q1) {
    const int64_t n = q / P, p = q % P;
    const int64_t od = p / (oH * oW), oh = (p / oW) % oH, ow0 = p % oW;
    const int64_t ow1 = std::min(oW, ow0 + (q1 - q));
    fn(n, od, oh, ow0, ow1, q - q0);
    q += ow1 - ow0;
  }
}

// col[r, c] for r = ((ci * kD + kd) * kH + kh) * kW + kw and the chunk's columns c.
void vol2col(const ConvGeom& g, const float* x, int64_t q0, int64_t q1, float* col) {
  const int64_t cols = q1 - q0, kvol = g.kernel_volume(), K = g.Cin * kvol;
  const bool replicate = g.mode == PadMode::Replicate;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < K; ++r) {
    const int64_t ci = r / kvol, kd = (r / (g.kH * g.kW)) % g.kD, kh = (r / g.kW) % g.kH, kw = r % g.kW;
    float* dst = col + r * cols;
    for_each_row_run(g, q0, q1, [&](int64_t n, int64_t od, int64_t oh, int64_t ow0, int64_t ow1, int64_t c) {
      int64_t id = od + kd - g.pD, ih = oh + kh - g.pH;
      float* out = dst + c;
      if (!replicate && (id < 0 || id >= g.D || ih < 0 || ih >= g.H)) {
        std::fill(out, out + (ow1 - ow0), 0.0f);
        return;
      }
      id = clamp_index(id, g.D);
      ih = clamp_index(ih, g.H);
      const float* src = x + ((n * g.Cin + ci) * g.D + id) * g.H * g.W + ih * g.W;
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const int64_t iw = ow + kw - g.pW;
        if (iw >= 0 && iw < g.W)
          out[ow - ow0] = src[iw];
        else
          out[ow - ow0] = replicate ? src[clamp_index(iw, g.W)] : 0.0f;
      }
    });
  }
}

// The adjoint of vol2col: dx += scatter(dcol). Parallel over input channels, whose targets are disjoint.
void col2vol(const ConvGeom& g, const float* dcol, int64_t q0, int64_t q1, float* dx) {
  const int64_t cols = q1 - q0, kvol = g.kernel_volume();
  const bool replicate = g.mode == PadMode::Replicate;
#pragma omp parallel for schedule(static)
  for (int64_t ci = 0; ci < g.Cin; ++ci) {
    for (int64_t kr = 0; kr < kvol; ++kr) {
      const int64_t kd = kr / (g.kH * g.kW), kh = (kr / g.kW) % g.kH, kw = kr % g.kW;
      const float* src = dcol + (ci * kvol + kr) * cols;
      for_each_row_run(g, q0, q1, [&](int64_t n, int64_t od, int64_t oh, int64_t ow0, int64_t ow1, int64_t c) {
        int64_t id = od + kd - g.pD, ih = oh + kh - g.pH;
        if (!replicate && (id < 0 || id >= g.D || ih < 0 || ih >= g.H)) return;
        id = clamp_index(id, g.D);
        ih = clamp_index(ih, g.H);
        float* dst = dx + ((n * g.Cin + ci) * g.D + id) * g.H * g.W + ih * g.W;
        const float* in = src + c;
        for (int64_t ow = ow0; ow < ow1; ++ow) {
          const int64_t iw = ow + kw - g.pW;
          if (iw >= 0 && iw < g.W)
            dst[iw] += in[ow - ow0];
          else if (replicate)
            dst[clamp_index(iw, g.W)] += in[ow - ow0];
        }
      });
    }
  }
}

// dst[co, c] = dy[n, co, p] for the chunk's columns (the layout the GEMMs want).
void gather_dy(const ConvGeom& g, const float* dy, int64_t q0, int64_t q1, float* dst) {
  const int64_t cols = q1 - q0, P = g.out_spatial();
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < g.Cout; ++co) {
    int64_t q = q0;
    while (q < q1) {
      const int64_t n = q / P, p = q % P, run = std::min(P - p, q1 - q);
      std::memcpy(dst + co * cols + (q - q0), dy + (n * g.Cout + co) * P + p, sizeof(float) * run);
      q += run;
    }
  }
}

}  // namespace

void conv_forward(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu) {
  const int64_t K = g.Cin * g.kernel_volume(), P = g.out_spatial(), total = g.N * P;
  const int64_t chunk = chunk_columns(g);
  const int64_t M = g.Cout;
  std::unique_ptr<float[]> col(new float[K * chunk]), tmp(new float[M * chunk]);
  for (int64_t q0 = 0; q0 < total; q0 += chunk) {
    const int64_t q1 = std::min(total, q0 + chunk), cols = q1 - q0;
    vol2col(g, x, q0, q1, col.get());
    gemm_split_cols(false, M, cols, K, w, K, col.get(), tmp.get());
#pragma omp parallel for schedule(static)
    for (int64_t co = 0; co < g.Cout; ++co) {
      const float bias = b ? b[co] : 0.0f;
      int64_t q = q0;
      while (q < q1) {
        const int64_t n = q / P, p = q % P, run = std::min(P - p, q1 - q);
        const float* src = tmp.get() + co * cols + (q - q0);
        float* dst = y + (n * g.Cout + co) * P + p;
        for (int64_t i = 0; i < run; ++i) {
          const float v = src[i] + bias;
          dst[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
        }
        q += run;
      }
    }
  }
}

void conv_backward_data(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  const int64_t K = g.Cin * g.kernel_volume(), total = g.N * g.out_spatial();
  const int64_t chunk = chunk_columns(g);
  std::unique_ptr<float[]> dcol(new float[K * chunk]), dyc(new float[g.Cout * chunk]);
  std::fill(dx, dx + g.x_numel(), 0.0f);
  for (int64_t q0 = 0; q0 < total; q0 += chunk) {
    const int64_t q1 = std::min(total, q0 + chunk), cols = q1 - q0;
    gather_dy(g, dy, q0, q1, dyc.get());
    gemm_split_cols(true, K, cols, g.Cout, w, K, dyc.get(), dcol.get());
    col2vol(g, dcol.get(), q0, q1, dx);
  }
}

void conv_backward_weight(const ConvGeom& g, const float* x, const float* dy, float* dw, float* db) {
  const int64_t K = g.Cin * g.kernel_volume(), P = g.out_spatial(), total = g.N * P;
  const int64_t chunk = chunk_columns(g);
  std::unique_ptr<float[]> col(new float[K * chunk]), dyc(new float[g.Cout * chunk]);
  for (int64_t q0 = 0; q0 < total; q0 += chunk) {
    const int64_t q1 = std::min(total, q0 + chunk), cols = q1 - q0;
    vol2col(g, x, q0, q1, col.get());
    gather_dy(g, dy, q0, q1, dyc.get());
    gemm_nt_split_rows(g.Cout, K, cols, dyc.get(), col.get(), q0 == 0 ? 0.0f : 1.0f, dw);
  }
  if (db) {
#pragma omp parallel for schedule(static)
    for (int64_t co = 0; co < g.Cout; ++co) {
      double s = 0.0;
      for (int64_t n = 0; n < g.N; ++n) {
        const float* src = dy + (n * g.Cout + co) * P;
        for (int64_t p = 0; p < P; ++p) s += src[p];
      }
      db[co] = static_cast<float>(s);
    }
  }
}

}  // namespace magmasr::cpu
