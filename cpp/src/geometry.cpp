#include "magmasr/geometry.hpp"

#include "magmasr/error.hpp"

namespace magmasr {

std::string to_string(PadMode m) { return m == PadMode::Replicate ? "replicate" : "zeros"; }

PadMode pad_mode_from_string(const std::string& s) {
  if (s == "zeros") return PadMode::Zeros;
  if (s == "replicate") return PadMode::Replicate;
  throw ValueError("padding_mode must be 'zeros' or 'replicate', got '" + s + "'");
}

std::string to_string(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::Direct: return "direct";
    case ConvAlgo::Gemm: return "gemm";
    case ConvAlgo::DirectAsync: return "direct_async";
    case ConvAlgo::ImplicitGemm: return "implicit_gemm";
    case ConvAlgo::AutoDirect: return "auto_direct";
    default: return "auto";
  }
}

ConvAlgo conv_algo_from_string(const std::string& s) {
  if (s == "auto") return ConvAlgo::Auto;
  if (s == "direct") return ConvAlgo::Direct;
  if (s == "gemm") return ConvAlgo::Gemm;
  if (s == "direct_async") return ConvAlgo::DirectAsync;
  if (s == "implicit_gemm") return ConvAlgo::ImplicitGemm;
  if (s == "auto_direct") return ConvAlgo::AutoDirect;
  throw ValueError(
      "conv algorithm must be 'auto', 'direct', 'direct_async', 'implicit_gemm', 'gemm' or 'auto_direct', got '" + s +
      "'");
}

std::string ConvGeom::str() const {
  return detail::cat("N=", N, " Cin=", Cin, " Cout=", Cout, " in=", D, "x", H, "x", W, " kernel=", kD, "x", kH, "x",
                     kW, " pad=", pD, ",", pH, ",", pW, " (", to_string(mode), ")");
}

void ConvGeom::validate() const {
  MAGMASR_REQUIRE(N >= 1 && Cin >= 1 && Cout >= 1, ValueError, "convolution needs N, Cin, Cout >= 1: ", str());
  MAGMASR_REQUIRE(D >= 1 && H >= 1 && W >= 1, ValueError, "convolution input must be non-empty: ", str());
  MAGMASR_REQUIRE(kD >= 1 && kH >= 1 && kW >= 1, ValueError, "kernel sizes must be >= 1: ", str());
  MAGMASR_REQUIRE(pD >= 0 && pH >= 0 && pW >= 0, ValueError, "padding must be >= 0: ", str());
  MAGMASR_REQUIRE(oD() >= 1 && oH() >= 1 && oW() >= 1, ValueError, "the kernel (", kD, "x", kH, "x", kW,
                  ") is larger than the padded input (", D + 2 * pD, "x", H + 2 * pH, "x", W + 2 * pW,
                  "): no output; ", str());
  const double out = double(N) * double(Cout) * double(oD()) * double(oH()) * double(oW());
  MAGMASR_REQUIRE(out <= double(int64_t(1) << 48), ValueError, "the convolution output would have ", out,
                  " elements (more than 2^48): ", str());
}

}  // namespace magmasr
