// magmasr's convolution kernels against cuDNN on the layer shapes of SRCNN and 3DSRnet (issue 3).
//
// For each shape and direction (forward, backward-data, backward-weight) it times magmasr with each
// strategy (Direct, DirectAsync and ImplicitGemm in forward and backward-data, Gemm, Auto) and cuDNN's fastest algorithm as found
// by cudnnFind*AlgorithmEx, all in fp32 without tensor cores (cuBLAS in pedantic math on our side, CUDNN_FMA_MATH on cuDNN's), zero padding
// on both sides (cuDNN has no replicate padding), no bias. Timing: CUDA events on the one stream both
// libraries use, 3 warm-up runs, then the median of --reps (default 50) runs, with the L2 cache flushed
// (a memset of twice its size) before each run, outside the timed region. It also checks that our
// Auto result matches cuDNN's (relative L2 error).
//
// Usage: bench_conv_cudnn [out.json] [--reps N] [--only SUBSTRING]
// Prints a Markdown table (ms, TFLOP/s = 2 * MACs / time, ratio cuDNN time / our time) and writes JSON.
// Without a GPU it says so and exits 0.
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // cuDNN 9 marks the legacy conv API deprecated
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.hpp"
#include "cuda/check.hpp"

using namespace magmasr;

#define CUDNN_CHECK(call)                                                                                   \
  do {                                                                                                      \
    const cudnnStatus_t st_ = (call);                                                                       \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                                        \
      throw CudaError(::magmasr::detail::cat("cuDNN error: ", #call, " failed with ", cudnnGetErrorString(st_), \
                                             " at ", __FILE__, ":", __LINE__));                             \
  } while (0)

namespace {

struct Shape {
  const char* name;
  ConvGeom g;
};

ConvGeom make(int64_t N, int64_t Cin, int64_t Cout, int64_t D, int64_t H, int64_t W, int64_t kD, int64_t k, bool same) {
  ConvGeom g;
  g.N = N, g.Cin = Cin, g.Cout = Cout, g.D = D, g.H = H, g.W = W;
  g.kD = kD, g.kH = k, g.kW = k;
  g.pD = same ? (kD - 1) / 2 : 0, g.pH = same ? (k - 1) / 2 : 0, g.pW = same ? (k - 1) / 2 : 0;
  g.mode = PadMode::Zeros;
  return g;
}

// The table of issue 3.
std::vector<Shape> shapes() {
  return {
      {"SRCNN conv1", make(1, 1, 64, 1, 1080, 1920, 1, 9, true)},
      {"SRCNN conv2 1x1", make(1, 64, 32, 1, 1080, 1920, 1, 1, true)},
      {"SRCNN conv2 5x5", make(1, 64, 32, 1, 1080, 1920, 1, 5, true)},
      {"SRCNN conv3", make(1, 32, 1, 1, 1080, 1920, 1, 5, true)},
      {"SRCNN train conv1", make(128, 1, 64, 1, 33, 33, 1, 9, false)},
      {"SRCNN train conv2", make(128, 64, 32, 1, 25, 25, 1, 5, false)},
      {"SRCNN train conv3", make(128, 32, 1, 1, 21, 21, 1, 5, false)},
      {"3DSRnet conv1", make(16, 1, 32, 5, 64, 64, 3, 3, true)},
      {"3DSRnet conv2", make(16, 32, 32, 5, 64, 64, 3, 3, true)},
      {"3DSRnet conv4", make(16, 32, 32, 5, 64, 64, 3, 3, false)},
      {"3DSRnet conv2 video", make(1, 32, 32, 5, 1080, 1920, 3, 3, true)},
  };
}

const char* dir_name(int d) { return d == 0 ? "forward" : d == 1 ? "backward-data" : "backward-weight"; }

struct Buf {
  float* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) { p = static_cast<float*>(cuda::alloc(0, std::max<size_t>(count, 1) * 4)); }
  ~Buf() { cuda::free(0, p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void randomize(std::mt19937& rng) {
    std::uniform_real_distribution<float> d(-1.f, 1.f);
    std::vector<float> h(n);
    for (float& v : h) v = d(rng);
    cuda::copy(p, true, h.data(), false, n * 4, 0);
  }
  std::vector<float> host() const {
    std::vector<float> h(n);
    cuda::copy(h.data(), false, p, true, n * 4, 0);
    return h;
  }
};

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

class Timer {
 public:
  Timer(cudaStream_t s, int reps) : s_(s), reps_(reps) {
    int l2 = 0;
    MAGMASR_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    flush_bytes_ = std::max<size_t>(size_t(l2) * 2, size_t(8) << 20);
    flush_ = cuda::alloc(0, flush_bytes_);
    MAGMASR_CUDA_CHECK(cudaEventCreate(&a_));
    MAGMASR_CUDA_CHECK(cudaEventCreate(&b_));
  }
  ~Timer() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
    cuda::free(0, flush_);
  }
  // Median milliseconds of fn over reps runs after 3 warm-up runs, L2 flushed before each.
  double median_ms(const std::function<void()>& fn) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<float> t;
    for (int i = 0; i < reps_; ++i) {
      MAGMASR_CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, s_));
      MAGMASR_CUDA_CHECK(cudaEventRecord(a_, s_));
      fn();
      MAGMASR_CUDA_CHECK(cudaEventRecord(b_, s_));
      MAGMASR_CUDA_CHECK(cudaEventSynchronize(b_));
      float ms = 0;
      MAGMASR_CUDA_CHECK(cudaEventElapsedTime(&ms, a_, b_));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
  }

 private:
  cudaStream_t s_;
  int reps_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t a_ = nullptr, b_ = nullptr;
};

// cuDNN descriptors of one problem (NCHW / NCDHW, cross-correlation, fp32, FMA math).
struct CudnnProblem {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  explicit CudnnProblem(const ConvGeom& g) {
    const bool is3d = g.kD > 1 || g.D > 1;
    const int nd = is3d ? 5 : 4;
    auto dims = [&](int64_t c, int64_t d, int64_t h, int64_t w_) {
      std::vector<int> v = {int(g.N), int(c)};
      if (is3d) v.push_back(int(d));
      v.push_back(int(h));
      v.push_back(int(w_));
      return v;
    };
    auto strides = [](const std::vector<int>& d) {
      std::vector<int> s(d.size());
      int acc = 1;
      for (int i = int(d.size()) - 1; i >= 0; --i) s[size_t(i)] = acc, acc *= d[size_t(i)];
      return s;
    };
    const auto xd = dims(g.Cin, g.D, g.H, g.W), yd = dims(g.Cout, g.oD(), g.oH(), g.oW());
    const auto xs = strides(xd), ys = strides(yd);
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(x, CUDNN_DATA_FLOAT, nd, xd.data(), xs.data()));
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(y, CUDNN_DATA_FLOAT, nd, yd.data(), ys.data()));
    std::vector<int> wd = {int(g.Cout), int(g.Cin)};
    if (is3d) wd.push_back(int(g.kD));
    wd.push_back(int(g.kH));
    wd.push_back(int(g.kW));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, nd, wd.data()));
    std::vector<int> pad, one(size_t(nd - 2), 1);
    if (is3d) pad.push_back(int(g.pD));
    pad.push_back(int(g.pH));
    pad.push_back(int(g.pW));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(conv, nd - 2, pad.data(), one.data(), one.data(),
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, CUDNN_FMA_MATH));
  }
  ~CudnnProblem() {
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
};

struct Row {
  std::string shape, geom, dir, impl;
  double ms, tflops, rel_err_vs_cudnn;
};

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path = "bench_conv_cudnn.json", only;
  int reps = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "-h" || a == "--help") {
      std::printf("usage: %s [out.json] [--reps N] [--only SUBSTRING]\n", argv[0]);
      return 0;
    } else {
      out_path = a;
    }
  }
  if (cuda::device_count() == 0) {
    std::printf("bench_conv_cudnn: no CUDA device available (no GPU or no driver); nothing to benchmark.\n");
    return 0;
  }
  try {
    cudaStream_t stream = static_cast<cudaStream_t>(cuda::stream(0));
    cudnnHandle_t cudnn = nullptr;
    CUDNN_CHECK(cudnnCreate(&cudnn));
    CUDNN_CHECK(cudnnSetStream(cudnn, stream));
    const size_t ws_bytes = size_t(1) << 30;
    void* ws = cuda::alloc(0, ws_bytes);
    Timer timer(stream, reps);
    std::mt19937 rng(42);
    std::vector<Row> rows;
    const std::string dev = cuda::device_name(0);
    // Rewritten after every direction (to a temporary file, then renamed), so that a run cut short by a
    // time limit still leaves every row it finished; "complete" says whether all shapes ran.
    auto write_json = [&](bool complete) {
      const std::string tmp = out_path + ".tmp";
      {
        std::ofstream js(tmp);
        js << "{\n  \"device\": \"" << json_escape(dev) << "\",\n  \"cudnn_version\": \"" << CUDNN_MAJOR << "."
           << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << "\",\n  \"precision\": \"fp32, no TF32\",\n  \"reps\": "
           << reps << ",\n  \"statistic\": \"median ms, L2 flushed between runs\",\n  \"complete\": "
           << (complete ? "true" : "false") << ",\n  \"results\": [\n";
        for (size_t i = 0; i < rows.size(); ++i) {
          const Row& r = rows[i];
          js << "    {\"shape\": \"" << json_escape(r.shape) << "\", \"geometry\": \"" << json_escape(r.geom)
             << "\", \"direction\": \"" << r.dir << "\", \"impl\": \"" << json_escape(r.impl)
             << "\", \"ms\": " << r.ms << ", \"tflops\": " << r.tflops
             << ", \"rel_err_vs_cudnn\": " << r.rel_err_vs_cudnn << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
        }
        js << "  ]\n}\n";
        js.flush();
        if (!js) throw std::runtime_error("cannot write " + tmp);
      }
      if (std::rename(tmp.c_str(), out_path.c_str()) != 0)
        throw std::runtime_error("cannot rename " + tmp + " to " + out_path);
    };
    std::printf("# magmasr vs cuDNN %d.%d.%d on %s, fp32 (no TF32), zero padding, median of %d runs, L2 flushed\n\n",
                CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL, dev.c_str(), reps);
    std::printf("| layer | direction | cuDNN algo | cuDNN ms | direct ms | direct_async ms | implicit_gemm ms | gemm ms | "
                "auto ms | auto TFLOP/s | cuDNN/auto | rel err |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const float one = 1.f, zero = 0.f;
    for (const Shape& s : shapes()) {
      if (!only.empty() && std::string(s.name).find(only) == std::string::npos) continue;
      const ConvGeom& g = s.g;
      const double flop = 2.0 * g.macs();
      Buf x(size_t(g.x_numel())), w(size_t(g.w_numel())), y(size_t(g.y_numel())), gy(size_t(g.y_numel()));
      Buf gx(size_t(g.x_numel())), gw(size_t(g.w_numel())), ref(std::max(size_t(g.x_numel()), size_t(g.y_numel())));
      x.randomize(rng), w.randomize(rng), gy.randomize(rng);
      CudnnProblem p(g);
      for (int d = 0; d < 3; ++d) {
        // cuDNN: find the fastest algorithm, then time it like ours
        std::function<void()> run_cudnn;
        int algo_id = -1;
        float* ref_out = ref.p;
        size_t out_n = 0;
        if (d == 0) {
          cudnnConvolutionFwdAlgoPerf_t perf[16];
          int got = 0;
          CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(cudnn, p.x, x.p, p.w, w.p, p.conv, p.y, ref.p, 16, &got,
                                                             perf, ws, ws_bytes));
          int i = 0;
          while (i < got && perf[i].status != CUDNN_STATUS_SUCCESS) ++i;
          if (i == got) throw CudaError("cuDNN found no forward algorithm");
          const cudnnConvolutionFwdAlgo_t al = perf[i].algo;
          algo_id = int(al);
          run_cudnn = [&, al] {
            CUDNN_CHECK(cudnnConvolutionForward(cudnn, &one, p.x, x.p, p.w, w.p, p.conv, al, ws, ws_bytes, &zero, p.y,
                                                ref.p));
          };
          out_n = y.n;
        } else if (d == 1) {
          cudnnConvolutionBwdDataAlgoPerf_t perf[16];
          int got = 0;
          CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(cudnn, p.w, w.p, p.y, gy.p, p.conv, p.x, ref.p, 16,
                                                                  &got, perf, ws, ws_bytes));
          int i = 0;
          while (i < got && perf[i].status != CUDNN_STATUS_SUCCESS) ++i;
          if (i == got) throw CudaError("cuDNN found no backward-data algorithm");
          const cudnnConvolutionBwdDataAlgo_t al = perf[i].algo;
          algo_id = int(al);
          run_cudnn = [&, al] {
            CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn, &one, p.w, w.p, p.y, gy.p, p.conv, al, ws, ws_bytes, &zero,
                                                     p.x, ref.p));
          };
          out_n = gx.n;
        } else {
          cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
          int got = 0;
          CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnn, p.x, x.p, p.y, gy.p, p.conv, p.w, ref.p, 16,
                                                                    &got, perf, ws, ws_bytes));
          int i = 0;
          while (i < got && perf[i].status != CUDNN_STATUS_SUCCESS) ++i;
          if (i == got) throw CudaError("cuDNN found no backward-filter algorithm");
          const cudnnConvolutionBwdFilterAlgo_t al = perf[i].algo;
          algo_id = int(al);
          run_cudnn = [&, al] {
            CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn, &one, p.x, x.p, p.y, gy.p, p.conv, al, ws, ws_bytes,
                                                       &zero, p.w, ref.p));
          };
          out_n = gw.n;
        }
        const double cudnn_ms = timer.median_ms(run_cudnn);
        run_cudnn();
        std::vector<float> ref_host(out_n);
        cuda::copy(ref_host.data(), false, ref_out, true, out_n * 4, 0);
        rows.push_back({s.name, g.str(), dir_name(d), "cudnn algo " + std::to_string(algo_id), cudnn_ms,
                        flop / cudnn_ms * 1e-9, 0.0});

        // DirectAsync and ImplicitGemm differ from Direct in forward and backward data only (NaN: not timed).
        double ours_ms[5] = {0, NAN, NAN, 0, 0}, auto_err = 0;
        const ConvAlgo algos[5] = {ConvAlgo::Direct, ConvAlgo::DirectAsync, ConvAlgo::ImplicitGemm, ConvAlgo::Gemm,
                                   ConvAlgo::Auto};
        for (int a = 0; a < 5; ++a) {
          const ConvAlgo al = algos[a];
          if ((al == ConvAlgo::DirectAsync || al == ConvAlgo::ImplicitGemm) && d == 2) continue;
          std::function<void()> run;
          const Buf* out = nullptr;
          if (d == 0) {
            run = [&, al] { cuda::conv_forward(0, g, x.p, w.p, nullptr, y.p, false, al); };
            out = &y;
          } else if (d == 1) {
            run = [&, al] { cuda::conv_backward_data(0, g, gy.p, w.p, gx.p, al); };
            out = &gx;
          } else {
            run = [&, al] { cuda::conv_backward_weight(0, g, x.p, gy.p, gw.p, nullptr, al); };
            out = &gw;
          }
          ours_ms[a] = timer.median_ms(run);
          const double err = rel_err(out->host(), ref_host);
          if (al == ConvAlgo::Auto) auto_err = err;
          rows.push_back({s.name, g.str(), dir_name(d), "magmasr " + to_string(al), ours_ms[a],
                          flop / ours_ms[a] * 1e-9, err});
        }
        std::printf("| %s | %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | %.1e |\n", s.name,
                    dir_name(d), algo_id, cudnn_ms, ours_ms[0], ours_ms[1], ours_ms[2], ours_ms[3], ours_ms[4],
                    flop / ours_ms[4] * 1e-9, cudnn_ms / ours_ms[4], auto_err);
        std::fflush(stdout);
        write_json(false);
      }
    }
    cuda::free(0, ws);
    cudnnDestroy(cudnn);

    write_json(true);
    std::printf("\nwrote %s\n", out_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conv_cudnn: %s\n", e.what());
    return 1;
  }
  return 0;
}
