#include "magmasr/geometry.hpp"

#include "magmasr/error.hpp"

namespace magmasr {

std::string to_string(PadMode m) { return m == PadMode::Replicate ? "replicate" : "zeros"; }

PadMode pad_mode_from_string(const std::string& s) {
  if (s == "zeros") return PadMode::Zeros;
  if (s == "replicate") return PadMode::Replicate;
  throw ValueError("padding_mode must be 'zeros' or 'replicate', got '" + s + "'");
}

void check_pad_mode(const char* who, PadMode m) {
  MAGMASR_REQUIRE(m == PadMode::Zeros || m == PadMode::Replicate, ValueError, who,
                  ": padding mode must be PadMode::Zeros (0) or PadMode::Replicate (1), got ", static_cast<int>(m));
}

void check_conv_algo(const char* who, ConvAlgo a) {
  const int v = static_cast<int>(a);
  MAGMASR_REQUIRE(v >= static_cast<int>(ConvAlgo::Auto) && v <= static_cast<int>(ConvAlgo::Winograd), ValueError,
                  who, ": conv algorithm must be one of ConvAlgo's values, 0 (Auto) to 6 (Winograd), got ", v);
}

std::string to_string(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::Direct: return "direct";
    case ConvAlgo::Gemm: return "gemm";
    case ConvAlgo::DirectAsync: return "direct_async";
    case ConvAlgo::ImplicitGemm: return "implicit_gemm";
    case ConvAlgo::AutoDirect: return "auto_direct";
    case ConvAlgo::Winograd: return "winograd";
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
  if (s == "winograd") return ConvAlgo::Winograd;
  throw ValueError(
      "conv algorithm must be 'auto', 'direct', 'direct_async', 'implicit_gemm', 'gemm', 'auto_direct' or "
      "'winograd', got '" + s + "'");
}

int winograd_tile(int64_t k, int64_t cin, int64_t cout) {
  return (k == 3 || k == 5) && cin >= 8 && cout >= 8 ? int(9 - k) : 0;
}

std::string ConvGeom::str() const {
  return detail::cat("N=", N, " Cin=", Cin, " Cout=", Cout, " in=", D, "x", H, "x", W, " kernel=", kD, "x", kH, "x",
                     kW, " pad=", pD, ",", pH, ",", pW, " (", to_string(mode), ")");
}

void ConvGeom::validate() const {
  check_pad_mode("convolution", mode);
  MAGMASR_REQUIRE(N >= 1 && Cin >= 1 && Cout >= 1, ValueError, "convolution needs N, Cin, Cout >= 1: ", str());
  MAGMASR_REQUIRE(D >= 1 && H >= 1 && W >= 1, ValueError, "convolution input must be non-empty: ", str());
  MAGMASR_REQUIRE(kD >= 1 && kH >= 1 && kW >= 1, ValueError, "kernel sizes must be >= 1: ", str());
  MAGMASR_REQUIRE(pD >= 0 && pH >= 0 && pW >= 0, ValueError, "padding must be >= 0: ", str());
  // The padded sizes and the products of sizes, checked before oD() / oH() / oW() and the element counts compute
  // them unchecked (a padding of 2^62 would wrap around).
  const char* what = "convolution geometry";
  const int64_t padded[3] = {detail::checked_add(D, detail::checked_mul(2, pD, what), what),
                             detail::checked_add(H, detail::checked_mul(2, pH, what), what),
                             detail::checked_add(W, detail::checked_mul(2, pW, what), what)};
  MAGMASR_REQUIRE(padded[0] >= kD && padded[1] >= kH && padded[2] >= kW, ValueError, "the kernel (", kD, "x", kH, "x",
                  kW, ") is larger than the padded input (", padded[0], "x", padded[1], "x", padded[2],
                  "): no output; ", str());
  // 2^48 elements (1 PiB of float32) is beyond any machine; below it no element or byte count overflows.
  const double limit = double(int64_t(1) << 48);
  const double in = double(N) * double(Cin) * double(D) * double(H) * double(W);
  MAGMASR_REQUIRE(in <= limit, ValueError, "the convolution input would have ", in, " elements (more than 2^48): ",
                  str());
  const double out = double(N) * double(Cout) * double(oD()) * double(oH()) * double(oW());
  MAGMASR_REQUIRE(out <= limit, ValueError, "the convolution output would have ", out, " elements (more than 2^48): ",
                  str());
  const double weights = double(Cout) * double(Cin) * double(kD) * double(kH) * double(kW);
  MAGMASR_REQUIRE(weights <= limit, ValueError, "the convolution weight would have ", weights,
                  " elements (more than 2^48): ", str());
}

}  // namespace magmasr
