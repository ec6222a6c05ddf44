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
