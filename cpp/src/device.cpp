#include "magmasr/device.hpp"

#include <cctype>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.hpp"
#include "magmasr/error.hpp"

namespace magmasr {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    const std::string idx = s.substr(5);
    bool digits = true;
    for (char c : idx) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    if (digits && idx.size() < 6) return Device::cuda(std::stoi(idx));
  }
  throw ValueError("device must be 'cpu', 'cuda' or 'cuda:N', got '" + s + "'");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index_); }

bool cuda_compiled() { return cuda::compiled(); }
int cuda_device_count() { return cuda::device_count(); }
bool cuda_available() { return cuda::device_count() > 0; }

void check_device(const Device& d) {
  if (d.is_cpu()) return;
  MAGMASR_REQUIRE(cuda::compiled(), DeviceError, "device ", d.str(),
                  " requested, but magmasr was built without CUDA (MAGMASR_CUDA=OFF)");
  const int n = cuda::device_count();
  MAGMASR_REQUIRE(n > 0, DeviceError, "device ", d.str(), " requested, but no CUDA GPU is available");
  MAGMASR_REQUIRE(d.index() >= 0 && d.index() < n, DeviceError, "device ", d.str(), " requested, but only ", n,
                  " CUDA device(s) exist");
}

void set_num_threads(int n) {
  if (n <= 0) return;
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
}

int get_num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace magmasr
