// Where a tensor lives. Device exists in every build; asking a CPU-only build for CUDA is a DeviceError.
#pragma once

#include <string>

namespace magmasr {

enum class DeviceType : int { CPU = 0, CUDA = 1 };

class Device {
 public:
  constexpr Device() = default;
  constexpr Device(DeviceType type, int index) : type_(type), index_(type == DeviceType::CPU ? 0 : index) {}
  static constexpr Device cpu() { return Device(DeviceType::CPU, 0); }
  static constexpr Device cuda(int index = 0) { return Device(DeviceType::CUDA, index); }
  /// "cpu", "cuda", "cuda:1" (ValueError otherwise).
  static Device parse(const std::string& s);

  DeviceType type() const { return type_; }
  int index() const { return index_; }
  bool is_cpu() const { return type_ == DeviceType::CPU; }
  bool is_cuda() const { return type_ == DeviceType::CUDA; }
  std::string str() const;
  bool operator==(const Device& o) const { return type_ == o.type_ && index_ == o.index_; }
  bool operator!=(const Device& o) const { return !(*this == o); }

 private:
  DeviceType type_ = DeviceType::CPU;
  int index_ = 0;
};

/// True when this build has the CUDA backend and a usable GPU (never throws, never needs a driver).
bool cuda_available();
/// Number of usable GPUs (0 without a CUDA build, a driver or a GPU).
int cuda_device_count();
/// True when the library was compiled with the CUDA backend.
bool cuda_compiled();
/// Throws DeviceError unless `d` can hold tensors in this build on this machine.
void check_device(const Device& d);

/// Threads used by the CPU kernels (OpenMP). 0 or negative: leave the default.
void set_num_threads(int n);
int get_num_threads();

}  // namespace magmasr
