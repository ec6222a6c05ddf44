// Every CUDA op against the CPU reference (magmasr::cpu, backend.hpp) on random data: each convolution
// strategy (Direct, DirectAsync, Gemm, Auto) in each direction on the shapes of our models and on odd ones, both padding
// modes, and the element-wise, loss and optimizer kernels, with ||gpu - cpu|| / ||cpu|| < 1e-5. Outputs are
// poisoned with NaN before every run, so an element a kernel forgets to write fails the comparison.
// Every test skips when there is no CUDA device (or no CUDA build).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend.hpp"
#include "magmasr/error.hpp"

using namespace magmasr;

namespace {

constexpr double kTol = 1e-5;
constexpr int kDev = 0;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

#define SKIP_WITHOUT_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device"

// Device memory of the caching allocator, freed on scope exit. `offset` floats in (to test unaligned paths).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n, size_t offset = 0) : n_(n), offset_(offset) {
    base_ = static_cast<float*>(cuda::alloc(kDev, (n + offset + 1) * sizeof(float)));
  }
  DeviceBuffer(const std::vector<float>& host, size_t offset = 0) : DeviceBuffer(host.size(), offset) {
    upload(host);
  }
  ~DeviceBuffer() { cuda::free(kDev, base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  float* get() { return base_ + offset_; }
  size_t size() const { return n_; }
  void upload(const std::vector<float>& host) {
    cuda::copy(get(), true, host.data(), false, host.size() * sizeof(float), kDev);
  }
  std::vector<float> download() {
    std::vector<float> host(n_);
    cuda::copy(host.data(), false, get(), true, n_ * sizeof(float), kDev);
    return host;
  }
  void poison() { cuda::fill(kDev, int64_t(n_), kNaN, get()); }

 private:
  float* base_ = nullptr;
  size_t n_, offset_;
};

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// ||got - ref|| / ||ref||; NaN (an unwritten element) gives infinity.
double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    const double d = double(got[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

ConvGeom geom(int64_t N, int64_t Cin, int64_t Cout, int64_t D, int64_t H, int64_t W, int64_t kD, int64_t kH, int64_t kW,
              int64_t pD, int64_t pH, int64_t pW, PadMode mode) {
  ConvGeom g;
  g.N = N, g.Cin = Cin, g.Cout = Cout, g.D = D, g.H = H, g.W = W;
  g.kD = kD, g.kH = kH, g.kW = kW, g.pD = pD, g.pH = pH, g.pW = pW, g.mode = mode;
  return g;
}

ConvGeom geom2d(int64_t N, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int64_t k, int64_t p, PadMode mode) {
  return geom(N, Cin, Cout, 1, H, W, 1, k, k, 0, p, p, mode);
}

// The shapes: our models' layers (shrunk spatially), their backward problems' specialisations, and odd ones
// that fall to the generic kernels; every tile edge is crossed somewhere (sizes not multiples of 32 / 64).
std::vector<ConvGeom> conv_cases() {
  const PadMode Z = PadMode::Zeros, R = PadMode::Replicate;
  return {
      geom2d(1, 1, 64, 37, 70, 9, 4, R),    // SRCNN conv1, same, replicate
      geom2d(3, 1, 64, 33, 33, 9, 0, Z),    // SRCNN train conv1, valid, batch
      geom2d(2, 64, 32, 19, 45, 1, 0, Z),   // SRCNN conv2 1x1
      geom2d(1, 64, 32, 23, 41, 5, 2, R),   // SRCNN conv2 5x5 same
      geom2d(2, 64, 32, 25, 25, 5, 0, Z),   // SRCNN train conv2, valid
      geom2d(1, 32, 1, 70, 67, 5, 2, R),    // SRCNN conv3 5x5 same (crosses the 64x64 tile)
      geom2d(3, 32, 1, 21, 21, 5, 0, Z),    // SRCNN train conv3, valid
      geom2d(2, 32, 1, 17, 29, 5, 2, Z),    // conv3 with zero padding
      geom(2, 1, 32, 5, 19, 35, 3, 3, 3, 1, 1, 1, R),   // 3DSRnet conv1 same
      geom(1, 32, 32, 5, 13, 37, 3, 3, 3, 1, 1, 1, Z),  // 3DSRnet conv2 same
      geom(2, 32, 32, 5, 12, 12, 3, 3, 3, 0, 0, 0, Z),  // 3DSRnet conv4 valid
      geom(1, 64, 64, 3, 9, 11, 3, 3, 3, 1, 1, 1, R),   // 64 channels
      geom(2, 32, 1, 5, 10, 67, 3, 3, 3, 1, 1, 1, R),   // 3-D, one output channel
      geom2d(1, 8, 1, 64, 128, 5, 2, R),     // one output channel, whole 64 x 64 tiles (the large patch)
      geom(1, 4, 1, 3, 32, 64, 3, 3, 3, 1, 1, 1, R),    // the same in 3-D (32 x 64 tiles)
      geom2d(2, 3, 5, 11, 13, 3, 1, R),      // small 3x3
      geom(2, 3, 5, 1, 14, 9, 1, 7, 3, 0, 3, 1, R),     // generic kernel (7x3), replicate
      geom(1, 2, 3, 4, 6, 7, 2, 3, 2, 1, 1, 1, Z),      // generic 3-D kernel (2x3x2)
      geom(2, 4, 6, 3, 5, 6, 3, 1, 1, 2, 0, 0, R),      // kernel 3x1x1, pad larger than reach in D
      geom2d(1, 2, 3, 6, 5, 3, 4, Z),        // padding beyond the kernel (k - 1 - p < 0)
      geom2d(1, 2, 3, 6, 5, 3, 4, R),
      geom2d(1, 1, 1, 1, 1, 1, 0, Z),        // 1x1x1x1
      geom(1, 3, 2, 1, 1, 5, 1, 1, 3, 0, 0, 1, R),      // H = 1
  };
}

const ConvAlgo kAlgos[] = {ConvAlgo::Direct, ConvAlgo::DirectAsync, ConvAlgo::ImplicitGemm, ConvAlgo::Gemm,
                           ConvAlgo::Auto};

void check_conv_forward(const ConvGeom& g, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
  const auto b = random_vec(size_t(g.Cout), rng);
  DeviceBuffer dx(x), dw(w), db(b), dy(size_t(g.y_numel()));
  for (const bool with_bias : {false, true}) {
    for (const bool relu : {false, true}) {
      std::vector<float> ref(size_t(g.y_numel()));
      cpu::conv_forward(g, x.data(), w.data(), with_bias ? b.data() : nullptr, ref.data(), relu);
      for (ConvAlgo a : kAlgos) {
        dy.poison();
        cuda::conv_forward(kDev, g, dx.get(), dw.get(), with_bias ? db.get() : nullptr, dy.get(), relu, a);
        EXPECT_LT(rel_err(dy.download(), ref), kTol)
            << "forward " << to_string(a) << " bias=" << with_bias << " relu=" << relu << " " << g.str();
      }
    }
  }
}

void check_conv_backward(const ConvGeom& g, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
  const auto gy = random_vec(size_t(g.y_numel()), rng);
  std::vector<float> ref_dx(size_t(g.x_numel())), ref_dw(size_t(g.w_numel())), ref_db(size_t(g.Cout));
  cpu::conv_backward_data(g, gy.data(), w.data(), ref_dx.data());
  cpu::conv_backward_weight(g, x.data(), gy.data(), ref_dw.data(), ref_db.data());
  DeviceBuffer d_x(x), d_w(w), d_gy(gy), d_dx(size_t(g.x_numel())), d_dw(size_t(g.w_numel())), d_db(size_t(g.Cout));
  for (ConvAlgo a : kAlgos) {
    d_dx.poison();
    cuda::conv_backward_data(kDev, g, d_gy.get(), d_w.get(), d_dx.get(), a);
    EXPECT_LT(rel_err(d_dx.download(), ref_dx), kTol) << "backward data " << to_string(a) << " " << g.str();
    for (const bool with_db : {true, false}) {
      d_dw.poison();
      d_db.poison();
      cuda::conv_backward_weight(kDev, g, d_x.get(), d_gy.get(), d_dw.get(), with_db ? d_db.get() : nullptr, a);
      EXPECT_LT(rel_err(d_dw.download(), ref_dw), kTol)
          << "backward weight " << to_string(a) << " db=" << with_db << " " << g.str();
      if (with_db) {
        EXPECT_LT(rel_err(d_db.download(), ref_db), kTol) << "bias gradient " << to_string(a) << " " << g.str();
      } else {
        const auto untouched = d_db.download();  // db == nullptr: must not be written
        for (float v : untouched) EXPECT_TRUE(std::isnan(v)) << "db written although null, " << g.str();
      }
    }
  }
}

}  // namespace

TEST(CudaRuntime, DeviceCountNeverThrows) {
  int n = -1;
  EXPECT_NO_THROW(n = cuda::device_count());
  EXPECT_GE(n, 0);
  EXPECT_TRUE(cuda::compiled());
}

TEST(CudaRuntime, NameStreamAndBadDevice) {
  SKIP_WITHOUT_GPU();
  EXPECT_FALSE(cuda::device_name(kDev).empty());
  EXPECT_NE(cuda::stream(kDev), nullptr);
  EXPECT_THROW(cuda::device_name(cuda::device_count()), DeviceError);
  EXPECT_THROW(cuda::alloc(-1, 16), DeviceError);
}

TEST(CudaRuntime, CachingAllocatorReusesBlocks) {
  SKIP_WITHOUT_GPU();
  cuda::empty_cache(kDev);  // no cached block left by an earlier test in this process may serve the 1000 bytes
  const cuda::MemoryStats s0 = cuda::memory_stats(kDev);
  void* p = cuda::alloc(kDev, 1000);  // rounded to 1024
  ASSERT_NE(p, nullptr);
  const cuda::MemoryStats s1 = cuda::memory_stats(kDev);
  EXPECT_EQ(s1.allocated_bytes, s0.allocated_bytes + 1024);
  EXPECT_GE(s1.reserved_bytes, s1.allocated_bytes);
  EXPECT_GE(s1.peak_allocated_bytes, s1.allocated_bytes);
  cuda::free(kDev, p);
  const cuda::MemoryStats s2 = cuda::memory_stats(kDev);
  EXPECT_EQ(s2.allocated_bytes, s0.allocated_bytes);
  EXPECT_EQ(s2.reserved_bytes, s1.reserved_bytes);  // cached, not returned
  void* q = cuda::alloc(kDev, 900);                 // same size class: a cache hit, no cudaMalloc
  const cuda::MemoryStats s3 = cuda::memory_stats(kDev);
  EXPECT_EQ(s3.num_device_allocs, s2.num_device_allocs);
  EXPECT_EQ(s3.num_cache_hits, s2.num_cache_hits + 1);
  cuda::free(kDev, q);
  cuda::free(kDev, nullptr);  // no-op
  int host = 0;
  EXPECT_THROW(cuda::free(kDev, &host), ValueError);
  cuda::empty_cache(kDev);
  EXPECT_EQ(cuda::memory_stats(kDev).reserved_bytes, cuda::memory_stats(kDev).allocated_bytes);
}

TEST(CudaRuntime, CopiesRoundTrip) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  const auto h = random_vec(1000, rng);
  DeviceBuffer a(h), b(h.size());
  cuda::copy(b.get(), true, a.get(), true, h.size() * sizeof(float), kDev);
  cuda::synchronize(kDev);
  EXPECT_EQ(b.download(), h);
}

TEST(CudaConv, ForwardAllStrategiesMatchCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (const ConvGeom& g : conv_cases()) check_conv_forward(g, seed++);
}

TEST(CudaConv, BackwardAllStrategiesMatchCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  for (const ConvGeom& g : conv_cases()) check_conv_backward(g, seed++);
}

// DirectAsync and ImplicitGemm compute Direct's sums in Direct's order (each output one fmaf chain over input
// channel, then filter tap, from 0, then the bias): their forward and backward-data outputs, and AutoDirect's
// (the fastest of the three, timed on the first call of a shape and then cached), are Direct's bit for bit
// (what lets a tiled picture on a GPU use any of them), on every shape of conv_cases (input channel counts
// odd and even, so the last channel lands in either of DirectAsync's two buffers; one input channel, where
// nothing overlaps; reductions that end inside the implicit GEMM's 16-step stages; batches whose images end
// inside its column tiles).
TEST(CudaConv, DirectVariantsAreDirectBitForBit) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  const ConvAlgo variants[] = {ConvAlgo::Direct, ConvAlgo::DirectAsync, ConvAlgo::ImplicitGemm, ConvAlgo::AutoDirect,
                               ConvAlgo::AutoDirect};  // timed, then cached
  for (const ConvGeom& g : conv_cases()) {
    const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
    const auto b = random_vec(size_t(g.Cout), rng), gy = random_vec(size_t(g.y_numel()), rng);
    DeviceBuffer d_x(x), d_w(w), d_b(b), d_gy(gy), y(size_t(g.y_numel())), dx(size_t(g.x_numel()));
    std::vector<float> out[5], grad[5];
    for (int i = 0; i < 5; ++i) {
      y.poison();
      dx.poison();
      cuda::conv_forward(kDev, g, d_x.get(), d_w.get(), d_b.get(), y.get(), true, variants[i]);
      cuda::conv_backward_data(kDev, g, d_gy.get(), d_w.get(), dx.get(), variants[i]);
      out[i] = y.download(), grad[i] = dx.download();
    }
    for (int i = 0; i < 5; ++i) {  // the poison is NaN, so equal bits could also be two unwritten elements
      for (float v : out[i]) ASSERT_TRUE(std::isfinite(v)) << "forward left an element unwritten, " << g.str();
      for (float v : grad[i]) ASSERT_TRUE(std::isfinite(v)) << "backward data left an element unwritten, " << g.str();
    }
    for (int i = 1; i < 5; ++i) {
      for (size_t j = 0; j < out[0].size(); ++j)
        ASSERT_EQ(std::memcmp(&out[0][j], &out[i][j], sizeof(float)), 0)
            << to_string(variants[i]) << " forward element " << j << ", " << g.str();
      for (size_t j = 0; j < grad[0].size(); ++j)
        ASSERT_EQ(std::memcmp(&grad[0][j], &grad[i][j], sizeof(float)), 0)
            << to_string(variants[i]) << " backward-data element " << j << ", " << g.str();
    }
  }
}

// The one-output-channel kernel tiles a large output in 64 x 64 (3-D: 32 x 64) and a small one in 32 x 32
// (16 x 32); each output is the same fmaf chain either way, so that the tiles of a picture (small) give the
// whole picture's (large) bits. A valid convolution of a corner crop of the input is the corner of the whole
// output: compared bit for bit, in 2-D (5x5 and 9x9, SRCNN conv3 and the backward data of conv1) and 3-D.
TEST(CudaConv, OneOutputChannelTilingsGiveTheSameBits) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  struct Case {
    int64_t Cin, D, k, kd, H, W, h, w;  // whole input D x H x W, the crop D x h x w
  };
  for (const Case c : {Case{8, 1, 5, 1, 68, 132, 25, 25}, Case{3, 1, 9, 1, 72, 136, 29, 36},
                       Case{4, 3, 3, 3, 34, 66, 18, 18}}) {
    const ConvGeom whole = geom(1, c.Cin, 1, c.D, c.H, c.W, c.kd, c.k, c.k, 0, 0, 0, PadMode::Zeros);
    const ConvGeom crop = geom(1, c.Cin, 1, c.D, c.h, c.w, c.kd, c.k, c.k, 0, 0, 0, PadMode::Zeros);
    const auto x = random_vec(size_t(whole.x_numel()), rng), w = random_vec(size_t(whole.w_numel()), rng);
    std::vector<float> xc(size_t(crop.x_numel()));
    for (int64_t ci = 0; ci < c.Cin; ++ci)
      for (int64_t d = 0; d < c.D; ++d)
        for (int64_t i = 0; i < c.h; ++i)
          for (int64_t j = 0; j < c.w; ++j)
            xc[size_t(((ci * c.D + d) * c.h + i) * c.w + j)] = x[size_t(((ci * c.D + d) * c.H + i) * c.W + j)];
    const std::vector<float> bias{0.25f};
    DeviceBuffer d_x(x), d_xc(xc), d_w(w), d_b(bias), y(size_t(whole.y_numel())), yc(size_t(crop.y_numel()));
    y.poison();
    yc.poison();
    cuda::conv_forward(kDev, whole, d_x.get(), d_w.get(), d_b.get(), y.get(), false, ConvAlgo::Direct);
    cuda::conv_forward(kDev, crop, d_xc.get(), d_w.get(), d_b.get(), yc.get(), false, ConvAlgo::Direct);
    const auto big = y.download(), small = yc.download();
    const int64_t oD = whole.oD(), oH = whole.oH(), oW = whole.oW(), oh = crop.oH(), ow = crop.oW();
    for (float v : big) ASSERT_TRUE(std::isfinite(v)) << whole.str();
    for (int64_t d = 0; d < oD; ++d)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const float a = small[size_t((d * oh + i) * ow + j)], e = big[size_t((d * oH + i) * oW + j)];
          ASSERT_EQ(std::memcmp(&a, &e, sizeof(float)), 0) << "output (" << d << ", " << i << ", " << j << "), "
                                                           << crop.str() << " against " << whole.str();
        }
  }
}

// Fresh random geometries on every run (the seed is in the failure message): the filter sizes the direct
// kernels specialise (1x1, 3x3, 5x5, 9x9, 3x3x3, with one or several output channels) and generic ones, both
// padding modes with any padding up to the kernel size, and sizes that end anywhere within a tile.
TEST(CudaConv, RandomGeometriesMatchCpu) {
  SKIP_WITHOUT_GPU();
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto uniform = [&rng](int lo, int hi) { return int(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  const int special[][3] = {{1, 1, 1}, {1, 3, 3}, {1, 5, 5}, {1, 9, 9}, {3, 3, 3}};
  for (int i = 0; i < 8; ++i) {
    int k[3];
    if (uniform(0, 2) > 0) {
      const int* sk = special[uniform(0, 4)];
      k[0] = sk[0], k[1] = sk[1], k[2] = sk[2];
    } else {
      k[0] = uniform(1, 3), k[1] = uniform(1, 7), k[2] = uniform(1, 7);
    }
    const int64_t D = k[0] == 1 ? 1 : uniform(1, 6), H = uniform(1, 48), W = uniform(1, 72);
    const int64_t size[3] = {D, H, W};
    int64_t pad[3];
    for (int a = 0; a < 3; ++a) {
      pad[a] = uniform(0, 2) == 0 ? uniform(0, k[a]) : (k[a] - 1) / 2;  // 'same' mostly, any padding sometimes
      if (size[a] + 2 * pad[a] < k[a]) pad[a] = (k[a] - size[a] + 1) / 2;  // at least one output
    }
    const int64_t Cout = uniform(0, 2) == 0 ? 1 : uniform(2, 40);
    ConvGeom g = geom(uniform(1, 3), uniform(1, 32), Cout, D, H, W, k[0], k[1], k[2], pad[0], pad[1], pad[2],
                      uniform(0, 1) ? PadMode::Replicate : PadMode::Zeros);
#ifdef MAGMASR_CUDA_EMULATED
    // The emulator runs a block's threads one after another: a draw of 3 x (6 x 48 x 72) with 32 -> 40 channels
    // and 3x3x3 filters (2 G multiply-adds) took minutes. Fewer images and channels, the same shapes and kernels.
    while (g.macs() > 4e6 && (g.N > 1 || g.Cin > 1 || g.Cout > 2)) {
      if (g.N > 1) --g.N;
      else if (g.Cin > 1) g.Cin = (g.Cin + 1) / 2;
      else g.Cout = std::max<int64_t>(2, g.Cout / 2);
    }
#endif
    ASSERT_GE(g.oD() * g.oH() * g.oW(), 1) << g.str();
    check_conv_forward(g, rng());
    check_conv_backward(g, rng());
  }
}

// The Gemm strategy's column buffer holds 64 Mi floats (256 MiB); in the emulated build (tests/cuda_emu) 512 Ki
// floats (2 MiB), and each test below takes a problem that is cut the same way there.
#ifdef MAGMASR_CUDA_EMULATED
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// Big enough that the column buffer holds less than one image (K * P > 64 Mi floats; emulated 1600 * 600 > 512 Ki),
// so it works in slices of output positions and accumulates col2im across slices.
TEST(CudaConv, GemmChunkingWithinAnImage) {
  SKIP_WITHOUT_GPU();
  const ConvGeom g = kEmulated ? geom2d(2, 64, 32, 20, 30, 5, 2, PadMode::Replicate)
                               : geom2d(2, 64, 32, 230, 300, 5, 2, PadMode::Replicate);
  check_conv_forward(g, 7);
  check_conv_backward(g, 8);
}

// 3-D, one image in slices that start and end inside depth planes and inside rows, some spanning two planes:
// each slice's col2im visits only the input rows it reaches (replicate padding: the border rows too).
// K * P = 311 Mi floats in slices of 77,672 positions (planes of 120,000, rows of 400); emulated 1.24 Mi floats in
// slices of 606 positions (planes of 500, rows of 25).
TEST(CudaConv, GemmChunkingWithinA3dImage) {
  SKIP_WITHOUT_GPU();
  const ConvGeom g = kEmulated ? geom(1, 32, 16, 3, 20, 25, 3, 3, 3, 1, 1, 1, PadMode::Replicate)
                               : geom(1, 32, 16, 3, 300, 400, 3, 3, 3, 1, 1, 1, PadMode::Replicate);
  check_conv_forward(g, 11);
  check_conv_backward(g, 12);
}

// Several images per chunk, with the last chunk partial: K * P = 26.5 Mi floats a picture, 2 per chunk (emulated
// 205 Ki floats, 2 per chunk), 5 pictures.
TEST(CudaConv, GemmChunkingAcrossTheBatch) {
  SKIP_WITHOUT_GPU();
  const ConvGeom g = kEmulated ? geom(5, 32, 32, 3, 9, 9, 3, 3, 3, 1, 1, 1, PadMode::Zeros)
                               : geom(5, 32, 32, 5, 64, 96, 3, 3, 3, 1, 1, 1, PadMode::Zeros);
  check_conv_forward(g, 9);
  check_conv_backward(g, 10);
}

// The bias gradient splits the (image, position) pairs of a channel into chunks that start and end inside
// images (a batch of small training outputs is spread over many blocks): 9 images of 30 x 30 = 8,100 pairs in 8
// chunks of 1,013 on the emulator's 8 SMs. Each image's dy is offset by a different constant, so a chunk that
// skipped or repeated a run of positions at an image boundary would be off by hundreds of ulps; the sums are in
// double, so the result is the float of the exact sum to within an ulp.
TEST(CudaConv, BiasGradientOverChunksThatCrossImages) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (const int64_t cout : {1, 3, 40}) {
    const ConvGeom g = geom2d(9, 1, cout, 30, 30, 1, 0, PadMode::Zeros);
    auto gy = random_vec(size_t(g.y_numel()), rng);
    const int64_t P = g.out_spatial();
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < cout * P; ++i) gy[size_t(n * cout * P + i)] += float(n + 1);
    const auto x = random_vec(size_t(g.x_numel()), rng);
    DeviceBuffer d_x(x), d_gy(gy), d_dw(size_t(g.w_numel())), d_db(static_cast<size_t>(cout));
    for (ConvAlgo a : {ConvAlgo::Direct, ConvAlgo::Gemm}) {
      d_db.poison();
      cuda::conv_backward_weight(kDev, g, d_x.get(), d_gy.get(), d_dw.get(), d_db.get(), a);
      const auto db = d_db.download();
      for (int64_t co = 0; co < cout; ++co) {
        double ref = 0.0;
        for (int64_t n = 0; n < g.N; ++n)
          for (int64_t p = 0; p < P; ++p) ref += double(gy[size_t((n * cout + co) * P + p)]);
        EXPECT_NEAR(db[size_t(co)], ref, std::abs(ref) * 2e-7) << "channel " << co << " of " << cout << ", "
                                                                << to_string(a);
      }
    }
  }
}

TEST(CudaConv, AutoCachesItsChoiceAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  const ConvGeom g = geom2d(2, 32, 1, 40, 50, 5, 2, PadMode::Replicate);
  std::mt19937 rng(3);
  const auto x = random_vec(size_t(g.x_numel()), rng), w = random_vec(size_t(g.w_numel()), rng);
  DeviceBuffer dx(x), dw(w), y(size_t(g.y_numel()));
  y.poison();
  cuda::conv_forward(kDev, g, dx.get(), dw.get(), nullptr, y.get(), false, ConvAlgo::Auto);  // times
  const auto first = y.download();
  y.poison();
  cuda::conv_forward(kDev, g, dx.get(), dw.get(), nullptr, y.get(), false, ConvAlgo::Auto);  // cached
  EXPECT_EQ(y.download(), first);
}

TEST(CudaOps, ElementwiseMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (const int64_t n : {int64_t(1), int64_t(3), int64_t(1000), int64_t(1 << 20) + 3}) {
    for (const size_t off : {size_t(0), size_t(1)}) {  // 16-byte aligned (float4 path) and not
      const auto a = random_vec(size_t(n), rng), b = random_vec(size_t(n), rng);
      DeviceBuffer da(a, off), db(b, off), out(size_t(n), off);
      std::vector<float> ref(static_cast<size_t>(n));
      const std::string what = " n=" + std::to_string(n) + " offset=" + std::to_string(off);

      cpu::relu_forward(n, a.data(), ref.data());
      out.poison();
      cuda::relu_forward(kDev, n, da.get(), out.get());
      EXPECT_LT(rel_err(out.download(), ref), kTol) << "relu" << what;

      cpu::relu_backward(n, a.data(), b.data(), ref.data());
      out.poison();
      cuda::relu_backward(kDev, n, da.get(), db.get(), out.get());
      EXPECT_LT(rel_err(out.download(), ref), kTol) << "relu_backward" << what;

      cpu::add(n, a.data(), b.data(), ref.data());
      out.poison();
      cuda::add(kDev, n, da.get(), db.get(), out.get());
      EXPECT_LT(rel_err(out.download(), ref), kTol) << "add" << what;

      cpu::scale(n, -2.5f, a.data(), ref.data());
      out.poison();
      cuda::scale(kDev, n, -2.5f, da.get(), out.get());
      EXPECT_LT(rel_err(out.download(), ref), kTol) << "scale" << what;

      cpu::fill(n, 0.75f, ref.data());
      out.poison();
      cuda::fill(kDev, n, 0.75f, out.get());
      EXPECT_LT(rel_err(out.download(), ref), kTol) << "fill" << what;

      cpu::mse_grad(n, a.data(), b.data(), 0.5f, ref.data());
      out.poison();
      cuda::mse_grad(kDev, n, da.get(), db.get(), 0.5f, out.get());
      EXPECT_LT(rel_err(out.download(), ref), kTol) << "mse_grad" << what;

      const double l_cpu = cpu::mse_loss(n, a.data(), b.data());
      const double l_gpu = cuda::mse_loss(kDev, n, da.get(), db.get());
      EXPECT_LT(std::abs(l_gpu - l_cpu), 1e-12 * std::abs(l_cpu) + 1e-300) << "mse_loss" << what;

      // in place (the output aliases the input)
      cpu::relu_forward(n, a.data(), ref.data());
      DeviceBuffer inplace(a, off);
      cuda::relu_forward(kDev, n, inplace.get(), inplace.get());
      EXPECT_LT(rel_err(inplace.download(), ref), kTol) << "relu in place" << what;
    }
  }
}

// NaN propagates through the GPU's ReLU, its backward and every strategy's fused conv + ReLU exactly as on
// the CPU (tested there against the definition): same NaN positions, the same finite values.
TEST(CudaOps, NaNPropagatesThroughReluAndFusedConvAsOnTheCpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<float> special = {NAN, INFINITY, -INFINITY, -0.0f, 0.0f, 1e-45f, -1e-45f, 2.5f, -2.5f};
  const int64_t n = int64_t(special.size());
  const std::vector<float> ones(special.size(), 1.0f);
  std::vector<float> ref(special.size());
  DeviceBuffer da(special), dg(ones), out(special.size());
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  cpu::relu_forward(n, special.data(), ref.data());
  out.poison();
  cuda::relu_forward(kDev, n, da.get(), out.get());
  EXPECT_TRUE(same_bits(out.download(), ref)) << "relu";
  cpu::relu_backward(n, special.data(), ones.data(), ref.data());
  out.poison();
  cuda::relu_backward(kDev, n, da.get(), dg.get(), out.get());
  EXPECT_TRUE(same_bits(out.download(), ref)) << "relu_backward";

  const PadMode Z = PadMode::Zeros, R = PadMode::Replicate;
  const ConvGeom cases[] = {
      geom2d(1, 1, 64, 37, 40, 9, 4, R),                // SRCNN conv1, replicate (a border NaN spreads)
      geom2d(2, 64, 32, 19, 21, 1, 0, Z),               // 1x1
      geom2d(2, 32, 1, 21, 21, 5, 0, Z),                // one output channel
      geom(1, 32, 32, 5, 13, 17, 3, 3, 3, 1, 1, 1, Z),  // 3DSRnet conv2
      geom(2, 3, 5, 1, 14, 9, 1, 7, 3, 0, 3, 1, R),     // generic kernel
  };
  std::mt19937 rng(29);
  for (const ConvGeom& g : cases) {
    auto x = random_vec(size_t(g.x_numel()), rng);
    const auto w = random_vec(size_t(g.w_numel()), rng), b = random_vec(size_t(g.Cout), rng);
    x[size_t(rng() % uint32_t(x.size()))] = NAN;
    x[0] = NAN;  // a corner too: the replicate border and the first tile's edge
    std::vector<float> yref(size_t(g.y_numel()));
    cpu::conv_forward(g, x.data(), w.data(), b.data(), yref.data(), true);
    DeviceBuffer dx(x), dw(w), db(b), dy(size_t(g.y_numel()));
    for (ConvAlgo a : kAlgos) {
      dy.poison();
      cuda::conv_forward(kDev, g, dx.get(), dw.get(), db.get(), dy.get(), true, a);
      const auto got = dy.download();
      size_t wrong_nan = 0, nans = 0;
      std::vector<float> got_finite(got.size()), ref_finite(got.size());
      for (size_t i = 0; i < got.size(); ++i) {
        nans += std::isnan(yref[i]);
        wrong_nan += std::isnan(got[i]) != std::isnan(yref[i]);
        got_finite[i] = std::isnan(got[i]) ? 0.0f : got[i];
        ref_finite[i] = std::isnan(yref[i]) ? 0.0f : yref[i];
      }
      EXPECT_GT(nans, 0u) << g.str();
      EXPECT_EQ(wrong_nan, 0u) << "NaN positions, " << to_string(a) << " " << g.str();
      EXPECT_LT(rel_err(got_finite, ref_finite), kTol) << to_string(a) << " " << g.str();
    }
  }
}

TEST(CudaOps, PixelShuffleMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  for (const int64_t r : {int64_t(1), int64_t(2), int64_t(3)}) {
    const int64_t N = 2, C = 3, H = 5, W = 7;
    const int64_t n = N * C * r * r * H * W;
    const auto x = random_vec(size_t(n), rng), gy = random_vec(size_t(n), rng);
    std::vector<float> ref(static_cast<size_t>(n));
    DeviceBuffer dx(x), dgy(gy), out(static_cast<size_t>(n));
    cpu::pixel_shuffle_forward(N, C, H, W, r, x.data(), ref.data());
    out.poison();
    cuda::pixel_shuffle_forward(kDev, N, C, H, W, r, dx.get(), out.get());
    EXPECT_LT(rel_err(out.download(), ref), kTol) << "pixel_shuffle_forward r=" << r;
    cpu::pixel_shuffle_backward(N, C, H, W, r, gy.data(), ref.data());
    out.poison();
    cuda::pixel_shuffle_backward(kDev, N, C, H, W, r, dgy.get(), out.get());
    EXPECT_LT(rel_err(out.download(), ref), kTol) << "pixel_shuffle_backward r=" << r;
  }
}

TEST(CudaOps, SgdMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  const SgdParams variants[] = {{0.1f, 0.0f, 0.0f, false}, {0.05f, 0.9f, 1e-4f, false}, {0.01f, 0.9f, 1e-2f, true}};
  for (const int64_t n : {int64_t(5), int64_t(4099)}) {
    for (const SgdParams& hp : variants) {
      auto p = random_vec(size_t(n), rng), v = random_vec(size_t(n), rng);
      const auto g = random_vec(size_t(n), rng);
      DeviceBuffer dp(p), dg(g), dv(v);
      for (int step = 0; step < 3; ++step) {
        cpu::sgd_update(n, p.data(), g.data(), hp.momentum != 0.f ? v.data() : nullptr, hp);
        cuda::sgd_update(kDev, n, dp.get(), dg.get(), hp.momentum != 0.f ? dv.get() : nullptr, hp);
      }
      EXPECT_LT(rel_err(dp.download(), p), kTol) << "sgd p, momentum=" << hp.momentum << " n=" << n;
      if (hp.momentum != 0.f) {
        EXPECT_LT(rel_err(dv.download(), v), kTol) << "sgd velocity n=" << n;
      }
    }
  }
}

TEST(CudaOps, AdamMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(14);
  AdamParams plain;
  AdamParams l2;
  l2.weight_decay = 1e-2f;
  AdamParams adamw;
  adamw.weight_decay = 1e-2f;
  adamw.decoupled = true;
  adamw.lr = 3e-3f;
  for (const int64_t n : {int64_t(7), int64_t(10001)}) {
    for (const AdamParams& hp : {plain, l2, adamw}) {
      auto p = random_vec(size_t(n), rng);
      std::vector<float> m(size_t(n), 0.f), v(size_t(n), 0.f);
      DeviceBuffer dp(p), dm(m), dv(v);
      for (int64_t step = 1; step <= 5; ++step) {
        const auto g = random_vec(size_t(n), rng);
        DeviceBuffer dg(g);
        cpu::adam_update(n, p.data(), g.data(), m.data(), v.data(), hp, step);
        cuda::adam_update(kDev, n, dp.get(), dg.get(), dm.get(), dv.get(), hp, step);
      }
      EXPECT_LT(rel_err(dp.download(), p), kTol) << "adam p, decoupled=" << hp.decoupled << " n=" << n;
      EXPECT_LT(rel_err(dm.download(), m), kTol) << "adam m n=" << n;
      EXPECT_LT(rel_err(dv.download(), v), kTol) << "adam v n=" << n;
    }
  }
}
