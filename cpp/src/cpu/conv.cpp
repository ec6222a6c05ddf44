// CPU convolution: the reference for the CUDA kernels, and the fallback where there is no GPU.
//
// Forward, several output channels ("taps", forward_taps below): the output rows of one
// image and depth are cut into slab tasks of R rows; each task copies the input rows they read, padded, into a
// slab (all channels, row pitch Wp = oW + kW - 1), and the matrix product C[Cout, L] = W[Cout, K] * B runs on the
// slab in place: B(k, n) = slab[off[k] + n] with off[k] the offset of tap k = (ci, kd, kh, kw), over the flat
// length L = (R - 1) * Wp + oW (the kW - 1 columns between rows are computed and dropped). No column matrix: each
// input sample is copied (R + kH - 1) / R times instead of kvol times. Bias and ReLU on the way to y.
//
// Backward-weight runs on the same slab tasks (backward_weight_taps): dW^T += T * dY^T with the tap rows T read in
// place from the slab, one segment per output row (the columns between rows skipped).
//
// Otherwise ("columns": backward-data with replicated borders, rows too wide for a slab): vol2col + a matrix
// product on cache-sized blocks. The output positions of the whole batch form one flat range q = n * P + p
// (P = oD * oH * oW), cut into blocks of exactly kBlock columns. Each OpenMP thread takes whole blocks and, for
// each, builds the block's column matrix col[K, kBlock] (K = Cin * kD * kH * kW) in its own buffer, in the
// layout the product reads, and multiplies it at once with the register-tiled kernels of cpu/gemm.cpp. (An
// earlier version built a 32 MiB column matrix for many blocks first and then multiplied: every element went
// through main memory twice, and a training step ran at a third of the speed.) 2-D convolutions are the
// D = kD = 1 case.
//   forward:          tmp[Cout, kBlock] = W[Cout, K] * col      then y[n, co, p] = tmp + b (and ReLU)
//   backward-data:    dcol[K, kBlock] = W^T * dY[Cout, kBlock]  then col2vol accumulates into dx
//   backward-weight:  dW^T[K, Cout] += col * dY^T,              db[co] = sum of dy[n, co, :]
// Determinism: each output of a product is one ordered sum over k (gemm.hpp), the same in both forward
// strategies, so a pixel's value does not depend on its place in its block or task, nor on the strategy: tiled
// inference is bit-identical to whole-image inference (CpuConv.AnOutputDoesNotDependOnWhereItLies,
// CpuConv.ForwardStrategiesGiveTheSameBits). (With OpenBLAS's SGEMM it was not: its AVX2 kernels sum the first
// and last 8 columns of a product in another order, and the forward pass had to pad every block with zero
// columns.) Backward-weight sums fixed groups of blocks into partial gradients and adds the partials in group
// order, so its result does not depend on the number of threads either.
// Speed (docs/results/cpu_conv.md, 2 cores of an AMD EPYC, AVX-512 kernels, the run of 2026-12-08 00:53 UTC, each
// strategy timed run by run in turn): SRCNN 9-5-5's mapping layer in training, forward 43.5 ms with columns -> 33.2
// with taps, backward-weight 48.4 -> 37.0 (PyTorch 2.15's oneDNN 28.4 / 32.6), backward-data 47.3 (a forward
// convolution with taps: see below; PyTorch 46.6); 3DSRnet's 3x3x3 layer forward 118.9 -> 81.0 ms, backward-weight
// 121.4 -> 87.4 (PyTorch 117.4 / 116.9). With Winograd (below): the mapping layer 15.7 / 18.4 / 21.4 ms, 3DSRnet's
// 36.3 / 35.5 / 43.0 (forward / backward-data / backward-weight); a 512x512 picture's mapping layer 149.5 ms direct,
// 63.9 with Winograd (PyTorch 186.7). Backward-data, when no border is
// replicated, runs as the forward convolution of dy with the flipped, transposed weights, and short padded rows
// are padded by a copy first (the two paths below the public functions).
// Padding: Zeros skips samples outside the input; Replicate clamps the index into the input, and col2vol
// adds the gradient of those samples to the clamped border sample (the exact adjoint). With zero padding in
// depth, the taps that read only padding are left out (live_depths).
//
// Winograd (ConvAlgo::Winograd, opt-in; the default of the pipelines on a CPU): conv_forward_winograd below,
// Winograd's F(4x4, 5x5) and F(6x6, 3x3), in 3-D per depth tap, and for training backward-data (its adjoint
// convolution) and conv_backward_weight_winograd; not position-independent (an output's bits depend on its place in
// the tile grid), so the inference pipelines cut their tiles on that grid.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.hpp"
#include "cpu/gemm.hpp"

namespace magmasr::cpu {
namespace {

constexpr int64_t kBlock = 264;  // columns per block: 11 panels of 24 (gemm_wide); col[K, kBlock] is 1.7 MiB for K = 1600
static_assert(kBlock % kWideNR == 0, "a block is whole panels");

int64_t num_blocks(const ConvGeom& g) { return (g.N * g.out_spatial() + kBlock - 1) / kBlock; }

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// No padding in any dimension: every sample a window reads lies inside the input, whatever the mode.
inline bool unpadded(const ConvGeom& g) { return g.pD == 0 && g.pH == 0 && g.pW == 0; }

// out[j] = src[j + shift] for j in [j0, j1), where src is an input row of width W: inside the row a plain copy,
// outside it zero or (replicate) the border sample.
void copy_padded_row(const float* src, int64_t W, int64_t shift, int64_t j0, int64_t j1, bool replicate, float* out) {
  const int64_t a = std::clamp<int64_t>(-shift, j0, j1), b = std::clamp<int64_t>(W - shift, a, j1);
  std::fill(out + j0, out + a, replicate ? src[0] : 0.0f);
  std::memcpy(out + a, src + a + shift, sizeof(float) * (b - a));
  std::fill(out + b, out + j1, replicate ? src[W - 1] : 0.0f);
}

// The adjoint of copy_padded_row: dst[j + shift] += in[j] inside the row; outside, dropped or (replicate) added
// to the border sample.
void add_padded_row(const float* in, int64_t W, int64_t shift, int64_t j0, int64_t j1, bool replicate, float* dst) {
  const int64_t a = std::clamp<int64_t>(-shift, j0, j1), b = std::clamp<int64_t>(W - shift, a, j1);
  if (replicate) {
    for (int64_t j = j0; j < a; ++j) dst[0] += in[j];
    for (int64_t j = b; j < j1; ++j) dst[W - 1] += in[j];
  }
  for (int64_t j = a; j < b; ++j) dst[j + shift] += in[j];
}

// Consecutive work items cut into fixed groups (at least `min_per_group` items, at most kMaxGroups groups),
// each summed into its own partial result; the partials are then added in group order. The split depends on
// the problem size alone, so the result is the same whatever the number of threads.
struct Groups {
  static constexpr int64_t kMaxGroups = 32;
  int64_t per_group, count;
  Groups(int64_t items, int64_t min_per_group)
      : per_group(std::max(min_per_group, (items + kMaxGroups - 1) / kMaxGroups)),
        count((items + per_group - 1) / per_group) {}
};

// out[e] = sum over groups, in order, of partial[g * n + e]; an orphaned `omp for` (call it inside a parallel
// region, or alone).
void sum_partials(const std::vector<float>& partial, int64_t groups, int64_t n, float* out) {
#pragma omp for schedule(static)
  for (int64_t e = 0; e < n; ++e) {
    float v = partial[size_t(e)];
    for (int64_t grp = 1; grp < groups; ++grp) v += partial[size_t(grp * n + e)];
    out[e] = v;
  }
}

// dW[co, k] = the sum, in group order, of the groups' partial dW^T[k, co] (K x M each, one after the other).
void transpose_partials(const std::vector<float>& partial, const Groups& groups, int64_t K, int64_t M, float* dw) {
  std::vector<float> sum;
  const float* t = partial.data();
  if (groups.count > 1) {
    sum.resize(size_t(K * M));
#pragma omp parallel
    sum_partials(partial, groups.count, K * M, sum.data());
    t = sum.data();
  }
  for (int64_t co = 0; co < M; ++co)
    for (int64_t k = 0; k < K; ++k) dw[co * K + k] = t[k * M + co];
}

// A block's columns [q0, q1) as runs along W: output row (n, od, oh), columns ow0..ow1-1, at block offset c.
struct Run {
  int64_t n, od, oh, ow0, ow1, c;
};

// Computed once per block (the divisions are then not repeated for each of the K rows of the column matrix).
void block_runs(const ConvGeom& g, int64_t q0, int64_t q1, std::vector<Run>& runs) {
  const int64_t oH = g.oH(), oW = g.oW(), P = g.out_spatial();
  runs.clear();
  int64_t q = q0;
  while (q < q1) {
    const int64_t n = q / P, p = q % P;
    const int64_t od = p / (oH * oW), oh = (p / oW) % oH, ow0 = p % oW;
    const int64_t ow1 = std::min(oW, ow0 + (q1 - q));
    runs.push_back({n, od, oh, ow0, ow1, q - q0});
    q += ow1 - ow0;
  }
}

// col[r, c] for r = ((ci * kD + kd) * kH + kh) * kW + kw and the block's `cols` columns (given as runs); the
// columns from `cols` to kBlock are zero. Row-major rows of kBlock, or with `packed`, the panels of kWideNR
// columns that gemm_wide reads (each row is built in a small buffer and copied out panel by panel). Runs on the
// calling thread.
void vol2col(const ConvGeom& g, const float* x, const std::vector<Run>& runs, int64_t cols, float* col, bool packed) {
  const int64_t kvol = g.kernel_volume(), K = g.Cin * kvol;
  const bool replicate = g.mode == PadMode::Replicate;
  // Without padding every sample is inside the input: each run is one copy from x + (its start) + (the tap's
  // offset), with no bounds to check (the training layers, whose runs are short rows of 17-33 samples).
  const bool inside = unpadded(g);
  std::vector<int64_t> start;
  if (inside)
    for (const Run& run : runs) start.push_back(((run.n * g.Cin * g.D + run.od) * g.H + run.oh) * g.W + run.ow0);
  alignas(64) float row[kBlock];
  for (int64_t r = 0; r < K; ++r) {
    const int64_t ci = r / kvol, kd = (r / (g.kH * g.kW)) % g.kD, kh = (r / g.kW) % g.kH, kw = r % g.kW;
    float* dst = packed ? row : col + r * kBlock;
    if (inside) {
      const float* tap = x + ((ci * g.D + kd) * g.H + kh) * g.W + kw;
      for (size_t i = 0; i < runs.size(); ++i) {
        const Run& run = runs[i];
        const float* src = tap + start[i];
        float* out = dst + run.c;
        for (int64_t j = 0; j < run.ow1 - run.ow0; ++j) out[j] = src[j];
      }
    } else {
      const int64_t shift = kw - g.pW;
      for (const Run& run : runs) {
        int64_t id = run.od + kd - g.pD, ih = run.oh + kh - g.pH;
        float* out = dst + run.c - run.ow0;  // out[ow] for ow in [ow0, ow1)
        if (!replicate && (id < 0 || id >= g.D || ih < 0 || ih >= g.H)) {
          std::fill(out + run.ow0, out + run.ow1, 0.0f);
          continue;
        }
        id = clamp_index(id, g.D);
        ih = clamp_index(ih, g.H);
        const float* src = x + ((run.n * g.Cin + ci) * g.D + id) * g.H * g.W + ih * g.W;
        copy_padded_row(src, g.W, shift, run.ow0, run.ow1, replicate, out);
      }
    }
    std::fill(dst + cols, dst + kBlock, 0.0f);
    if (packed)
      for (int64_t p = 0; p < kBlock / kWideNR; ++p)
        std::memcpy(col + (p * K + r) * kWideNR, row + p * kWideNR, sizeof(float) * kWideNR);
  }
}

// The column matrix of block blk (its runs left in `runs`), row-major or packed; returns the block's columns
// [q0, q1).
std::pair<int64_t, int64_t> block_columns(const ConvGeom& g, const float* x, int64_t blk, std::vector<Run>& runs,
                                          float* col, bool packed) {
  const int64_t q0 = blk * kBlock, q1 = std::min(g.N * g.out_spatial(), q0 + kBlock);
  block_runs(g, q0, q1, runs);
  vol2col(g, x, runs, q1 - q0, col, packed);
  return {q0, q1};
}

// The adjoint of vol2col for the input channels [ci0, ci1): dx += scatter(dcol). Runs on the calling thread.
void col2vol(const ConvGeom& g, const float* dcol, const std::vector<Run>& runs, int64_t ci0, int64_t ci1,
             float* dx) {
  const int64_t kvol = g.kernel_volume();
  const bool replicate = g.mode == PadMode::Replicate;
  for (int64_t ci = ci0; ci < ci1; ++ci) {
    for (int64_t kr = 0; kr < kvol; ++kr) {
      const int64_t kd = kr / (g.kH * g.kW), kh = (kr / g.kW) % g.kH, kw = kr % g.kW;
      const int64_t shift = kw - g.pW;
      const float* src = dcol + (ci * kvol + kr) * kBlock;
      for (const Run& run : runs) {
        int64_t id = run.od + kd - g.pD, ih = run.oh + kh - g.pH;
        if (!replicate && (id < 0 || id >= g.D || ih < 0 || ih >= g.H)) continue;
        id = clamp_index(id, g.D);
        ih = clamp_index(ih, g.H);
        float* dst = dx + ((run.n * g.Cin + ci) * g.D + id) * g.H * g.W + ih * g.W;
        const float* in = src + run.c - run.ow0;  // in[ow] for ow in [ow0, ow1)
        add_padded_row(in, g.W, shift, run.ow0, run.ow1, replicate, dst);
      }
    }
  }
}

// dst[co, c] = dy[n, co, p] for the block's columns c < q1 - q0, zero up to kBlock. Runs on the calling thread.
void gather_dy(const ConvGeom& g, const float* dy, int64_t q0, int64_t q1, float* dst) {
  const int64_t cols = q1 - q0, P = g.out_spatial();
  for (int64_t co = 0; co < g.Cout; ++co) {
    int64_t q = q0;
    while (q < q1) {
      const int64_t n = q / P, p = q % P, run = std::min(P - p, q1 - q);
      std::memcpy(dst + co * kBlock + (q - q0), dy + (n * g.Cout + co) * P + p, sizeof(float) * run);
      q += run;
    }
    std::fill(dst + co * kBlock + cols, dst + (co + 1) * kBlock, 0.0f);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Direct path for one output channel (SRCNN's reconstruction layer). There the GEMM has a single row, so
// vol2col + SGEMM is a matrix-vector product that spends its time writing and reading the column matrix
// (1-3 GFLOP/s). Instead, a block of R output rows of one output depth is computed at once from a "slab":
// the input rows it reads, padded, all channels, row stride Wp = oW + kW - 1. Flat over the block,
//   acc[i * Wp + ow] += w[r] * slab[(ci, kd, kh + i) row][ow + kw]    for r = (ci, kd, kh, kw) in order,
// one long contiguous multiply-add per tap (the columns ow >= oW of acc are computed and dropped). Each
// output is the same ordered sum whatever the block, so tiled inference stays bit-identical.

// Each function so marked is compiled three times (AVX-512, AVX2 + FMA, SSE2) and the first the processor runs is
// picked when the library loads. The x86-64 levels are dispatched on the processor's features; "arch=haswell" and
// "arch=skylake-avx512" (until 2026-12-07) were dispatched on its exact model, so every AMD processor and every
// Intel one after Skylake ran the SSE2 version.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && !defined(__SANITIZE_ADDRESS__)
#define MAGMASR_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MAGMASR_VECTOR_CLONES
#endif

// y[i] += a * x[i] for i < n.
MAGMASR_VECTOR_CLONES void axpy(int64_t n, float a, const float* __restrict x, float* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// out[i] = the sum over taps r = 0 .. K-1, in order, of w[r] * slab[offset[r] + i], for i < n: the same
// multiply-adds as K calls of axpy on a zeroed out (so the same bits), but with 64 consecutive outputs at a time
// held in registers across a group of kTapGroup taps (the running sums go back to out, exactly, between groups),
// instead of a pass over the whole of out per tap, which moved three floats through the cache per multiply-add
// (SRCNN's reconstruction layer ran at 17 GFLOP/s a core). A group's slab rows (a few input channels) stay in
// L1 while the 64 outputs are summed, and in L2 over the chunks; all the taps at once made each chunk read ~50 KB
// of rows from all over a 1 MiB slab, and ran 2.3 times slower than the axpy passes.
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec8Unaligned __attribute__((vector_size(32), aligned(4), may_alias));  // a view of 8 floats
#define MAGMASR_LOAD8(p) (*reinterpret_cast<const Vec8Unaligned*>(p))

constexpr int64_t kTapGroup = 128;

MAGMASR_VECTOR_CLONES void accumulate_taps(int64_t n, int64_t K, const float* __restrict w,
                                           const int64_t* __restrict offset, const float* __restrict slab,
                                           float* __restrict out) {
  constexpr int kVecs = 8, kChunk = 8 * kVecs;
  for (int64_t r0 = 0; r0 < K; r0 += kTapGroup) {
    const int64_t r1 = std::min(K, r0 + kTapGroup);
    int64_t i0 = 0;
    for (; i0 + kChunk <= n; i0 += kChunk) {
      Vec8 acc[kVecs] = {};
      if (r0 > 0) std::memcpy(acc, out + i0, sizeof acc);
      for (int64_t r = r0; r < r1; ++r) {
        const float a = w[r];
        const float* src = slab + offset[r] + i0;
        for (int v = 0; v < kVecs; ++v) acc[v] += a * MAGMASR_LOAD8(src + 8 * v);
      }
      std::memcpy(out + i0, acc, sizeof acc);
    }
    for (; i0 + 8 <= n; i0 += 8) {
      Vec8 acc = {};
      if (r0 > 0) std::memcpy(&acc, out + i0, sizeof acc);
      for (int64_t r = r0; r < r1; ++r) acc += w[r] * MAGMASR_LOAD8(slab + offset[r] + i0);
      std::memcpy(out + i0, &acc, sizeof acc);
    }
    for (; i0 < n; ++i0) {
      float acc = r0 > 0 ? out[i0] : 0.0f;
      for (int64_t r = r0; r < r1; ++r) acc += w[r] * slab[offset[r] + i0];
      out[i0] = acc;
    }
  }
}

// sum of a[i] * b[i] for i < n, in 16 interleaved partial sums added in a fixed order (vectorisable and
// deterministic).
MAGMASR_VECTOR_CLONES float dot(int64_t n, const float* __restrict a, const float* __restrict b) {
  float lane[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) lane[l] += a[i + l] * b[i + l];
  for (int l = 0; i + l < n; ++l) lane[l] += a[i + l] * b[i + l];
  float s = 0.0f;
  for (int l = 0; l < 16; ++l) s += lane[l];
  return s;
}

struct SlabGeom {
  int64_t Wp, R, rows, blocks_per_depth;  // rows = R + kH - 1 slab rows per (ci, kd)
  int64_t tasks(const ConvGeom& g) const { return g.N * g.oD() * blocks_per_depth; }
  int64_t slab_floats(const ConvGeom& g) const { return g.Cin * g.kD * rows * Wp; }
};

constexpr int64_t kSlabBudgetFloats = int64_t(256) << 10;  // 1 MiB of slab, in L2

// At most max_R output rows per task (and at least one).
SlabGeom slab_geom(const ConvGeom& g, int64_t budget_floats = kSlabBudgetFloats,
                   int64_t max_R = std::numeric_limits<int64_t>::max()) {
  SlabGeom s;
  s.Wp = g.oW() + g.kW - 1;
  const int64_t per_row = g.Cin * g.kD * s.Wp;
  s.R = std::clamp<int64_t>(budget_floats / std::max<int64_t>(per_row, 1) - (g.kH - 1), 1,
                            std::max<int64_t>(1, std::min(g.oH(), max_R)));
  s.rows = s.R + g.kH - 1;
  s.blocks_per_depth = (g.oH() + s.R - 1) / s.R;
  return s;
}

struct SlabTask {
  int64_t n, od, oh0, R;  // output rows oh0 .. oh0 + R - 1 of depth od of image n
};

SlabTask slab_task(const ConvGeom& g, const SlabGeom& s, int64_t t) {
  const int64_t blk = t % s.blocks_per_depth, od = (t / s.blocks_per_depth) % g.oD(), n = t / (s.blocks_per_depth * g.oD());
  const int64_t oh0 = blk * s.R;
  return {n, od, oh0, std::min(s.R, g.oH() - oh0)};
}

// The input row of slab row rr of (ci, kd), or nullptr where zero padding makes it all zeros.
const float* slab_source_row(const ConvGeom& g, const float* x, const SlabTask& t, int64_t ci, int64_t kd, int64_t rr) {
  int64_t id = t.od + kd - g.pD, ih = t.oh0 + rr - g.pH;
  if (g.mode != PadMode::Replicate && (id < 0 || id >= g.D || ih < 0 || ih >= g.H)) return nullptr;
  id = clamp_index(id, g.D);
  ih = clamp_index(ih, g.H);
  return x + ((t.n * g.Cin + ci) * g.D + id) * g.H * g.W + ih * g.W;
}

// Fills the slab of task t: for each (ci, kd), rows R + kH - 1 of width Wp, padded as the geometry says.
void build_slab(const ConvGeom& g, const SlabGeom& s, const float* x, const SlabTask& t, float* slab) {
  const bool replicate = g.mode == PadMode::Replicate;
  for (int64_t ck = 0; ck < g.Cin * g.kD; ++ck)
    for (int64_t rr = 0; rr < s.rows; ++rr) {
      float* dst = slab + (ck * s.rows + rr) * s.Wp;
      const float* src = rr < t.R + g.kH - 1 ? slab_source_row(g, x, t, ck / g.kD, ck % g.kD, rr) : nullptr;
      if (!src) {
        std::fill(dst, dst + s.Wp, 0.0f);
        continue;
      }
      copy_padded_row(src, g.W, -g.pW, 0, s.Wp, replicate, dst);
    }
}

// The adjoint of build_slab for input channel ci: dx += the slab rows of (ci, all kd) put back where they came
// from (padding samples dropped for Zeros, added to the clamped border sample for Replicate).
void scatter_slab(const ConvGeom& g, const SlabGeom& s, const float* dslab, const SlabTask& t, int64_t ci, float* dx) {
  const bool replicate = g.mode == PadMode::Replicate;
  for (int64_t kd = 0; kd < g.kD; ++kd)
    for (int64_t rr = 0; rr < t.R + g.kH - 1; ++rr) {
      float* dst = const_cast<float*>(slab_source_row(g, dx, t, ci, kd, rr));
      if (!dst) continue;
      add_padded_row(dslab + (kd * s.rows + rr) * s.Wp, g.W, -g.pW, 0, s.Wp, replicate, dst);
    }
}

// The flat length over which a block's taps are applied: R - 1 full rows of Wp and the oW columns of the last.
int64_t flat_length(const ConvGeom& g, const SlabGeom& s, const SlabTask& t) { return (t.R - 1) * s.Wp + g.oW(); }

// Offsets in the slab of the first n taps r = (ci, kd, kh, kw), in order.
std::vector<int64_t> tap_offsets(const ConvGeom& g, const SlabGeom& s, int64_t n) {
  std::vector<int64_t> offset(static_cast<size_t>(n));
  const int64_t kvol = g.kernel_volume();
  for (int64_t r = 0; r < n; ++r) {
    const int64_t ci = r / kvol, kd = (r / (g.kH * g.kW)) % g.kD, kh = (r / g.kW) % g.kH, kw = r % g.kW;
    offset[size_t(r)] = ((ci * g.kD + kd) * s.rows + kh) * s.Wp + kw;
  }
  return offset;
}

// v + bias, then, with `relu`, max(., 0) with a NaN kept NaN (as PyTorch's relu): every forward path's epilogue.
inline float bias_relu(float v, float bias, bool relu) {
  v += bias;
  return relu ? (v <= 0.0f ? 0.0f : v) : v;
}

// y's rows of task t for output channel co: src (rows of stride Wp) + bias, then ReLU if asked.
void store_task_rows(const ConvGeom& g, const SlabGeom& s, const SlabTask& t, int64_t co, const float* src,
                     float bias, bool relu, float* y) {
  const int64_t oH = g.oH(), oW = g.oW();
  for (int64_t i = 0; i < t.R; ++i) {
    float* dst = y + (((t.n * g.Cout + co) * g.oD() + t.od) * oH + t.oh0 + i) * oW;
    for (int64_t ow = 0; ow < oW; ++ow) dst[ow] = bias_relu(src[i * s.Wp + ow], bias, relu);
  }
}

void forward_one_output(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu) {
  const SlabGeom s = slab_geom(g);
  const int64_t K = g.Cin * g.kernel_volume();
  const std::vector<int64_t> offset = tap_offsets(g, s, K);
  const float bias = b ? b[0] : 0.0f;
#pragma omp parallel
  {
    std::vector<float> slab(size_t(s.slab_floats(g))), acc(size_t(s.R * s.Wp));
#pragma omp for schedule(static)
    for (int64_t ti = 0; ti < s.tasks(g); ++ti) {
      const SlabTask t = slab_task(g, s, ti);
      build_slab(g, s, x, t, slab.data());
      accumulate_taps(flat_length(g, s, t), K, w, offset.data(), slab.data(), acc.data());
      store_task_rows(g, s, t, 0, acc.data(), bias, relu, y);
    }
  }
}

// Forward of a multi-channel layer without a column matrix: per slab task (R output rows of one image and depth;
// the slab holds the input rows they read, padded), C[Cout, L] = W * B over the flat length L = (R - 1) * Wp + oW,
// with B read in place from the slab at the taps' offsets (gemm_wide_taps: the columns between two rows are
// computed and dropped, as in forward_one_output); then bias and ReLU on the way to y. The same ordered sums as
// the column-matrix path: an output's value does not depend on which path computed it.
constexpr int64_t kTapsSlabBudgetFloats = int64_t(1) << 20;  // 4 MiB
constexpr int64_t kTapsOutBudgetFloats = int64_t(256) << 10;  // 1 MiB: a task's products stay in L2

SlabGeom taps_geom(const ConvGeom& g) {
  // Few input channels make a tall slab (SRCNN's first layer: 1 channel); bound the rows by the products too.
  return slab_geom(g, kTapsSlabBudgetFloats, kTapsOutBudgetFloats / (g.Cout * (g.oW() + g.kW - 1)));
}

// The depths kd of the kernel whose input planes lie inside the input for output depth od: all of them, except
// next to the depth borders with zero padding, where the others read only zeros (3DSRnet's 'same' layers on 5
// frames: 2 of the 15 (od, kd) pairs). Their taps can be left out of the products: each skipped product is an exact
// zero, so the sums keep their bits.
std::pair<int64_t, int64_t> live_depths(const ConvGeom& g, int64_t od) {
  if (g.mode == PadMode::Replicate) return {0, g.kD};
  return {std::clamp<int64_t>(g.pD - od, 0, g.kD), std::clamp<int64_t>(g.D + g.pD - od, 0, g.kD)};
}

// The taps of forward_taps for one output depth: all K (the weights and offsets as they are), or only those of
// the live depths (live_depths), with the weights' columns and the offsets gathered to match, in the same order.
struct DepthTaps {
  int64_t K = 0;
  const float* w = nullptr;
  const int64_t* off = nullptr;
  std::vector<float> wbuf;
  std::vector<int64_t> obuf;
};

// One DepthTaps per output depth (sharing the gathered copies between depths with the same live range).
std::vector<DepthTaps> depth_taps(const ConvGeom& g, const float* w, const std::vector<int64_t>& offset) {
  const int64_t kvol = g.kernel_volume(), K = g.Cin * kvol, plane = g.kH * g.kW, M = g.Cout;
  std::vector<DepthTaps> taps(static_cast<size_t>(g.oD()));
  for (int64_t od = 0; od < g.oD(); ++od) {
    DepthTaps& d = taps[size_t(od)];
    const auto [lo, hi] = live_depths(g, od);
    if (lo == 0 && hi == g.kD) {
      d.K = K, d.w = w, d.off = offset.data();
      continue;
    }
    const DepthTaps* same = nullptr;  // an earlier depth with the same live range
    for (int64_t e = 0; e < od && !same; ++e)
      if (live_depths(g, e) == std::make_pair(lo, hi)) same = &taps[size_t(e)];
    if (same) {
      d.K = same->K, d.w = same->wbuf.data(), d.off = same->obuf.data();
      continue;
    }
    d.K = g.Cin * (hi - lo) * plane;
    d.wbuf.resize(size_t(std::max<int64_t>(M * d.K, 1)));
    d.obuf.resize(size_t(std::max<int64_t>(d.K, 1)));
    int64_t k = 0;
    for (int64_t ci = 0; ci < g.Cin; ++ci)
      for (int64_t r = (ci * g.kD + lo) * plane; r < (ci * g.kD + hi) * plane; ++r, ++k) {
        d.obuf[size_t(k)] = offset[size_t(r)];
        for (int64_t co = 0; co < M; ++co) d.wbuf[size_t(co * d.K + k)] = w[co * K + r];
      }
    d.w = d.wbuf.data(), d.off = d.obuf.data();
  }
  return taps;
}

void forward_taps(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu) {
  const SlabGeom s = taps_geom(g);
  const int64_t K = g.Cin * g.kernel_volume(), M = g.Cout;
  const int64_t pitch = ((s.R - 1) * s.Wp + g.oW() + kWideNR - 1) / kWideNR * kWideNR;
  const std::vector<int64_t> offset = tap_offsets(g, s, K);
  const std::vector<DepthTaps> taps = depth_taps(g, w, offset);
#pragma omp parallel
  {
    // The last panel of a row reads past the slab (columns that are dropped).
    std::vector<float> slab(size_t(s.slab_floats(g) + kTapsReadPast)), out(size_t(M * pitch));
#pragma omp for schedule(static)
    for (int64_t ti = 0; ti < s.tasks(g); ++ti) {
      const SlabTask t = slab_task(g, s, ti);
      const DepthTaps& d = taps[size_t(t.od)];
      const int64_t L = flat_length(g, s, t);
      if (d.K > 0) {
        build_slab(g, s, x, t, slab.data());
        gemm_wide_taps(M, L, d.K, d.w, d.K, 1, slab.data(), d.off, out.data(), pitch);
      } else {  // every tap reads padding (a kernel shallower than the depth padding): the bias alone
        for (int64_t co = 0; co < M; ++co) std::fill(out.data() + co * pitch, out.data() + co * pitch + L, 0.0f);
      }
      for (int64_t co = 0; co < M; ++co) store_task_rows(g, s, t, co, out.data() + co * pitch, b ? b[co] : 0.0f, relu, y);
    }
  }
}

// dy of task t for every output channel: channel co's rows at dyp + co * R * Wp with row stride Wp, zeros in the
// columns ow >= oW and in the rows past the task's.
void gather_dy_channels(const ConvGeom& g, const SlabGeom& s, const float* dy, const SlabTask& t, float* dyp) {
  const int64_t oH = g.oH(), oW = g.oW(), plane = s.R * s.Wp;
  std::fill(dyp, dyp + g.Cout * plane, 0.0f);
  for (int64_t co = 0; co < g.Cout; ++co)
    for (int64_t i = 0; i < t.R; ++i)
      std::memcpy(dyp + co * plane + i * s.Wp, dy + (((t.n * g.Cout + co) * g.oD() + t.od) * oH + t.oh0 + i) * oW,
                  sizeof(float) * oW);
}

// Backward-weight of a multi-channel layer on the slab tasks of forward_taps: dW^T[K, Cout] += T * dY^T over the
// task's output positions, T's row k (tap k) read in place from the slab at its offset, one segment of oW columns
// per output row (gemm_narrow_taps: the kW - 1 columns between two rows, which forward_taps computes and drops,
// are skipped here: 39% of SRCNN's first layer on 33x33 patches), and dY^T packed straight from dy (the task's
// rows of a channel are contiguous there). Tasks are summed in fixed groups and the partials added in group order,
// so the result does not depend on the number of threads.
void backward_weight_taps(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  const SlabGeom s = taps_geom(g);
  const int64_t K = g.Cin * g.kernel_volume(), M = g.Cout, tasks = s.tasks(g);
  const int64_t oH = g.oH(), oW = g.oW(), P = g.out_spatial();
  const Groups groups(tasks, 1);
  const std::vector<int64_t> offset = tap_offsets(g, s, K);
  std::vector<float> partial(size_t(groups.count * K * M));
#pragma omp parallel
  {
    std::vector<float> slab(size_t(s.slab_floats(g)));
    std::vector<float> dyt(size_t((M + kNarrowNR - 1) / kNarrowNR * kNarrowNR * s.R * oW));
#pragma omp for schedule(static)
    for (int64_t grp = 0; grp < groups.count; ++grp) {
      float* out = partial.data() + grp * K * M;
      const int64_t t0 = grp * groups.per_group, t1 = std::min(tasks, t0 + groups.per_group);
      for (int64_t ti = t0; ti < t1; ++ti) {
        const SlabTask t = slab_task(g, s, ti);
        build_slab(g, s, x, t, slab.data());
        const int64_t L = t.R * oW;  // dY^T[q, co] = dy[n, co, od, oh0 + q / oW, q % oW]
        pack_panels(L, M, dy + ((t.n * M * g.oD() + t.od) * oH + t.oh0) * oW, 1, P, kNarrowNR, dyt.data());
        const auto [lo, hi] = live_depths(g, t.od);
        if (lo == 0 && hi == g.kD) {
          gemm_narrow_taps(K, M, L, slab.data(), offset.data(), oW, s.Wp, dyt.data(), out, M, ti != t0);
          continue;
        }
        // The taps of the other depths read zeros (live_depths): their rows of dW^T get nothing from this task.
        if (ti == t0) std::fill(out, out + K * M, 0.0f);
        const int64_t plane = g.kH * g.kW;
        for (int64_t ci = 0; ci < g.Cin && hi > lo; ++ci) {
          const int64_t r0 = (ci * g.kD + lo) * plane;
          gemm_narrow_taps((hi - lo) * plane, M, L, slab.data(), offset.data() + r0, oW, s.Wp, dyt.data(),
                           out + r0 * M, M, true);
        }
      }
    }
  }
  transpose_partials(partial, groups, K, M, dw);
}

// dW[r] = sum over tasks of <dy rows, tap r's slab rows>: fixed groups of tasks sum into partials that are added
// in group order (the result does not depend on the number of threads).
void backward_weight_one_output(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  const SlabGeom s = slab_geom(g);
  const int64_t K = g.Cin * g.kernel_volume(), tasks = s.tasks(g);
  const Groups groups(tasks, 1);
  const std::vector<int64_t> offset = tap_offsets(g, s, K);
  std::vector<float> partial(size_t(groups.count * K), 0.0f);
#pragma omp parallel
  {
    std::vector<float> slab(size_t(s.slab_floats(g))), dyp(size_t(s.R * s.Wp));
#pragma omp for schedule(static)
    for (int64_t grp = 0; grp < groups.count; ++grp) {
      float* out = partial.data() + grp * K;
      for (int64_t ti = grp * groups.per_group; ti < std::min(tasks, (grp + 1) * groups.per_group); ++ti) {
        const SlabTask t = slab_task(g, s, ti);
        build_slab(g, s, x, t, slab.data());
        gather_dy_channels(g, s, dy, t, dyp.data());
        const int64_t L = flat_length(g, s, t);
        for (int64_t r = 0; r < K; ++r) out[r] += dot(L, dyp.data(), slab.data() + offset[size_t(r)]);
      }
    }
    sum_partials(partial, groups.count, K, dw);
  }
}

// dx = the adjoint of forward: per (image, input channel), each block's slab gradient
// dslab[tap r's rows] += w[r] * dy rows, scattered back into dx; blocks of one (n, ci) run in order on one
// thread (their slabs overlap), and different (n, ci) write disjoint parts of dx.
void backward_data_one_output(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  const SlabGeom s = slab_geom(g);
  const int64_t kvol = g.kernel_volume(), per_image = g.oD() * s.blocks_per_depth;
  const std::vector<int64_t> offset = tap_offsets(g, s, kvol);  // of the taps of one input channel
  std::fill(dx, dx + g.x_numel(), 0.0f);
#pragma omp parallel
  {
    std::vector<float> dslab(size_t(g.kD * s.rows * s.Wp)), dyp(size_t(s.R * s.Wp));
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < g.N * g.Cin; ++nc) {
      const int64_t n = nc / g.Cin, ci = nc % g.Cin;
      for (int64_t ti = n * per_image; ti < (n + 1) * per_image; ++ti) {
        const SlabTask t = slab_task(g, s, ti);
        gather_dy_channels(g, s, dy, t, dyp.data());
        std::fill(dslab.begin(), dslab.end(), 0.0f);
        const int64_t L = flat_length(g, s, t);
        for (int64_t kr = 0; kr < kvol; ++kr)
          axpy(L, w[ci * kvol + kr], dyp.data(), dslab.data() + offset[size_t(kr)]);
        scatter_slab(g, s, dslab.data(), t, ci, dx);
      }
    }
  }
}

// db[co] = sum of dy[n, co, :], in double.
void bias_gradient(const ConvGeom& g, const float* dy, float* db) {
  const int64_t P = g.out_spatial();
  if (g.Cout == 1) {  // one long sum: split over threads as fixed-size pieces, added in order
    constexpr int64_t kPiece = int64_t(1) << 16;
    const int64_t total = g.N * P, pieces = (total + kPiece - 1) / kPiece;
    std::vector<double> part(static_cast<size_t>(pieces));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < pieces; ++i) {
      double s = 0.0;
      for (int64_t q = i * kPiece; q < std::min(total, (i + 1) * kPiece); ++q) s += dy[q];
      part[size_t(i)] = s;
    }
    double s = 0.0;
    for (double v : part) s += v;
    db[0] = static_cast<float>(s);
    return;
  }
  // Per channel, 8 running sums (sample p of each image goes to lane p % 8), added in lane order at the end: a
  // fixed order that depends on the sizes only, and 8 independent chains that vectorise (one chain of dependent
  // double additions was a fifth of SRCNN's first-layer backward-weight).
  constexpr int kLanes = 8;
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < g.Cout; ++co) {
    double lane[kLanes] = {};
    for (int64_t n = 0; n < g.N; ++n) {
      const float* src = dy + (n * g.Cout + co) * P;
      int64_t p = 0;
      for (; p + kLanes <= P; p += kLanes)
        for (int l = 0; l < kLanes; ++l) lane[l] += src[p + l];
      for (int l = 0; p + l < P; ++l) lane[l] += src[p + l];
    }
    double s = 0.0;
    for (double v : lane) s += v;
    db[co] = static_cast<float>(s);
  }
}

// Training layers cut their rows into short runs (17-33 samples), and a padded geometry checks every run against
// the borders; a padded copy of the input makes the geometry unpadded instead, where each run is one copy (SRCNN's
// backward-data, a convolution of dy padded by 4: 25% faster). Only for rows shorter than kShortRow: on longer
// rows the checks cost little and the copy more (3DSRnet's 64-wide clips: a 62 MB copy, 5% slower), and never
// for copies over kPadCopyLimit floats.
constexpr int64_t kShortRow = 48;
constexpr int64_t kPadCopyLimit = int64_t(64) << 20;

enum class Strategy { Auto, Taps, Columns };
std::atomic<Strategy> strategy{Strategy::Auto};

// Taps read the input in place where a column matrix would copy each input sample kvol times: forward 1.1-1.5x
// faster on our layers (docs/results/cpu_conv.md), backward-weight likewise. On 1x1 kernels too, where the column
// matrix is a plain copy of the input: SRCNN 9-1-5's 1x1 layer, forward 1.3x and backward-weight 1.3-1.5x (one
// and two threads, 2026-12-07; the slab is that copy, and the products read it in place). A slab holds at least
// kH input rows of every channel, so for extremely wide rows (over 64 Mi floats of slab per thread) the column
// path, whose buffers do not grow with the rows, is kept.
constexpr double kMaxTapsSlabFloats = double(int64_t(64) << 20);

bool use_taps(const ConvGeom& g) {
  switch (strategy.load(std::memory_order_relaxed)) {
    case Strategy::Taps: return true;
    case Strategy::Columns: return false;
    default: return double(g.Cin) * double(g.kD) * double(g.kH) * double(g.oW() + g.kW - 1) <= kMaxTapsSlabFloats;
  }
}

bool worth_padding(const ConvGeom& g) {
  if (unpadded(g)) return false;
  const double padded = double(g.N) * double(g.Cin) * double(g.D + 2 * g.pD) * double(g.H + 2 * g.pH) *
                        double(g.W + 2 * g.pW);
  return g.oW() < kShortRow && padded <= double(kPadCopyLimit);
}

// xp = x padded as g says (zeros or replicated borders); returns the same convolution of xp without padding.
ConvGeom padded_copy(const ConvGeom& g, const float* x, std::vector<float>& xp) {
  ConvGeom u = g;
  u.D = g.D + 2 * g.pD, u.H = g.H + 2 * g.pH, u.W = g.W + 2 * g.pW;
  u.pD = u.pH = u.pW = 0;
  xp.resize(size_t(u.x_numel()));
  const bool replicate = g.mode == PadMode::Replicate;
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < g.N * g.Cin; ++nc)
    for (int64_t d = 0; d < u.D; ++d)
      for (int64_t h = 0; h < u.H; ++h) {
        float* dst = xp.data() + ((nc * u.D + d) * u.H + h) * u.W;
        int64_t id = d - g.pD, ih = h - g.pH;
        if (!replicate && (id < 0 || id >= g.D || ih < 0 || ih >= g.H)) {
          std::fill(dst, dst + u.W, 0.0f);
          continue;
        }
        id = clamp_index(id, g.D), ih = clamp_index(ih, g.H);
        copy_padded_row(x + ((nc * g.D + id) * g.H + ih) * g.W, g.W, -g.pW, 0, u.W, replicate, dst);
      }
  return u;
}

// Backward-weight from column matrices: dW^T[K, Cout] += col * dY^T per block, blocks summed in fixed groups and
// the partials added in group order.
void backward_weight_columns(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  if (worth_padding(g)) {
    std::vector<float> xp;
    const ConvGeom u = padded_copy(g, x, xp);
    return backward_weight_columns(u, xp.data(), dy, dw);
  }
  const int64_t K = g.Cin * g.kernel_volume(), M = g.Cout, blocks = num_blocks(g);
  const Groups groups(blocks, 8);
  std::vector<float> partial(size_t(groups.count * M * K));
#pragma omp parallel
  {
    std::vector<float> col(size_t(K * kBlock)), dyc(size_t(M * kBlock));
    std::vector<float> dyt(size_t((M + kNarrowNR - 1) / kNarrowNR * kNarrowNR * kBlock));
    std::vector<Run> runs;
#pragma omp for schedule(static)
    for (int64_t grp = 0; grp < groups.count; ++grp) {
      float* out = partial.data() + grp * M * K;
      const int64_t b0 = grp * groups.per_group, b1 = std::min(blocks, b0 + groups.per_group);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const auto [q0, q1] = block_columns(g, x, blk, runs, col.data(), false);
        gather_dy(g, dy, q0, q1, dyc.data());
        pack_panels(kBlock, M, dyc.data(), 1, kBlock, kNarrowNR, dyt.data());  // dY^T
        gemm_narrow(K, M, kBlock, col.data(), kBlock, 1, dyt.data(), out, M, blk != b0);
      }
    }
  }
  transpose_partials(partial, groups, K, M, dw);
}

// ---------------------------------------------------------------------------------------------------------
// Winograd's minimal filtering for inference, F(m x m, r x r) with alpha = m + r - 1 = 8: F(4x4, 5x5) (SRCNN
// 9-5-5's mapping layer) and F(6x6, 3x3). Per tile of m x m outputs and input channel, the alpha x alpha input
// patch d becomes V = B^T d B; per output channel the products of the 64 transformed coordinates
// M[xi] = sum over ci of U[xi][co][ci] * V[xi][ci] (U = G w G^T, the transformed filters) are 64 independent
// matrix products [Cout, Cin] x [Cin, tiles] (gemm_wide); then Y = A^T M A. Multiplications per output and input
// channel and output channel: 64 / m^2 instead of r^2 (4 instead of 25 for 5x5). The interpolation points
// 0, +-1, +-2, +-1/2 (and infinity) keep the float32 error within a few 1e-6 of the output's scale
// (tests/cpp: CpuWinograd). A task is one row of tiles of one image over kWinoChunk tiles: its input rows (8 of
// each channel, padded), transformed 24 tiles at a time (one panel of gemm_wide; each tile one vector lane, the
// same code for every lane, so a tile's outputs do not depend on its place in the chunk).
// A 3-D layer (3DSRnet's 3x3x3) is a 2-D one per output depth whose input channels are the (depth tap, channel)
// pairs: the products sum over kD * Cin, and the transformed input of each depth, computed once per task, serves
// the kD output depths that read it. 3DSRnet's 64 -> 64 layer on 5 frames of 180x144 (a Vid4 frame at x4): 129.5 ms
// direct, 59.0 with Winograd on a quiet machine (docs/results/README.md: the figure varies with the memory traffic).
constexpr int kWinoAlpha = 8;
constexpr int64_t kWinoLanes = kWideNR;         // tiles transformed at once: one panel of the products
constexpr int64_t kWinoChunk = 2 * kWinoLanes;  // tiles per task

// The interpolation points 0, +-1, +-2, +-1/2 and infinity, with B^T's rows scaled to small dyadic numbers (and
// G's rows by the inverse: the product (G g) . (B^T d) is unchanged), as in the F(6x6, 3x3) of the literature:
//   B^T = [1  0  -21/4  0     21/4  0    -1  0]      A^T (m x 8) row p: [p == 0, 1, (-1)^p, 2^p, (-2)^p,
//         [0  1   1    -17/4 -17/4  1     1  0]      2^-p, (-2)^-p, p == m - 1]
//         [0 -1   1     17/4 -17/4 -1     1  0]
//         [0  1   1/2  -5    -5/2   4     2  0]      bt8 and at8 below apply them with the even / odd sums
//         [0 -1   1/2   5    -5/2  -4     2  0]      of each pair of rows (about half the operations of the
//         [0  1   2    -5/4  -5/2   1/4   1/2 0]      dense products); CpuWinograd tests them against the
//         [0 -1   2     5/4  -5/2  -1/4   1/2 0]      Toom-Cook construction.
//         [0 -1   0     21/4  0    -21/4  0   1]
// G (8 x r) is the Toom-Cook evaluation matrix (row j: the powers of point j; the last row picks the leading
// coefficient) divided row by row by the scales of B^T's rows, in double.
constexpr double kWinoScale[kWinoAlpha] = {1.0, -4.5, -4.5, 180.0, 180.0, 45.0 / 64.0, 45.0 / 64.0, 1.0};
constexpr double kWinoPoints[kWinoAlpha - 1] = {0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5};

// o[p][l] = (B^T d)[p] for L lanes, d[i] the i-th input of each lane (pointers to L floats).
template <int64_t L>
inline void bt8(const float* const* d, float* const* o) {
#pragma GCC ivdep  // the outputs never overlap the inputs
  for (int64_t l = 0; l < L; ++l) {
    const float d0 = d[0][l], d1 = d[1][l], d2 = d[2][l], d3 = d[3][l], d4 = d[4][l], d5 = d[5][l], d6 = d[6][l],
                d7 = d[7][l];
    o[0][l] = (d0 - d6) + 5.25f * (d4 - d2);
    o[7][l] = (d7 - d1) + 5.25f * (d3 - d5);
    const float a1 = (d2 + d6) - 4.25f * d4, b1 = (d1 + d5) - 4.25f * d3;
    o[1][l] = a1 + b1, o[2][l] = a1 - b1;
    const float a2 = (0.5f * d2 - 2.5f * d4) + 2.0f * d6, b2 = (d1 - 5.0f * d3) + 4.0f * d5;
    o[3][l] = a2 + b2, o[4][l] = a2 - b2;
    const float a3 = (2.0f * d2 - 2.5f * d4) + 0.5f * d6, b3 = (d1 - 1.25f * d3) + 0.25f * d5;
    o[5][l] = a3 + b3, o[6][l] = a3 - b3;
  }
}

// o[p][l] = (A^T v)[p], p < m (4 or 6), for L lanes.
template <int64_t L>
inline void at8(int m, const float* const* v, float* const* o) {
#pragma GCC ivdep  // the outputs never overlap the inputs
  for (int64_t l = 0; l < L; ++l) {
    const float e1 = v[1][l] + v[2][l], o1 = v[1][l] - v[2][l], e2 = v[3][l] + v[4][l], o2 = v[3][l] - v[4][l];
    const float e3 = v[5][l] + v[6][l], o3 = v[5][l] - v[6][l];
    o[0][l] = ((v[0][l] + e1) + e2) + e3;
    o[1][l] = (o1 + 2.0f * o2) + 0.5f * o3;
    o[2][l] = (e1 + 4.0f * e2) + 0.25f * e3;
    if (m == 4) {
      o[3][l] = ((o1 + 8.0f * o2) + 0.125f * o3) + v[7][l];
    } else {
      o[3][l] = (o1 + 8.0f * o2) + 0.125f * o3;
      o[4][l] = (e1 + 16.0f * e2) + 0.0625f * e3;
      o[5][l] = ((o1 + 32.0f * o2) + 0.03125f * o3) + v[7][l];
    }
  }
}

// G (8 x r) for a kernel of side r, in double: the Toom-Cook evaluation rows divided by kWinoScale.
void winograd_g(int r, double (*G)[kWinoAlpha]) {
  for (int j = 0; j < kWinoAlpha; ++j)
    for (int k = 0; k < r; ++k)
      G[j][k] = (j < kWinoAlpha - 1 ? std::pow(kWinoPoints[j], k) : (k == r - 1 ? 1.0 : 0.0)) / kWinoScale[j];
}

// The input transform of one channel over a panel of kWinoLanes tiles: rows[i] (i < 8) point at the panel's first
// input column in the 8 input rows of its tiles; out + xi * xi_stride gets coordinate xi = 8 p + q of the 24
// tiles. B^T along the columns first (contiguous: every column of the panel's window at once), then the rows of
// the result split into m phases (column l * m + j of tile l), and B^T along them.
template <int m>
MAGMASR_VECTOR_CLONES void winograd_input(const float* const* rows, float* out, int64_t xi_stride) {
  constexpr int a = kWinoAlpha;
  constexpr int64_t L = kWinoLanes, kCols = (L + 1) * 6 + 8;  // (L + 1) tiles of m <= 6, in steps of 8
  alignas(64) float t[a][kCols], ph[a][6][L + 8];
  float* tp[a];
  for (int p = 0; p < a; ++p) tp[p] = t[p];
  const int64_t cols = (L + 1) * m;
  for (int64_t c0 = 0; c0 < cols; c0 += 8) {  // vertical: t = B^T d, 8 columns at a time
    const float* d[a];
    float* o[a];
    for (int i = 0; i < a; ++i) d[i] = rows[i] + c0, o[i] = tp[i] + c0;
    bt8<8>(d, o);
  }
  // The m phases of each row p, ph[p][j][l] = t[p][l * m + j], all of them before any is read: a wide load of
  // what narrower stores have just written waits for them (it took most of the transform's time).
  for (int p = 0; p < a; ++p)
    for (int64_t l = 0; l <= L; ++l)
      for (int j = 0; j < m; ++j) ph[p][j][l] = t[p][l * m + j];
  for (int p = 0; p < a; ++p) {
    const float* d[a];
    float* o[a];
    for (int j = 0; j < a; ++j) d[j] = ph[p][j % m] + j / m;  // column j of tile l: phase j % m of tile l + j / m
    for (int q = 0; q < a; ++q) o[q] = out + (p * a + q) * xi_stride;
    bt8<L>(d, o);
  }
}

// Y = A^T M A for the 24 tiles of a panel: M[xi][l] at mp + xi * xi_stride + l; y[p][q][l] (m x m x 24).
MAGMASR_VECTOR_CLONES void winograd_output(int m, const float* mp, int64_t xi_stride, float* y) {
  constexpr int a = kWinoAlpha;
  constexpr int64_t L = kWinoLanes;
  alignas(64) float s[6][a][L];  // s = A^T M (m x 8 x lanes)
  for (int q = 0; q < a; ++q) {
    const float* v[a];
    float* o[6];
    for (int i = 0; i < a; ++i) v[i] = mp + (i * a + q) * xi_stride;
    for (int p = 0; p < m; ++p) o[p] = s[p][q];
    at8<L>(m, v, o);
  }
  for (int p = 0; p < m; ++p) {
    const float* v[a];
    float* o[6];
    for (int j = 0; j < a; ++j) v[j] = s[p][j];
    for (int q = 0; q < m; ++q) o[q] = y + (p * m + q) * L;
    at8<L>(m, v, o);
  }
}

// o[xi][l] = sum over p < m of A^T[p][xi] v[p][l] for L lanes: the transpose of at8's transform (o[0] = v[0], then
// the sums of v[p] times 1, (-1)^p, 2^p, (-2)^p, 2^-p, (-2)^-p, and o[7] = v[m - 1]), even and odd p summed apart
// as there. The transform of an output gradient, dM = A dY A^T (the forward pass's Y = A^T M A).
template <int m, int64_t L>
inline void a8(const float* const* v, float* const* o) {
#pragma GCC ivdep  // the outputs never overlap the inputs
  for (int64_t l = 0; l < L; ++l) {
    float e1 = 0.0f, o1 = 0.0f, e2 = 0.0f, o2 = 0.0f, e3 = 0.0f, o3 = 0.0f;
    float up = 1.0f, down = 1.0f;  // 2^p, 2^-p
    for (int p = 0; p < m; ++p, up *= 2.0f, down *= 0.5f) {
      const float vp = v[p][l];
      if (p % 2 == 0)
        e1 += vp, e2 += up * vp, e3 += down * vp;
      else
        o1 += vp, o2 += up * vp, o3 += down * vp;
    }
    o[0][l] = v[0][l], o[7][l] = v[m - 1][l];
    o[1][l] = e1 + o1, o[2][l] = e1 - o1;
    o[3][l] = e2 + o2, o[4][l] = e2 - o2;
    o[5][l] = e3 + o3, o[6][l] = e3 - o3;
  }
}

// dM = A dY A^T for L vectors at once (gemm_narrow's panel of 16 output channels of one tile):
// dy[(p * m + q) * L + l] the m x m output gradient; dm + xi * stride the 64 coordinates (xi = 8 i + j).
template <int m, int64_t L>
MAGMASR_VECTOR_CLONES void winograd_gradient(const float* dy, float* dm, int64_t stride) {
  constexpr int a = kWinoAlpha;
  alignas(64) float t[6][a][L];  // t[p] = A (row p of dY)^T: m x 8 x lanes
  for (int p = 0; p < m; ++p) {
    const float* v[6];
    float* o[a];
    for (int q = 0; q < m; ++q) v[q] = dy + (p * m + q) * L;
    for (int j = 0; j < a; ++j) o[j] = t[p][j];
    a8<m, L>(v, o);
  }
  for (int j = 0; j < a; ++j) {
    const float* v[6];
    float* o[a];
    for (int p = 0; p < m; ++p) v[p] = t[p][j];
    for (int i = 0; i < a; ++i) o[i] = dm + (i * a + j) * stride;
    a8<m, L>(v, o);
  }
}

// U[xi][co][kd * Cin + ci] = (G w[co][ci][kd] G^T)[p][q] (xi = 8 p + q) for the weights w [Cout, Cin, kD, r, r]
// (kD = 1: a 2-D layer), in double, rounded once. The depth taps are the outer index of the product's K, so the
// taps of the depths an output reads form one contiguous range of columns.
std::vector<float> winograd_transform_filters(const float* w, int64_t M, int64_t Cin, int64_t kD, int r) {
  constexpr int a = kWinoAlpha;
  double G[kWinoAlpha][kWinoAlpha];
  winograd_g(r, G);
  const int64_t K = kD * Cin;
  std::vector<float> U(size_t(a * a * M * K));
  // (each training step has new weights: 3DSRnet's 64 -> 64 layer has 12,288 filters to transform)
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < M; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t kd = 0; kd < kD; ++kd) {
        const float* k = w + ((co * Cin + ci) * kD + kd) * r * r;
        double t[kWinoAlpha][kWinoAlpha] = {};  // G k: alpha x r
        for (int i = 0; i < a; ++i)
          for (int j = 0; j < r; ++j)
            for (int l = 0; l < r; ++l) t[i][j] += G[i][l] * double(k[l * r + j]);
        for (int i = 0; i < a; ++i)
          for (int j = 0; j < a; ++j) {
            double v = 0.0;
            for (int l = 0; l < r; ++l) v += t[i][l] * G[j][l];
            U[size_t(((i * a + j) * M + co) * K + kd * Cin + ci)] = float(v);
          }
      }
  return U;
}

// The transformed filters of the last few weight tensors seen, found by their contents (a byte comparison: the
// same weights give the same U, whatever array holds them). A tiled picture runs every layer once per tile with
// the same weights, and the transform cost about 2 ms per call for SRCNN's 64 -> 32 5x5 layer (a quarter of a
// 128 x 128 tile's time). Thread-safe; an entry in use stays alive while evicted (shared_ptr).
std::shared_ptr<const std::vector<float>> winograd_filters(const float* w, int64_t M, int64_t Cin, int64_t kD,
                                                           int r) {
  struct Entry {
    int64_t M, Cin, kD;
    int r;
    std::vector<float> w;
    std::shared_ptr<const std::vector<float>> U;
  };
  static std::mutex mutex;
  static std::vector<Entry> cache;  // most recently used first
  constexpr size_t kEntries = 8;
  const size_t n = size_t(M * Cin * kD * r * r);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    for (size_t i = 0; i < cache.size(); ++i)
      if (cache[i].M == M && cache[i].Cin == Cin && cache[i].kD == kD && cache[i].r == r &&
          std::memcmp(cache[i].w.data(), w, n * sizeof(float)) == 0) {
        std::rotate(cache.begin(), cache.begin() + std::ptrdiff_t(i), cache.begin() + std::ptrdiff_t(i) + 1);
        return cache.front().U;
      }
  }
  auto U = std::make_shared<const std::vector<float>>(winograd_transform_filters(w, M, Cin, kD, r));
  const std::lock_guard<std::mutex> lock(mutex);
  cache.insert(cache.begin(), Entry{M, Cin, kD, r, std::vector<float>(w, w + n), U});
  if (cache.size() > kEntries) cache.pop_back();
  return U;
}

bool winograd_fits(const ConvGeom& g) { return g.kH == g.kW && winograd_tile(g.kH, g.Cin, g.Cout) > 0; }

// How the Winograd passes (forward, backward-weight) cut a layer into tasks. A task covers up to kWinoChunk tiles of
// all output depths: a chunk of a long row of tiles (its input rows read in place where they lie inside the
// input), or, when a row holds at most half a chunk (training patches, small tiles of a picture), several
// consecutive rows of tiles (of one image or the next), each row's input window copied (padded) one after the
// other, span = tiles_w + 1 tiles apart: the spare tile's m columns hold the r - 1 columns the row's last tile reads
// past its own (r - 1 <= m), so every tile's window starts on a multiple of m in the task's rows, and the spare
// tile is dropped. A tile's outputs are the same bits either way: each lane of the transforms and each column of
// the products is computed alone.
// The distance between the 64 coordinates' arrays (V, the products, the output gradient, dU): whole cache lines,
// an odd number of them, so that the 64 rows a transform writes or reads at once fall in 64 different sets of
// the L1 cache. At 12 KiB apart (SRCNN's mapping layer: 2 panels x 64 channels x 24 tiles) they all fell in one
// set of 8 ways, and writing the input transform cost as much as the products.
inline int64_t wino_stride(int64_t n) {
  int64_t s = (n + 15) / 16 * 16;
  return (s / 16) % 2 == 0 ? s + 16 : s;
}

// A task's output depths are done kWinoDepthBlock at a time (V holds the transformed input of the kD - 1 more depths
// they read; a deep volume, a CT scan's 3-D layer, would otherwise hold all its depths per thread).
constexpr int64_t kWinoDepthBlock = 8;

struct WinoPlan {
  int r, m;
  int64_t Cin, M, kD, K, oD, oH, oW, tiles_h, tiles_w, span, rows_per_task, chunks, tile_rows, tasks, cols, Dp, Dv;
  bool packed, replicate;
  static constexpr int64_t panels = kWinoChunk / kWinoLanes;
  explicit WinoPlan(const ConvGeom& g)
      : r(int(g.kH)), m(kWinoAlpha - r + 1), Cin(g.Cin), M(g.Cout), kD(g.kD), K(g.kD * g.Cin), oD(g.oD()),
        oH(g.oH()), oW(g.oW()), tiles_h((oH + m - 1) / m), tiles_w((oW + m - 1) / m), span(tiles_w + 1),
        rows_per_task(0), chunks(0), tile_rows(g.N * tiles_h), tasks(0),
        cols((kWinoChunk + 1) * m + 8),  // a task's tiles' windows, and what its last panel's transform reads past
        Dp(g.D + 2 * g.pD), Dv(std::min(Dp, kWinoDepthBlock + g.kD - 1)), packed(2 * span <= kWinoChunk),
        replicate(g.mode == PadMode::Replicate) {
    rows_per_task = packed ? kWinoChunk / span : 1;
    chunks = packed ? 1 : (tiles_w + kWinoChunk - 1) / kWinoChunk;
    tasks = packed ? (tile_rows + rows_per_task - 1) / rows_per_task : tile_rows * chunks;
  }
  // V[xi] holds the transformed input in gemm_wide's packed layout: panel p of 24 tiles, padded input depth pd0 + s
  // (a block's depths, s < Dv), channel ci at row (p * Dv + s) * Cin + ci (an output depth's depth taps read
  // consecutive rows).
  int64_t xi_stride() const { return wino_stride(panels * Dv * Cin * kWinoLanes); }
};

struct WinoTile {
  int64_t n, ty, tx;  // tx < 0: a spare tile, or one past the task's
};

// One task's tiles: its first row of tiles, how many, the first tile of its chunk (one long row), the number of
// tiles nt (spare ones included), and each tile's place.
struct WinoTask {
  int64_t row0, nrows, t0, nt;
  WinoTile tile[kWinoChunk];
  WinoTask(const WinoPlan& P, int64_t task)
      : row0(P.packed ? task * P.rows_per_task : task / P.chunks),
        nrows(P.packed ? std::min(P.rows_per_task, P.tile_rows - row0) : 1),
        t0(P.packed ? 0 : (task % P.chunks) * kWinoChunk),
        nt(P.packed ? nrows * P.span : std::min(kWinoChunk, P.tiles_w - t0)) {
    for (int64_t v = 0; v < kWinoChunk; ++v) {
      const int64_t rr = row0 + (P.packed ? v / P.span : 0), tx = P.packed ? v % P.span : t0 + v;
      tile[v] = v < nt && tx < P.tiles_w ? WinoTile{rr / P.tiles_h, rr % P.tiles_h, tx} : WinoTile{0, 0, -1};
    }
  }
};

// The transformed input of a task into V (WinoPlan::xi_stride), padded input depths pd0 .. pd1 - 1: each once, for
// all the output depths of the block that read it (up to kD in a 3-D layer): its rows ty * m - pH + i (i < 8) and
// columns t0 * m - pW + j of every
// channel, the rows as a slab task's (slab_source_row: the border row, or nullptr in zero padding, whose depths no
// product reads), read in place where a single row of tiles lies inside the input, else copied into `slab`, padded
// (zeros, or the border sample; columns past the padded input, read for dropped outputs, likewise).
void winograd_input_task(const ConvGeom& g, const WinoPlan& P, const WinoTask& T, int64_t pd0, int64_t pd1,
                         const float* x, float* slab, std::vector<const float*>& row, float* V) {
  constexpr int a = kWinoAlpha;
  constexpr int64_t L = kWinoLanes;
  const int64_t Cin = P.Cin, m = P.m, width = P.packed ? P.span * m : P.cols, c0 = T.t0 * m - g.pW;
  const float* rows[kWinoAlpha];
  for (int64_t pd = pd0; pd < pd1; ++pd) {
    if (!P.replicate && (pd < g.pD || pd >= g.pD + g.D)) continue;
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int i = 0; i < a; ++i) {
        float* dst = slab + (ci * a + i) * P.cols;
        row[size_t(ci * a + i)] = dst;
        for (int64_t q = 0; q < T.nrows; ++q) {
          const int64_t rr = T.row0 + q;
          const SlabTask rows_of{rr / P.tiles_h, pd, (rr % P.tiles_h) * m, m};  // depth pd: output depth pd, tap 0
          const float* src = slab_source_row(g, x, rows_of, ci, 0, i);
          float* seg = dst + q * width;
          if (!P.packed && src && c0 >= 0 && c0 + P.cols <= g.W)
            row[size_t(ci * a + i)] = src + c0;
          else if (src)
            copy_padded_row(src, g.W, c0, 0, width, P.replicate, seg);
          else
            std::fill(seg, seg + width, 0.0f);
        }
      }
    for (int64_t p = 0; p * L < T.nt; ++p)  // (the products read only the panels with tiles)
      for (int64_t ci = 0; ci < Cin; ++ci) {
        for (int i = 0; i < a; ++i) rows[i] = row[size_t(ci * a + i)] + p * L * m;
        (m == 4 ? winograd_input<4> : winograd_input<6>)(rows, V + ((p * P.Dv + pd - pd0) * Cin + ci) * L,
                                                         P.xi_stride());
      }
  }
}

// Each output depth of task T, block by block (winograd_input_task filling V for the block first): f(od, s0, k0,
// nk) with s0 the V depth slot of the output depth's first live tap (od - od0 + kd_lo), k0 its first column of U
// (or row of dU) and nk the number of live taps' channels (live_depths).
template <class F>
void winograd_depths(const ConvGeom& g, const WinoPlan& P, const WinoTask& T, const float* x, float* slab,
                     std::vector<const float*>& row, float* V, F f) {
  for (int64_t od0 = 0; od0 < P.oD; od0 += kWinoDepthBlock) {
    const int64_t od1 = std::min(P.oD, od0 + kWinoDepthBlock);
    winograd_input_task(g, P, T, od0, od1 + P.kD - 1, x, slab, row, V);
    for (int64_t od = od0; od < od1; ++od) {
      const auto [kd_lo, kd_hi] = live_depths(g, od);
      f(od, od - od0 + kd_lo, kd_lo * P.Cin, (kd_hi - kd_lo) * P.Cin);
    }
  }
}

}  // namespace

bool set_conv_strategy(const std::string& which) {
  if (which == "auto") strategy = Strategy::Auto;
  else if (which == "taps") strategy = Strategy::Taps;
  else if (which == "columns") strategy = Strategy::Columns;
  else return false;
  return true;
}

bool conv_forward_winograd(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu) {
  if (!winograd_fits(g)) return false;
  constexpr int a = kWinoAlpha;
  constexpr int64_t L = kWinoLanes;
  const WinoPlan P(g);
  const int64_t m = P.m, Cin = P.Cin, M = P.M, K = P.K, oD = P.oD, oH = P.oH, oW = P.oW;
  const std::shared_ptr<const std::vector<float>> Uptr = winograd_filters(w, M, Cin, P.kD, P.r);
  const std::vector<float>& U = *Uptr;
  const int64_t ps = wino_stride(M * kWinoChunk);  // the products of coordinate xi at Pr + xi * ps
#pragma omp parallel
  {
    // Each thread's buffers are kept from call to call (a tiled picture calls the layer once per tile: allocating
    // and clearing them cost a millisecond each time). Every element a task reads it has written, except the
    // products of the tiles past a row's end, which only the dropped lanes read.
    thread_local std::vector<float> slab, V, Pr, Y;
    slab.resize(size_t(Cin * a * P.cols)), V.resize(size_t(a * a * P.xi_stride()));
    Pr.resize(size_t(a * a * ps)), Y.resize(size_t(m * m * L));
    std::vector<const float*> row(size_t(Cin * a));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < P.tasks; ++task) {
      const WinoTask T(P, task);
      // The depth taps that read input (live_depths: those reading only zero padding are left out, as in
      // forward_taps): U's columns k0 .. k0 + nk - 1 (depth tap major), V's rows of depth slots s0 ...
      winograd_depths(g, P, T, x, slab.data(), row, V.data(), [&](int64_t od, int64_t s0, int64_t k0, int64_t nk) {
        for (int xi = 0; xi < a * a; ++xi) {
          float* pxi = Pr.data() + xi * ps;
          if (nk == 0) {  // an output depth that reads only padding: the bias
            std::fill(pxi, pxi + M * kWinoChunk, 0.0f);
            continue;
          }
          for (int64_t p = 0; p * L < T.nt; ++p)  // one panel per product: its rows are V's panel rows
            gemm_wide(M, std::min(L, T.nt - p * L), nk, U.data() + xi * M * K + k0, K, 1,
                      V.data() + xi * P.xi_stride() + ((p * P.Dv + s0) * Cin) * L, pxi + p * L, kWinoChunk, false);
        }
        for (int64_t co = 0; co < M; ++co) {
          const float bias = b ? b[co] : 0.0f;
          for (int64_t p = 0; p * L < T.nt; ++p) {
            winograd_output(int(m), Pr.data() + co * kWinoChunk + p * L, ps, Y.data());
            for (int64_t l = 0; l < L; ++l) {
              const WinoTile& t = T.tile[p * L + l];
              if (t.tx < 0) continue;
              const int64_t rows_out = std::min(m, oH - t.ty * m), cols_out = std::min(m, oW - t.tx * m);
              float* dst = y + (((t.n * M + co) * oD + od) * oH + t.ty * m) * oW + t.tx * m;
              for (int64_t i = 0; i < rows_out; ++i)
                for (int64_t j = 0; j < cols_out; ++j)
                  dst[i * oW + j] = bias_relu(Y[size_t((i * m + j) * L + l)], bias, relu);
            }
          }
        }
      });
    }
  }
  return true;
}

bool conv_backward_weight_winograd(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  if (!winograd_fits(g)) return false;
  constexpr int a = kWinoAlpha;
  constexpr int64_t L = kWinoLanes, NR = kNarrowNR;
  const WinoPlan P(g);
  const int64_t m = P.m, Cin = P.Cin, M = P.M, K = P.K, r = P.r, oD = P.oD, oH = P.oH, oW = P.oW;
  const int64_t Mp = (M + NR - 1) / NR * NR;  // the products' columns (output channels) in whole panels of 16
  const int64_t ds = wino_stride(Mp * kWinoChunk), us = wino_stride(K * M);  // D[xi], dU[xi] at xi * ds, xi * us
  const int64_t wsize = g.w_numel();
  // At most 16 groups: each ends with its transform G^T dU G, whose cost does not shrink with the group.
  const Groups groups(P.tasks, (P.tasks + 15) / 16);
  std::vector<float> partial(size_t(groups.count * wsize));
  double Gd[kWinoAlpha][kWinoAlpha];
  winograd_g(int(r), Gd);
  float G[kWinoAlpha][kWinoAlpha];
  for (int i = 0; i < kWinoAlpha; ++i)
    for (int k = 0; k < kWinoAlpha; ++k) G[i][k] = float(Gd[i][k]);
#pragma omp parallel
  {
    thread_local std::vector<float> slab, V, D, dU, gy;
    std::vector<float> t(size_t(kWinoAlpha * r * M)), wv(size_t(r * r * M));
    slab.resize(size_t(Cin * a * P.cols)), V.resize(size_t(a * a * P.xi_stride()));
    D.resize(size_t(a * a * ds)), dU.resize(size_t(a * a * us));
    gy.resize(size_t(m * m * NR));
    std::vector<const float*> row(size_t(Cin * a));
    std::vector<int64_t> aoff(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t grp = 0; grp < groups.count; ++grp) {
      std::fill(dU.begin(), dU.end(), 0.0f);
      const int64_t t0 = grp * groups.per_group, t1 = std::min(P.tasks, t0 + groups.per_group);
      for (int64_t task = t0; task < t1; ++task) {
        const WinoTask T(P, task);
        winograd_depths(g, P, T, x, slab.data(), row, V.data(), [&](int64_t od, int64_t s0, int64_t k0, int64_t nk) {
          if (nk == 0) return;  // no tap of this output depth reads input
          // D[xi]: the transformed output gradient dM of every tile and output channel, packed as gemm_narrow's B
          // (panel co / 16, tile k < nt, co % 16), 16 channels of a tile at a time; spare tiles, outputs past the
          // layer's and channels past M are zeros.
          for (int64_t k = 0; k < T.nt; ++k) {
            const WinoTile& tl = T.tile[k];
            const int64_t rows_in = tl.tx < 0 ? 0 : std::min(m, oH - tl.ty * m);
            const int64_t cols_in = tl.tx < 0 ? 0 : std::min(m, oW - tl.tx * m);
            for (int64_t cp = 0; cp < Mp / NR; ++cp) {
              const int64_t nc = std::min(NR, M - cp * NR);
              if (rows_in < m || cols_in < m || nc < NR) std::fill(gy.begin(), gy.end(), 0.0f);
              for (int64_t c = 0; c < nc; ++c) {
                const float* src = dy + (((tl.n * M + cp * NR + c) * oD + od) * oH + tl.ty * m) * oW + tl.tx * m;
                for (int64_t i = 0; i < rows_in; ++i)
                  for (int64_t j = 0; j < cols_in; ++j) gy[size_t((i * m + j) * NR + c)] = src[i * oW + j];
              }
              (m == 4 ? winograd_gradient<4, NR> : winograd_gradient<6, NR>)(
                  gy.data(), D.data() + (cp * T.nt + k) * NR, ds);
            }
          }
          // dU[xi][k0 + i][co] += sum over the task's tiles of V[xi](row of tap i, tile) * D[xi](tile, co): V's rows
          // read in place, one segment of 24 tiles per panel.
          for (int64_t i = 0; i < nk; ++i) aoff[size_t(i)] = (s0 * Cin + i) * L;
          for (int xi = 0; xi < a * a; ++xi)
            gemm_narrow_taps(nk, M, T.nt, V.data() + xi * P.xi_stride(), aoff.data(), L, P.Dv * Cin * L,
                             D.data() + xi * ds, dU.data() + xi * us + k0 * M, M, true);
        });
      }
      // The group's gradient: dW[co][ci][kd] = G^T dU G (the adjoint of U = G w G^T), over the output channels at
      // once (dU's rows are contiguous in co).
      float* out = partial.data() + grp * wsize;
      for (int64_t kk = 0; kk < K; ++kk) {
        std::fill(t.begin(), t.end(), 0.0f);  // t[i][kw][co] = (dU G)[i][kw]
        for (int i = 0; i < a; ++i)
          for (int j = 0; j < a; ++j) {
            const float* u = dU.data() + (i * a + j) * us + kk * M;
            for (int64_t kw = 0; kw < r; ++kw) {
              const float gj = G[j][kw];
              float* tt = t.data() + (i * r + kw) * M;
              for (int64_t co = 0; co < M; ++co) tt[co] += gj * u[co];
            }
          }
        std::fill(wv.begin(), wv.end(), 0.0f);  // wv[kh][kw][co] = (G^T dU G)[kh][kw]
        for (int64_t kh = 0; kh < r; ++kh)
          for (int64_t kw = 0; kw < r; ++kw) {
            float* o = wv.data() + (kh * r + kw) * M;
            for (int i = 0; i < a; ++i) {
              const float gi = G[i][kh];
              const float* tt = t.data() + (i * r + kw) * M;
              for (int64_t co = 0; co < M; ++co) o[co] += gi * tt[co];
            }
          }
        const int64_t ci = kk % Cin, kd = kk / Cin;
        for (int64_t co = 0; co < M; ++co)
          for (int64_t e = 0; e < r * r; ++e) out[((co * Cin + ci) * g.kD + kd) * r * r + e] = wv[size_t(e * M + co)];
      }
    }
    sum_partials(partial, groups.count, wsize, dw);
  }
  return true;
}

void conv_forward(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu) {
  if (g.Cout == 1) return forward_one_output(g, x, w, b, y, relu);
  if (use_taps(g)) return forward_taps(g, x, w, b, y, relu);
  if (worth_padding(g)) {
    std::vector<float> xp;
    const ConvGeom u = padded_copy(g, x, xp);
    return conv_forward(u, xp.data(), w, b, y, relu);
  }
  const int64_t K = g.Cin * g.kernel_volume(), P = g.out_spatial(), M = g.Cout, blocks = num_blocks(g);
#pragma omp parallel
  {
    std::vector<float> col(size_t(K * kBlock)), tmp(size_t(M * kBlock));  // col packed for gemm_wide
    std::vector<Run> runs;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const auto [q0, q1] = block_columns(g, x, blk, runs, col.data(), true);
      gemm_wide(M, kBlock, K, w, K, 1, col.data(), tmp.data(), kBlock, false);
      for (int64_t co = 0; co < M; ++co) {
        const float bias = b ? b[co] : 0.0f;
        int64_t q = q0;
        while (q < q1) {
          const int64_t n = q / P, p = q % P, run = std::min(P - p, q1 - q);
          const float* src = tmp.data() + co * kBlock + (q - q0);
          float* dst = y + (n * M + co) * P + p;
          for (int64_t i = 0; i < run; ++i) dst[i] = bias_relu(src[i], bias, relu);
          q += run;
        }
      }
    }
  }
}

// Blocks go in waves of one per thread: each thread multiplies its block into its slot of a shared buffer, then
// all threads scatter the wave's blocks into dx, split by input channel (disjoint targets, so no races).
void conv_backward_data(const ConvGeom& g, const float* dy, const float* w, float* dx, bool winograd) {
  if (g.Cout == 1) return backward_data_one_output(g, dy, w, dx);
  if ((g.mode == PadMode::Zeros || unpadded(g)) && g.Cin > 1 && g.pD < g.kD && g.pH < g.kH && g.pW < g.kW) {
    // Without replicated borders the adjoint is itself a convolution, of dy padded by k - 1 - p with the weights
    // flipped in space and transposed (Cin <-> Cout): run as a forward pass, it skips the column matrix of dx and
    // its scatter-add (col2vol), which cost as much as the product (9-5-5 conv2: 100 -> 69 ms). Not for one input
    // channel, where that forward pass would have one output channel (the slab path, 4x slower here).
    ConvGeom t;
    t.N = g.N, t.Cin = g.Cout, t.Cout = g.Cin;  // (zero padding: dy's border is not replicated)
    t.D = g.oD(), t.H = g.oH(), t.W = g.oW();
    t.kD = g.kD, t.kH = g.kH, t.kW = g.kW;
    t.pD = g.kD - 1 - g.pD, t.pH = g.kH - 1 - g.pH, t.pW = g.kW - 1 - g.pW;
    const int64_t kvol = g.kernel_volume();
    std::vector<float> flipped(size_t(g.w_numel()));
    for (int64_t co = 0; co < g.Cout; ++co)
      for (int64_t ci = 0; ci < g.Cin; ++ci)
        for (int64_t r = 0; r < kvol; ++r)
          flipped[size_t((ci * g.Cout + co) * kvol + kvol - 1 - r)] = w[(co * g.Cin + ci) * kvol + r];
    if (winograd && conv_forward_winograd(t, dy, flipped.data(), nullptr, dx, false)) return;
    return conv_forward(t, dy, flipped.data(), nullptr, dx, false);  // (which pads dy first where that pays)
  }
  const int64_t K = g.Cin * g.kernel_volume(), total = g.N * g.out_spatial();
  const int64_t blocks = num_blocks(g), T = max_threads();
  std::vector<float> dcol(size_t(T * K * kBlock));
  std::vector<std::vector<Run>> slot_runs(static_cast<size_t>(T));
  std::fill(dx, dx + g.x_numel(), 0.0f);
#pragma omp parallel
  {
    std::vector<float> dyc(size_t(g.Cout * kBlock)), packed(size_t(g.Cout * kBlock));
    for (int64_t wave = 0; wave < blocks; wave += T) {
      const int64_t nb = std::min(T, blocks - wave);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t q0 = (wave + i) * kBlock, q1 = std::min(total, q0 + kBlock);
        gather_dy(g, dy, q0, q1, dyc.data());
        block_runs(g, q0, q1, slot_runs[size_t(i)]);
        pack_panels(g.Cout, kBlock, dyc.data(), kBlock, 1, kWideNR, packed.data());
        // A(k, co) = W[co, k]: the transposed weights, read in place.
        gemm_wide(K, kBlock, g.Cout, w, 1, K, packed.data(), dcol.data() + i * K * kBlock, kBlock, false);
      }
#pragma omp for schedule(static)
      for (int64_t ci = 0; ci < g.Cin; ++ci)
        for (int64_t i = 0; i < nb; ++i) col2vol(g, dcol.data() + i * K * kBlock, slot_runs[size_t(i)], ci, ci + 1, dx);
    }
  }
}

// Groups of consecutive blocks (their number fixed by the problem size alone) each sum into a partial gradient
// dW^T[K, Cout]; the partials are then added in group order, so the result is the same whatever the number of
// threads, and transposed into dw.
void conv_backward_weight(const ConvGeom& g, const float* x, const float* dy, float* dw, float* db, bool winograd) {
  if (!(winograd && conv_backward_weight_winograd(g, x, dy, dw))) {
    if (g.Cout == 1)
      backward_weight_one_output(g, x, dy, dw);
    else if (use_taps(g))
      backward_weight_taps(g, x, dy, dw);
    else
      backward_weight_columns(g, x, dy, dw);
  }
  if (db) bias_gradient(g, dy, db);
}

}  // namespace magmasr::cpu
