// The one BLAS routine the CPU backend needs, SGEMM, through the Fortran interface that every BLAS exports.
// MAGMASR_BLAS_PREFIX is set by CMake: "scipy_" for the scipy-openblas32 wheel, empty for a system OpenBLAS.
#pragma once

#include <cstdint>

#ifndef MAGMASR_BLAS_PREFIX
#define MAGMASR_BLAS_PREFIX
#endif
#define MAGMASR_BLAS_CAT2(a, b) a##b
#define MAGMASR_BLAS_CAT(a, b) MAGMASR_BLAS_CAT2(a, b)
#define MAGMASR_BLAS_FN(name) MAGMASR_BLAS_CAT(MAGMASR_BLAS_PREFIX, name)

extern "C" {
void MAGMASR_BLAS_FN(sgemm_)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                             const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                             const float* beta, float* c, const int* ldc);
#ifdef MAGMASR_HAVE_OPENBLAS
void MAGMASR_BLAS_FN(openblas_set_num_threads)(int n);
int MAGMASR_BLAS_FN(openblas_get_num_threads)(void);
#endif
}

namespace magmasr::cpu {

/// Keeps OpenBLAS on the calling thread: the CPU kernels parallelise with OpenMP themselves.
inline void blas_single_threaded() {
#ifdef MAGMASR_HAVE_OPENBLAS
  static const bool once = [] {
    MAGMASR_BLAS_FN(openblas_set_num_threads)(1);
    return true;
  }();
  (void)once;
#endif
}

/// Row-major C[M, N] = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T; lda/ldb/ldc are row strides.
inline void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  MAGMASR_BLAS_FN(sgemm_)(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

}  // namespace magmasr::cpu
