#include <gtest/gtest.h>

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
