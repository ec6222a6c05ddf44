// Convolution kernels of the CUDA backend (2-D and 3-D through one ConvGeom; 2-D is D = kD = 1, pD = 0).
// Semantics are those of magmasr::cpu (backend.hpp): a stride-1 correlation, no kernel flip; zero padding,
// or replicate padding where an index outside the input is clamped into [0, size - 1] per dimension.
// The strategies that combine these kernels (and cuBLAS) live in cpp/src/cuda/conv.cpp.
//
// ---- Gemm strategy helpers -------------------------------------------------------------------------------
// im2col_kernel: one thread per element of the column buffer (grid-stride); consecutive threads write
//   consecutive output positions, so stores are coalesced and loads nearly so. Padding is resolved here.
// col2im_kernel: a gather, one thread per input element: it loops over the padded positions q that map to
//   its sample (only q = i with zero padding; with replicate padding also the clamped border ranges) and
//   over the kernel offsets, and sums the matching column entries. No atomics, deterministic. When one
//   image's columns exceed the workspace (a slice of its output positions at a time), each slice visits only
//   the input rows its positions can reach and adds to the image, zeroed before its first slice.
// bias_relu_kernel, pack_rows_kernel: element-wise passes over the chunk.
//   Speed of all four: bandwidth bound; not yet measured on a GPU.
//
// ---- bias gradient ---------------------------------------------------------------------------------------
// bias_grad_partial_kernel + bias_grad_final_kernel: a two-stage deterministic reduction. Grid (S, Cout):
//   block (s, co) sums dy[n, co, p] over the s-th slice of the (n, p) pairs (a batch of 128 small training
//   images is split as finely as one large picture), in double, with a shuffle block reduction; the final
//   kernel adds the S partials of each channel in order.
//   Speed: bandwidth bound; not yet measured on a GPU.
//
// ---- Direct strategy -------------------------------------------------------------------------------------
// conv_fwd_tiled_kernel<KD, KH, KW, COT=16, RPT=4>: many output channels (SRCNN conv1 1->64 9x9, conv2
//   64->32 5x5 and 1x1, 3DSRnet 3x3x3 with 32/64 channels; also the backward-data passes of those).
//   A block of 256 threads (32 x 8) computes a 32 x 32 output tile of one (n, od) slice for 16 output
//   channels (the channel group is the fastest grid index, so a tile's groups share its input through L2).
//   Per input channel it stages in shared memory the KD input planes of the tile plus halo
//   (padding resolved while staging) and the 16 x KD*KH*KW weights (channel-fastest, read back as float4
//   broadcasts). Each thread keeps 4 rows x 16 channels = 64 accumulators in registers: per filter tap it
//   reads 4 input values (conflict-free, a warp reads one row) and 16 weights for 64 FMAs.
//   ptxas (sm_90): 172-229 registers, no spills, so one 256-thread block per SM; the two barriers per input
//   channel then leave the SM idle while the channel's tile comes from memory.
//   ASYNC = true (ConvAlgo::DirectAsync): two shared-memory buffers; the next channel's tile and weights are
//   copied with cp.async (zero-fill for padding, clamped addresses for replicate) while the current channel is
//   computed, one barrier per channel, no extra registers (twice the shared memory: 31 KB for 3x3x3). The FMAs
//   are the same in the same order, so its output is the synchronous kernel's bit for bit (tested), and Auto
//   times both. Speed: not yet measured on a GPU.
// conv_fwd_cout1_kernel<KD, KH, KW, RPT, CPT>: one output channel (SRCNN conv3 32->1 5x5, and the
//   backward-data pass of conv1, 64->1 9x9). A block of 256 threads (16 x 16) computes a 64 x 64 output tile;
//   each thread a 4 x 4 patch (3-D: 32 x 64 and 2 x 4, so that the three staged planes fit in 48 KiB); small
//   outputs (training sub-images) get half the patch a side, 2 x 2 (3-D: 1 x 2), whose tiles leave fewer
//   positions idle. Per input channel the tile plus halo is staged in shared memory and the channel's taps are
//   held in registers; each thread loads each input row segment it needs once (float4 / float2 loads) and
//   slides the filter along it in registers: (4+KH-1) x (4+KW-1) loads for 16*KH*KW FMAs (the 4 x 4 patch).
//   Speed: not yet measured on a GPU.
// conv_fwd_igemm_kernel<KD, KH, KW, BM> (ConvAlgo::ImplicitGemm, and AutoDirect's third choice): the shapes of
//   the tiled kernel as a GEMM of M = Cout rows, N = every (image, position) pair as columns and K = Cin x taps,
//   its B operand gathered from x while staging, so that batches of small pictures (SRCNN's 21 x 21 and 25 x 25
//   training outputs fill 43-61% of a 32 x 32 tile) leave no thread idle. Block tile BM x (8192 / BM) with BM 64,
//   32 or 16 by Cout, 16 reduction steps per stage, each thread a 4 x 8 register tile; the next stage is loaded
//   into registers while the current one is computed. Each output is the tiled kernel's fmaf chain (input
//   channel, then tap, from 0; then the bias), so the results are Direct's bit for bit (tested).
//   ptxas (sm_90): 127 registers (BM 64), 128 with 12 bytes of spills (BM 32), 188-227 (BM 16).
//   Speed: not yet measured on a GPU.
// conv_fwd_generic_kernel: the fallback for other filter sizes, one thread per output element, loads
//   through the read-only cache. Speed: not yet measured on a GPU.
// Backward data (direct): dx = conv(dy, flip(w)^T) with padding k-1-p, zero padding, run by the forward
//   kernels above (flip_transpose_kernel makes the weights); with replicate padding
//   replicate_fix_kernel then adds, for every border sample, the gradient of the clamped positions outside
//   the input (only the k offsets that reach the output are visited).
// conv_bwdw_igemm_kernel<BM, BN, TM, TN>: backward weight as an implicit GEMM
//   dW[co][ci, k] = sum over q = (n, o) of dy[n, co, o] * x_pad[n, ci, o + k - p], whose B operand is
//   gathered from x on the fly (no column buffer). Block tile BM x BN (64 x 64, 32 x 128 or 4 x 256 by output
//   channels; 64 x 32 and 32 x 32 where few columns would leave a wide tile mostly idle, 1 x 256 for one output
//   channel: igemm_cfg), 16 reduction steps per shared memory stage (loaded into registers one stage ahead,
//   so that the loads are in flight while the previous stage is computed; each thread's position decoded once
//   and moved on by counters, no division per stage), TM x TN register tile per thread;
//   the reduction over q is split across gridDim.z blocks that write partial tiles, summed in a fixed order by
//   sum_partials_kernel (deterministic), a block per 32 weights with its 8 rows of threads taking every 8th
//   split.
//   Speed: not yet measured on a GPU.
#include <algorithm>

#include "backend.hpp"
#include "common.cuh"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/conv_kernels.hpp"

namespace magmasr {
namespace cuda {
namespace convk {

namespace {

struct ConvDims {
  int N, Cin, Cout;
  int D, H, W;
  int kD, kH, kW;
  int pD, pH, pW;
  int oD, oH, oW;
  int replicate;
};

ConvDims dims_of(const ConvGeom& g) {
  ConvDims s;
  s.N = int(g.N), s.Cin = int(g.Cin), s.Cout = int(g.Cout);
  s.D = int(g.D), s.H = int(g.H), s.W = int(g.W);
  s.kD = int(g.kD), s.kH = int(g.kH), s.kW = int(g.kW);
  s.pD = int(g.pD), s.pH = int(g.pH), s.pW = int(g.pW);
  s.oD = int(g.oD()), s.oH = int(g.oH()), s.oW = int(g.oW());
  s.replicate = g.mode == PadMode::Replicate ? 1 : 0;
  return s;
}

// Where the padded input sample (id, ih, iw) of one (n, ci) plane is read from: with replicate padding the index
// clamped into the input; with zero padding inside = false outside the input (the sample is 0, and the plane's
// first sample, returned then, is not to be read).
__device__ __forceinline__ const float* padded_sample(const float* __restrict__ plane, const ConvDims& s, int id,
                                                      int ih, int iw, bool& inside) {
  inside = true;
  if (s.replicate) {
    id = dev::clampi(id, 0, s.D - 1);
    ih = dev::clampi(ih, 0, s.H - 1);
    iw = dev::clampi(iw, 0, s.W - 1);
  } else if (unsigned(id) >= unsigned(s.D) || unsigned(ih) >= unsigned(s.H) || unsigned(iw) >= unsigned(s.W)) {
    inside = false;
    return plane;
  }
  return plane + (int64_t(id) * s.H + ih) * s.W + iw;
}

// The padded input sample (id, ih, iw) of one (n, ci) plane.
__device__ __forceinline__ float fetch(const float* __restrict__ plane, const ConvDims& s, int id, int ih, int iw) {
  bool inside;
  const float* p = padded_sample(plane, s, id, ih, iw, inside);
  return inside ? __ldg(p) : 0.f;
}

// ===================================== Gemm strategy helpers ==============================================

// The index type I of the element-wise helpers below: int where the launcher has checked that every index (and
// index + grid stride) fits, so that their divisions are 32-bit ones (a few instructions, not a 64-bit division
// routine per element); int64_t otherwise.
template <typename I>
__global__ void __launch_bounds__(kBlock) im2col_kernel(ConvDims s, const float* __restrict__ x, int n0, int nb,
                                                        int64_t p0, int pc, float* __restrict__ col) {
  const int kv = s.kD * s.kH * s.kW;
  const I total = I(s.Cin) * kv * nb * pc;
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  for (I idx = I(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += I(blockDim.x) * gridDim.x) {
    const int pl = int(idx % pc);
    const I t = idx / pc;
    const int b = int(t % nb);
    int j = int(t / nb);
    const int kw = j % s.kW;
    j /= s.kW;
    const int kh = j % s.kH;
    j /= s.kH;
    const int kd = j % s.kD;
    const int ci = j / s.kD;
    const I p = I(p0) + pl;
    const int ow = int(p % s.oW);
    const I t2 = p / s.oW;
    const int oh = int(t2 % s.oH);
    const int od = int(t2 / s.oH);
    const float* plane = x + (int64_t(n0 + b) * s.Cin + ci) * inS;
    col[idx] = fetch(plane, s, od + kd - s.pD, oh + kh - s.pH, ow + kw - s.pW);
  }
}

// Range of padded positions q whose clamp is i (replicate), or just i (zeros).
__device__ __forceinline__ void q_range(int i, int size, int pad, int replicate, int& lo, int& hi) {
  lo = i;
  hi = i;
  if (replicate) {
    if (i == 0) lo = -pad;
    if (i == size - 1) hi = size - 1 + pad;
  }
}

// Visits the input samples of rows [id0, id0 + nd) x [ih0, ih0 + nh) (all columns) of the nb images: the
// launcher passes the rows that the slice's positions [p0, p0 + pc) can reach, the whole input for one slice.
template <typename I>
__global__ void __launch_bounds__(kBlock) col2im_kernel(ConvDims s, const float* __restrict__ col, int n0, int nb,
                                                        int64_t p0, int pc, int id0, int nd, int ih0, int nh,
                                                        int accumulate, float* __restrict__ dx) {
  const I total = I(nb) * s.Cin * nd * nh * s.W;
  const int64_t ld = int64_t(nb) * pc;
  float* out = dx + int64_t(n0) * s.Cin * (int64_t(s.D) * s.H * s.W);
  for (I idx = I(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += I(blockDim.x) * gridDim.x) {
    const int iw = int(idx % s.W);
    I t = idx / s.W;
    const int ih = ih0 + int(t % nh);
    t /= nh;
    const int id = id0 + int(t % nd);
    t /= nd;
    const int ci = int(t % s.Cin);
    const int b = int(t / s.Cin);
    const int64_t o = ((int64_t(b) * s.Cin + ci) * s.D + id) * s.H * s.W + int64_t(ih) * s.W + iw;
    int dlo, dhi, hlo, hhi, wlo, whi;
    q_range(id, s.D, s.pD, s.replicate, dlo, dhi);
    q_range(ih, s.H, s.pH, s.replicate, hlo, hhi);
    q_range(iw, s.W, s.pW, s.replicate, wlo, whi);
    const int64_t colb = int64_t(b) * pc - p0;  // col[colb + j * ld + p] is the entry of position p
    float sum = 0.f;
    for (int qd = dlo; qd <= dhi; ++qd) {
      for (int kd = 0; kd < s.kD; ++kd) {
        const int od = qd + s.pD - kd;
        if (od < 0 || od >= s.oD) continue;
        for (int qh = hlo; qh <= hhi; ++qh) {
          for (int kh = 0; kh < s.kH; ++kh) {
            const int oh = qh + s.pH - kh;
            if (oh < 0 || oh >= s.oH) continue;
            for (int qw = wlo; qw <= whi; ++qw) {
              for (int kw = 0; kw < s.kW; ++kw) {
                const int ow = qw + s.pW - kw;
                if (ow < 0 || ow >= s.oW) continue;
                const int64_t p = (int64_t(od) * s.oH + oh) * s.oW + ow;
                if (p < p0 || p >= p0 + pc) continue;
                const int j = ((ci * s.kD + kd) * s.kH + kh) * s.kW + kw;
                sum += col[colb + int64_t(j) * ld + p];
              }
            }
          }
        }
      }
    }
    out[o] = accumulate ? out[o] + sum : sum;
  }
}

template <typename I>
__global__ void __launch_bounds__(kBlock) bias_relu_kernel(int64_t P, int Cout, int n0, int nb, int64_t p0, int pc,
                                                           const float* __restrict__ b, int relu, float* __restrict__ y) {
  const I total = I(nb) * Cout * pc;
  for (I idx = I(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += I(blockDim.x) * gridDim.x) {
    const int pl = int(idx % pc);
    const I t = idx / pc;
    const int co = int(t % Cout);
    const int bb = int(t / Cout);
    float* yp = y + (int64_t(n0 + bb) * Cout + co) * P + p0 + pl;
    float v = *yp + (b != nullptr ? b[co] : 0.f);
    if (relu) v = v <= 0.f ? 0.f : v;
    *yp = v;
  }
}

template <typename I>
__global__ void __launch_bounds__(kBlock) pack_rows_kernel(int64_t P, int Cout, int n0, int nb, int64_t p0, int pc,
                                                           const float* __restrict__ dy, float* __restrict__ out) {
  const I total = I(nb) * Cout * pc;
  for (I idx = I(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += I(blockDim.x) * gridDim.x) {
    const int pl = int(idx % pc);
    const I t = idx / pc;
    const int bb = int(t % nb);
    const int co = int(t / nb);
    out[idx] = dy[(int64_t(n0 + bb) * Cout + co) * P + p0 + pl];
  }
}

// ========================================== bias gradient =================================================

__global__ void __launch_bounds__(kBlock) bias_grad_partial_kernel(int N, int Cout, int64_t P, int64_t chunk,
                                                                   const float* __restrict__ dy,
                                                                   double* __restrict__ partial) {
  // Block z sums the z-th chunk of the (image, position) pairs of channel co: a run of positions in each image
  // that the chunk touches, so that a batch of small images is spread over many blocks.
  const int z = blockIdx.x, co = blockIdx.y, S = gridDim.x;
  const int64_t total = int64_t(N) * P;
  const int64_t beg = int64_t(z) * chunk;
  const int64_t end = beg + chunk < total ? beg + chunk : total;
  double acc = 0.0;
  for (int64_t q = beg; q < end;) {
    const int64_t n = q / P, p0 = q - n * P;
    const int64_t p1 = p0 + (end - q) < P ? p0 + (end - q) : P;
    const float* row = dy + (n * Cout + co) * P;
    for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) acc += double(row[p]);
    q += p1 - p0;
  }
  acc = dev::block_sum<kBlock>(acc);
  if (threadIdx.x == 0) partial[int64_t(co) * S + z] = acc;
}

__global__ void __launch_bounds__(kBlock) bias_grad_final_kernel(int S, const double* __restrict__ partial,
                                                                 float* __restrict__ db) {
  const int co = blockIdx.x;
  double acc = 0.0;
  for (int z = threadIdx.x; z < S; z += blockDim.x) acc += partial[int64_t(co) * S + z];
  acc = dev::block_sum<kBlock>(acc);
  if (threadIdx.x == 0) db[co] = float(acc);
}

int bias_grad_splits(const Context& ctx, const ConvGeom& g) {
  const int64_t QN = g.N * g.out_spatial();  // the (image, position) pairs summed per channel
  int64_t S = (int64_t(ctx.sm_count()) * 4 + g.Cout - 1) / g.Cout;
  const int64_t maxS = (QN + 1023) / 1024;
  S = std::min(S, maxS);
  return int(std::max<int64_t>(S, 1));
}

// =========================================== Direct forward ===============================================

template <int KD, int KH, int KW, int COT, int RPT, bool ASYNC>
__global__ void __launch_bounds__(kBlock) conv_fwd_tiled_kernel(ConvDims s, const float* __restrict__ x,
                                                                const float* __restrict__ w,
                                                                const float* __restrict__ b, float* __restrict__ y,
                                                                int relu) {
  constexpr int TW = 32, TH = 8 * RPT, IH = TH + KH - 1, IW = TW + KW - 1, KV = KD * KH * KW;
  constexpr int STAGES = ASYNC ? 2 : 1;  // ASYNC: channel ci + 1 is copied into one buffer while ci is read
  static_assert(COT % 4 == 0, "COT must be a multiple of 4");
  MAGMASR_SHARED(float, s_in, [STAGES][KD][IH][IW]);
  MAGMASR_SHARED(float, s_w, [STAGES][KV][COT]);

  const int tid = threadIdx.x, tx = tid & 31, ty = tid >> 5;
  // blockIdx.x = tile * groups + channel group: the blocks of one tile's channel groups run side by side and read
  // its input tile from L2 rather than each from DRAM.
  const int groups = (s.Cout + COT - 1) / COT, tile = int(blockIdx.x) / groups;
  const int tilesW = (s.oW + TW - 1) / TW;
  const int oh0 = (tile / tilesW) * TH, ow0 = (tile % tilesW) * TW;
  const int co0 = (int(blockIdx.x) % groups) * COT;
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  const int64_t outS = int64_t(s.oD) * s.oH * s.oW;

  // Stages input channel ci of image n (depth od) into buffer buf: the tile plus halo, padding resolved, and the
  // channel's COT x KV weights. ASYNC: cp.async copies, complete after this thread's cp_async_wait_all().
  const auto stage = [&](int n, int od, int ci, int buf) {
    const float* plane = x + (int64_t(n) * s.Cin + ci) * inS;
    for (int e = tid; e < KD * IH * IW; e += kBlock) {
      const int kd = e / (IH * IW), r = (e / IW) % IH, c = e % IW;
      bool inside;
      const float* src = padded_sample(plane, s, od + kd - s.pD, oh0 + r - s.pH, ow0 + c - s.pW, inside);
      if (ASYNC) {
        dev::cp_async_f32(&s_in[buf][kd][r][c], src, inside);
      } else {
        s_in[buf][kd][r][c] = inside ? __ldg(src) : 0.f;
      }
    }
    for (int e = tid; e < KV * COT; e += kBlock) {
      const int k = e / COT, c = e % COT, co = co0 + c;
      const bool inside = co < s.Cout;
      const float* src = w + (int64_t(inside ? co : 0) * s.Cin + ci) * KV + k;
      if (ASYNC) {
        dev::cp_async_f32(&s_w[buf][k][c], src, inside);
      } else {
        s_w[buf][k][c] = inside ? __ldg(src) : 0.f;
      }
    }
  };

  for (int z = blockIdx.z; z < s.N * s.oD; z += gridDim.z) {
    const int n = z / s.oD, od = z % s.oD;
    float acc[RPT][COT];
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int c = 0; c < COT; ++c) acc[r][c] = 0.f;

    if (ASYNC && s.Cin > 0) {
      __syncthreads();  // the previous (n, od)'s last channel is no longer read
      stage(n, od, 0, 0);
    }
    for (int ci = 0; ci < s.Cin; ++ci) {
      const int buf = ASYNC ? (ci & 1) : 0;
      if (ASYNC) {
        dev::cp_async_wait_all();  // this thread's copies of channel ci
      } else {
        __syncthreads();  // the previous channel's tiles are no longer read
        stage(n, od, ci, 0);
      }
      // Channel ci is in shared memory; with ASYNC every thread has also finished reading channel ci - 1, whose
      // buffer now takes channel ci + 1 while channel ci is computed.
      __syncthreads();
      if (ASYNC && ci + 1 < s.Cin) stage(n, od, ci + 1, buf ^ 1);
#pragma unroll
      for (int kd = 0; kd < KD; ++kd) {
#pragma unroll
        for (int kh = 0; kh < KH; ++kh) {
#pragma unroll
          for (int kw = 0; kw < KW; ++kw) {
            float wv[COT];
#pragma unroll
            for (int c4 = 0; c4 < COT / 4; ++c4) {
              const float4 t = *reinterpret_cast<const float4*>(&s_w[buf][(kd * KH + kh) * KW + kw][4 * c4]);
              wv[4 * c4 + 0] = t.x;
              wv[4 * c4 + 1] = t.y;
              wv[4 * c4 + 2] = t.z;
              wv[4 * c4 + 3] = t.w;
            }
#pragma unroll
            for (int r = 0; r < RPT; ++r) {
              const float v = s_in[buf][kd][ty * RPT + r + kh][tx + kw];
#pragma unroll
              for (int c = 0; c < COT; ++c) acc[r][c] = fmaf(v, wv[c], acc[r][c]);
            }
          }
        }
      }
    }

    const int ow = ow0 + tx;
#pragma unroll
    for (int c = 0; c < COT; ++c) {
      const int co = co0 + c;
      if (co >= s.Cout) break;
      const float bias = b != nullptr ? __ldg(b + co) : 0.f;
      float* yp = y + (int64_t(n) * s.Cout + co) * outS + int64_t(od) * s.oH * s.oW;
#pragma unroll
      for (int r = 0; r < RPT; ++r) {
        const int oh = oh0 + ty * RPT + r;
        if (oh < s.oH && ow < s.oW) {
          float v = acc[r][c] + bias;
          if (relu) v = v <= 0.f ? 0.f : v;
          yp[int64_t(oh) * s.oW + ow] = v;
        }
      }
    }
  }
}

// ====================================== Implicit-GEMM forward =============================================

constexpr int kBK = 16;  // reduction steps per shared-memory stage of the implicit GEMMs

// The implicit GEMM forward's column tile for a row tile of BM (4 x 8 outputs per thread): 128, 256, 512.
template <int BM>
constexpr int kIgemmFwdCols = kBlock / (BM / 4) * 8;

// y[n, co, o] = sum over k = (ci, kd, kh, kw) of w[co][k] * x_pad[n, ci, o + k - p]: a GEMM of M = Cout rows,
// columns q = (n, o) over every image and position (so no column is wasted at a tile's edge, whatever the picture
// size) and a reduction of K = Cin * KD*KH*KW, whose B operand is gathered from x while staging. Each thread
// owns a 4 x 8 register tile: rows tm*4 .. +3 and the columns tn*4 .. +3 and BN/2 + tn*4 .. +3, read from shared
// memory as float4 (A broadcast, B conflict-free). The next stage's A and B entries are loaded into registers
// while the current stage is computed. Every output is one thread's sum over k in order (deterministic).
template <int KD, int KH, int KW, int BM>
__global__ void __launch_bounds__(kBlock) conv_fwd_igemm_kernel(ConvDims s, const float* __restrict__ x,
                                                                const float* __restrict__ w,
                                                                const float* __restrict__ b, float* __restrict__ y,
                                                                int relu) {
  constexpr int KV = KD * KH * KW, TM = 4, TN = 8;
  constexpr int MT = BM / TM, NT = kBlock / MT, BN = kIgemmFwdCols<BM>;
  constexpr int AP = BM + 4, BP = BN + 4;                      // padded pitches (multiples of 4)
  constexpr int AL = BM * kBK / kBlock, BL = BN * kBK / kBlock;  // A and B entries staged per thread
  constexpr int NCOL = BN >= kBlock ? BN / kBlock : 1;         // distinct B columns per thread
  static_assert(MT * NT == kBlock && BN == NT * TN && AL >= 1 && BL >= 1, "tile shape");
  static_assert(BN % kBlock == 0 || kBlock % BN == 0, "B staging layout");
  MAGMASR_SHARED(float, As, [kBK][AP]);
  MAGMASR_SHARED(float, Bs, [kBK][BP]);

  const int K = s.Cin * KV;
  const int oHW = s.oH * s.oW, oS = s.oD * oHW;
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  const int Q = s.N * oS;
  const int q0 = int(blockIdx.x) * BN, m0 = int(blockIdx.y) * BM;
  const int tid = threadIdx.x, tm = tid / NT, tn = tid % NT;

  // The columns this thread stages: j = tid % BN + c * kBlock; entry i is column i % NCOL at reduction row
  // (tid + i * kBlock) / BN of the stage.
  int c_n[NCOL], c_d[NCOL], c_h[NCOL], c_w[NCOL];
  bool c_ok[NCOL];
#pragma unroll
  for (int c = 0; c < NCOL; ++c) {
    const int q = q0 + tid % BN + c * kBlock;
    c_ok[c] = q < Q;
    const int qq = c_ok[c] ? q : 0;
    const int n = qq / oS, o = qq - n * oS;
    c_n[c] = n;
    c_d[c] = o / oHW - s.pD;
    c_h[c] = (o / s.oW) % s.oH - s.pH;
    c_w[c] = o % s.oW - s.pW;
  }

  float ra[AL], rb[BL];
  const auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < AL; ++i) {
      const int e = tid + i * kBlock, m = e / kBK, k = k0 + e % kBK, co = m0 + m;
      ra[i] = (co < s.Cout && k < K) ? __ldg(w + int64_t(co) * K + k) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < BL; ++i) {
      const int c = i % NCOL, k = k0 + (tid + i * kBlock) / BN;
      float v = 0.f;
      if (c_ok[c] && k < K) {
        const int ci = k / KV, r = k - ci * KV;
        const int kd = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        v = fetch(x + (int64_t(c_n[c]) * s.Cin + ci) * inS, s, c_d[c] + kd, c_h[c] + kh, c_w[c] + kw);
      }
      rb[i] = v;
    }
  };

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  load(0);
  for (int k0 = 0; k0 < K; k0 += kBK) {
#pragma unroll
    for (int i = 0; i < AL; ++i) {
      const int e = tid + i * kBlock;
      As[e % kBK][e / kBK] = ra[i];
    }
#pragma unroll
    for (int i = 0; i < BL; ++i) {
      const int e = tid + i * kBlock;
      Bs[e / BN][e % BN] = rb[i];
    }
    __syncthreads();
    if (k0 + kBK < K) load(k0 + kBK);  // in flight while this stage is computed
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&As[k][tm * TM]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][tn * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][BN / 2 + tn * 4]);
      const float av[TM] = {a.x, a.y, a.z, a.w};
      const float bv[TN] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int q = q0 + (j < 4 ? tn * 4 + j : BN / 2 + tn * 4 + (j - 4));
    if (q >= Q) continue;
    const int n = q / oS, o = q - n * oS;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int co = m0 + tm * TM + i;
      if (co >= s.Cout) break;
      float v = acc[i][j] + (b != nullptr ? __ldg(b + co) : 0.f);
      if (relu) v = v <= 0.f ? 0.f : v;
      y[(int64_t(n) * s.Cout + co) * oS + o] = v;
    }
  }
}

// The cout1 kernel's output patch per thread (RPT rows x CPT columns; a block of 16 x 16 threads): 4 x 4 (a
// 64 x 64 tile) in 2-D and 2 x 4 (32 x 64) in 3-D, so that the KD staged planes fit; for small outputs (training
// sub-images: a 17 x 17 or 21 x 21 output fills 7-11% of a 64 x 64 tile) half of that a side, 2 x 2 (32 x 32) in
// 2-D and 1 x 2 (16 x 32) in 3-D. Each output is the same fmaf chain whatever the patch (input channel, then
// tap, then the bias), so the two tilings give the same bits.
template <int KD>
constexpr int kCout1Rows = KD > 1 ? 2 : 4;
template <int KD>
constexpr int kCout1SmallRows = KD > 1 ? 1 : 2;

template <int KD, int KH, int KW, int RPT, int CPT>
__global__ void __launch_bounds__(kBlock) conv_fwd_cout1_kernel(ConvDims s, const float* __restrict__ x,
                                                                const float* __restrict__ w,
                                                                const float* __restrict__ b, float* __restrict__ y,
                                                                int relu) {
  static_assert(CPT == 2 || CPT == 4, "row segments are read as float2 or float4");
  constexpr int BX = 16, BY = 16, VW = CPT;  // VW: floats per vector load
  constexpr int TW = BX * CPT, TH = BY * RPT, IH = TH + KH - 1, IW = TW + KW - 1, KV = KD * KH * KW;
  constexpr int NV = (CPT + KW - 1 + VW - 1) / VW;  // vector loads per row segment
  constexpr int IWP0 = (IW + 3) / 4 * 4, IWP1 = CPT * (BX - 1) + VW * NV;
  constexpr int IWP = IWP0 > IWP1 ? IWP0 : IWP1;  // row pitch: a multiple of 4 that covers every segment
  MAGMASR_SHARED(float, s_in, [KD][IH][IWP]);
  MAGMASR_SHARED(float, s_w, [KV]);

  const int tid = threadIdx.x, tx = tid % BX, ty = tid / BX;
  const int tilesW = (s.oW + TW - 1) / TW;
  const int oh0 = int(blockIdx.x / tilesW) * TH, ow0 = int(blockIdx.x % tilesW) * TW;
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  const int64_t outS = int64_t(s.oD) * s.oH * s.oW;

  for (int z = blockIdx.z; z < s.N * s.oD; z += gridDim.z) {
    const int n = z / s.oD, od = z % s.oD;
    float acc[RPT][CPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) acc[r][c] = 0.f;

    for (int ci = 0; ci < s.Cin; ++ci) {
      __syncthreads();
      const float* plane = x + (int64_t(n) * s.Cin + ci) * inS;
      for (int e = tid; e < KD * IH * IWP; e += kBlock) {
        const int kd = e / (IH * IWP), r = (e / IWP) % IH, c = e % IWP;
        s_in[kd][r][c] = fetch(plane, s, od + kd - s.pD, oh0 + r - s.pH, ow0 + c - s.pW);
      }
      for (int e = tid; e < KV; e += kBlock) s_w[e] = __ldg(w + int64_t(ci) * KV + e);
      __syncthreads();
      float wr[KV];
#pragma unroll
      for (int k = 0; k < KV; ++k) wr[k] = s_w[k];
#pragma unroll
      for (int kd = 0; kd < KD; ++kd) {
#pragma unroll
        for (int rr = 0; rr < RPT + KH - 1; ++rr) {
          float seg[VW * NV];
#pragma unroll
          for (int v = 0; v < NV; ++v) {
            const float* at = &s_in[kd][ty * RPT + rr][tx * CPT + VW * v];
            if constexpr (VW == 4) {
              const float4 t = *reinterpret_cast<const float4*>(at);
              seg[4 * v + 0] = t.x, seg[4 * v + 1] = t.y, seg[4 * v + 2] = t.z, seg[4 * v + 3] = t.w;
            } else {
              const float2 t = *reinterpret_cast<const float2*>(at);
              seg[2 * v + 0] = t.x, seg[2 * v + 1] = t.y;
            }
          }
#pragma unroll
          for (int r = 0; r < RPT; ++r) {
            const int kh = rr - r;
            if (kh < 0 || kh >= KH) continue;
#pragma unroll
            for (int kw = 0; kw < KW; ++kw) {
              const float wk = wr[(kd * KH + kh) * KW + kw];
#pragma unroll
              for (int c = 0; c < CPT; ++c) acc[r][c] = fmaf(seg[c + kw], wk, acc[r][c]);
            }
          }
        }
      }
    }

    const float bias = b != nullptr ? __ldg(b) : 0.f;
    float* yp = y + int64_t(n) * outS + int64_t(od) * s.oH * s.oW;
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int oh = oh0 + ty * RPT + r;
      if (oh >= s.oH) continue;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int ow = ow0 + tx * CPT + c;
        if (ow < s.oW) {
          float v = acc[r][c] + bias;
          if (relu) v = v <= 0.f ? 0.f : v;
          yp[int64_t(oh) * s.oW + ow] = v;
        }
      }
    }
  }
}

__global__ void __launch_bounds__(kBlock) conv_fwd_generic_kernel(ConvDims s, const float* __restrict__ x,
                                                                  const float* __restrict__ w,
                                                                  const float* __restrict__ b,
                                                                  float* __restrict__ y, int relu) {
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  const int kv = s.kD * s.kH * s.kW;
  const int64_t total = int64_t(s.N) * s.Cout * s.oD * s.oH * s.oW;
  for (int64_t idx = dev::global_tid(); idx < total; idx += dev::grid_stride()) {
    const int ow = int(idx % s.oW);
    int64_t t = idx / s.oW;
    const int oh = int(t % s.oH);
    t /= s.oH;
    const int od = int(t % s.oD);
    t /= s.oD;
    const int co = int(t % s.Cout);
    const int n = int(t / s.Cout);
    float acc = 0.f;
    for (int ci = 0; ci < s.Cin; ++ci) {
      const float* plane = x + (int64_t(n) * s.Cin + ci) * inS;
      const float* wp = w + (int64_t(co) * s.Cin + ci) * kv;
      for (int kd = 0; kd < s.kD; ++kd)
        for (int kh = 0; kh < s.kH; ++kh)
          for (int kw = 0; kw < s.kW; ++kw)
            acc = fmaf(fetch(plane, s, od + kd - s.pD, oh + kh - s.pH, ow + kw - s.pW),
                       __ldg(wp + (kd * s.kH + kh) * s.kW + kw), acc);
    }
    float v = acc + (b != nullptr ? __ldg(b + co) : 0.f);
    if (relu) v = v <= 0.f ? 0.f : v;
    y[idx] = v;
  }
}

// ====================================== Direct backward data ==============================================

__global__ void __launch_bounds__(kBlock) flip_transpose_kernel(int Cout, int Cin, int kv, const float* __restrict__ w,
                                                                float* __restrict__ wt) {
  const int64_t total = int64_t(Cout) * Cin * kv;
  for (int64_t idx = dev::global_tid(); idx < total; idx += dev::grid_stride()) {
    const int k = int(idx % kv);
    const int64_t t = idx / kv;
    const int co = int(t % Cout);
    const int ci = int(t / Cout);
    wt[idx] = w[(int64_t(co) * Cin + ci) * kv + (kv - 1 - k)];
  }
}

__global__ void __launch_bounds__(kBlock) replicate_fix_kernel(ConvDims s, const float* __restrict__ dy,
                                                               const float* __restrict__ w, float* __restrict__ dx) {
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  const int64_t outS = int64_t(s.oD) * s.oH * s.oW;
  const int kv = s.kD * s.kH * s.kW;
  const int64_t total = int64_t(s.N) * s.Cin * inS;
  for (int64_t idx = dev::global_tid(); idx < total; idx += dev::grid_stride()) {
    const int iw = int(idx % s.W);
    int64_t t = idx / s.W;
    const int ih = int(t % s.H);
    t /= s.H;
    const int id = int(t % s.D);
    t /= s.D;
    const int ci = int(t % s.Cin);
    const int n = int(t / s.Cin);
    int dlo, dhi, hlo, hhi, wlo, whi;
    q_range(id, s.D, s.pD, 1, dlo, dhi);
    q_range(ih, s.H, s.pH, 1, hlo, hhi);
    q_range(iw, s.W, s.pW, 1, wlo, whi);
    if (dlo == dhi && hlo == hhi && wlo == whi) continue;  // interior: fully handled by the zero-padded pass
    float sum = 0.f;
    for (int qd = dlo; qd <= dhi; ++qd) {
      // o = q + p - k must lie in [0, o_size): k in [q + p - o_size + 1, q + p]
      const int kd0 = max(0, qd + s.pD - s.oD + 1), kd1 = min(s.kD - 1, qd + s.pD);
      for (int qh = hlo; qh <= hhi; ++qh) {
        const int kh0 = max(0, qh + s.pH - s.oH + 1), kh1 = min(s.kH - 1, qh + s.pH);
        for (int qw = wlo; qw <= whi; ++qw) {
          if (qd == id && qh == ih && qw == iw) continue;  // the q = i term came from the main pass
          const int kw0 = max(0, qw + s.pW - s.oW + 1), kw1 = min(s.kW - 1, qw + s.pW);
          for (int co = 0; co < s.Cout; ++co) {
            const float* dyp = dy + (int64_t(n) * s.Cout + co) * outS;
            const float* wp = w + (int64_t(co) * s.Cin + ci) * kv;
            for (int kd = kd0; kd <= kd1; ++kd)
              for (int kh = kh0; kh <= kh1; ++kh)
                for (int kw = kw0; kw <= kw1; ++kw) {
                  const int od = qd + s.pD - kd, oh = qh + s.pH - kh, ow = qw + s.pW - kw;
                  sum = fmaf(__ldg(dyp + (int64_t(od) * s.oH + oh) * s.oW + ow),
                             __ldg(wp + (kd * s.kH + kh) * s.kW + kw), sum);
                }
          }
        }
      }
    }
    dx[idx] += sum;
  }
}

// ===================================== Direct backward weight =============================================

template <int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kBlock) conv_bwdw_igemm_kernel(ConvDims s, const float* __restrict__ x,
                                                                 const float* __restrict__ dy,
                                                                 float* __restrict__ partial, int qchunk) {
  static_assert((BM / TM) * (BN / TN) == kBlock, "one thread per register tile");
  static_assert(kBlock % kBK == 0, "each thread loads one reduction slot");
  constexpr int AP = BM + 4, BP = BN + 4;  // padded pitches (multiples of 4: float4 reads stay aligned)
  constexpr int BL = (BN * kBK + kBlock - 1) / kBlock, AL = (BM * kBK + kBlock - 1) / kBlock;
  MAGMASR_SHARED(float, As, [kBK][AP]);
  MAGMASR_SHARED(float, Bs, [kBK][BP]);

  const int kv = s.kD * s.kH * s.kW;
  const int M = s.Cout, Nn = s.Cin * kv;
  const int oS = s.oD * s.oH * s.oW;
  const int64_t inS = int64_t(s.D) * s.H * s.W;
  const int Q = s.N * oS;
  const int m0 = blockIdx.y * BM, j0 = blockIdx.x * BN;
  const int qbeg = blockIdx.z * qchunk;
  const int qend = min(Q, qbeg + qchunk);
  const int tid = threadIdx.x, tm = tid / (BN / TN), tn = tid % (BN / TN);
  const int kk = tid % kBK;

  // The B entries this thread stages: fixed columns j, so their (ci, kernel offset) are decoded once.
  int b_ci[BL], b_od[BL], b_oh[BL], b_ow[BL];
  bool b_ok[BL];
#pragma unroll
  for (int i = 0; i < BL; ++i) {
    const int jn = tid / kBK + i * (kBlock / kBK);
    const int j = j0 + jn;
    b_ok[i] = jn < BN && j < Nn;
    const int jj = b_ok[i] ? j : 0;
    const int k = jj % kv;
    b_ci[i] = jj / kv;
    b_od[i] = k / (s.kH * s.kW) - s.pD;
    b_oh[i] = (k / s.kW) % s.kH - s.pH;
    b_ow[i] = k % s.kW - s.pW;
  }

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  // The stage's entries of this thread (reduction slot kk): A rows m = e / kBK for e = tid + i * kBlock < BM * kBK,
  // B columns jn; loaded into registers one stage ahead, so that their global loads are in flight while the
  // previous stage is computed. The slot's position q = (image n, output position o = (od, oh, ow)) is decoded
  // once, then moved kBK positions on per stage without a division (one row boundary at most where the rows are
  // kBK positions or longer).
  float ra[AL], rb[BL];
  int n = 0, od = 0, oh = 0, ow = 0;
  if (qbeg + kk < qend) {
    n = (qbeg + kk) / oS;
    const int o = qbeg + kk - n * oS, t = o / s.oW;
    ow = o % s.oW;
    oh = t % s.oH;
    od = t / s.oH;
  }
  const auto next_stage = [&]() {
    ow += kBK;
    while (ow >= s.oW) {
      ow -= s.oW;
      if (++oh == s.oH) {
        oh = 0;
        if (++od == s.oD) od = 0, ++n;
      }
    }
  };
  const auto load = [&](int q0) {
    const bool qok = q0 + kk < qend;
    const int o = (od * s.oH + oh) * s.oW + ow;
#pragma unroll
    for (int i = 0; i < AL; ++i) {
      const int e = tid + i * kBlock, m = e / kBK, co = m0 + m;
      ra[i] = (e < BM * kBK && qok && co < M) ? __ldg(dy + (int64_t(n) * M + co) * oS + o) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < BL; ++i) {
      float v = 0.f;
      if (qok && b_ok[i]) {
        const float* plane = x + (int64_t(n) * s.Cin + b_ci[i]) * inS;
        v = fetch(plane, s, od + b_od[i], oh + b_oh[i], ow + b_ow[i]);
      }
      rb[i] = v;
    }
  };

  if (qbeg < qend) load(qbeg);
  for (int q0 = qbeg; q0 < qend; q0 += kBK) {
#pragma unroll
    for (int i = 0; i < AL; ++i) {
      const int e = tid + i * kBlock;
      if (e < BM * kBK) As[kk][e / kBK] = ra[i];
    }
#pragma unroll
    for (int i = 0; i < BL; ++i) {
      const int jn = tid / kBK + i * (kBlock / kBK);
      if (jn < BN) Bs[kk][jn] = rb[i];
    }
    __syncthreads();
    if (q0 + kBK < qend) next_stage(), load(q0 + kBK);
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      float a[TM], bv[TN];
      if constexpr (TM % 4 == 0) {
#pragma unroll
        for (int i = 0; i < TM / 4; ++i) {
          const float4 t = *reinterpret_cast<const float4*>(&As[k][tm * TM + 4 * i]);
          a[4 * i] = t.x, a[4 * i + 1] = t.y, a[4 * i + 2] = t.z, a[4 * i + 3] = t.w;
        }
      } else {
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = As[k][tm * TM + i];
      }
      if constexpr (TN % 4 == 0) {
#pragma unroll
        for (int i = 0; i < TN / 4; ++i) {
          const float4 t = *reinterpret_cast<const float4*>(&Bs[k][tn * TN + 4 * i]);
          bv[4 * i] = t.x, bv[4 * i + 1] = t.y, bv[4 * i + 2] = t.z, bv[4 * i + 3] = t.w;
        }
      } else {
#pragma unroll
        for (int i = 0; i < TN; ++i) bv[i] = Bs[k][tn * TN + i];
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

  float* out = partial + int64_t(blockIdx.z) * M * Nn;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int co = m0 + tm * TM + i;
    if (co >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int jj = j0 + tn * TN + j;
      if (jj < Nn) out[int64_t(co) * Nn + jj] = acc[i][j];
    }
  }
}

// The split-K partial tiles summed: a block per kSumCols consecutive weights, its kSumRows rows of threads taking
// the splits z = row, row + kSumRows, ... (the reads of a row are consecutive weights: coalesced), then row 0
// adding the rows' sums in row order. A fixed order whatever the launch, so the result is deterministic; in double.
constexpr int kSumCols = 32, kSumRows = kBlock / kSumCols;
__global__ void __launch_bounds__(kBlock) sum_partials_kernel(int64_t count, int S, const float* __restrict__ partial,
                                                              float* __restrict__ out) {
  MAGMASR_SHARED(double, rows, [kSumRows][kSumCols]);
  const int tx = threadIdx.x % kSumCols, ty = threadIdx.x / kSumCols;
  for (int64_t i0 = int64_t(blockIdx.x) * kSumCols; i0 < count; i0 += int64_t(gridDim.x) * kSumCols) {
    const int64_t i = i0 + tx;
    double acc = 0.0;
    if (i < count)
      for (int z = ty; z < S; z += kSumRows) acc += double(partial[int64_t(z) * count + i]);
    rows[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && i < count) {
      double total = rows[0][tx];
      for (int r = 1; r < kSumRows; ++r) total += rows[r][tx];
      out[i] = float(total);
    }
    __syncthreads();
  }
}

// Tile configuration of the implicit GEMM: rows by the number of output channels (M), and where the columns
// (Nn = Cin x kernel volume) would leave more than a quarter of the wide tile's columns idle, a narrow column
// tile (SRCNN conv1: 81 columns fill 84% of three 32-wide tiles, 63% of two 64-wide ones; 3DSRnet conv1's 27
// fill 84% of a 32-wide tile, 21% of a 128-wide one). One output channel (SRCNN conv3) gets one-row tiles.
enum class IgemmCfg { Wide64x64, Wide64x32, Mid32x128, Mid32x32, Narrow4x256, Row1x256 };
void igemm_tile(IgemmCfg c, int& bm, int& bn) {
  switch (c) {
    case IgemmCfg::Wide64x64: bm = 64, bn = 64; break;
    case IgemmCfg::Wide64x32: bm = 64, bn = 32; break;
    case IgemmCfg::Mid32x128: bm = 32, bn = 128; break;
    case IgemmCfg::Mid32x32: bm = 32, bn = 32; break;
    case IgemmCfg::Narrow4x256: bm = 4, bn = 256; break;
    default: bm = 1, bn = 256; break;
  }
}
IgemmCfg igemm_cfg(const ConvGeom& g) {
  const int64_t Nn = g.Cin * g.kernel_volume();
  const auto mostly_idle = [Nn](IgemmCfg c) {
    int bm = 0, bn = 0;
    igemm_tile(c, bm, bn);
    return 3 * ((Nn + bn - 1) / bn * bn) > 4 * Nn;  // padded columns > 4/3 of the real ones
  };
  if (g.Cout >= 48) return mostly_idle(IgemmCfg::Wide64x64) ? IgemmCfg::Wide64x32 : IgemmCfg::Wide64x64;
  if (g.Cout >= 12) return mostly_idle(IgemmCfg::Mid32x128) ? IgemmCfg::Mid32x32 : IgemmCfg::Mid32x128;
  return g.Cout == 1 ? IgemmCfg::Row1x256 : IgemmCfg::Narrow4x256;
}

struct IgemmPlan {
  IgemmCfg cfg;
  unsigned gx, gy;
  int splits, qchunk;
};

IgemmPlan igemm_plan(const Context& ctx, const ConvGeom& g) {
  IgemmPlan p;
  p.cfg = igemm_cfg(g);
  int bm = 0, bn = 0;
  igemm_tile(p.cfg, bm, bn);
  const int64_t M = g.Cout, Nn = g.Cin * g.kernel_volume();
  const int64_t Q = g.N * g.out_spatial();
  p.gx = unsigned((Nn + bn - 1) / bn);
  p.gy = unsigned((M + bm - 1) / bm);
  const int64_t tiles = int64_t(p.gx) * p.gy;
  int64_t S = (int64_t(ctx.sm_count()) * 4 + tiles - 1) / tiles;  // about 4 blocks per SM in all
  S = std::min<int64_t>(S, (Q + 255) / 256);                       // at least 16 stages per block
  // keep the partial tiles within 256 MiB
  const int64_t max_s = std::max<int64_t>(1, (int64_t(64) << 20) / std::max<int64_t>(1, M * Nn));
  S = std::max<int64_t>(1, std::min(S, max_s));
  int64_t chunk = (Q + S - 1) / S;
  chunk = (chunk + kBK - 1) / kBK * kBK;
  p.qchunk = int(chunk);
  p.splits = int((Q + chunk - 1) / chunk);
  return p;
}

}  // namespace

// ============================================ launchers ===================================================

namespace {
// True when the indices of a grid-stride loop over `count` elements (and `count` plus the launch's whole grid, the
// largest index it computes) fit in an int.
bool fits_int(int64_t count, const Context& ctx) {
  return count + int64_t(grid_for(count, ctx)) * kBlock < (int64_t(1) << 31);
}

// launch(I{}) with I = int when `small`, int64_t otherwise: the index type of the helpers' kernels.
template <class Launch>
void with_index_type(bool small, Launch launch) {
  if (small) {
    launch(int{});
  } else {
    launch(int64_t{});
  }
}
}  // namespace

void im2col(const Context& ctx, const ConvGeom& g, const float* x, int64_t n0, int64_t nb, int64_t p0, int64_t pc,
            float* col) {
  const int64_t total = g.Cin * g.kernel_volume() * nb * pc;
  if (total <= 0) return;
  with_index_type(fits_int(total, ctx) && fits_int(p0 + pc, ctx), [&](auto i) {
    MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), im2col_kernel<decltype(i)>)(
        dims_of(g), x, int(n0), int(nb), p0, int(pc), col);
  });
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void col2im(const Context& ctx, const ConvGeom& g, const float* col, int64_t n0, int64_t nb, int64_t p0,
            int64_t pc, bool accumulate, float* dx) {
  // The output rows (od, oh) of positions [p0, p0 + pc) (every oh when the slice spans two depth planes), and the
  // input rows they read: padded rows o + k - p for k < kernel size, clamped (replicate padding reads the border
  // rows there; zero padding reads nothing, so the clamped range still holds every row it reads).
  const int64_t oW = g.oW(), oHW = g.oH() * oW;
  const int64_t od0 = p0 / oHW, od1 = (p0 + pc - 1) / oHW;
  const int64_t oh0 = od0 == od1 ? (p0 % oHW) / oW : 0, oh1 = od0 == od1 ? ((p0 + pc - 1) % oHW) / oW : g.oH() - 1;
  const auto clamp = [](int64_t v, int64_t size) { return std::min(std::max<int64_t>(v, 0), size - 1); };
  const int64_t id0 = clamp(od0 - g.pD, g.D), id1 = clamp(od1 + g.kD - 1 - g.pD, g.D);
  const int64_t ih0 = clamp(oh0 - g.pH, g.H), ih1 = clamp(oh1 + g.kH - 1 - g.pH, g.H);
  const int64_t total = nb * g.Cin * (id1 - id0 + 1) * (ih1 - ih0 + 1) * g.W;
  if (total <= 0) return;
  with_index_type(fits_int(total, ctx), [&](auto i) {
    MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), col2im_kernel<decltype(i)>)(
        dims_of(g), col, int(n0), int(nb), p0, int(pc), int(id0), int(id1 - id0 + 1), int(ih0), int(ih1 - ih0 + 1),
        accumulate ? 1 : 0, dx);
  });
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void bias_relu(const Context& ctx, const ConvGeom& g, int64_t n0, int64_t nb, int64_t p0, int64_t pc,
               const float* b, bool relu, float* y) {
  const int64_t total = nb * g.Cout * pc;
  if (total <= 0 || (b == nullptr && !relu)) return;
  with_index_type(fits_int(total, ctx), [&](auto i) {
    MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), bias_relu_kernel<decltype(i)>)(
        g.out_spatial(), int(g.Cout), int(n0), int(nb), p0, int(pc), b, relu ? 1 : 0, y);
  });
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void pack_rows(const Context& ctx, const ConvGeom& g, const float* dy, int64_t n0, int64_t nb, int64_t p0,
               int64_t pc, float* out) {
  const int64_t total = nb * g.Cout * pc;
  if (total <= 0) return;
  with_index_type(fits_int(total, ctx), [&](auto i) {
    MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), pack_rows_kernel<decltype(i)>)(
        g.out_spatial(), int(g.Cout), int(n0), int(nb), p0, int(pc), dy, out);
  });
  MAGMASR_CUDA_LAUNCH_CHECK();
}

size_t bias_grad_workspace(const Context& ctx, const ConvGeom& g) {
  return size_t(bias_grad_splits(ctx, g)) * size_t(g.Cout) * sizeof(double);
}

void bias_grad(const Context& ctx, const ConvGeom& g, const float* dy, float* db, void* ws) {
  if (db == nullptr || g.Cout <= 0) return;
  const int S = bias_grad_splits(ctx, g);
  const int64_t P = g.out_spatial();
  const int64_t chunk = (g.N * P + S - 1) / S;
  double* partial = static_cast<double*>(ws);
  MAGMASR_LAUNCH(dim3(unsigned(S), unsigned(g.Cout)), kBlock, 0, ctx.stream(), bias_grad_partial_kernel)(
      int(g.N), int(g.Cout), P, chunk, dy, partial);
  MAGMASR_CUDA_LAUNCH_CHECK();
  MAGMASR_LAUNCH(unsigned(g.Cout), kBlock, 0, ctx.stream(), bias_grad_final_kernel)(S, partial, db);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

namespace {

// The th x tw output tiles that cover one output plane.
int64_t tile_count(const ConvGeom& g, int64_t th, int64_t tw) {
  return ((g.oH() + th - 1) / th) * ((g.oW() + tw - 1) / tw);
}

template <int KD, int KH, int KW>
void launch_tiled(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b, float* y,
                  bool relu, bool async) {
  constexpr int COT = 16, RPT = 4, TW = 32, TH = 8 * RPT;
  const int64_t tiles = tile_count(g, TH, TW);
  const dim3 grid(unsigned(tiles * ((g.Cout + COT - 1) / COT)), 1u, unsigned(std::min<int64_t>(g.N * g.oD(), 65535)));
  if (async) {
    MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_fwd_tiled_kernel<KD, KH, KW, COT, RPT, true>)(dims_of(g), x, w, b, y,
                                                                                                 relu ? 1 : 0);
  } else {
    MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_fwd_tiled_kernel<KD, KH, KW, COT, RPT, false>)(dims_of(g), x, w, b,
                                                                                                  y, relu ? 1 : 0);
  }
  MAGMASR_CUDA_LAUNCH_CHECK();
}

// The implicit GEMM's row tile by output channel count (BM 64, 32 or 16; its column tile is 8192 / BM).
int igemm_fwd_rows(const ConvGeom& g) { return g.Cout > 32 ? 64 : (g.Cout > 16 ? 32 : 16); }

template <int KD, int KH, int KW, int BM>
void launch_igemm_fwd_bm(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b,
                         float* y, bool relu) {
  constexpr int BN = kIgemmFwdCols<BM>;
  const int64_t Q = g.N * g.out_spatial();
  const dim3 grid(unsigned((Q + BN - 1) / BN), unsigned((g.Cout + BM - 1) / BM));
  MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_fwd_igemm_kernel<KD, KH, KW, BM>)(dims_of(g), x, w, b, y,
                                                                                      relu ? 1 : 0);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

template <int KD, int KH, int KW>
void launch_igemm_fwd(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b, float* y,
                      bool relu) {
  switch (igemm_fwd_rows(g)) {
    case 64: launch_igemm_fwd_bm<KD, KH, KW, 64>(ctx, g, x, w, b, y, relu); return;
    case 32: launch_igemm_fwd_bm<KD, KH, KW, 32>(ctx, g, x, w, b, y, relu); return;
    default: launch_igemm_fwd_bm<KD, KH, KW, 16>(ctx, g, x, w, b, y, relu); return;
  }
}

template <int KD, int KH, int KW, int RPT, int CPT>
void launch_cout1_tiles(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b,
                        float* y, bool relu) {
  constexpr int TW = 16 * CPT, TH = 16 * RPT;
  const int64_t tiles = tile_count(g, TH, TW);
  const dim3 grid(unsigned(tiles), 1u, unsigned(std::min<int64_t>(g.N * g.oD(), 65535)));
  MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_fwd_cout1_kernel<KD, KH, KW, RPT, CPT>)(dims_of(g), x, w, b, y,
                                                                                           relu ? 1 : 0);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

// The large patch per thread (more FMAs per shared-memory load) unless its tiles would compute over 1.5 times the
// positions the small tiles do (small outputs; tiles of a tiled picture).
template <int KD, int KH, int KW>
void launch_cout1(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b, float* y,
                  bool relu) {
  constexpr int R = kCout1Rows<KD>, RS = kCout1SmallRows<KD>;
  // the output positions each tiling covers, computed or not: tiles x tile area
  if (2 * tile_count(g, 16 * R, 64) * (16 * R * 64) > 3 * tile_count(g, 16 * RS, 32) * (16 * RS * 32)) {
    launch_cout1_tiles<KD, KH, KW, RS, 2>(ctx, g, x, w, b, y, relu);
  } else {
    launch_cout1_tiles<KD, KH, KW, R, 4>(ctx, g, x, w, b, y, relu);
  }
}

bool is_k(const ConvGeom& g, int kd, int kh, int kw) { return g.kD == kd && g.kH == kh && g.kW == kw; }

enum class DirectKernel { Generic, Tiled111, Tiled133, Tiled155, Tiled199, Tiled333, C1_133, C1_155, C1_199, C1_333 };

DirectKernel pick_direct(const ConvGeom& g) {
  if (g.Cout == 1) {
    if (is_k(g, 1, 3, 3)) return DirectKernel::C1_133;
    if (is_k(g, 1, 5, 5)) return DirectKernel::C1_155;
    if (is_k(g, 1, 9, 9)) return DirectKernel::C1_199;
    if (is_k(g, 3, 3, 3)) return DirectKernel::C1_333;
  }
  if (is_k(g, 1, 1, 1)) return DirectKernel::Tiled111;
  if (is_k(g, 1, 3, 3)) return DirectKernel::Tiled133;
  if (is_k(g, 1, 5, 5)) return DirectKernel::Tiled155;
  if (is_k(g, 1, 9, 9)) return DirectKernel::Tiled199;
  if (is_k(g, 3, 3, 3)) return DirectKernel::Tiled333;
  return DirectKernel::Generic;
}

}  // namespace

bool direct_forward_is_tiled(const ConvGeom& g) {
  switch (pick_direct(g)) {
    case DirectKernel::Tiled111:
    case DirectKernel::Tiled133:
    case DirectKernel::Tiled155:
    case DirectKernel::Tiled199:
    case DirectKernel::Tiled333: return true;
    default: return false;
  }
}

bool direct_forward_has_igemm(const ConvGeom& g) {
  // the GEMM indexes its columns (image, position) and its reduction (ci, offset) in 32 bits
  return direct_forward_is_tiled(g) && g.N * g.out_spatial() < (int64_t(1) << 31) - 1024 &&
         g.Cin * g.kernel_volume() < (int64_t(1) << 31) - 64;
}

namespace {

// The many-channel shapes (a tiled kernel exists): the variant's kernel, the tiled one where the implicit GEMM's
// 32-bit indices do not fit.
template <int KD, int KH, int KW>
void launch_many_channels(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b,
                          float* y, bool relu, DirectVariant v) {
  if (v == DirectVariant::ImplicitGemm && direct_forward_has_igemm(g)) {
    launch_igemm_fwd<KD, KH, KW>(ctx, g, x, w, b, y, relu);
  } else {
    launch_tiled<KD, KH, KW>(ctx, g, x, w, b, y, relu, v == DirectVariant::TiledAsync);
  }
}

}  // namespace

void direct_forward(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b, float* y,
                    bool relu, DirectVariant v) {
  if (g.y_numel() <= 0) return;
  switch (pick_direct(g)) {
    case DirectKernel::Tiled111: launch_many_channels<1, 1, 1>(ctx, g, x, w, b, y, relu, v); return;
    case DirectKernel::Tiled133: launch_many_channels<1, 3, 3>(ctx, g, x, w, b, y, relu, v); return;
    case DirectKernel::Tiled155: launch_many_channels<1, 5, 5>(ctx, g, x, w, b, y, relu, v); return;
    case DirectKernel::Tiled199: launch_many_channels<1, 9, 9>(ctx, g, x, w, b, y, relu, v); return;
    case DirectKernel::Tiled333: launch_many_channels<3, 3, 3>(ctx, g, x, w, b, y, relu, v); return;
    case DirectKernel::C1_133: launch_cout1<1, 3, 3>(ctx, g, x, w, b, y, relu); return;
    case DirectKernel::C1_155: launch_cout1<1, 5, 5>(ctx, g, x, w, b, y, relu); return;
    case DirectKernel::C1_199: launch_cout1<1, 9, 9>(ctx, g, x, w, b, y, relu); return;
    case DirectKernel::C1_333: launch_cout1<3, 3, 3>(ctx, g, x, w, b, y, relu); return;
    default: break;
  }
  const int64_t total = g.y_numel();
  MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), conv_fwd_generic_kernel)(dims_of(g), x, w, b, y, relu ? 1 : 0);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void flip_transpose_weights(const Context& ctx, const ConvGeom& g, const float* w, float* wt) {
  const int64_t total = g.w_numel();
  if (total <= 0) return;
  MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), flip_transpose_kernel)(int(g.Cout), int(g.Cin),
                                                                            int(g.kernel_volume()), w, wt);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void replicate_backward_data_fix(const Context& ctx, const ConvGeom& g, const float* dy, const float* w, float* dx) {
  if (g.mode != PadMode::Replicate || (g.pD == 0 && g.pH == 0 && g.pW == 0)) return;
  const int64_t total = g.x_numel();
  if (total <= 0) return;
  MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), replicate_fix_kernel)(dims_of(g), dy, w, dx);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

size_t direct_backward_weight_workspace(const Context& ctx, const ConvGeom& g) {
  const IgemmPlan p = igemm_plan(ctx, g);
  return p.splits > 1 ? size_t(p.splits) * size_t(g.w_numel()) * sizeof(float) : 0;
}

void direct_backward_weight(const Context& ctx, const ConvGeom& g, const float* x, const float* dy, float* dw,
                            void* ws) {
  const int64_t count = g.w_numel();
  if (count <= 0) return;
  const IgemmPlan p = igemm_plan(ctx, g);
  float* partial = p.splits > 1 ? static_cast<float*>(ws) : dw;
  const dim3 grid(p.gx, p.gy, unsigned(p.splits));
  const ConvDims s = dims_of(g);
  switch (p.cfg) {
    case IgemmCfg::Wide64x64:
      MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_bwdw_igemm_kernel<64, 64, 4, 4>)(s, x, dy, partial, p.qchunk);
      break;
    case IgemmCfg::Wide64x32:
      MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_bwdw_igemm_kernel<64, 32, 4, 2>)(s, x, dy, partial, p.qchunk);
      break;
    case IgemmCfg::Mid32x128:
      MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_bwdw_igemm_kernel<32, 128, 2, 8>)(s, x, dy, partial, p.qchunk);
      break;
    case IgemmCfg::Mid32x32:
      MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_bwdw_igemm_kernel<32, 32, 2, 2>)(s, x, dy, partial, p.qchunk);
      break;
    case IgemmCfg::Narrow4x256:
      MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_bwdw_igemm_kernel<4, 256, 1, 4>)(s, x, dy, partial, p.qchunk);
      break;
    default:
      MAGMASR_LAUNCH(grid, kBlock, 0, ctx.stream(), conv_bwdw_igemm_kernel<1, 256, 1, 1>)(s, x, dy, partial, p.qchunk);
      break;
  }
  MAGMASR_CUDA_LAUNCH_CHECK();
  if (p.splits > 1) {
    const int64_t blocks = std::min<int64_t>((count + kSumCols - 1) / kSumCols, int64_t(ctx.sm_count()) * 32);
    MAGMASR_LAUNCH(unsigned(blocks), kBlock, 0, ctx.stream(), sum_partials_kernel)(count, p.splits, partial, dw);
    MAGMASR_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace convk
}  // namespace cuda
}  // namespace magmasr
