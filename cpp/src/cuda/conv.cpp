// Convolution strategies of the CUDA backend and the ConvAlgo::Auto selector (the kernels are in
// kernels/conv.cu, declared in cuda/conv_kernels.hpp).
//
// ConvAlgo::Gemm — im2col / vol2col + cuBLAS SGEMM (fp32, pedantic math: no TF32).
//   The problem is cut into chunks whose column buffer fits a 256 MiB workspace: several whole images per
//   chunk when one image's columns fit (one strided-batched SGEMM per chunk), otherwise slices of output
//   positions of one image (the SGEMM writes the slice's columns of y with ldc = positions). 1x1 filters
//   without padding skip the column buffer: x itself is the column matrix.
//   forward:        y_n[Cout, P] = W[Cout, K] col_n[K, P]; then bias + ReLU in one pass when asked.
//   backward data:  dcol_n = W^T dy_n (SGEMM), then col2im (a gather; replicate padding adds the clamped
//                   border positions); slices of one image add into dx, zeroed first, each visiting only
//                   the input rows its positions reach.
//   backward weight: dW^T[K, Cout] (+)= col[K, nb*P] dy^T[nb*P, Cout], one SGEMM per chunk with beta = 1
//                   after the first (dy is packed to [Cout, nb*P] when a chunk holds several images).
// ConvAlgo::Direct — our own kernels: tiled direct forward (specialised for the filters of SRCNN and
//   3DSRnet), backward data as the forward pass of flipped, transposed weights (+ the replicate border
//   fix), backward weight as a split-reduction implicit GEMM.
// ConvAlgo::DirectAsync — Direct with the tiled forward kernel's cp.async variant (two shared-memory buffers:
//   the next input channel is copied while the current one is computed), forward and backward data; the same
//   sums in the same order, so bit for bit Direct's output. Where no tiled kernel applies (one output channel,
//   other filter sizes) and for backward weight it is Direct.
// ConvAlgo::ImplicitGemm — Direct with the tiled forward kernel replaced by an implicit GEMM whose columns are
//   every (image, position) pair, forward and backward data: no idle threads at the edges of small pictures
//   (SRCNN's 21 x 21 and 25 x 25 training outputs fill 43-61% of a 32 x 32 tile). Where no tiled kernel applies
//   and for backward weight (already an implicit GEMM) it is Direct.
// The bias gradient (both strategies) is a two-stage reduction kernel.
//
// ConvAlgo::AutoDirect — Auto among Direct, DirectAsync and ImplicitGemm only: the same sums in the same order,
//   so the same bits whichever it picks (what tiled inference on a GPU needs), with the fastest kernels per shape.
// ConvAlgo::Auto — like cudnn.benchmark: the first time a problem (direction, geometry, bias or not) is
// seen on a device, each strategy (DirectAsync and ImplicitGemm only where they differ from Direct) runs once to warm up and once
// timed with CUDA events on the context stream; the faster is cached in the device's Context and used from then on (and run once more if it was
// not the last one timed, so that the result of the call comes from the chosen strategy). Timing
// synchronises once per new problem; every later call is asynchronous.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <vector>

#include "backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/conv_kernels.hpp"

namespace magmasr {
namespace cuda {

ConvKey make_conv_key(ConvDir dir, const ConvGeom& g, bool with_bias, bool direct_only) {
  return ConvKey{int64_t(dir), g.N,  g.Cin, g.Cout, g.D,  g.H,  g.W, g.kD, g.kH, g.kW, g.pD, g.pH, g.pW,
                 int64_t(g.mode), with_bias ? 1 : 0, direct_only ? 1 : 0};
}

namespace {

// The column buffer's budget. The emulated build (tests/cuda_emu) has 1/128 of it, so that the tests of the chunking
// (tests/cpp/test_cuda_ops.cpp) run the same slicing on problems small enough for the emulator.
#ifdef MAGMASR_CUDA_EMULATED
constexpr size_t kGemmWorkspaceBytes = size_t(2) << 20;
#else
constexpr size_t kGemmWorkspaceBytes = size_t(256) << 20;
#endif

size_t align_up(size_t v, size_t a = 256) { return (v + a - 1) / a * a; }

struct Chunk {
  int64_t nb;  // images per chunk
  int64_t pc;  // output positions per chunk (all of them when nb > 1)
};

// Chunking of the Gemm strategy so that floats_per_position * nb * pc floats fit the workspace budget.
Chunk plan_chunks(const ConvGeom& g, int64_t floats_per_position) {
  const int64_t budget = int64_t(kGemmWorkspaceBytes / sizeof(float));
  const int64_t P = g.out_spatial();
  const int64_t per_image = std::max<int64_t>(1, floats_per_position) * P;
  if (per_image <= budget) return Chunk{std::max<int64_t>(1, std::min(g.N, budget / per_image)), P};
  return Chunk{1, std::max<int64_t>(1, budget / std::max<int64_t>(1, floats_per_position))};
}

bool is_pointwise(const ConvGeom& g) {
  return g.kernel_volume() == 1 && g.pD == 0 && g.pH == 0 && g.pW == 0;
}

void sgemm_strided(const Context& ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                   const float* A, int64_t lda, int64_t sa, const float* B, int64_t ldb, int64_t sb, float beta,
                   float* C, int64_t ldc, int64_t sc, int64_t batch) {
  const float alpha = 1.f;
  if (batch == 1) {
    MAGMASR_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), ta, tb, int(m), int(n), int(k), &alpha, A, int(lda), B, int(ldb),
                                     &beta, C, int(ldc)));
  } else {
    MAGMASR_CUBLAS_CHECK(cublasSgemmStridedBatched(ctx.cublas(), ta, tb, int(m), int(n), int(k), &alpha, A, int(lda),
                                                   (long long)sa, B, int(ldb), (long long)sb, &beta, C, int(ldc),
                                                   (long long)sc, int(batch)));
  }
}

// --------------------------------------------- Gemm strategy ---------------------------------------------

void gemm_forward(Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b, float* y,
                  bool relu) {
  const int64_t K = g.Cin * g.kernel_volume(), P = g.out_spatial();
  const bool pw = is_pointwise(g);
  const Chunk c = pw ? Chunk{g.N, P} : plan_chunks(g, K);
  float* col = pw ? nullptr : static_cast<float*>(ctx.workspace(size_t(K * c.nb * c.pc) * sizeof(float)));
  for (int64_t n0 = 0; n0 < g.N; n0 += c.nb) {
    const int64_t nb = std::min(c.nb, g.N - n0);
    for (int64_t p0 = 0; p0 < P; p0 += c.pc) {
      const int64_t pc = std::min(c.pc, P - p0);
      const float* A = nullptr;
      int64_t lda = 0, sa = 0;
      if (pw) {
        A = x + n0 * g.Cin * P + p0, lda = P, sa = g.Cin * P;
      } else {
        convk::im2col(ctx, g, x, n0, nb, p0, pc, col);
        A = col, lda = nb * pc, sa = pc;
      }
      // column-major: y_n^T[pc, Cout] = col_n^T[pc, K] * W^T[K, Cout]
      sgemm_strided(ctx, CUBLAS_OP_N, CUBLAS_OP_N, pc, g.Cout, K, A, lda, sa, w, K, 0, 0.f, y + n0 * g.Cout * P + p0,
                    P, g.Cout * P, nb);
      convk::bias_relu(ctx, g, n0, nb, p0, pc, b, relu, y);
    }
  }
}

void gemm_backward_data(Context& ctx, const ConvGeom& g, const float* dy, const float* w, float* dx) {
  const int64_t K = g.Cin * g.kernel_volume(), P = g.out_spatial();
  const bool pw = is_pointwise(g);
  const Chunk c = pw ? Chunk{g.N, P} : plan_chunks(g, K);
  float* dcol = pw ? nullptr : static_cast<float*>(ctx.workspace(size_t(K * c.nb * c.pc) * sizeof(float)));
  for (int64_t n0 = 0; n0 < g.N; n0 += c.nb) {
    const int64_t nb = std::min(c.nb, g.N - n0);
    for (int64_t p0 = 0; p0 < P; p0 += c.pc) {
      const int64_t pc = std::min(c.pc, P - p0);
      float* C = nullptr;
      int64_t ldc = 0, sc = 0;
      if (pw) {
        C = dx + n0 * g.Cin * P + p0, ldc = P, sc = g.Cin * P;
      } else {
        C = dcol, ldc = nb * pc, sc = pc;
      }
      // column-major: dcol_n^T[pc, K] = dy_n^T[pc, Cout] * W[Cout, K]
      sgemm_strided(ctx, CUBLAS_OP_N, CUBLAS_OP_T, pc, K, g.Cout, dy + n0 * g.Cout * P + p0, P, g.Cout * P, w, K, 0,
                    0.f, C, ldc, sc, nb);
      if (pw) continue;
      // One slice: col2im writes every sample. Several: each slice adds to the rows it reaches, so zero first.
      const bool sliced = pc < P;
      if (sliced && p0 == 0)
        MAGMASR_CUDA_CHECK(cudaMemsetAsync(dx + n0 * g.Cin * g.in_spatial(), 0,
                                           size_t(nb * g.Cin * g.in_spatial()) * sizeof(float), ctx.stream()));
      convk::col2im(ctx, g, dcol, n0, nb, p0, pc, /*accumulate=*/sliced, dx);
    }
  }
}

void gemm_backward_weight(Context& ctx, const ConvGeom& g, const float* x, const float* dy, float* dw, float* db) {
  const int64_t K = g.Cin * g.kernel_volume(), P = g.out_spatial();
  const bool pw = is_pointwise(g);
  const Chunk c = pw ? Chunk{1, P} : plan_chunks(g, K + g.Cout);
  const size_t main_bytes = pw ? 0 : align_up(size_t((K + g.Cout) * c.nb * c.pc) * sizeof(float));
  const size_t bias_bytes = db != nullptr ? convk::bias_grad_workspace(ctx, g) : 0;
  char* ws = static_cast<char*>(ctx.workspace(std::max<size_t>(main_bytes + bias_bytes, 256)));
  float* col = reinterpret_cast<float*>(ws);
  float* dyp = col + K * c.nb * c.pc;
  bool first = true;
  for (int64_t n0 = 0; n0 < g.N; n0 += c.nb) {
    const int64_t nb = std::min(c.nb, g.N - n0);
    for (int64_t p0 = 0; p0 < P; p0 += c.pc) {
      const int64_t pc = std::min(c.pc, P - p0);
      const float* A = nullptr;
      const float* B = nullptr;
      int64_t lda = 0, ldb = 0;
      if (pw) {
        A = x + n0 * g.Cin * P + p0, lda = P;
      } else {
        convk::im2col(ctx, g, x, n0, nb, p0, pc, col);
        A = col, lda = nb * pc;
      }
      if (nb == 1) {
        B = dy + n0 * g.Cout * P + p0, ldb = P;
      } else {
        convk::pack_rows(ctx, g, dy, n0, nb, p0, pc, dyp);
        B = dyp, ldb = nb * pc;
      }
      // column-major: dW^T[K, Cout] (+)= col[K, nb*pc] * dy^T[nb*pc, Cout]
      sgemm_strided(ctx, CUBLAS_OP_T, CUBLAS_OP_N, K, g.Cout, nb * pc, A, lda, 0, B, ldb, 0, first ? 0.f : 1.f, dw, K,
                    0, 1);
      first = false;
    }
  }
  if (db != nullptr) convk::bias_grad(ctx, g, dy, db, ws + main_bytes);
}

// -------------------------------------------- Direct strategy --------------------------------------------

// dx = conv(dy, flip(w)^T) with padding k - 1 - p and zero padding: a forward problem with the channel counts
// swapped whose output has the input's size.
ConvGeom backward_data_as_forward(const ConvGeom& g) {
  ConvGeom t;
  t.N = g.N, t.Cin = g.Cout, t.Cout = g.Cin;
  t.D = g.oD(), t.H = g.oH(), t.W = g.oW();
  t.kD = g.kD, t.kH = g.kH, t.kW = g.kW;
  t.pD = g.kD - 1 - g.pD, t.pH = g.kH - 1 - g.pH, t.pW = g.kW - 1 - g.pW;
  t.mode = PadMode::Zeros;
  return t;
}

convk::DirectVariant variant_of(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::DirectAsync: return convk::DirectVariant::TiledAsync;
    case ConvAlgo::ImplicitGemm: return convk::DirectVariant::ImplicitGemm;
    default: return convk::DirectVariant::Tiled;
  }
}

void direct_backward_data(Context& ctx, const ConvGeom& g, const float* dy, const float* w, float* dx,
                          convk::DirectVariant v) {
  float* wt = static_cast<float*>(ctx.workspace(size_t(g.w_numel()) * sizeof(float)));
  convk::flip_transpose_weights(ctx, g, w, wt);
  convk::direct_forward(ctx, backward_data_as_forward(g), dy, wt, nullptr, dx, false, v);
  convk::replicate_backward_data_fix(ctx, g, dy, w, dx);
}

bool direct_backward_weight_fits(const ConvGeom& g) {
  // the implicit GEMM indexes the reduction (n, position) and the columns (ci, offset) in 32 bits
  return g.N * g.out_spatial() < (int64_t(1) << 31) - 65536 && g.Cin * g.kernel_volume() < (int64_t(1) << 31);
}

void direct_backward_weight(Context& ctx, const ConvGeom& g, const float* x, const float* dy, float* dw, float* db) {
  const size_t main_bytes = align_up(convk::direct_backward_weight_workspace(ctx, g));
  const size_t bias_bytes = db != nullptr ? convk::bias_grad_workspace(ctx, g) : 0;
  char* ws = static_cast<char*>(ctx.workspace(std::max<size_t>(main_bytes + bias_bytes, 256)));
  convk::direct_backward_weight(ctx, g, x, dy, dw, ws);
  if (db != nullptr) convk::bias_grad(ctx, g, dy, db, ws + main_bytes);
}

// ----------------------------------------------- selector ------------------------------------------------

class Event {
 public:
  Event() { MAGMASR_CUDA_CHECK(cudaEventCreate(&e_)); }
  ~Event() { cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// The strategies Auto (AutoDirect: direct_only) times for a problem: DirectAsync and ImplicitGemm only where they
// run other kernels than Direct.
std::vector<ConvAlgo> candidates(ConvDir dir, const ConvGeom& g, bool direct_only) {
  std::vector<ConvAlgo> c{ConvAlgo::Direct};
  if (dir != ConvDir::BackwardWeight) {
    const ConvGeom fwd = dir == ConvDir::Forward ? g : backward_data_as_forward(g);
    if (convk::direct_forward_is_tiled(fwd)) c.push_back(ConvAlgo::DirectAsync);
    if (convk::direct_forward_has_igemm(fwd)) c.push_back(ConvAlgo::ImplicitGemm);
  }
  if (!direct_only) c.push_back(ConvAlgo::Gemm);
  return c;
}

template <class Run>
void run_with_algo(Context& ctx, ConvDir dir, const ConvGeom& g, bool with_bias, ConvAlgo algo, Run run) {
  if (algo != ConvAlgo::Auto && algo != ConvAlgo::AutoDirect) {
    run(algo);
    return;
  }
  const bool direct_only = algo == ConvAlgo::AutoDirect;
  const std::vector<ConvAlgo> cands = candidates(dir, g, direct_only);
  if (cands.size() == 1) {  // nothing to choose (AutoDirect where only Direct's kernels apply)
    run(cands.front());
    return;
  }
  const ConvKey key = make_conv_key(dir, g, with_bias, direct_only);
  const ConvAlgo cached = ctx.cached_algo(key);
  if (cached != ConvAlgo::Auto) {
    run(cached);
    return;
  }
  Event start, stop;
  float best_ms = std::numeric_limits<float>::infinity();
  ConvAlgo best = ConvAlgo::Auto, last = ConvAlgo::Auto;
  std::exception_ptr failure;
  for (ConvAlgo cand : cands) {
    last = cand;  // the outputs hold (part of) cand's result from here on, even if it fails
    try {
      run(cand);  // warm-up: lazy module loading, cuBLAS heuristics, workspace growth
      MAGMASR_CUDA_CHECK(cudaEventRecord(start.get(), ctx.stream()));
      run(cand);
      MAGMASR_CUDA_CHECK(cudaEventRecord(stop.get(), ctx.stream()));
      MAGMASR_CUDA_CHECK(cudaEventSynchronize(stop.get()));
      float ms = 0.f;
      MAGMASR_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
      if (ms < best_ms) best_ms = ms, best = cand;
    } catch (const CudaError&) {
      // e.g. out of memory for the column buffer: the other strategy may still run, unless the error is sticky
      // (the context is broken, e.g. by an illegal address): then report it as it is.
      (void)cudaGetLastError();
      if (cudaDeviceSynchronize() != cudaSuccess) throw;
      failure = std::current_exception();
    }
  }
  if (best == ConvAlgo::Auto) std::rethrow_exception(failure);
  ctx.cache_algo(key, best);
  if (best != last) run(best);
}

}  // namespace

// ------------------------------------------------ backend.hpp ---------------------------------------------

void conv_forward(int device, const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu,
                  ConvAlgo algo) {
  if (g.y_numel() <= 0) return;
  Context& ctx = context(device);
  const auto lock = ctx.lock_shared_state();
  run_with_algo(ctx, ConvDir::Forward, g, b != nullptr, algo, [&](ConvAlgo a) {
    if (a == ConvAlgo::Gemm) {
      gemm_forward(ctx, g, x, w, b, y, relu);
    } else {
      convk::direct_forward(ctx, g, x, w, b, y, relu, variant_of(a));
    }
  });
}

void conv_backward_data(int device, const ConvGeom& g, const float* dy, const float* w, float* dx, ConvAlgo algo) {
  if (g.x_numel() <= 0) return;
  if (g.y_numel() <= 0 || g.Cout == 0) {
    fill(device, g.x_numel(), 0.f, dx);
    return;
  }
  Context& ctx = context(device);
  const auto lock = ctx.lock_shared_state();
  run_with_algo(ctx, ConvDir::BackwardData, g, false, algo, [&](ConvAlgo a) {
    if (a == ConvAlgo::Gemm) {
      gemm_backward_data(ctx, g, dy, w, dx);
    } else {
      direct_backward_data(ctx, g, dy, w, dx, variant_of(a));
    }
  });
}

void conv_backward_weight(int device, const ConvGeom& g, const float* x, const float* dy, float* dw, float* db,
                          ConvAlgo algo) {
  if (g.y_numel() <= 0) {  // no output positions: the gradients are zero
    if (g.w_numel() > 0) fill(device, g.w_numel(), 0.f, dw);
    if (db != nullptr && g.Cout > 0) fill(device, g.Cout, 0.f, db);
    return;
  }
  Context& ctx = context(device);
  const auto lock = ctx.lock_shared_state();
  if (g.w_numel() <= 0) {  // Cin == 0: only the bias has a gradient
    if (db != nullptr && g.Cout > 0) {
      void* ws = ctx.workspace(std::max<size_t>(convk::bias_grad_workspace(ctx, g), 256));
      convk::bias_grad(ctx, g, dy, db, ws);
    }
    return;
  }
  run_with_algo(ctx, ConvDir::BackwardWeight, g, db != nullptr, algo, [&](ConvAlgo a) {
    if (a == ConvAlgo::Gemm || !direct_backward_weight_fits(g)) {
      gemm_backward_weight(ctx, g, x, dy, dw, db);
    } else {
      direct_backward_weight(ctx, g, x, dy, dw, db);
    }
  });
}

}  // namespace cuda
}  // namespace magmasr
