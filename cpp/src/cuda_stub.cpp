// The CUDA backend of a CPU-only build (MAGMASR_CUDA=OFF or no nvcc): no devices, and a clear error for
// anything that would need one. Tensors never reach these ops there, since check_device() refuses CUDA.
#include "backend.hpp"
#include "magmasr/error.hpp"

namespace magmasr::cuda {
namespace {
[[noreturn]] void no_cuda() {
  throw DeviceError("magmasr was built without CUDA (MAGMASR_CUDA=OFF): CUDA tensors and ops are not available");
}
}  // namespace

bool compiled() { return false; }
int device_count() { return 0; }
std::string device_name(int) { no_cuda(); }
void* alloc(int, size_t) { no_cuda(); }
void free(int, void*) { no_cuda(); }
MemoryStats memory_stats(int) { no_cuda(); }
void mem_get_info(int, size_t*, size_t*) { no_cuda(); }
void empty_cache(int) { no_cuda(); }
void copy(void*, bool, const void*, bool, size_t, int) { no_cuda(); }
void synchronize(int) { no_cuda(); }
void* stream(int) { no_cuda(); }
void conv_forward(int, const ConvGeom&, const float*, const float*, const float*, float*, bool, ConvAlgo) { no_cuda(); }
void conv_backward_data(int, const ConvGeom&, const float*, const float*, float*, ConvAlgo) { no_cuda(); }
void conv_backward_weight(int, const ConvGeom&, const float*, const float*, float*, float*, ConvAlgo) { no_cuda(); }
void relu_forward(int, int64_t, const float*, float*) { no_cuda(); }
void relu_backward(int, int64_t, const float*, const float*, float*) { no_cuda(); }
double mse_loss(int, int64_t, const float*, const float*) { no_cuda(); }
void mse_grad(int, int64_t, const float*, const float*, float, float*) { no_cuda(); }
void pixel_shuffle_forward(int, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, float*) { no_cuda(); }
void pixel_shuffle_backward(int, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, float*) { no_cuda(); }
void add(int, int64_t, const float*, const float*, float*) { no_cuda(); }
void scale(int, int64_t, float, const float*, float*) { no_cuda(); }
void fill(int, int64_t, float, float*) { no_cuda(); }
void sgd_update(int, int64_t, float*, const float*, float*, const SgdParams&) { no_cuda(); }
void adam_update(int, int64_t, float*, const float*, float*, float*, const AdamParams&, int64_t) { no_cuda(); }
void resample_axis(int, int64_t, int64_t, int64_t, int64_t, int64_t, const double*, const int32_t*, const float*,
                   float*, bool) {
  no_cuda();
}

}  // namespace magmasr::cuda
