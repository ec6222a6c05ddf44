// Error checking for the CUDA backend: every CUDA runtime / cuBLAS call and every kernel launch goes
// through one of these macros, and a failure becomes a magmasr::CudaError whose message names the call,
// the error, the file and the line. Nothing here prints or exits.
//
//   MAGMASR_CUDA_CHECK(cudaMemcpyAsync(...));
//   MAGMASR_CUBLAS_CHECK(cublasSgemm(...));
//   MAGMASR_LAUNCH(grid, block, 0, stream, kernel)(...); MAGMASR_CUDA_LAUNCH_CHECK();   (common.cuh)
//
// Define MAGMASR_CUDA_SYNC_LAUNCHES (e.g. -DMAGMASR_CUDA_SYNC_LAUNCHES in a debug build) to make
// MAGMASR_CUDA_LAUNCH_CHECK also wait for the kernel, so that a fault is reported at its launch site.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "magmasr/error.hpp"

namespace magmasr {
namespace cuda {
namespace detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw CudaError(::magmasr::detail::cat("CUDA error: ", call, " failed with ", cudaGetErrorName(err), " (",
                                         cudaGetErrorString(err), ") at ", file, ":", line));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  throw CudaError(::magmasr::detail::cat("cuBLAS error: ", call, " failed with ", cublasGetStatusName(st), " (",
                                         cublasGetStatusString(st), ") at ", file, ":", line));
}

}  // namespace detail
}  // namespace cuda
}  // namespace magmasr

#define MAGMASR_CUDA_CHECK(call)                                                         \
  do {                                                                                   \
    const cudaError_t magmasr_err_ = (call);                                             \
    if (magmasr_err_ != cudaSuccess)                                                     \
      ::magmasr::cuda::detail::throw_cuda_error(magmasr_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define MAGMASR_CUBLAS_CHECK(call)                                                           \
  do {                                                                                       \
    const cublasStatus_t magmasr_st_ = (call);                                               \
    if (magmasr_st_ != CUBLAS_STATUS_SUCCESS)                                                \
      ::magmasr::cuda::detail::throw_cublas_error(magmasr_st_, #call, __FILE__, __LINE__); \
  } while (0)

#ifdef MAGMASR_CUDA_SYNC_LAUNCHES
#define MAGMASR_CUDA_LAUNCH_CHECK()                                                                   \
  do {                                                                                                \
    const cudaError_t magmasr_err_ = cudaGetLastError();                                              \
    if (magmasr_err_ != cudaSuccess)                                                                  \
      ::magmasr::cuda::detail::throw_cuda_error(magmasr_err_, "kernel launch", __FILE__, __LINE__);   \
    const cudaError_t magmasr_sync_ = cudaDeviceSynchronize();                                        \
    if (magmasr_sync_ != cudaSuccess)                                                                 \
      ::magmasr::cuda::detail::throw_cuda_error(magmasr_sync_, "kernel execution", __FILE__, __LINE__); \
  } while (0)
#else
#define MAGMASR_CUDA_LAUNCH_CHECK()                                                                 \
  do {                                                                                              \
    const cudaError_t magmasr_err_ = cudaGetLastError();                                            \
    if (magmasr_err_ != cudaSuccess)                                                                \
      ::magmasr::cuda::detail::throw_cuda_error(magmasr_err_, "kernel launch", __FILE__, __LINE__); \
  } while (0)
#endif
