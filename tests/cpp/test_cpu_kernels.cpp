// CPU kernels against independent references: a direct seven-loop convolution written here, the adjoint
// identity for backward-data, central finite differences (in double) for backward-weight, closed forms for
// the rest.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <vector>

#include "backend.hpp"
#include "cpu/gemm.hpp"
#include "magmasr/magmasr.hpp"

using namespace magmasr;

namespace {

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

int64_t clampi(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Every (output, tap) pair of the convolution whose input sample exists (zero padding: inside the input;
// replicate: the clamped border sample): f(y index, x index, w index). The definition, with no reuse of the
// library's indexing.
template <class F>
void for_each_tap(const ConvGeom& g, F f) {
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t co = 0; co < g.Cout; ++co)
      for (int64_t od = 0; od < g.oD(); ++od)
        for (int64_t oh = 0; oh < g.oH(); ++oh)
          for (int64_t ow = 0; ow < g.oW(); ++ow) {
            const size_t yi = size_t((((n * g.Cout + co) * g.oD() + od) * g.oH() + oh) * g.oW() + ow);
            for (int64_t ci = 0; ci < g.Cin; ++ci)
              for (int64_t kd = 0; kd < g.kD; ++kd)
                for (int64_t kh = 0; kh < g.kH; ++kh)
                  for (int64_t kw = 0; kw < g.kW; ++kw) {
                    int64_t id = od + kd - g.pD, ih = oh + kh - g.pH, iw = ow + kw - g.pW;
                    const bool inside = id >= 0 && id < g.D && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
                    if (!inside && g.mode == PadMode::Zeros) continue;
                    id = clampi(id, g.D), ih = clampi(ih, g.H), iw = clampi(iw, g.W);
                    f(yi, size_t((((n * g.Cin + ci) * g.D + id) * g.H + ih) * g.W + iw),
                      size_t((((co * g.Cin + ci) * g.kD + kd) * g.kH + kh) * g.kW + kw));
                  }
          }
}

// The convolution in double.
std::vector<double> direct_conv(const ConvGeom& g, const std::vector<float>& x, const std::vector<float>& w,
                                const std::vector<float>* b) {
  std::vector<double> y(size_t(g.y_numel()));
  for (size_t i = 0; b && i < y.size(); ++i) y[i] = (*b)[size_t(int64_t(i) / g.out_spatial() % g.Cout)];
  for_each_tap(g, [&](size_t yi, size_t xi, size_t wi) { y[yi] += double(x[xi]) * double(w[wi]); });
  return y;
}

// Its adjoint in double: dx[n, ci, i] = sum of dy * w over the outputs whose window reads input i.
std::vector<double> adjoint_conv(const ConvGeom& g, const std::vector<float>& dy, const std::vector<float>& w) {
  std::vector<double> dx(size_t(g.x_numel()));
  for_each_tap(g, [&](size_t yi, size_t xi, size_t wi) { dx[xi] += double(dy[yi]) * double(w[wi]); });
  return dx;
}

// The weight gradient in double: dW[co, ci, k] = sum over the outputs of dy times the input sample tap k reads.
std::vector<double> weight_gradient(const ConvGeom& g, const std::vector<float>& x, const std::vector<float>& dy) {
  std::vector<double> dw(size_t(g.w_numel()));
  for_each_tap(g, [&](size_t yi, size_t xi, size_t wi) { dw[wi] += double(dy[yi]) * double(x[xi]); });
  return dw;
}

double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

ConvGeom geom(int64_t N, int64_t Cin, int64_t Cout, int64_t D, int64_t H, int64_t W, int64_t kD, int64_t kH,
              int64_t kW, int64_t pD, int64_t pH, int64_t pW, PadMode mode) {
  ConvGeom g;
  g.N = N, g.Cin = Cin, g.Cout = Cout, g.D = D, g.H = H, g.W = W, g.kD = kD, g.kH = kH, g.kW = kW;
  g.pD = pD, g.pH = pH, g.pW = pW, g.mode = mode;
  g.validate();
  return g;
}

std::vector<ConvGeom> geometries() {
  std::vector<ConvGeom> gs;
  for (PadMode m : {PadMode::Zeros, PadMode::Replicate}) {
    gs.push_back(geom(1, 1, 8, 1, 17, 13, 1, 9, 9, 0, 4, 4, m));    // SRCNN conv1, same
    gs.push_back(geom(2, 6, 5, 1, 9, 11, 1, 1, 1, 0, 0, 0, m));     // 1x1
    gs.push_back(geom(3, 7, 1, 1, 12, 9, 1, 5, 5, 0, 2, 1, m));     // SRCNN conv3-like, per-dim padding
    gs.push_back(geom(2, 3, 4, 5, 8, 7, 3, 3, 3, 1, 1, 1, m));      // 3DSRnet same
    gs.push_back(geom(1, 4, 3, 5, 7, 6, 3, 3, 3, 0, 0, 0, m));      // 3DSRnet valid
    gs.push_back(geom(2, 2, 3, 3, 6, 5, 3, 3, 3, 0, 1, 1, m));      // 3DSRnet conv5: pad only in space
    gs.push_back(geom(1, 2, 2, 1, 3, 4, 1, 5, 5, 0, 3, 3, m));      // kernel larger than the input
    gs.push_back(geom(1, 2, 3, 1, 4, 5, 1, 3, 3, 0, 3, 2, m));      // padding >= kernel: not a plain adjoint conv
    gs.push_back(geom(2, 2, 3, 2, 4, 5, 1, 3, 3, 1, 1, 1, m));      // depth padding >= kernel: planes of bias only
    gs.push_back(geom(1, 3, 5, 1, 4, 300, 1, 3, 3, 0, 1, 2, m));    // rows longer than a block: padded in place
    // 64 outputs x 302 columns: the taps path cuts the 40 rows into slab tasks of 13 (the last one short).
    gs.push_back(geom(1, 2, 64, 1, 40, 300, 1, 3, 3, 0, 1, 1, m));
  }
  gs.push_back(geom(1, 64, 4, 1, 9, 10, 1, 3, 3, 0, 1, 1, PadMode::Zeros));  // 64 channels
  // K = 288 taps (the AVX-512 kernel's 8 x 48 tiles), 12 outputs (a short last row tile), rows of 100 + 2.
  gs.push_back(geom(2, 32, 12, 1, 30, 100, 1, 3, 3, 0, 1, 1, PadMode::Replicate));
  // One output channel takes the direct (slab) path: 3-D, and a slab budget of 256 Ki floats that holds only
  // 36 of the 100 output rows of 16 channels x 380 columns, so three row blocks overlap in their input rows.
  for (PadMode m : {PadMode::Zeros, PadMode::Replicate}) {
    gs.push_back(geom(2, 3, 1, 5, 6, 7, 3, 3, 3, 1, 1, 1, m));
    gs.push_back(geom(1, 16, 1, 1, 100, 380, 1, 5, 5, 0, 2, 2, m));
  }
  return gs;
}

// The micro-kernel sets of cpu/gemm.cpp this processor runs: "generic" always, "avx2" where it has AVX2 and FMA,
// "avx512" where it has AVX-512F too. The convolution tests run with each; UseKernels restores the selection.
std::vector<std::string> kernel_sets() {
  const std::string saved = cpu::gemm_kernels();
  std::vector<std::string> sets{"generic"};
  for (const char* isa : {"avx2", "avx512"})
    if (cpu::set_gemm_kernels(isa)) sets.push_back(isa);
  cpu::set_gemm_kernels(saved);
  return sets;
}

struct UseKernels {
  std::string saved = cpu::gemm_kernels();
  explicit UseKernels(const std::string& which) { EXPECT_TRUE(cpu::set_gemm_kernels(which)) << which; }
  ~UseKernels() { cpu::set_gemm_kernels(saved); }
};

// The strategies of cpu/conv.cpp (forward and backward-weight, several output channels): tests run each, then the
// default again.
const char* const kStrategies[] = {"taps", "columns"};

struct UseStrategy {
  explicit UseStrategy(const std::string& which) { EXPECT_TRUE(cpu::set_conv_strategy(which)) << which; }
  ~UseStrategy() { cpu::set_conv_strategy("auto"); }
};

}  // namespace

TEST(CpuConv, ForwardMatchesDirectConvolution) {
  for (const std::string& kernels : kernel_sets())
  for (const std::string strategy : kStrategies) {
    SCOPED_TRACE("kernels " + kernels + ", forward " + strategy);
    const UseKernels use(kernels);
    const UseStrategy use_strategy(strategy);
    std::mt19937 rng(1234);
    for (const ConvGeom& g : geometries()) {
      auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
      auto b = random_vec(size_t(g.Cout), rng);
      std::vector<float> y(size_t(g.y_numel()), NAN);
      cpu::conv_forward(g, x.data(), w.data(), b.data(), y.data(), false);
      // fp32 products summed over K = Cin*kvol <= 576 terms of size ~1: relative error ~ sqrt(K) * 6e-8.
      EXPECT_LT(rel_err(y, direct_conv(g, x, w, &b)), 1e-5) << g.str();
      // Fused ReLU.
      std::vector<float> yr(size_t(g.y_numel()), NAN);
      cpu::conv_forward(g, x.data(), w.data(), b.data(), yr.data(), true);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(yr[i], y[i] > 0 ? y[i] : 0.0f) << g.str();
    }
  }
}

// The two forward strategies compute every output as the same ordered sum: the same bits, on every geometry (1x1,
// 3-D, padded or not, slab tasks cut short), with or without ReLU.
TEST(CpuConv, ForwardStrategiesGiveTheSameBits) {
  for (const std::string& kernels : kernel_sets()) {
    SCOPED_TRACE("kernels " + kernels);
    const UseKernels use(kernels);
    std::mt19937 rng(std::random_device{}());
    for (const ConvGeom& g : geometries()) {
      auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
      auto b = random_vec(size_t(g.Cout), rng);
      for (bool relu : {false, true}) {
        std::vector<std::vector<float>> ys;
        for (const std::string strategy : kStrategies) {
          const UseStrategy use_strategy(strategy);
          ys.emplace_back(size_t(g.y_numel()), NAN);
          cpu::conv_forward(g, x.data(), w.data(), b.data(), ys.back().data(), relu);
        }
        int64_t differ = 0;
        for (size_t i = 0; i < ys[0].size(); ++i) differ += std::memcmp(&ys[0][i], &ys[1][i], sizeof(float)) != 0;
        EXPECT_EQ(differ, 0) << g.str() << (relu ? " with ReLU" : "");
      }
    }
  }
}

// The AVX2 and AVX-512 kernels compute each output as the same chain of fused multiply-adds: the same bits.
TEST(CpuConv, Avx2AndAvx512KernelsGiveTheSameBits) {
  const auto sets = kernel_sets();
  if (std::find(sets.begin(), sets.end(), "avx512") == sets.end()) GTEST_SKIP() << "no AVX-512 on this processor";
  std::mt19937 rng(std::random_device{}());
  for (const ConvGeom& g : geometries()) {
    auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    auto b = random_vec(size_t(g.Cout), rng);
    std::vector<std::vector<float>> ys;
    for (const char* isa : {"avx2", "avx512"}) {
      const UseKernels use(isa);
      ys.emplace_back(size_t(g.y_numel()), NAN);
      cpu::conv_forward(g, x.data(), w.data(), b.data(), ys.back().data(), true);
    }
    int64_t differ = 0;
    for (size_t i = 0; i < ys[0].size(); ++i) differ += std::memcmp(&ys[0][i], &ys[1][i], sizeof(float)) != 0;
    EXPECT_EQ(differ, 0) << g.str();
  }
}

// A NaN in the input makes NaN exactly the outputs whose window holds it, and the fused ReLU keeps them NaN
// (as PyTorch's relu does: max(NaN, 0) must not turn a broken input into a plausible zero).
TEST(CpuConv, FusedReluPropagatesNaN) {
  for (const std::string& kernels : kernel_sets()) {
    SCOPED_TRACE("kernels " + kernels);
    const UseKernels use(kernels);
    std::mt19937 rng(4321);
    for (const ConvGeom& g : geometries()) {
      auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
      auto b = random_vec(size_t(g.Cout), rng);
      x[size_t(rng() % uint32_t(x.size()))] = NAN;
      const std::vector<double> ref = direct_conv(g, x, w, &b);
      std::vector<float> y(size_t(g.y_numel()), 0.5f), yr(size_t(g.y_numel()), 0.5f);
      cpu::conv_forward(g, x.data(), w.data(), b.data(), y.data(), false);
      cpu::conv_forward(g, x.data(), w.data(), b.data(), yr.data(), true);
      size_t nans = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        nans += std::isnan(ref[i]);
        ASSERT_EQ(std::isnan(y[i]), std::isnan(ref[i])) << g.str() << " output " << i;
        ASSERT_EQ(std::isnan(yr[i]), std::isnan(ref[i])) << g.str() << " output " << i;
        if (!std::isnan(y[i])) ASSERT_EQ(yr[i], y[i] > 0 ? y[i] : 0.0f) << g.str();
      }
      EXPECT_GT(nans, 0u) << g.str();
    }
  }
}

TEST(CpuConv, BackwardDataIsTheAdjointOfForward) {
  for (const std::string& kernels : kernel_sets()) {
    SCOPED_TRACE("kernels " + kernels);
    const UseKernels use(kernels);
    std::mt19937 rng(99);
    for (const ConvGeom& g : geometries()) {
      auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
      auto dy = random_vec(size_t(g.y_numel()), rng);
      std::vector<float> y(size_t(g.y_numel())), dx(size_t(g.x_numel()), NAN);
      cpu::conv_forward(g, x.data(), w.data(), nullptr, y.data(), false);
      cpu::conv_backward_data(g, dy.data(), w.data(), dx.data());
      // <conv(x), dy> = <x, conv^T(dy)> for the linear map x -> conv(x) (no bias).
      const double lhs = dot(y, dy), rhs = dot(x, dx);
      EXPECT_NEAR(lhs, rhs, 1e-4 * (std::abs(lhs) + 1.0)) << g.str();
    }
  }
}

TEST(CpuConv, BackwardWeightMatchesFiniteDifferences) {
  std::mt19937 rng(7);
  for (const ConvGeom& g : geometries()) {
    auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    auto b = random_vec(size_t(g.Cout), rng), r = random_vec(size_t(g.y_numel()), rng);
    // L(w, b) = <direct_conv(x; w, b), r> is linear in w and b: central differences in double are exact up to
    // rounding. A few coordinates of each, computed once and compared with every kernel set and strategy.
    auto loss = [&](const std::vector<float>& ww, const std::vector<float>& bb) {
      auto y = direct_conv(g, x, ww, &bb);
      double s = 0;
      for (size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
      return s;
    };
    std::uniform_int_distribution<size_t> pick_w(0, w.size() - 1), pick_b(0, b.size() - 1);
    std::vector<std::pair<size_t, double>> fd_w, fd_b;
    for (int t = 0; t < 4; ++t) {
      const size_t i = pick_w(rng), j = pick_b(rng);
      auto wp = w, wm = w;
      wp[i] += 0.5f, wm[i] -= 0.5f;
      fd_w.emplace_back(i, loss(wp, b) - loss(wm, b));
      auto bp = b, bm = b;
      bp[j] += 0.5f, bm[j] -= 0.5f;
      fd_b.emplace_back(j, loss(w, bp) - loss(w, bm));
    }
    for (const std::string& kernels : kernel_sets())
      for (const std::string strategy : kStrategies) {
        SCOPED_TRACE("kernels " + kernels + ", strategy " + strategy);
        const UseKernels use(kernels);
        const UseStrategy use_strategy(strategy);
        std::vector<float> dw(size_t(g.w_numel()), NAN), db(size_t(g.Cout), NAN);
        cpu::conv_backward_weight(g, x.data(), r.data(), dw.data(), db.data());
        for (const auto& [i, fd] : fd_w) EXPECT_NEAR(dw[i], fd, 1e-4 * (std::abs(fd) + 1.0)) << g.str() << " weight " << i;
        for (const auto& [j, fd] : fd_b) EXPECT_NEAR(db[j], fd, 1e-4 * (std::abs(fd) + 1.0)) << g.str() << " bias " << j;
      }
  }
}

TEST(CpuConv, ChunkBoundariesAcrossTheBatch) {
  for (const std::string& kernels : kernel_sets())
  for (const std::string strategy : kStrategies) {
    SCOPED_TRACE("kernels " + kernels + ", strategy " + strategy);
    const UseKernels use(kernels);
    const UseStrategy use_strategy(strategy);
    // 3 images of 48x48 = 6912 columns: 256-column blocks straddle the images, the last block is partial, and
    // backward-weight sums 27 blocks in groups of 8. Forward and backward-weight must not notice.
    std::mt19937 rng(5);
    const ConvGeom g = geom(3, 64, 2, 1, 48, 48, 1, 5, 5, 0, 2, 2, PadMode::Replicate);
    auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    std::vector<float> y(size_t(g.y_numel()), NAN);
    cpu::conv_forward(g, x.data(), w.data(), nullptr, y.data(), false);
    EXPECT_LT(rel_err(y, direct_conv(g, x, w, nullptr)), 1e-5);
    auto dy = random_vec(size_t(g.y_numel()), rng);
    std::vector<float> dx(size_t(g.x_numel()), NAN), dw(size_t(g.w_numel()), NAN);
    cpu::conv_backward_data(g, dy.data(), w.data(), dx.data());
    EXPECT_NEAR(dot(y, dy), dot(x, dx), 1e-4 * std::abs(dot(y, dy)));
    cpu::conv_backward_weight(g, x.data(), dy.data(), dw.data(), nullptr);
    // <dw, w> = <dy, conv(x; w)> since conv is linear in w.
    EXPECT_NEAR(dot(dw, w), dot(dy, y), 1e-4 * std::abs(dot(dy, y)));
  }
}

// Every result is the same bit for bit whatever the number of OpenMP threads (backward-weight sums fixed groups
// of blocks and adds them in order; forward and backward-data give each output to exactly one thread).
TEST(CpuConv, ResultsDoNotDependOnTheThreadCount) {
#ifdef _OPENMP
  std::mt19937 rng(11);
  const int saved = omp_get_max_threads();
  for (int64_t cout : {1, 8})
  for (const std::string strategy : kStrategies) {
    const UseStrategy use_strategy(strategy);
    const ConvGeom g = geom(37, 8, cout, 1, 20, 23, 1, 5, 5, 0, 2, 2, PadMode::Replicate);
    auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    auto dy = random_vec(size_t(g.y_numel()), rng), b = random_vec(size_t(g.Cout), rng);
    std::vector<std::vector<float>> ys, dxs, dws, dbs;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> y(size_t(g.y_numel())), dx(size_t(g.x_numel())), dw(size_t(g.w_numel())), db(static_cast<size_t>(cout));
      cpu::conv_forward(g, x.data(), w.data(), b.data(), y.data(), false);
      cpu::conv_backward_data(g, dy.data(), w.data(), dx.data());
      cpu::conv_backward_weight(g, x.data(), dy.data(), dw.data(), db.data());
      ys.push_back(y), dxs.push_back(dx), dws.push_back(dw), dbs.push_back(db);
    }
    omp_set_num_threads(saved);
    for (size_t i = 1; i < ys.size(); ++i) {
      EXPECT_EQ(ys[i], ys[0]) << "Cout " << cout << ", " << strategy;
      EXPECT_EQ(dxs[i], dxs[0]) << "Cout " << cout;
      EXPECT_EQ(dws[i], dws[0]) << "Cout " << cout << ", " << strategy;
      EXPECT_EQ(dbs[i], dbs[0]) << "Cout " << cout;
    }
  }
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

// An output's value does not depend on where it lies among the SGEMM blocks: the convolution of a crop is the
// crop of the convolution, bit for bit (what tiled inference rests on). Multi-channel layers of SRCNN and 3DSRnet
// with valid padding, each crop at offsets that put its outputs at other places in their 256-column blocks.
TEST(CpuConv, AnOutputDoesNotDependOnWhereItLies) {
  for (const std::string& kernels : kernel_sets())
  for (const std::string strategy : kStrategies) {
    SCOPED_TRACE("kernels " + kernels + ", forward " + strategy);
    const UseKernels use(kernels);
    const UseStrategy use_strategy(strategy);
    std::mt19937 rng(std::random_device{}());
    struct Case {
      int64_t cin, cout, kd, k, d;
    };
    for (const Case c : {Case{1, 64, 1, 9, 1}, Case{64, 32, 1, 5, 1}, Case{64, 32, 1, 1, 1}, Case{32, 32, 3, 3, 5},
                         Case{32, 1, 1, 5, 1}, Case{4, 1, 3, 3, 5}}) {  // and the one-output-channel path
      const ConvGeom g = geom(1, c.cin, c.cout, c.d, 41, 67, c.kd, c.k, c.k, 0, 0, 0, PadMode::Zeros);
      const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
      std::vector<float> y(size_t(g.y_numel()));
      cpu::conv_forward(g, x.data(), w.data(), nullptr, y.data(), false);
      for (int trial = 0; trial < 3; ++trial) {
        const int64_t h0 = std::uniform_int_distribution<int64_t>(0, 9)(rng), w0 = std::uniform_int_distribution<int64_t>(0, 30)(rng);
        const int64_t H = std::uniform_int_distribution<int64_t>(c.k, g.H - h0)(rng);
        const int64_t W = std::uniform_int_distribution<int64_t>(c.k + 8, g.W - w0)(rng);
        const ConvGeom gc = geom(1, c.cin, c.cout, c.d, H, W, c.kd, c.k, c.k, 0, 0, 0, PadMode::Zeros);
        std::vector<float> xc(size_t(gc.x_numel())), yc(size_t(gc.y_numel()));
        for (int64_t ci = 0; ci < c.cin * c.d; ++ci)
          for (int64_t i = 0; i < H; ++i)
            for (int64_t j = 0; j < W; ++j) xc[size_t((ci * H + i) * W + j)] = x[size_t((ci * g.H + h0 + i) * g.W + w0 + j)];
        cpu::conv_forward(gc, xc.data(), w.data(), nullptr, yc.data(), false);
        int64_t differ = 0;
        for (int64_t co = 0; co < c.cout * gc.oD(); ++co)
          for (int64_t i = 0; i < gc.oH(); ++i)
            for (int64_t j = 0; j < gc.oW(); ++j)
              differ += yc[size_t((co * gc.oH() + i) * gc.oW() + j)] != y[size_t((co * g.oH() + h0 + i) * g.oW() + w0 + j)];
        EXPECT_EQ(differ, 0) << gc.str() << " at (" << h0 << ", " << w0 << ") of " << g.str();
      }
    }
  }
}

// The tiled products of cpu/gemm.cpp against a double-precision reference, on sizes with partial row and column
// tiles, A read in place and B packed with either stride order, with and without accumulation; the padding columns of C past N
// (poisoned with NaN) must stay untouched. Then the property the convolution's exactness rests on: a column of C
// is the same bit for bit wherever it lies among the panels, and a row wherever it lies among the row tiles.
TEST(CpuGemm, TiledProductsMatchADoubleReference) {
  std::mt19937 rng(std::random_device{}());
  for (const std::string& kernels : kernel_sets()) {
    SCOPED_TRACE("kernels " + kernels);
    const UseKernels use(kernels);
    for (bool narrow : {false, true}) {
      const int64_t NR = narrow ? cpu::kNarrowNR : cpu::kWideNR;
      auto gemm = narrow ? cpu::gemm_narrow : cpu::gemm_wide;
      for (int64_t M : {1, 4, 5, 7, 13, 32})
        for (int64_t N : {1, 16, 23, 24, 25, 50})
          for (int64_t K : {1, 9, 64}) {
            const bool transposed = (M + N + K) % 2 == 1, accumulate = (M * N) % 3 == 0;
            const auto a = random_vec(size_t(M * K), rng), b = random_vec(size_t(K * N), rng);
            const int64_t rsa = transposed ? 1 : K, csa = transposed ? M : 1, ldc = N + 3;
            auto c = random_vec(size_t(M * ldc), rng);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = N; j < ldc; ++j) c[size_t(i * ldc + j)] = NAN;
            const auto c0 = c;
            std::vector<float> bp(size_t((N + NR - 1) / NR * NR * K));
            if (K % 2 == 1) {  // B packed from its transpose, B^T[N, K] row-major: B(k, n) = bt[n * K + k]
              std::vector<float> bt(size_t(N * K));
              for (int64_t k = 0; k < K; ++k)
                for (int64_t n = 0; n < N; ++n) bt[size_t(n * K + k)] = b[size_t(k * N + n)];
              cpu::pack_panels(K, N, bt.data(), 1, K, NR, bp.data());
            } else {
              cpu::pack_panels(K, N, b.data(), N, 1, NR, bp.data());
            }
            gemm(M, N, K, a.data(), rsa, csa, bp.data(), c.data(), ldc, accumulate);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < ldc; ++j) {
                const float got = c[size_t(i * ldc + j)];
                if (j >= N) {
                  ASSERT_TRUE(std::isnan(got)) << M << "x" << N << "x" << K << ": wrote past column N";
                  continue;
                }
                double ref = accumulate ? double(c0[size_t(i * ldc + j)]) : 0.0, scale = std::abs(ref);
                for (int64_t k = 0; k < K; ++k) {
                  const double t = double(a[size_t(i * rsa + k * csa)]) * double(b[size_t(k * N + j)]);
                  ref += t, scale += std::abs(t);
                }
                // K <= 64 float multiply-adds: each rounding is <= 2^-24 of the running magnitude.
                ASSERT_NEAR(got, ref, 1e-6 * (scale + 1.0)) << M << "x" << N << "x" << K << " at " << i << ", " << j;
              }
          }
      // Position independence: B with `shift` extra columns in front, A with `shift` extra rows on top.
      const int64_t M = 11, N = 40, K = 37;
      const auto a = random_vec(size_t(M * K), rng), b = random_vec(size_t(K * N), rng);
      std::vector<float> bp(size_t((N + NR - 1) / NR * NR * K)), c(size_t(M * N));
      cpu::pack_panels(K, N, b.data(), N, 1, NR, bp.data());
      gemm(M, N, K, a.data(), K, 1, bp.data(), c.data(), N, false);
      for (int64_t shift : {1, 5, 8, 13}) {
        const int64_t Ns = N + shift, Ms = M + shift;
        auto bs = random_vec(size_t(K * Ns), rng), as = random_vec(size_t(Ms * K), rng);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < N; ++j) bs[size_t(k * Ns + shift + j)] = b[size_t(k * N + j)];
        for (int64_t i = 0; i < M; ++i)
          for (int64_t k = 0; k < K; ++k) as[size_t((shift + i) * K + k)] = a[size_t(i * K + k)];
        std::vector<float> bps(size_t((Ns + NR - 1) / NR * NR * K)), cs(size_t(Ms * Ns));
        cpu::pack_panels(K, Ns, bs.data(), Ns, 1, NR, bps.data());
        gemm(Ms, Ns, K, as.data(), K, 1, bps.data(), cs.data(), Ns, false);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j)
            ASSERT_EQ(cs[size_t((shift + i) * Ns + shift + j)], c[size_t(i * N + j)]) << "shift " << shift;
      }
    }
  }
}

// gemm_narrow_taps reads A's rows in place, in segments (a convolution's output rows without the columns between
// them): A(i, k) = base[aoff[i] + (k / seg) * pitch + k % seg]. Against a double reference, with row offsets out of
// order, a short last row tile (the tail copy follows the segments too), a short last segment, one plain segment
// (seg = K), accumulation, and the junk between segments poisoned with NaN: a product that read it would be NaN.
TEST(CpuGemm, SegmentedTapRowsMatchADoubleReference) {
  std::mt19937 rng(std::random_device{}());
  for (const std::string& kernels : kernel_sets()) {
    SCOPED_TRACE("kernels " + kernels);
    const UseKernels use(kernels);
    struct Case {
      int64_t M, N, K, seg, pitch;
    };
    for (const Case c : {Case{81, 64, 5 * 25, 25, 33}, Case{13, 17, 50, 7, 9}, Case{6, 16, 40, 40, 40},
                         Case{7, 3, 23, 5, 12}, Case{64, 32, 96, 96, 96}}) {
      const int64_t segs = (c.K + c.seg - 1) / c.seg, span = (segs - 1) * c.pitch + c.seg;
      // Row i of A starts at aoff[i]: rows in reverse order, each `span` floats, NaN between the segments.
      const int64_t stride = span + 3;
      std::vector<float> base(size_t(c.M * stride), NAN);
      std::vector<int64_t> aoff(size_t(c.M));
      std::vector<float> a(size_t(c.M * c.K));  // A(i, k), dense
      for (int64_t i = 0; i < c.M; ++i) {
        aoff[size_t(i)] = (c.M - 1 - i) * stride;
        for (int64_t k = 0; k < c.K; ++k) {
          const float v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
          a[size_t(i * c.K + k)] = v;
          base[size_t(aoff[size_t(i)] + (k / c.seg) * c.pitch + k % c.seg)] = v;
        }
      }
      const auto b = random_vec(size_t(c.K * c.N), rng);
      std::vector<float> bp(size_t((c.N + cpu::kNarrowNR - 1) / cpu::kNarrowNR * cpu::kNarrowNR * c.K));
      cpu::pack_panels(c.K, c.N, b.data(), c.N, 1, cpu::kNarrowNR, bp.data());
      for (bool accumulate : {false, true}) {
        auto cm = random_vec(size_t(c.M * c.N), rng);
        const auto c0 = cm;
        cpu::gemm_narrow_taps(c.M, c.N, c.K, base.data(), aoff.data(), c.seg, c.pitch, bp.data(), cm.data(), c.N,
                              accumulate);
        for (int64_t i = 0; i < c.M; ++i)
          for (int64_t j = 0; j < c.N; ++j) {
            double ref = accumulate ? double(c0[size_t(i * c.N + j)]) : 0.0, scale = std::abs(ref);
            for (int64_t k = 0; k < c.K; ++k) {
              const double t = double(a[size_t(i * c.K + k)]) * double(b[size_t(k * c.N + j)]);
              ref += t, scale += std::abs(t);
            }
            // K <= 125 float multiply-adds: each rounding is <= 2^-24 of the running magnitude.
            ASSERT_NEAR(cm[size_t(i * c.N + j)], ref, 2e-6 * (scale + 1.0))
                << c.M << "x" << c.N << "x" << c.K << " seg " << c.seg << " at " << i << ", " << j;
          }
      }
    }
  }
}

// Winograd's F(4x4, 5x5) and F(6x6, 3x3) against the direct sums in double: every output within 3e-5 of the
// largest output magnitude (float32 transforms with the points 0, +-1, +-2, +-1/2 reach a few 1e-6), on layers of
// SRCNN's sizes and odd ones: both padding modes, 'same' and 'valid', sizes that are not multiples of the tile,
// rows longer than a task's 48 tiles (read in place or copied), several images, the fused bias and ReLU (a NaN
// stays NaN); 3-D layers (3DSRnet's 3x3x3, 'same' and 'valid' in depth, a depth kernel of 2, output depths that
// read only zero padding, a volume deeper than a block of output depths). Other kernels are refused.
TEST(CpuWinograd, MatchesTheDirectSums) {
  std::mt19937 rng(std::random_device{}());
  std::vector<ConvGeom> gs;
  for (PadMode mode : {PadMode::Zeros, PadMode::Replicate}) {
    gs.push_back(geom(1, 64, 32, 1, 37, 41, 1, 5, 5, 0, 2, 2, mode));   // SRCNN 9-5-5 conv2, same
    gs.push_back(geom(2, 9, 8, 1, 23, 250, 1, 5, 5, 0, 2, 2, mode));    // 62 tiles of 4 per row: two tasks
    gs.push_back(geom(1, 8, 8, 1, 9, 600, 1, 5, 5, 0, 2, 2, mode));     // inner tasks read the rows in place
    gs.push_back(geom(3, 8, 8, 1, 13, 11, 1, 5, 5, 0, 0, 0, mode));     // valid
    gs.push_back(geom(1, 32, 32, 1, 29, 300, 1, 3, 3, 0, 1, 1, mode));  // 3x3: tiles of 6
    gs.push_back(geom(2, 8, 9, 1, 7, 5, 1, 3, 3, 0, 0, 1, mode));       // per-axis padding, tiny
    gs.push_back(geom(1, 32, 32, 5, 14, 30, 3, 3, 3, 1, 1, 1, mode));   // 3DSRnet conv2, same
    gs.push_back(geom(2, 16, 8, 5, 13, 17, 3, 3, 3, 0, 1, 1, mode));    // 3DSRnet conv5: valid in depth
    gs.push_back(geom(1, 8, 8, 3, 11, 10, 2, 5, 5, 1, 2, 2, mode));     // 5x5 in space, a depth kernel of 2
    gs.push_back(geom(1, 8, 8, 2, 9, 9, 3, 3, 3, 3, 1, 1, mode));       // depths 0, 1, 6, 7 read only padding
    gs.push_back(geom(1, 8, 8, 20, 7, 9, 3, 3, 3, 1, 1, 1, mode));      // a deep volume: output depths in blocks
  }
  for (const ConvGeom& g : gs) {
    auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    auto b = random_vec(size_t(g.Cout), rng);
    const std::vector<double> ref = direct_conv(g, x, w, &b);
    double scale = 0.0;
    for (double v : ref) scale = std::max(scale, std::abs(v));
    for (bool relu : {false, true}) {
      std::vector<float> y(size_t(g.y_numel()), NAN);
      ASSERT_TRUE(cpu::conv_forward_winograd(g, x.data(), w.data(), b.data(), y.data(), relu)) << g.str();
      for (size_t i = 0; i < y.size(); ++i) {
        const double want = relu ? std::max(ref[i], 0.0) : ref[i];
        ASSERT_NEAR(y[i], want, 3e-5 * scale) << g.str() << (relu ? " + ReLU" : "") << ", output " << i;
      }
    }
    x[size_t(rng() % uint32_t(x.size()))] = NAN;
    std::vector<float> y(size_t(g.y_numel()));
    cpu::conv_forward_winograd(g, x.data(), w.data(), b.data(), y.data(), true);
    EXPECT_GT(std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); }), 0) << g.str();
  }
  std::vector<float> any(8192);
  for (const ConvGeom& g : {geom(1, 8, 8, 1, 9, 9, 1, 7, 7, 0, 3, 3, PadMode::Zeros),
                            geom(1, 8, 8, 1, 9, 9, 1, 3, 5, 0, 1, 2, PadMode::Zeros),
                            geom(1, 8, 8, 3, 9, 9, 3, 3, 5, 1, 1, 2, PadMode::Zeros),
                            geom(1, 4, 8, 3, 9, 9, 3, 3, 3, 1, 1, 1, PadMode::Zeros),
                            geom(1, 4, 8, 1, 9, 9, 1, 5, 5, 0, 2, 2, PadMode::Zeros)})
    EXPECT_FALSE(cpu::conv_forward_winograd(g, any.data(), any.data(), nullptr, any.data(), false)) << g.str();
  EXPECT_EQ(winograd_tile(5, 8, 8), 4);
  EXPECT_EQ(winograd_tile(3, 64, 32), 6);
  EXPECT_EQ(winograd_tile(1, 64, 32), 0);
  EXPECT_EQ(winograd_tile(5, 32, 1), 0);  // one output channel: the direct path is faster
  EXPECT_EQ(winograd_tile(5, 1, 64), 0);
}

// Training batches of small patches: the rows of tiles of several images share a task (their windows copied side by
// side), and every image still gets the bits it gets alone (a tile's outputs are computed lane by lane): 2-D
// patches of SRCNN's training (25x25, 'valid') and 3-D ones of 3DSRnet's.
TEST(CpuWinograd, EachImageOfABatchGetsItsOwnBits) {
  std::mt19937 rng(std::random_device{}());
  for (const ConvGeom& g : {geom(7, 16, 8, 1, 25, 25, 1, 5, 5, 0, 0, 0, PadMode::Zeros),
                            geom(5, 8, 16, 1, 17, 14, 1, 3, 3, 0, 1, 1, PadMode::Replicate),
                            geom(3, 8, 8, 5, 16, 16, 3, 3, 3, 1, 1, 1, PadMode::Zeros)}) {
    const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    std::vector<float> y(size_t(g.y_numel()), NAN);
    ASSERT_TRUE(cpu::conv_forward_winograd(g, x.data(), w.data(), nullptr, y.data(), false)) << g.str();
    const std::vector<double> ref = direct_conv(g, x, w, nullptr);
    EXPECT_LT(rel_err(y, ref), 3e-6) << g.str();
    ConvGeom one = g;
    one.N = 1;
    const size_t xs = size_t(one.x_numel()), ys = size_t(one.y_numel());
    for (int64_t n = 0; n < g.N; ++n) {
      std::vector<float> yn(ys, NAN);
      ASSERT_TRUE(cpu::conv_forward_winograd(one, x.data() + n * xs, w.data(), nullptr, yn.data(), false));
      EXPECT_EQ(std::memcmp(yn.data(), y.data() + n * ys, ys * sizeof(float)), 0) << g.str() << ", image " << n;
    }
  }
}

// Backward-data with winograd = true: without replicated borders the adjoint convolution (dy with the flipped,
// transposed weights) by Winograd, against the adjoint written out in double (SRCNN 9-5-5's mapping layer in
// training, 'same' 3x3 layers, 3DSRnet's 3x3x3 'same' and 'valid' in depth); with replicated borders, or one input
// channel, the direct path's bits.
TEST(CpuWinograd, BackwardDataMatchesTheAdjoint) {
  std::mt19937 rng(std::random_device{}());
  for (const ConvGeom& g : {geom(4, 64, 32, 1, 25, 25, 1, 5, 5, 0, 0, 0, PadMode::Zeros),
                            geom(2, 16, 8, 1, 19, 23, 1, 3, 3, 0, 1, 1, PadMode::Zeros),
                            geom(2, 16, 16, 5, 12, 14, 3, 3, 3, 1, 1, 1, PadMode::Zeros),
                            geom(1, 8, 16, 5, 10, 10, 3, 3, 3, 0, 1, 1, PadMode::Zeros)}) {
    const auto dy = random_vec(size_t(g.y_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    std::vector<float> dx(size_t(g.x_numel()), NAN), direct(size_t(g.x_numel()), NAN);
    cpu::conv_backward_data(g, dy.data(), w.data(), dx.data(), true);
    cpu::conv_backward_data(g, dy.data(), w.data(), direct.data(), false);
    const std::vector<double> ref = adjoint_conv(g, dy, w);
    double scale = 0.0;
    for (double v : ref) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], ref[i], 3e-5 * scale) << g.str() << ", input " << i;
    EXPECT_NE(std::memcmp(dx.data(), direct.data(), dx.size() * sizeof(float)), 0) << g.str() << ": not Winograd";
  }
  for (const ConvGeom& g : {geom(2, 16, 8, 1, 19, 23, 1, 3, 3, 0, 1, 1, PadMode::Replicate),
                            geom(2, 1, 16, 1, 19, 23, 1, 3, 3, 0, 1, 1, PadMode::Zeros)}) {
    const auto dy = random_vec(size_t(g.y_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    std::vector<float> dx(size_t(g.x_numel()), NAN), direct(size_t(g.x_numel()), NAN);
    cpu::conv_backward_data(g, dy.data(), w.data(), dx.data(), true);
    cpu::conv_backward_data(g, dy.data(), w.data(), direct.data(), false);
    EXPECT_EQ(std::memcmp(dx.data(), direct.data(), dx.size() * sizeof(float)), 0) << g.str();
  }
}

// Backward-weight with winograd = true: dW = G^T (sum of (A dY A^T) . (B^T d B)) G, against the weight gradient in
// double (SRCNN 9-5-5's mapping layer in training, 'same' layers with both paddings, a long row of tiles, 3DSRnet's
// 3x3x3 'same' and 'valid' in depth); the bias gradient as without; the same bits for 1, 2 and 3 threads; other
// kernels fall back to the direct sums' bits.
TEST(CpuWinograd, BackwardWeightMatchesTheDirectSums) {
  std::mt19937 rng(std::random_device{}());
  for (const ConvGeom& g : {geom(8, 64, 32, 1, 25, 25, 1, 5, 5, 0, 0, 0, PadMode::Zeros),
                            geom(2, 16, 8, 1, 19, 23, 1, 3, 3, 0, 1, 1, PadMode::Replicate),
                            geom(1, 8, 8, 1, 9, 310, 1, 5, 5, 0, 2, 2, PadMode::Zeros),
                            geom(2, 16, 16, 5, 12, 14, 3, 3, 3, 1, 1, 1, PadMode::Zeros),
                            geom(1, 8, 16, 5, 10, 10, 3, 3, 3, 0, 1, 1, PadMode::Replicate),
                            geom(1, 8, 8, 19, 8, 9, 3, 3, 3, 0, 1, 1, PadMode::Zeros)}) {  // blocks of depths
    const auto x = random_vec(size_t(g.x_numel()), rng), dy = random_vec(size_t(g.y_numel()), rng);
    std::vector<float> dw(size_t(g.w_numel()), NAN), db(size_t(g.Cout), NAN), db_direct(size_t(g.Cout), NAN);
    std::vector<float> direct(size_t(g.w_numel()), NAN);
    cpu::conv_backward_weight(g, x.data(), dy.data(), dw.data(), db.data(), true);
    cpu::conv_backward_weight(g, x.data(), dy.data(), direct.data(), db_direct.data(), false);
    const std::vector<double> ref = weight_gradient(g, x, dy);
    double scale = 0.0;
    for (double v : ref) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw[i], ref[i], 3e-5 * scale) << g.str() << ", weight " << i;
    EXPECT_EQ(db, db_direct) << g.str();
    EXPECT_NE(dw, direct) << g.str() << ": not Winograd";
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
    for (int threads : {1, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> again(size_t(g.w_numel()), NAN);
      cpu::conv_backward_weight(g, x.data(), dy.data(), again.data(), nullptr, true);
      EXPECT_EQ(again, dw) << g.str() << ", " << threads << " threads";
    }
    omp_set_num_threads(saved);
#endif
  }
  const ConvGeom g = geom(2, 1, 16, 1, 19, 23, 1, 3, 3, 0, 1, 1, PadMode::Zeros);  // one input channel: direct
  const auto x = random_vec(size_t(g.x_numel()), rng), dy = random_vec(size_t(g.y_numel()), rng);
  std::vector<float> dw(size_t(g.w_numel()), NAN), direct(size_t(g.w_numel()), NAN);
  cpu::conv_backward_weight(g, x.data(), dy.data(), dw.data(), nullptr, true);
  cpu::conv_backward_weight(g, x.data(), dy.data(), direct.data(), nullptr, false);
  EXPECT_EQ(dw, direct);
}

// The transformed filters are cached by the weights' contents: weights changed in place (a training step between
// two inferences) give the new layer's outputs, and the same weights in another array the same bits.
TEST(CpuWinograd, TheFilterCacheFollowsTheWeights) {
  std::mt19937 rng(std::random_device{}());
  const ConvGeom g = geom(1, 8, 8, 1, 12, 14, 1, 5, 5, 0, 2, 2, PadMode::Replicate);
  const auto x = random_vec(size_t(g.x_numel()), rng);
  auto w = random_vec(size_t(g.w_numel()), rng);
  std::vector<float> y(size_t(g.y_numel())), again(size_t(g.y_numel()));
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE(cpu::conv_forward_winograd(g, x.data(), w.data(), nullptr, y.data(), false));
    const std::vector<double> ref = direct_conv(g, x, w, nullptr);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-4) << "step " << step << ", output " << i;
    const std::vector<float> copy = w;
    ASSERT_TRUE(cpu::conv_forward_winograd(g, x.data(), copy.data(), nullptr, again.data(), false));
    EXPECT_EQ(std::memcmp(y.data(), again.data(), y.size() * sizeof(float)), 0);
    w[size_t(rng() % uint32_t(w.size()))] += 0.5f;  // one weight changed in place
  }
}

// What tiled inference with Winograd rests on: an output's bits depend only on the input window of its tile, the
// tiles counted from the first output. A crop of the input that starts on the tile grid and holds whole tiles gives
// the whole input's outputs bit for bit; a crop off the grid gives other bits (the rounding of the transforms
// depends on an output's place in its tile).
TEST(CpuWinograd, ACropOnTheTileGridGivesTheSameBits) {
  std::mt19937 rng(std::random_device{}());
  for (int64_t k : {5, 3}) {
    const int64_t m = winograd_tile(k, 16, 8);
    const ConvGeom g = geom(1, 16, 8, 1, 10 * m + k - 1, 60 * m + k - 1, 1, k, k, 0, 0, 0, PadMode::Zeros);
    const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    std::vector<float> y(size_t(g.y_numel()));
    ASSERT_TRUE(cpu::conv_forward_winograd(g, x.data(), w.data(), nullptr, y.data(), false));
    for (int64_t shift : {int64_t(0), m, 3 * m + 1}) {
      const int64_t h0 = shift, w0 = 2 * shift, th = 4, tw = 13;  // th x tw tiles of the crop
      const ConvGeom gc = geom(1, 16, 8, 1, th * m + k - 1, tw * m + k - 1, 1, k, k, 0, 0, 0, PadMode::Zeros);
      std::vector<float> xc(size_t(gc.x_numel())), yc(size_t(gc.y_numel()));
      for (int64_t ci = 0; ci < 16; ++ci)
        for (int64_t i = 0; i < gc.H; ++i)
          for (int64_t j = 0; j < gc.W; ++j) xc[size_t((ci * gc.H + i) * gc.W + j)] = x[size_t((ci * g.H + h0 + i) * g.W + w0 + j)];
      ASSERT_TRUE(cpu::conv_forward_winograd(gc, xc.data(), w.data(), nullptr, yc.data(), false));
      int64_t differ = 0;
      for (int64_t co = 0; co < 8; ++co)
        for (int64_t i = 0; i < gc.oH(); ++i)
          for (int64_t j = 0; j < gc.oW(); ++j)
            differ += std::memcmp(&yc[size_t((co * gc.oH() + i) * gc.oW() + j)],
                                  &y[size_t((co * g.oH() + h0 + i) * g.oW() + w0 + j)], sizeof(float)) != 0;
      if (shift % m == 0)
        EXPECT_EQ(differ, 0) << "kernel " << k << ", crop at (" << h0 << ", " << w0 << ")";
      else
        EXPECT_GT(differ, 0) << "kernel " << k << ", crop at (" << h0 << ", " << w0 << ")";
    }
  }
}

TEST(CpuOps, ReluMseShuffleAndUpdates) {
  std::mt19937 rng(3);
  const int64_t n = 1001;
  auto a = random_vec(size_t(n), rng), b = random_vec(size_t(n), rng);
  std::vector<float> y(static_cast<size_t>(n)), g(static_cast<size_t>(n));
  cpu::relu_forward(n, a.data(), y.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[size_t(i)], std::max(a[size_t(i)], 0.0f));
  cpu::relu_backward(n, y.data(), b.data(), g.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(g[size_t(i)], a[size_t(i)] > 0 ? b[size_t(i)] : 0.0f);

  // Special values, as PyTorch's relu and its backward (threshold_backward) treat them: NaN stays NaN and
  // passes its gradient, -0 becomes +0, infinities saturate on one side.
  const float special[] = {NAN, INFINITY, -INFINITY, -0.0f, 0.0f, 1e-45f, -1e-45f};
  const int64_t ns = int64_t(std::size(special));
  std::vector<float> rs(static_cast<size_t>(ns)), rg(static_cast<size_t>(ns)), ones(static_cast<size_t>(ns), 1.0f);
  cpu::relu_forward(ns, special, rs.data());
  EXPECT_TRUE(std::isnan(rs[0]));
  EXPECT_EQ(rs[1], INFINITY);
  EXPECT_EQ(rs[2], 0.0f);
  EXPECT_FALSE(std::signbit(rs[3]));  // +0, not -0
  EXPECT_EQ(rs[5], 1e-45f);
  EXPECT_EQ(rs[6], 0.0f);
  cpu::relu_backward(ns, rs.data(), ones.data(), rg.data());
  EXPECT_EQ(rg, (std::vector<float>{1.0f, 1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f}));

  double ref = 0;
  for (int64_t i = 0; i < n; ++i) ref += (double(a[size_t(i)]) - b[size_t(i)]) * (double(a[size_t(i)]) - b[size_t(i)]);
  EXPECT_NEAR(cpu::mse_loss(n, a.data(), b.data()), ref / n, 1e-12);
  cpu::mse_grad(n, a.data(), b.data(), 3.0f, g.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(g[size_t(i)], 6.0 * (a[size_t(i)] - b[size_t(i)]) / n, 1e-7);

  // Pixel shuffle, r = 3, against the index formula.
  const int64_t N = 2, C = 2, H = 3, W = 4, r = 3;
  auto xs = random_vec(size_t(N * C * r * r * H * W), rng);
  std::vector<float> ys(xs.size()), back(xs.size());
  cpu::pixel_shuffle_forward(N, C, H, W, r, xs.data(), ys.data());
  for (int64_t nn = 0; nn < N; ++nn)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H * r; ++h)
        for (int64_t w = 0; w < W * r; ++w)
          ASSERT_EQ(ys[size_t(((nn * C + c) * H * r + h) * W * r + w)],
                    xs[size_t(((nn * C * r * r + c * r * r + (h % r) * r + (w % r)) * H + h / r) * W + w / r)]);
  cpu::pixel_shuffle_backward(N, C, H, W, r, ys.data(), back.data());
  EXPECT_EQ(back, xs);  // a permutation: its adjoint is its inverse

  // SGD with momentum and Nesterov, two steps, against the formulas by hand.
  std::vector<float> p{1.0f, -2.0f}, gr{0.5f, 0.25f}, v{0.0f, 0.0f};
  SgdParams hp{0.1f, 0.9f, 0.01f, true};
  cpu::sgd_update(2, p.data(), gr.data(), v.data(), hp);
  double g0 = 0.5 + 0.01 * 1.0, v0 = g0, p0 = 1.0 - 0.1 * (g0 + 0.9 * v0);
  EXPECT_NEAR(p[0], p0, 1e-6);
  cpu::sgd_update(2, p.data(), gr.data(), v.data(), hp);
  double g1 = 0.5 + 0.01 * p0, v1 = 0.9 * v0 + g1, p1 = p0 - 0.1 * (g1 + 0.9 * v1);
  EXPECT_NEAR(p[0], p1, 1e-6);

  // Adam, first step moves each parameter by lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|).
  std::vector<float> pa{1.0f, -2.0f}, m{0, 0}, va{0, 0};
  AdamParams ah;
  ah.lr = 0.01f;
  cpu::adam_update(2, pa.data(), gr.data(), m.data(), va.data(), ah, 1);
  EXPECT_NEAR(pa[0], 1.0 - 0.01, 1e-6);
  EXPECT_NEAR(pa[1], -2.0 - 0.01, 1e-6);
}
