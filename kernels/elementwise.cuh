// The generic element-wise kernel and its launcher, shared by elementwise.cu and loss.cu.
// See the header comment of elementwise.cu for the strategy.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace magmasr {
namespace cuda {

/// y[i] = op(a[i], b[i], c[i]) for the first NIN inputs (the others are passed as 0). Inputs may alias y.
template <int NIN, bool VEC, class Op>
__global__ void __launch_bounds__(kBlock) ew_kernel(int64_t n, const float* a, const float* b, const float* c, float* y, Op op) {
  const int64_t tid = dev::global_tid(), stride = dev::grid_stride();
  int64_t start = 0;
  if (VEC) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 va = NIN > 0 ? reinterpret_cast<const float4*>(a)[i] : z;
      const float4 vb = NIN > 1 ? reinterpret_cast<const float4*>(b)[i] : z;
      const float4 vc = NIN > 2 ? reinterpret_cast<const float4*>(c)[i] : z;
      float4 r;
      r.x = op(va.x, vb.x, vc.x);
      r.y = op(va.y, vb.y, vc.y);
      r.z = op(va.z, vb.z, vc.z);
      r.w = op(va.w, vb.w, vc.w);
      reinterpret_cast<float4*>(y)[i] = r;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) {
    y[i] = op(NIN > 0 ? a[i] : 0.f, NIN > 1 ? b[i] : 0.f, NIN > 2 ? c[i] : 0.f);
  }
}

template <int NIN, class Op>
void launch_elementwise(const Context& ctx, int64_t n, const float* a, const float* b, const float* c, float* y,
                        Op op) {
  if (n <= 0) return;
  const bool vec = dev::aligned16(a, b, c, y);
  if (vec) {
    MAGMASR_LAUNCH(grid_for((n + 3) / 4, ctx), kBlock, 0, ctx.stream(), ew_kernel<NIN, true, Op>)(n, a, b, c, y, op);
  } else {
    MAGMASR_LAUNCH(grid_for(n, ctx), kBlock, 0, ctx.stream(), ew_kernel<NIN, false, Op>)(n, a, b, c, y, op);
  }
  MAGMASR_CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace magmasr
