// Optimizer update kernels of the CUDA backend: SGD (momentum, Nesterov, weight decay) and Adam / AdamW,
// exactly the rules of magmasr/optim_params.hpp.
//
// sgd_kernel / adam_kernel
//   Strategy: one grid-stride pass over the parameters, 256 threads per block, each parameter read and
//   written once together with its gradient and state (float4 accesses when all arrays are 16-byte
//   aligned, scalar otherwise). Adam's bias-correction factors are computed once on the host in double, as
//   on the CPU.
//   Speed: bandwidth bound (SGD 16, Adam 28 bytes per parameter); not yet measured on a GPU.
#include <cmath>

#include "backend.hpp"
#include "common.cuh"
#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace magmasr {
namespace cuda {

namespace {

struct SgdStep {
  float lr, momentum, weight_decay;
  bool nesterov;
  // One parameter: returns the new p; v is read and written when momentum != 0.
  __device__ __forceinline__ float operator()(float p, float g, float& v) const {
    const float gp = g + weight_decay * p;
    float upd = gp;
    if (momentum != 0.f) {
      v = momentum * v + gp;
      upd = nesterov ? gp + momentum * v : v;
    }
    return p - lr * upd;
  }
};

struct AdamStep {
  float lr, beta1, beta2, eps, weight_decay;
  float inv_bc1, inv_sqrt_bc2;  // 1 / (1 - beta1^t), 1 / sqrt(1 - beta2^t): the CPU's factors, in double then float
  bool decoupled;
  // The CPU rule's operations in its order (cpu::adam_update).
  __device__ __forceinline__ float operator()(float p, float g, float& m, float& v) const {
    const float gp = decoupled ? g : g + weight_decay * p;
    if (decoupled) p -= lr * weight_decay * p;
    m = beta1 * m + (1.f - beta1) * gp;
    v = beta2 * v + (1.f - beta2) * gp * gp;
    return p - lr * (m * inv_bc1) / (sqrtf(v) * inv_sqrt_bc2 + eps);
  }
};

template <bool VEC>
__global__ void __launch_bounds__(kBlock) sgd_kernel(int64_t n, float* p, const float* g, float* vel, SgdStep s) {
  const int64_t tid = dev::global_tid(), stride = dev::grid_stride();
  const bool has_v = s.momentum != 0.f;
  int64_t start = 0;
  if (VEC) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 pp = reinterpret_cast<float4*>(p)[i];
      const float4 gg = reinterpret_cast<const float4*>(g)[i];
      float4 vv = has_v ? reinterpret_cast<float4*>(vel)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
      pp.x = s(pp.x, gg.x, vv.x);
      pp.y = s(pp.y, gg.y, vv.y);
      pp.z = s(pp.z, gg.z, vv.z);
      pp.w = s(pp.w, gg.w, vv.w);
      reinterpret_cast<float4*>(p)[i] = pp;
      if (has_v) reinterpret_cast<float4*>(vel)[i] = vv;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) {
    float v = has_v ? vel[i] : 0.f;
    p[i] = s(p[i], g[i], v);
    if (has_v) vel[i] = v;
  }
}

template <bool VEC>
__global__ void __launch_bounds__(kBlock) adam_kernel(int64_t n, float* p, const float* g, float* m, float* v, AdamStep s) {
  const int64_t tid = dev::global_tid(), stride = dev::grid_stride();
  int64_t start = 0;
  if (VEC) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 pp = reinterpret_cast<float4*>(p)[i];
      const float4 gg = reinterpret_cast<const float4*>(g)[i];
      float4 mm = reinterpret_cast<float4*>(m)[i];
      float4 vv = reinterpret_cast<float4*>(v)[i];
      pp.x = s(pp.x, gg.x, mm.x, vv.x);
      pp.y = s(pp.y, gg.y, mm.y, vv.y);
      pp.z = s(pp.z, gg.z, mm.z, vv.z);
      pp.w = s(pp.w, gg.w, mm.w, vv.w);
      reinterpret_cast<float4*>(p)[i] = pp;
      reinterpret_cast<float4*>(m)[i] = mm;
      reinterpret_cast<float4*>(v)[i] = vv;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) {
    float mi = m[i], vi = v[i];
    p[i] = s(p[i], g[i], mi, vi);
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void sgd_update(int device, int64_t n, float* p, const float* g, float* velocity, const SgdParams& hp) {
  if (n <= 0) return;
  MAGMASR_REQUIRE(hp.momentum == 0.f || velocity != nullptr, ValueError,
                  "sgd_update: momentum != 0 needs a velocity buffer");
  Context& ctx = context(device);
  const SgdStep s{hp.lr, hp.momentum, hp.weight_decay, hp.nesterov};
  const bool vec = dev::aligned16(p, g, hp.momentum != 0.f ? velocity : nullptr);
  if (vec) {
    MAGMASR_LAUNCH(grid_for((n + 3) / 4, ctx), kBlock, 0, ctx.stream(), sgd_kernel<true>)(n, p, g, velocity, s);
  } else {
    MAGMASR_LAUNCH(grid_for(n, ctx), kBlock, 0, ctx.stream(), sgd_kernel<false>)(n, p, g, velocity, s);
  }
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void adam_update(int device, int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& hp,
                 int64_t step) {
  if (n <= 0) return;
  MAGMASR_REQUIRE(step >= 1, ValueError, "adam_update: step must be >= 1, got ", step);
  Context& ctx = context(device);
  const double t = double(step);
  const double bc1 = 1.0 - std::pow(double(hp.beta1), t), bc2 = 1.0 - std::pow(double(hp.beta2), t);
  const AdamStep s{hp.lr,
                   hp.beta1,
                   hp.beta2,
                   hp.eps,
                   hp.weight_decay,
                   float(1.0 / bc1),
                   float(1.0 / std::sqrt(bc2)),
                   hp.decoupled};
  const bool vec = dev::aligned16(p, g, m, v);
  if (vec) {
    MAGMASR_LAUNCH(grid_for((n + 3) / 4, ctx), kBlock, 0, ctx.stream(), adam_kernel<true>)(n, p, g, m, v, s);
  } else {
    MAGMASR_LAUNCH(grid_for(n, ctx), kBlock, 0, ctx.stream(), adam_kernel<false>)(n, p, g, m, v, s);
  }
  MAGMASR_CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace magmasr
