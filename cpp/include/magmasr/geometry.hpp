// Shapes of the convolution problems magmasr solves, shared by the CPU and the CUDA kernels.
#pragma once

#include <cstdint>
#include <string>

namespace magmasr {

/// How a convolution fills the border outside the input.
///  - Zeros:     the usual zero padding.
///  - Replicate: the nearest input sample (MATLAB's imfilter 'replicate'); the original SRCNN
///               weights were trained and are evaluated with it.
enum class PadMode : int { Zeros = 0, Replicate = 1 };

/// Which convolution strategy the CUDA backend uses; the CPU ignores it (it picks its own: cpu/conv.cpp), except
/// Winograd.
enum class ConvAlgo : int {
  Auto = 0,          // the selector times every strategy below once per shape and keeps the fastest
  Direct = 1,        // direct / implicit-GEMM kernels tiled in shared memory and registers
  Gemm = 2,          // im2col / vol2col + cuBLAS SGEMM
  DirectAsync = 3,   // Direct, with the many-channel forward and backward-data kernels copying the next input
                     // channel into shared memory (cp.async) while they compute the current one.
                     // Backward weight: the same kernel as Direct.
  ImplicitGemm = 4,  // Direct, with the many-channel forward and backward-data kernels replaced by an implicit GEMM
                     // over every (image, position) pair (no idle tile edges on small pictures). Backward weight
                     // and the other shapes: the same kernels as Direct.
  AutoDirect = 5,    // the selector, among Direct, DirectAsync and ImplicitGemm only. These three compute the
                     // same sums in the same order (per output: input channel, then filter tap), so their results
                     // are identical bit for bit whatever the shape or the batch: a picture cut into tiles of any
                     // size gives the whole picture's pixels, with the fastest of the three per shape.
  Winograd = 6,      // CPU: the forward pass of layers with 3x3 or 5x5 kernels in space and at least 8 input and
                     // output channels by Winograd's minimal filtering, F(6x6, 3x3) / F(4x4, 5x5) (winograd_tile),
                     // 2-D or 3-D (any depth kernel): 2-2.7x faster on SRCNN 9-5-5's mapping layer and 3DSRnet's
                     // 3x3x3 layers, within a few 1e-5 of the direct sums relative to the output's scale, but an
                     // output's bits depend on its place in the grid of m x m tiles counted from the layer's first
                     // output (tiled inference must cut on that grid, with m - 1 more halo per such layer). The
                     // backward passes of those layers too: backward-data (zero padding) as the forward pass of its
                     // adjoint, backward-weight by the adjoint of the transforms (training 1.5x faster). Other
                     // layers as Auto. CUDA: as AutoDirect.
};
std::string to_string(ConvAlgo a);
// "auto" | "direct" | "direct_async" | "implicit_gemm" | "gemm" | "auto_direct" | "winograd"
ConvAlgo conv_algo_from_string(const std::string& s);

/// The side m of the output tiles with which ConvAlgo::Winograd computes a layer of `cin` -> `cout` channels and a
/// k x k kernel in space (2-D, or 3-D with any depth kernel) on the CPU: 6 for 3x3, 4 for 5x5 (with at least 8 channels in and out), 0 where it computes
/// the layer directly.
int winograd_tile(int64_t k, int64_t cin, int64_t cout);

std::string to_string(PadMode m);
PadMode pad_mode_from_string(const std::string& s);  // "zeros" | "replicate"

/// Throw ValueError naming `who` when a value is none of the enumerators (a cast from an int, say):
/// the kernels would otherwise treat it as one of them silently.
void check_pad_mode(const char* who, PadMode m);
void check_conv_algo(const char* who, ConvAlgo a);

/// One stride-1 convolution (a correlation, no kernel flip), 2-D problems use D = kD = 1, pD = 0.
///   x: [N, Cin, D, H, W]   w: [Cout, Cin, kD, kH, kW]   b: [Cout]   y: [N, Cout, oD, oH, oW]
/// with o* = in + 2 * pad - k + 1 (symmetric padding per dimension).
struct ConvGeom {
  int64_t N = 1, Cin = 1, Cout = 1;
  int64_t D = 1, H = 1, W = 1;
  int64_t kD = 1, kH = 1, kW = 1;
  int64_t pD = 0, pH = 0, pW = 0;
  PadMode mode = PadMode::Zeros;

  int64_t oD() const { return D + 2 * pD - kD + 1; }
  int64_t oH() const { return H + 2 * pH - kH + 1; }
  int64_t oW() const { return W + 2 * pW - kW + 1; }
  int64_t in_spatial() const { return D * H * W; }
  int64_t out_spatial() const { return oD() * oH() * oW(); }
  int64_t kernel_volume() const { return kD * kH * kW; }
  int64_t x_numel() const { return N * Cin * in_spatial(); }
  int64_t y_numel() const { return N * Cout * out_spatial(); }
  int64_t w_numel() const { return Cout * Cin * kernel_volume(); }
  /// Multiply-adds of the forward pass (each direction costs the same).
  double macs() const {
    return double(N) * double(Cout) * double(out_spatial()) * double(Cin) * double(kernel_volume());
  }
  /// Throws ValueError (a std::invalid_argument) with a readable message when the geometry is impossible,
  /// including sizes whose products would overflow: after validate(), every member function above is exact.
  void validate() const;
  std::string str() const;
};

}  // namespace magmasr
