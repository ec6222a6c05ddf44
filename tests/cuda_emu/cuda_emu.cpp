// magmasr's CUDA emulator: the scheduler that runs kernels as fibers, the runtime API on host memory and cuBLAS's
// SGEMM on the CPU convolution's matrix-product kernels. See include/cuda_runtime.h and include/cuda_emu.hpp for
// what it emulates and why.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/gemm.hpp"
#include "cublas_v2.h"
#include "cuda_runtime.h"

struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when;
  bool recorded;
};
struct cublasContext {
  cudaStream_t stream;
};

namespace cuda_emu {

uint3 g_thread_idx{0, 0, 0}, g_block_idx{0, 0, 0};
dim3 g_block_dim, g_grid_dim;

namespace {

// ------------------------------------------------------------------------------------------ settings

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < lo || n > hi) {
    std::fprintf(stderr, "cuda_emu: ignoring %s=%s (expected an integer in [%d, %d])\n", name, v, lo, hi);
    return fallback;
  }
  return int(n);
}

// An H100 has 132; a few are enough to exercise the grid-stride loops and split reductions of small problems.
int sm_count() {
  static const int n = env_int("MAGMASR_CUDA_EMU_SMS", 8, 1, 1024);
  return n;
}
// MAGMASR_CUDA_EMU_SHUFFLE: a nonzero seed runs the threads of a block in a random order in every phase (a
// slower, deeper search for missing barriers than the default ascending / descending alternation).
int shuffle_seed() {
  static const int seed = env_int("MAGMASR_CUDA_EMU_SHUFFLE", 0, 0, 0x7fffffff);
  return seed;
}
std::mt19937& shuffle_rng() {
  static std::mt19937 rng{uint32_t(shuffle_seed())};
  return rng;
}

size_t total_memory() {
  static const size_t bytes = size_t(env_int("MAGMASR_CUDA_EMU_MEMORY_GIB", 16, 1, 4096)) << 30;
  return bytes;
}

constexpr size_t kStaticSharedLimit = 48 << 10;  // static shared memory per block
constexpr size_t kStackBytes = 256 << 10;       // per fiber, plus a guard page below it

// ------------------------------------------------------------------------------------------ errors

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_launch_failure;  // what the last launch failure was

cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

// ------------------------------------------------------------------------------------------ device memory

// Each allocation has guard bytes before and after it; they are checked after every kernel and at cudaFree, so a
// kernel that writes outside its buffers (beyond the caching allocator's rounding) is a launch failure.
constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0xA5;

struct Allocation {
  char* base;
  size_t bytes;
};

std::mutex g_mem_mutex;
std::map<char*, Allocation> g_allocs;  // by user pointer
size_t g_allocated = 0;

bool guards_intact(char* user, const Allocation& a) {
  for (size_t i = 0; i < kGuard; ++i)
    if (static_cast<unsigned char>(a.base[i]) != kGuardByte ||
        static_cast<unsigned char>(user[a.bytes + i]) != kGuardByte)
      return false;
  return true;
}

// The allocation holding [p, p + bytes), if any (the caller holds g_mem_mutex).
const Allocation* find_alloc(const void* p, size_t bytes) {
  char* c = static_cast<char*>(const_cast<void*>(p));
  auto it = g_allocs.upper_bound(c);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  if (c < it->first || c + bytes > it->first + it->second.bytes) return nullptr;
  return &it->second;
}

// The host block behind a device allocation: a guard, the bytes rounded up to 256, a guard.
size_t block_bytes(size_t bytes) { return (bytes + 255) / 256 * 256 + 2 * kGuard; }

void set_guards(char* user, const Allocation& a) {
  std::memset(a.base, kGuardByte, kGuard);
  std::memset(user + a.bytes, kGuardByte, block_bytes(a.bytes) - kGuard - a.bytes);
}

// The fault of the kernel that just ran, if it wrote into a guard. The guards are then restored: the fault is
// reported once, at the launch that made it, and the allocation can still be freed.
std::string check_all_guards() {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  std::string fault;
  for (auto& kv : g_allocs)
    if (!guards_intact(kv.first, kv.second)) {
      if (fault.empty())
        fault = "a write outside the device allocation of " + std::to_string(kv.second.bytes) + " bytes at " +
                std::to_string(reinterpret_cast<uintptr_t>(kv.first));
      set_guards(kv.first, kv.second);
    }
  return fault;
}

// ------------------------------------------------------------------------------------------ the scheduler

enum class Wait { Run, Block, Warp, Done };

// Context switches. On x86-64 a fiber switch saves the callee-saved registers and the floating-point control
// words on the old stack and restores them from the new one (no system call, unlike swapcontext, which also
// saves the signal mask, two system calls a switch); elsewhere ucontext.
#if defined(__x86_64__) && !defined(CUDA_EMU_UCONTEXT)  // -DCUDA_EMU_UCONTEXT forces the portable path
#define CUDA_EMU_FAST_SWITCH 1
extern "C" void cuda_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl cuda_emu_switch
  .type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
)");
#endif

struct Fiber {
#ifdef CUDA_EMU_FAST_SWITCH
  void* sp;
#else
  ucontext_t ctx;
#endif
  uint3 tid;
  int linear;
  Wait wait;
  unsigned mask;  // of the warp exchange it waits at
  // cp.async copies issued and not yet waited for: done at the thread's cp.async.wait_all, not before, so that a
  // read of the destination before the wait (or by another thread before the wait and a barrier) sees the old
  // contents (NaN in fresh shared memory).
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes, src_bytes;
  };
  std::vector<Copy> copies;
};

struct BlockRun {
  std::vector<Fiber> fibers;
#ifdef CUDA_EMU_FAST_SWITCH
  void* sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  std::string fault;
  std::vector<uint64_t> slots;  // one per thread, for warp exchanges
  std::vector<std::pair<void*, size_t>> shared;  // the shared variables poisoned in this block, and their sizes
};

BlockRun* g_run = nullptr;
std::mutex g_kernel_mutex;  // one kernel at a time, whichever host thread launches it
std::vector<char*> g_stacks;

// The lowest address of the i-th fiber stack (kStackBytes, a guard page below it).
char* stack(size_t i) {
  while (g_stacks.size() <= i) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    mprotect(m, page, PROT_NONE);  // a fiber that overflows its stack faults instead of corrupting another's
    g_stacks.push_back(static_cast<char*>(m) + page);
  }
  return g_stacks[i];
}

std::string where(const Fiber& f);

void run_body(BlockRun& r) {
  try {
    (*r.body)();
    if (!r.current->copies.empty() && r.fault.empty())
      r.fault = where(*r.current) + " exited with " + std::to_string(r.current->copies.size()) +
                " cp.async copies it never waited for (cp.async.wait_all)";
  } catch (const std::exception& e) {
    if (r.fault.empty()) r.fault = std::string("exception in a kernel: ") + e.what();
  } catch (...) {
    if (r.fault.empty()) r.fault = "exception in a kernel";
  }
  r.current->wait = Wait::Done;
}

#ifdef CUDA_EMU_FAST_SWITCH
[[noreturn]] void fiber_entry() {
  BlockRun& r = *g_run;
  run_body(r);
  cuda_emu_switch(&r.current->sp, r.sched_sp);
  std::abort();  // a finished fiber is never resumed
}

void start_fiber(BlockRun&, Fiber& f, char* stack_lo) {
  // The initial frame cuda_emu_switch pops: the control words, six registers, then fiber_entry as the return
  // address, above which a null "return address" leaves the stack as a call would (rsp + 8 aligned to 16).
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack_lo) + kStackBytes) & ~uintptr_t(15);
  auto* p = reinterpret_cast<uint64_t*>(top);
  *--p = 0;
  *--p = reinterpret_cast<uint64_t>(&fiber_entry);
  for (int i = 0; i < 6; ++i) *--p = 0;
  *--p = 0x037F00001F80ull;  // MXCSR (masked exceptions, round to nearest) and the x87 control word
  f.sp = p;
}

void resume(BlockRun& r, Fiber& f) { cuda_emu_switch(&r.sched_sp, f.sp); }

void yield(Wait w) {
  BlockRun& r = *g_run;
  Fiber& f = *r.current;
  f.wait = w;
  cuda_emu_switch(&f.sp, r.sched_sp);
}
#else
void fiber_entry(int) { run_body(*g_run); }  // returns to r.sched through uc_link

void start_fiber(BlockRun& r, Fiber& f, char* stack_lo) {
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stack_lo;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = &r.sched;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_entry), 1, f.linear);
}

void resume(BlockRun& r, Fiber& f) { swapcontext(&r.sched, &f.ctx); }

void yield(Wait w) {
  BlockRun& r = *g_run;
  Fiber& f = *r.current;
  f.wait = w;
  swapcontext(&f.ctx, &r.sched);
}
#endif

BlockRun& running(const char* what) {
  if (g_run == nullptr || g_run->current == nullptr) {
    std::fprintf(stderr, "cuda_emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return *g_run;
}

std::string where(const Fiber& f) {
  return "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," + std::to_string(f.tid.z) +
         ") of block (" + std::to_string(g_block_idx.x) + "," + std::to_string(g_block_idx.y) + "," +
         std::to_string(g_block_idx.z) + ")";
}

// Releases whatever can go on once no fiber can run: whole warps at an exchange, or the block at a barrier.
// Returns false with r.fault set when nothing can (a deadlock on the GPU).
bool release(BlockRun& r) {
  const int n = int(r.fibers.size());
  bool released = false;
  for (int w0 = 0; w0 < n; w0 += 32) {
    const int w1 = std::min(n, w0 + 32);
    unsigned mask = 0;
    bool any = false;
    for (int i = w0; i < w1; ++i)
      if (r.fibers[size_t(i)].wait == Wait::Warp) mask |= r.fibers[size_t(i)].mask, any = true;
    if (!any) continue;
    bool all = true;
    for (int i = w0; i < w1; ++i) {
      const Fiber& f = r.fibers[size_t(i)];
      if (!((mask >> (i - w0)) & 1u)) continue;
      if (f.wait == Wait::Done) {
        r.fault = where(f) + " exited while lanes of its warp wait for it at a warp exchange";
        return false;
      }
      if (f.wait != Wait::Warp) all = false;
    }
    if (all) {
      for (int i = w0; i < w1; ++i)
        if (r.fibers[size_t(i)].wait == Wait::Warp) r.fibers[size_t(i)].wait = Wait::Run;
      released = true;
    }
  }
  if (released) return true;
  int at_barrier = 0, done = 0;
  const Fiber* exited = nullptr;
  const Fiber* at_warp = nullptr;
  for (const Fiber& f : r.fibers) {
    if (f.wait == Wait::Block) ++at_barrier;
    if (f.wait == Wait::Done) ++done, exited = exited ? exited : &f;
    if (f.wait == Wait::Warp) at_warp = at_warp ? at_warp : &f;
  }
  if (at_barrier == n) {
    for (Fiber& f : r.fibers) f.wait = Wait::Run;
    return true;
  }
  if (at_barrier > 0 && exited != nullptr) {
    r.fault = "__syncthreads() reached by " + std::to_string(at_barrier) + " of " + std::to_string(n) +
              " threads while " + std::to_string(done) + " had exited (the first: " + where(*exited) + ")";
  } else if (at_warp != nullptr) {
    r.fault = "deadlock: " + where(*at_warp) + " waits at a warp exchange that lanes of its mask never reach";
  } else {
    r.fault = "deadlock in the block";
  }
  return false;
}

// Runs one block to completion; returns the fault, empty when there is none.
std::string run_block(BlockRun& r, dim3 block) {
  const int n = int(block.x * block.y * block.z);
  r.fibers.resize(size_t(n));
  r.slots.assign(size_t(n), 0);
  r.fault.clear();
  for (int i = 0; i < n; ++i) {
    Fiber& f = r.fibers[size_t(i)];
    f.linear = i;
    f.tid = uint3{unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y)};
    f.wait = Wait::Run;
    f.mask = 0;
    f.copies.clear();
    start_fiber(r, f, stack(size_t(i)));
  }
  r.shared.clear();
  std::vector<int> order(static_cast<size_t>(n));
  for (int phase = 0;; ++phase) {
    // Ascending, then descending; or, with MAGMASR_CUDA_EMU_SHUFFLE=seed, a fresh random order every phase.
    for (int k = 0; k < n; ++k) order[size_t(k)] = (phase & 1) != 0 ? n - 1 - k : k;
    if (shuffle_seed() != 0) std::shuffle(order.begin(), order.end(), shuffle_rng());
    for (int k = 0; k < n; ++k) {
      Fiber& f = r.fibers[size_t(order[size_t(k)])];
      if (f.wait != Wait::Run) continue;
      r.current = &f;
      g_thread_idx = f.tid;
      resume(r, f);
      if (!r.fault.empty()) break;
    }
    r.current = nullptr;
    if (!r.fault.empty()) return r.fault;
    bool all_done = true;
    for (const Fiber& f : r.fibers) all_done = all_done && f.wait == Wait::Done;
    if (all_done) return {};
    if (!release(r)) return r.fault;
  }
}

}  // namespace

void shared_declared(void* storage, size_t bytes) {
  BlockRun& r = running("a shared variable's declaration");
  for (const auto& v : r.shared)
    if (v.first == storage) return;
  std::memset(storage, 0xFF, bytes);
  r.shared.emplace_back(storage, bytes);
}

void syncthreads() {
  running("__syncthreads()");
  yield(Wait::Block);
}

void cp_async(void* dst, const void* src, size_t bytes, size_t src_bytes) {
  BlockRun& r = running("cp.async");
  Fiber& f = *r.current;
  const auto* d = static_cast<const char*>(dst);
  bool in_shared = false;
  for (const auto& v : r.shared) {
    const auto* lo = static_cast<const char*>(v.first);
    in_shared = in_shared || (d >= lo && d + bytes <= lo + v.second);
  }
  std::string bad;
  if (bytes != 4 && bytes != 8 && bytes != 16)
    bad = "a copy of " + std::to_string(bytes) + " bytes (cp.async copies 4, 8 or 16)";
  else if (src_bytes > bytes)
    bad = "a source size of " + std::to_string(src_bytes) + " bytes over the copy's " + std::to_string(bytes);
  else if (!in_shared)
    bad = "a destination outside the block's shared variables";
  else if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 ||
           (src_bytes > 0 && reinterpret_cast<uintptr_t>(src) % bytes != 0))
    bad = "an address not aligned to the copy's " + std::to_string(bytes) + " bytes";
  if (!bad.empty()) {
    r.fault = where(f) + " issued a cp.async with " + bad;
    yield(Wait::Done);
  }
  f.copies.push_back(Fiber::Copy{dst, src, bytes, src_bytes});
}

void cp_async_wait_all() {
  BlockRun& r = running("cp.async.wait_all");
  Fiber& f = *r.current;
  for (const Fiber::Copy& c : f.copies) {
    std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
  f.copies.clear();
}

uint64_t shfl_down(uint64_t bits, unsigned mask, unsigned delta, int width) {
  BlockRun& r = running("__shfl_down_sync()");
  Fiber& f = *r.current;
  const int lane = f.linear % 32, base = f.linear - lane;
  if (!((mask >> lane) & 1u)) {
    r.fault = where(f) + " called __shfl_down_sync with a mask that leaves it out";
    yield(Wait::Warp);
  }
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    r.fault = where(f) + " called __shfl_down_sync with width " + std::to_string(width);
    yield(Wait::Warp);
  }
  f.mask = mask;
  r.slots[size_t(f.linear)] = bits;
  yield(Wait::Warp);  // every lane of the mask has deposited its value
  const int seg_end = lane / width * width + width, src = lane + int(delta);
  uint64_t out = bits;
  if (src < seg_end && base + src < int(r.fibers.size()) && ((mask >> src) & 1u)) out = r.slots[size_t(base + src)];
  yield(Wait::Warp);  // every lane has read before any lane deposits again
  return out;
}

void run_kernel(const char* name, dim3 grid, dim3 block, size_t dynamic_shared_bytes, CUstream_st* /*stream*/,
                const std::function<void()>& body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  std::string bad;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    bad = "grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," + std::to_string(grid.z) + ")";
  else if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    bad = "block (" + std::to_string(block.x) + "," + std::to_string(block.y) + "," + std::to_string(block.z) + ")";
  else if (dynamic_shared_bytes > 0)
    bad = "dynamic shared memory (the emulator has none; magmasr's kernels use static shared memory)";
  if (!bad.empty()) {
    t_launch_failure = std::string(name) + ": invalid launch configuration: " + bad;
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  std::lock_guard<std::mutex> lock(g_kernel_mutex);
  BlockRun r;
  r.body = &body;
  g_run = &r;
  g_grid_dim = grid;
  g_block_dim = block;
  std::string fault;
  for (unsigned z = 0; z < grid.z && fault.empty(); ++z)
    for (unsigned y = 0; y < grid.y && fault.empty(); ++y)
      for (unsigned x = 0; x < grid.x && fault.empty(); ++x) {
        g_block_idx = uint3{x, y, z};
        fault = run_block(r, block);
      }
  g_run = nullptr;
  if (fault.empty()) fault = check_all_guards();
  if (!fault.empty()) {
    t_launch_failure = std::string(name) + ": " + fault;
    fail(cudaErrorLaunchFailure);
  }
}

}  // namespace cuda_emu

using cuda_emu::fail;

// ------------------------------------------------------------------------------------------ runtime API

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "magmasr CUDA emulator (CPU, %d SMs)", cuda_emu::sm_count());
  prop->totalGlobalMem = cuda_emu::total_memory();
  prop->sharedMemPerBlock = cuda_emu::kStaticSharedLimit;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024, prop->maxThreadsDim[1] = 1024, prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff, prop->maxGridSize[1] = 65535, prop->maxGridSize[2] = 65535;
  prop->multiProcessorCount = cuda_emu::sm_count();
  prop->major = 9, prop->minor = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetLastError() {
  const cudaError_t e = cuda_emu::t_last_error;
  cuda_emu::t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return cuda_emu::t_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration:
    case cudaErrorLaunchFailure: return cuda_emu::t_launch_failure.c_str();
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
  }
  return "unknown error";
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(cuda_emu::g_mem_mutex);
  if (bytes > cuda_emu::total_memory() - cuda_emu::g_allocated) return fail(cudaErrorMemoryAllocation);
  char* base = static_cast<char*>(std::aligned_alloc(256, cuda_emu::block_bytes(bytes)));
  if (base == nullptr) return fail(cudaErrorMemoryAllocation);
  char* user = base + cuda_emu::kGuard;
  std::memset(user, 0xFF, bytes);  // NaN in every float: what no kernel wrote is visible
  const cuda_emu::Allocation a{base, bytes};
  cuda_emu::set_guards(user, a);
  cuda_emu::g_allocs.emplace(user, a);
  cuda_emu::g_allocated += bytes;
  *ptr = user;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(cuda_emu::g_mem_mutex);
  auto it = cuda_emu::g_allocs.find(static_cast<char*>(ptr));
  if (it == cuda_emu::g_allocs.end()) return fail(cudaErrorInvalidDevicePointer);
  if (!cuda_emu::guards_intact(it->first, it->second)) {
    std::fprintf(stderr, "cuda_emu: the guard bytes of the device allocation of %zu bytes at %p were overwritten\n",
                 it->second.bytes, ptr);
    std::abort();
  }
  cuda_emu::g_allocated -= it->second.bytes;
  std::free(it->second.base);
  cuda_emu::g_allocs.erase(it);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(cuda_emu::g_mem_mutex);
  *total_bytes = cuda_emu::total_memory();
  *free_bytes = cuda_emu::total_memory() - cuda_emu::g_allocated;
  return cudaSuccess;
}

namespace {

// A device range must lie inside one allocation; a host range must not touch device memory.
bool valid_range(const void* p, size_t bytes, bool on_device) {
  std::lock_guard<std::mutex> lock(cuda_emu::g_mem_mutex);
  const bool inside = cuda_emu::find_alloc(p, bytes) != nullptr;
  return on_device ? inside : !inside;
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  bool dst_dev = false, src_dev = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: dst_dev = true; break;
    case cudaMemcpyDeviceToHost: src_dev = true; break;
    case cudaMemcpyDeviceToDevice: dst_dev = src_dev = true; break;
    case cudaMemcpyDefault: std::memmove(dst, src, bytes); return cudaSuccess;
    default: return fail(cudaErrorInvalidMemcpyDirection);
  }
  if (!valid_range(dst, bytes, dst_dev) || !valid_range(src, bytes, src_dev)) return fail(cudaErrorInvalidValue);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!valid_range(dst, bytes, true)) return fail(cudaErrorInvalidValue);
  std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (stream == nullptr || flags > cudaStreamNonBlocking) return fail(cudaErrorInvalidValue);
  *stream = new CUstream_st{flags};
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream == nullptr) return fail(cudaErrorInvalidResourceHandle);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (event == nullptr) return fail(cudaErrorInvalidValue);
  *event = new CUevent_st{{}, false};
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  event->when = std::chrono::steady_clock::now();
  event->recorded = true;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event == nullptr ? fail(cudaErrorInvalidResourceHandle) : cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return fail(cudaErrorInvalidValue);
  if (start == nullptr || end == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------ cuBLAS

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext{nullptr};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  return mode <= CUBLAS_TF32_TENSOR_OP_MATH ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  return mode == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
  }
  return "unknown error";
}

namespace {

// cuBLAS's argument checks for C[m, n] = alpha op(A) op(B) + beta C, column-major.
bool gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc) {
  if (ta > CUBLAS_OP_C || tb > CUBLAS_OP_C || m < 0 || n < 0 || k < 0) return false;
  const int rows_a = ta == CUBLAS_OP_N ? m : k, rows_b = tb == CUBLAS_OP_N ? k : n;
  return lda >= std::max(1, rows_a) && ldb >= std::max(1, rows_b) && ldc >= std::max(1, m);
}

// The device ranges of one product, checked like the copies: an SGEMM that reads or writes outside device
// memory is a fault, reported as cuBLAS would report a failed kernel.
bool gemm_ranges_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A, int lda,
                    const float* B, int ldb, const float* C, int ldc) {
  const size_t cols_a = size_t(ta == CUBLAS_OP_N ? k : m), cols_b = size_t(tb == CUBLAS_OP_N ? n : k);
  const size_t rows_a = size_t(ta == CUBLAS_OP_N ? m : k), rows_b = size_t(tb == CUBLAS_OP_N ? k : n);
  const auto span = [](size_t rows, size_t cols, int ld) {
    return rows == 0 || cols == 0 ? size_t(0) : ((cols - 1) * size_t(ld) + rows) * sizeof(float);
  };
  const auto ok = [](const float* p, size_t bytes) { return bytes == 0 || valid_range(p, bytes, true); };
  return ok(A, span(rows_a, cols_a, lda)) && ok(B, span(rows_b, cols_b, ldb)) && ok(C, span(size_t(m), size_t(n), ldc));
}

// Column-major C = alpha * op(A) op(B) + beta * C on the CPU convolution's matrix-product kernels: computed as
// row-major T[m, n] with A read in place and op(B) packed, then C(i, j) = alpha * T(i, j) (+ beta * C(i, j)).
// beta = 0 ignores C's contents, as BLAS does.
void host_sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc) {
  const int64_t NR = magmasr::cpu::kWideNR;
  std::vector<float> t(size_t(m) * size_t(n), 0.0f), bp(size_t((n + NR - 1) / NR * NR) * size_t(std::max(k, 1)));
  if (k > 0) {
    // op(B)(l, j): B[l + j * ldb] (N: the transpose of row-major S[j][l]) or B[j + l * ldb] (T: row-major [l][j]).
    magmasr::cpu::pack_panels(k, n, B, tb == CUBLAS_OP_N ? 1 : ldb, tb == CUBLAS_OP_N ? ldb : 1, NR, bp.data());
    // op(A)(i, l): A[i + l * lda] (N) or A[l + i * lda] (T).
    const int64_t rsa = ta == CUBLAS_OP_N ? 1 : lda, csa = ta == CUBLAS_OP_N ? lda : 1;
    magmasr::cpu::gemm_wide(m, n, k, A, rsa, csa, bp.data(), t.data(), n, false);
  }
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      float& c = C[i + size_t(j) * size_t(ldc)];
      const float v = alpha * t[size_t(i) * size_t(n) + size_t(j)];
      c = beta == 0.0f ? v : v + beta * c;
    }
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                           const float* beta, float* C, int ldc) {
  return cublasSgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float* alpha, const float* A, int lda,
                                         long long strideA, const float* B, int ldb, long long strideB,
                                         const float* beta, float* C, int ldc, long long strideC, int batchCount) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!gemm_args_ok(transa, transb, m, n, k, lda, ldb, ldc) || batchCount < 0 || alpha == nullptr || beta == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
  for (int i = 0; i < batchCount; ++i) {
    const float* a = A + i * strideA;
    const float* b = B + i * strideB;
    float* c = C + i * strideC;
    if (!gemm_ranges_ok(transa, transb, m, n, k, a, lda, b, ldb, c, ldc)) return CUBLAS_STATUS_EXECUTION_FAILED;
    host_sgemm(transa, transb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}
