// CPU element-wise ops, MSE loss, pixel shuffle and optimizer updates: plain OpenMP loops, the reference
// for kernels/elementwise.cu, kernels/loss.cu and kernels/optim.cu.
#include <cmath>

#include "backend.hpp"

namespace magmasr::cpu {

void relu_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] <= 0.0f ? 0.0f : x[i];
}

void relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];
}

double mse_loss(int64_t n, const float* a, const float* b) {
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return s / double(n);
}

void mse_grad(int64_t n, const float* a, const float* b, float scale, float* g) {
  const float c = 2.0f * scale / float(n);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) g[i] = c * (a[i] - b[i]);
}

void pixel_shuffle_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* x, float* y) {
  const int64_t Ho = H * r, Wo = W * r;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t nc = 0; nc < N * C; ++nc)
    for (int64_t ho = 0; ho < Ho; ++ho) {
      const int64_t h = ho / r, i = ho % r;
      float* dst = y + (nc * Ho + ho) * Wo;
      const float* src = x + (nc * r * r + i * r) * H * W + h * W;  // channel c*r*r + i*r + j, row h
      for (int64_t wo = 0; wo < Wo; ++wo) dst[wo] = src[(wo % r) * H * W + wo / r];
    }
}

void pixel_shuffle_backward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* dy, float* dx) {
  const int64_t Ho = H * r, Wo = W * r;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t nc = 0; nc < N * C; ++nc)
    for (int64_t ho = 0; ho < Ho; ++ho) {
      const int64_t h = ho / r, i = ho % r;
      const float* src = dy + (nc * Ho + ho) * Wo;
      float* dst = dx + (nc * r * r + i * r) * H * W + h * W;
      for (int64_t wo = 0; wo < Wo; ++wo) dst[(wo % r) * H * W + wo / r] = src[wo];
    }
}

void add(int64_t n, const float* a, const float* b, float* y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void scale(int64_t n, float alpha, const float* x, float* y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}

void fill(int64_t n, float value, float* y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

void sgd_update(int64_t n, float* p, const float* g, float* velocity, const SgdParams& hp) {
  const bool use_v = hp.momentum != 0.0f;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] + hp.weight_decay * p[i];
    float step = gi;
    if (use_v) {
      const float v = hp.momentum * velocity[i] + gi;
      velocity[i] = v;
      step = hp.nesterov ? gi + hp.momentum * v : v;
    }
    p[i] -= hp.lr * step;
  }
}

void adam_update(int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& hp, int64_t step) {
  const double bc1 = 1.0 - std::pow(double(hp.beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(hp.beta2), double(step));
  const float inv_bc1 = float(1.0 / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if (!hp.decoupled) gi += hp.weight_decay * p[i];
    else p[i] -= hp.lr * hp.weight_decay * p[i];
    const float mi = hp.beta1 * m[i] + (1.0f - hp.beta1) * gi;
    const float vi = hp.beta2 * v[i] + (1.0f - hp.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= hp.lr * (mi * inv_bc1) / (std::sqrt(vi) * inv_sqrt_bc2 + hp.eps);
  }
}

}  // namespace magmasr::cpu
