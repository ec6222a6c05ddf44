// Layers, Sequential and optimizers through the public C++ API.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>

#include "test_util.hpp"
#include "magmasr/magmasr.hpp"

using namespace magmasr;

namespace {

Tensor random_tensor(const Shape& s, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(size_t(shape_numel(s)));
  for (float& x : v) x = d(rng);
  return Tensor::from_vector(v, s);
}

std::shared_ptr<Sequential> tiny_srcnn(uint64_t seed) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(1, 8, std::vector<int64_t>{5}, std::vector<int64_t>{0}, PadMode::Zeros, true, seed),
         "conv1");
  m->add(std::make_shared<ReLU>(), "relu1");
  m->add(std::make_shared<Conv2d>(8, 4, std::vector<int64_t>{1}, std::vector<int64_t>{0}, PadMode::Zeros, true,
                                  seed + 1),
         "conv2");
  m->add(std::make_shared<ReLU>(), "relu2");
  m->add(std::make_shared<Conv2d>(4, 1, std::vector<int64_t>{3}, std::vector<int64_t>{0}, PadMode::Zeros, true,
                                  seed + 2),
         "conv3");
  return m;
}

}  // namespace

TEST(Layers, SequentialShapesNamesAndSummary) {
  auto m = tiny_srcnn(1);
  EXPECT_EQ(m->output_shape({2, 1, 20, 20}), (Shape{2, 1, 14, 14}));
  auto named = m->named_parameters();
  ASSERT_EQ(named.size(), 6u);
  EXPECT_EQ(named[0].first, "conv1.weight");
  EXPECT_EQ(named[5].first, "conv3.bias");
  EXPECT_EQ(m->num_parameters(), (8 * 25 + 8) + (4 * 8 + 4) + (4 * 9 + 1));
  m->get("conv1")->set_trainable(false);
  const std::string s = m->summary({1, 1, 20, 20});
  EXPECT_NE(s.find("[1, 8, 16, 16]"), std::string::npos) << s;
  EXPECT_NE(s.find("Total params: 281"), std::string::npos) << s;
  EXPECT_NE(s.find("Non-trainable params: 208"), std::string::npos) << s;
  EXPECT_THROW(m->output_shape({1, 2, 20, 20}), ValueError);  // wrong channel count
  EXPECT_THROW(m->add(std::make_shared<ReLU>(), "conv1"), ValueError);
  EXPECT_THROW(m->get("nope"), ValueError);
}

// A network inside itself recursed forever (a stack overflow); a layer used twice kept only its last
// activations, so backward gave wrong gradients. Both are refused, directly and through nesting.
TEST(Layers, SequentialRefusesCyclesAndLayersUsedTwice) {
  auto relu = std::make_shared<ReLU>();
  auto outer = std::make_shared<Sequential>(), inner = std::make_shared<Sequential>();
  outer->add(relu, "r");
  EXPECT_THROW(outer->add(outer, "self"), ValueError);
  EXPECT_THROW(outer->add(relu, "again"), ValueError);
  inner->add(std::make_shared<ReLU>(), "r2");
  outer->add(inner, "inner");
  EXPECT_THROW(inner->add(outer, "cycle"), ValueError);  // outer holds inner
  auto again = std::make_shared<Sequential>();
  again->add(relu, "r");
  EXPECT_THROW(outer->add(again, "nested_again"), ValueError);  // relu is in outer already, through a nesting
  auto other = std::make_shared<Sequential>();
  other->add(relu, "r");  // a layer may belong to several networks, once in each
  EXPECT_EQ(outer->size(), 2u);
  EXPECT_EQ(inner->size(), 1u);
  EXPECT_EQ(other->size(), 1u);
  // A layer added to the nested network after the nesting: add() cannot see the outer network, training refuses.
  inner->add(relu, "r_late");
  const Tensor x = Tensor::full({1, 1, 2, 2}, 1.0f);
  EXPECT_TRUE(test::says(test::value_error_of([&] { outer->forward(x, true); }), "a layer appears twice"));
  EXPECT_EQ(inner->forward(x, true).shape(), x.shape());  // inner alone uses each of its layers once
  EXPECT_EQ(outer->forward(x, false).shape(), x.shape());  // inference keeps nothing for backward
}

TEST(Layers, FrozenLayersComputeNoGradients) {
  std::mt19937 rng(11);
  auto m = tiny_srcnn(2);
  m->get("conv1")->set_trainable(false);
  Tensor x = random_tensor({2, 1, 12, 12}, rng);
  Tensor y = m->forward(x, true);
  Tensor dx = m->backward(Tensor::full(y.shape(), 1.0f), false);
  EXPECT_FALSE(dx.defined());
  auto named = m->named_parameters();
  EXPECT_FALSE(named[0].second->grad.defined());  // conv1 frozen
  EXPECT_TRUE(named[2].second->grad.defined());   // conv2 learns
  EXPECT_TRUE(named[4].second->grad.defined());
  // With every layer frozen nothing is computed at all; with need_dx the input gradient still comes.
  m->set_trainable(false);
  y = m->forward(x, true);
  Tensor dx2 = m->backward(Tensor::full(y.shape(), 1.0f), true);
  ASSERT_TRUE(dx2.defined());
  EXPECT_EQ(dx2.shape(), x.shape());
}

// Sequential runs each convolution followed by a ReLU as one fused pass, in inference and in training: the same
// outputs and gradients, bit for bit, as the layers run one by one (the ReLU's backward from the output the fused
// pass left it).
TEST(Layers, FusedConvReluEqualsTheLayersOneByOne) {
  std::mt19937 rng(12);
  auto m = tiny_srcnn(3);
  const std::vector<std::string> names = {"conv1", "relu1", "conv2", "relu2", "conv3"};
  const Tensor x = random_tensor({2, 1, 15, 13}, rng);
  Tensor h = x;
  for (const std::string& n : names) h = m->get(n)->forward(h, true);
  const std::vector<float> ref = h.to_vector();
  const Tensor dy = random_tensor(h.shape(), rng);
  Tensor g = dy;
  for (auto it = names.rbegin(); it != names.rend(); ++it) g = m->get(*it)->backward(g, true);
  std::vector<std::vector<float>> grads;
  for (auto& [name, p] : m->named_parameters()) grads.push_back(p->grad.to_vector());
  EXPECT_EQ(m->forward(x, false).to_vector(), ref);
  m->clear_cache();  // what backward reads below, the fused training pass must have kept
  EXPECT_EQ(m->forward(x, true).to_vector(), ref);
  EXPECT_EQ(m->backward(dy, true).to_vector(), g.to_vector());
  size_t k = 0;
  for (auto& [name, p] : m->named_parameters()) EXPECT_EQ(p->grad.to_vector(), grads[k++]) << name;
}

// A layer set to ConvAlgo::Winograd runs its three passes by Winograd on the CPU (the plumbing from the layer's
// options to the kernels): its output, input gradient and weight gradient within a few 1e-6 of the direct sums'
// scale but not their bits; its bias gradient is theirs.
TEST(Layers, WinogradLayersTrainCloseToTheDirectSums) {
  std::mt19937 rng(14);
  const Tensor x = random_tensor({3, 16, 14, 13}, rng), w = random_tensor({8, 16, 5, 5}, rng);
  const Tensor b = random_tensor({8}, rng), dy = random_tensor({3, 8, 10, 9}, rng);
  std::vector<std::vector<float>> got[2];
  for (int wino = 0; wino < 2; ++wino) {
    Conv2d conv(16, 8, {5}, {0});
    conv.parameters()[0]->value.copy_from(w), conv.parameters()[1]->value.copy_from(b);
    if (wino) conv.set_algo(ConvAlgo::Winograd);
    const Tensor y = conv.forward(x, true), dx = conv.backward(dy, true);
    got[wino] = {y.to_vector(), dx.to_vector(), conv.parameters()[0]->grad.to_vector(),
                 conv.parameters()[1]->grad.to_vector()};
  }
  for (size_t k = 0; k < 3; ++k) {
    float scale = 0.0f;
    for (float v : got[0][k]) scale = std::max(scale, std::abs(v));
    EXPECT_NE(got[1][k], got[0][k]) << "result " << k << ": not Winograd";
    for (size_t i = 0; i < got[0][k].size(); ++i) ASSERT_NEAR(got[1][k][i], got[0][k][i], 3e-5f * scale) << k;
  }
  EXPECT_EQ(got[1][3], got[0][3]);
}

TEST(Layers, PixelShuffleAndFoldDepthRoundTrip) {
  std::mt19937 rng(13);
  Sequential m;
  m.add(std::make_shared<Conv3d>(1, 4, std::vector<int64_t>{3}, std::vector<int64_t>{0, 1, 1}), "conv");
  m.add(std::make_shared<FoldDepth>(), "fold");
  m.add(std::make_shared<PixelShuffle>(2), "shuffle");
  Tensor x = random_tensor({2, 1, 3, 6, 5}, rng);
  EXPECT_EQ(m.output_shape(x.shape()), (Shape{2, 1, 12, 10}));
  Tensor y = m.forward(x, true);
  EXPECT_EQ(y.shape(), (Shape{2, 1, 12, 10}));
  Tensor dx = m.backward(Tensor::full(y.shape(), 1.0f), true);
  EXPECT_EQ(dx.shape(), x.shape());
}

// End to end: forward, backward and update learn a fixed 3x3 smoothing filter followed by a gain.
TEST(Training, SgdAndAdamReduceTheLoss) {
  for (int use_adam = 0; use_adam < 2; ++use_adam) {
    std::mt19937 rng(21);
    auto m = tiny_srcnn(5);
    // Target: y = 0.5 * box3x3(x) over the valid 14x14 centre of 20x20 inputs (conv 5, 1, 3 -> -6 px).
    auto make_batch = [&](Tensor& x, Tensor& t) {
      x = random_tensor({8, 1, 20, 20}, rng, 0.0f, 1.0f);
      std::vector<float> tv(size_t(8 * 14 * 14));
      const float* xp = x.data();
      for (int n = 0; n < 8; ++n)
        for (int i = 0; i < 14; ++i)
          for (int j = 0; j < 14; ++j) {
            float s = 0;
            for (int a = 0; a < 3; ++a)
              for (int b = 0; b < 3; ++b) s += xp[(n * 20 + i + 2 + a) * 20 + j + 2 + b];
            tv[size_t((n * 14 + i) * 14 + j)] = 0.5f * s / 9.0f;
          }
      t = Tensor::from_vector(tv, {8, 1, 14, 14});
    };
    std::unique_ptr<Optimizer> opt;
    if (use_adam)
      opt = std::make_unique<Adam>(m->parameters(), AdamParams{3e-3f});
    else
      opt = std::make_unique<SGD>(m->parameters(), SgdParams{0.05f, 0.9f, 0.0f, false});
    double first = 0, last = 0;
    for (int step = 0; step < 500; ++step) {
      Tensor x, t;
      make_batch(x, t);
      Tensor y = m->forward(x, true);
      const double loss = ops::mse_loss(y, t);
      if (step < 10) first += loss / 10;
      if (step >= 490) last += loss / 10;
      m->backward(ops::mse_loss_backward(y, t), false);
      opt->step();
    }
    // A broken gradient or update leaves the loss where it started; a working one cuts it by > 10x.
    EXPECT_LT(last, first / 10) << (use_adam ? "Adam" : "SGD") << ": first " << first << ", last " << last;
    EXPECT_EQ(opt->steps(), 500);
  }
}

TEST(Optimizers, LrMultAndFrozenParameters) {
  Parameter a{"a", Tensor::full({3}, 1.0f), Tensor::full({3}, 1.0f), 1.0f, true};
  Parameter b{"b", Tensor::full({3}, 1.0f), Tensor::full({3}, 1.0f), 0.1f, true};
  Parameter c{"c", Tensor::full({3}, 1.0f), Tensor::full({3}, 1.0f), 1.0f, false};
  SGD opt({&a, &b, &c}, SgdParams{0.5f});
  opt.step();
  EXPECT_FLOAT_EQ(a.value.to_vector()[0], 0.5f);
  EXPECT_FLOAT_EQ(b.value.to_vector()[0], 0.95f);
  EXPECT_FLOAT_EQ(c.value.to_vector()[0], 1.0f);
  EXPECT_THROW(SGD({&a}, SgdParams{-1.0f}), ValueError);
  EXPECT_THROW(Adam({}, AdamParams{}), ValueError);
}

TEST(Ops, ArgumentErrors) {
  std::mt19937 rng(1);
  Tensor x = random_tensor({1, 3, 8, 8}, rng), w = random_tensor({4, 2, 3, 3}, rng);
  ops::ConvOptions o;
  EXPECT_THROW(ops::conv(x, w, Tensor(), o), ValueError);  // 3 channels in, weight wants 2
  Tensor w3 = random_tensor({4, 3, 9, 9}, rng);
  EXPECT_THROW(ops::conv(x, w3, Tensor(), o), ValueError);  // kernel larger than input
  Tensor b = random_tensor({5}, rng);
  EXPECT_THROW(ops::conv(x, random_tensor({4, 3, 3, 3}, rng), b, o), ValueError);  // bias size
  EXPECT_THROW(ops::mse_loss(x, random_tensor({1, 3, 8, 7}, rng)), ValueError);
  EXPECT_THROW(ops::pixel_shuffle(x, 2), ValueError);  // 3 channels not divisible by 4
  o.padding = {1, 1, 1};
  EXPECT_THROW(ops::conv(x, random_tensor({4, 3, 3, 3}, rng), Tensor(), o), ValueError);
}

// Enumerators cast from integers out of range were taken for one of the valid values (a PadMode of 7 padded with
// zeros, an algorithm of 9 ran the selector): refused, naming the value.
TEST(Ops, OutOfRangeEnumsAreRefused) {
  const Tensor x = Tensor::full({1, 1, 6, 6}, 0.5f), w = Tensor::full({1, 1, 3, 3}, 0.5f);
  ops::ConvOptions o;
  o.padding = {1};
  o.mode = static_cast<PadMode>(7);
  const std::string mode = test::value_error_of([&] { ops::conv(x, w, Tensor(), o); });
  EXPECT_TRUE(test::says(mode, "padding mode must be PadMode::Zeros (0) or PadMode::Replicate (1), got 7")) << mode;
  EXPECT_TRUE(test::says(test::value_error_of([&] { ops::conv_backward_data(x, w, x.shape(), o); }), "got 7"));
  o.mode = PadMode::Replicate;
  o.algo = static_cast<ConvAlgo>(9);
  const std::string algo = test::value_error_of([&] { ops::conv(x, w, Tensor(), o); });
  EXPECT_TRUE(test::says(algo, "conv algorithm must be one of ConvAlgo's values")) << algo;
  o.algo = static_cast<ConvAlgo>(-1);
  EXPECT_THROW(ops::conv_backward_weight(x, x, w.shape(), true, o), ValueError);
  o.algo = ConvAlgo::Winograd;
  EXPECT_EQ(ops::conv(x, w, Tensor(), o).shape(), x.shape());  // the largest valid value is fine
  EXPECT_TRUE(test::says(test::value_error_of([&] { Conv2d c(1, 1, {3}, {1}, static_cast<PadMode>(2)); }), "got 2"));
  Conv2d conv(1, 1, {3}, {1});
  EXPECT_THROW(conv.set_algo(static_cast<ConvAlgo>(7)), ValueError);
  EXPECT_EQ(conv.algo(), ConvAlgo::Auto);
}

using test::says;
using test::value_error_of;

// Sizes from arguments are multiplied with overflow checks: a padding of 2^62 or channel counts of 2^40 are refused
// as overflows (unchecked, 2 * 2^62 wraps to a negative size and the products of channels wrap around).
TEST(Ops, HugeSizesAreOverflowErrorsNotWrappedSizes) {
  const Tensor x = Tensor::full({1, 1, 8, 8}, 0.5f), w = Tensor::full({1, 1, 3, 3}, 0.5f);
  ops::ConvOptions o;
  o.padding = {int64_t(1) << 62};
  const std::string pad = value_error_of([&] { ops::conv(x, w, Tensor(), o); });
  EXPECT_TRUE(says(pad, "convolution geometry") && says(pad, "overflows")) << pad;

  ConvGeom g;
  g.H = g.W = 8;
  g.kH = g.kW = 3;
  g.pW = std::numeric_limits<int64_t>::max() / 2 + 1;
  EXPECT_TRUE(says(value_error_of([&] { g.validate(); }), "overflows"));
  g.pW = 1;
  g.validate();  // the same geometry with a sane padding is fine
  EXPECT_EQ(g.oW(), 8);
  g.H = g.W = int64_t(1) << 30;  // fits, but the output (2^60 elements) is beyond any machine
  EXPECT_TRUE(says(value_error_of([&] { g.validate(); }), "more than 2^48"));

  const int64_t big = int64_t(1) << 40;
  const std::string conv = value_error_of([&] { Conv2d c(big, big, {3}, {1}); });
  EXPECT_TRUE(says(conv, "Conv2d 1099511627776 -> 1099511627776 channels: weight shape")) << conv;
  const std::string wrap = value_error_of([&] { Conv2d c(int64_t(1) << 32, int64_t(1) << 32, {1}, {0}); });
  EXPECT_TRUE(says(wrap, "channels: weight shape")) << wrap;  // 2^64 weights: a count of 0 unchecked
  // A huge padding is caught when the layer first sees an input.
  Conv2d padded(1, 1, {3}, {int64_t(1) << 62});
  EXPECT_TRUE(says(value_error_of([&] { padded.output_shape({1, 1, 8, 8}); }), "overflows"));
}
