#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "magmasr/magmasr.hpp"

using namespace magmasr;

TEST(Tensor, ShapeAndFill) {
  Tensor t = Tensor::full({2, 3, 4}, 1.5f);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.size(-1), 4);
  for (float v : t.to_vector()) EXPECT_EQ(v, 1.5f);
}

TEST(Tensor, HandlesShareStorageAndCloneCopies) {
  Tensor a = Tensor::zeros({4});
  Tensor b = a;  // a handle, not a copy
  b.data()[0] = 3.0f;
  EXPECT_EQ(a.data()[0], 3.0f);
  Tensor c = a.clone();
  c.data()[0] = 5.0f;
  EXPECT_EQ(a.data()[0], 3.0f);
  Tensor r = a.reshape({2, 2});
  EXPECT_EQ(r.data(), a.data());
}

// Host blocks of 1 MiB or more freed are reused for the same size (a hit, the same memory); other sizes and
// small tensors go to the C library; the cache never holds more than its cap, and clear() empties it.
TEST(Tensor, TheHostCacheReusesLargeBlocksOfTheSameSize) {
  host_cache_clear();
  const HostCacheStats before = host_cache_stats();
  if (before.cap < (size_t(8) << 20)) GTEST_SKIP() << "the host cache is off or small (MAGMASR_CPU_CACHE_MB)";
  const Shape big{1, 64, 64, 64};  // 1 MiB of float32
  const void* first = nullptr;
  {
    Tensor a = Tensor::full(big, 1.5f);
    first = a.data();
  }
  EXPECT_EQ(host_cache_stats().held_bytes, size_t(1) << 20);
  {
    Tensor b = Tensor::empty(big);
    EXPECT_EQ(static_cast<const void*>(b.data()), first);  // the block given back, not a fresh one
    EXPECT_EQ(host_cache_stats().hits, before.hits + 1);
    EXPECT_EQ(host_cache_stats().held_bytes, 0u);
    Tensor c = Tensor::empty({1, 64, 64, 65});  // another size: a miss, a new block
    EXPECT_NE(static_cast<const void*>(c.data()), first);
    Tensor small = Tensor::full({16, 16}, 2.0f);  // below 1 MiB: never cached
  }
  EXPECT_EQ(host_cache_stats().blocks, 2u);
  // Far more than the cap freed at once: the cache keeps at most the cap.
  {
    std::vector<Tensor> many;
    const int64_t per = 64;  // MiB per tensor
    for (size_t held = 0; held <= before.cap; held += size_t(per) << 20) many.push_back(Tensor::empty({per << 18}));
  }
  EXPECT_LE(host_cache_stats().held_bytes, before.cap);
  host_cache_clear();
  EXPECT_EQ(host_cache_stats().held_bytes, 0u);
  EXPECT_EQ(host_cache_stats().blocks, 0u);
}

TEST(Tensor, BadShapesThrowValueError) {
  EXPECT_THROW(Tensor::empty({}), ValueError);
  EXPECT_THROW(Tensor::empty({1, 2, 3, 4, 5, 6}), ValueError);
  EXPECT_THROW(Tensor::empty({3, 0}), ValueError);
  EXPECT_THROW(Tensor::zeros({4}).reshape({3}), ValueError);
  EXPECT_THROW(Tensor::from_vector({1, 2, 3}, {2, 2}), ValueError);
}

TEST(Tensor, BorrowRunsReleaseOnce) {
  int released = 0;
  float buf[6] = {1, 2, 3, 4, 5, 6};
  {
    Tensor t = Tensor::borrow(buf, {2, 3}, Device::cpu(), [&] { ++released; });
    Tensor u = t;
    EXPECT_EQ(u.data()[5], 6.0f);
  }
  EXPECT_EQ(released, 1);
}

TEST(Device, ParseAndCudaAvailability) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_THROW(Device::parse("gpu"), ValueError);
  EXPECT_THROW(Device::parse("cuda:x"), ValueError);
  if (!cuda_available()) {
    EXPECT_THROW(Tensor::zeros({2}, Device::cuda(0)), DeviceError);
  }
}

// A default-constructed Tensor has no shape: every method that needs one says the tensor is undefined, instead of
// reporting an empty shape "[]" as if it were one.
TEST(Tensor, UndefinedTensorsAreNamedAsSuchByEveryMethod) {
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no ValueError");
  };
  const auto undefined = [](const std::string& m) { return m.find("undefined") != std::string::npos; };
  Tensor t = Tensor::full({2}, 1.0f);
  const std::string from = message([&] { t.copy_from(Tensor()); });
  EXPECT_TRUE(undefined(from) && from.find("source") != std::string::npos) << from;
  EXPECT_EQ(from.find("[]"), std::string::npos) << from;
  const std::string into = message([&] { Tensor u; u.copy_from(t); });
  EXPECT_TRUE(undefined(into) && into.find("destination") != std::string::npos) << into;
  const std::string reshaped = message([&] { Tensor().reshape({1}); });
  EXPECT_TRUE(undefined(reshaped)) << reshaped;
  EXPECT_EQ(reshaped.find("0 elements"), std::string::npos) << reshaped;
  for (const auto& [what, f] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"clone", [] { Tensor().clone(); }},
           {"to", [] { Tensor().to(Device::cpu()); }},
           {"to_vector", [] { Tensor().to_vector(); }},
           {"fill_", [] { Tensor().fill_(1.0f); }},
           {"size", [] { Tensor().size(0); }},
           {"device", [] { Tensor().device(); }},
           {"data", [] { Tensor().data(); }},
           {"copy_from both", [] { Tensor u; u.copy_from(Tensor()); }}}) {
    const std::string m = message(f);
    EXPECT_TRUE(undefined(m)) << what << ": " << m;
  }
  EXPECT_EQ(t.to_vector(), std::vector<float>({1.0f, 1.0f}));  // the failed copies left it alone
}

// Element counts are checked products: a shape whose count does not fit in 64 bits is refused, never wrapped.
TEST(Tensor, ShapeNumelRefusesCountsThatOverflow) {
  EXPECT_EQ(shape_numel({int64_t(1) << 31, int64_t(1) << 31}), int64_t(1) << 62);
  try {
    shape_numel({int64_t(1) << 32, int64_t(1) << 32});  // 2^64 wraps to 0 unchecked
    ADD_FAILURE() << "no error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("shape_numel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("overflows"), std::string::npos) << e.what();
  }
  EXPECT_THROW(shape_numel({3, int64_t(1) << 62}), ValueError);
}
