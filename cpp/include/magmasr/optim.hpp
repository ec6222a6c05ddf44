// Optimizers over a list of parameters. Each step skips frozen parameters and those without a gradient,
// and scales the learning rate by the parameter's lr_mult.
#pragma once

#include <cstdint>
#include <vector>

#include "magmasr/layers.hpp"
#include "magmasr/optim_params.hpp"

namespace magmasr {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Parameter*> params);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  /// Sets every gradient to zero.
  void zero_grad();
  virtual float lr() const = 0;
  virtual void set_lr(float lr) = 0;
  int64_t steps() const { return steps_; }
  void set_steps(int64_t s) { steps_ = s; }
  const std::vector<Parameter*>& params() const { return params_; }
  /// The optimizer's per-parameter state (momentum buffers, moments), for checkpoints.
  virtual std::vector<Tensor*> state() = 0;

 protected:
  std::vector<Parameter*> params_;
  int64_t steps_ = 0;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Parameter*> params, const SgdParams& hp);
  void step() override;
  float lr() const override { return hp_.lr; }
  void set_lr(float lr) override { hp_.lr = lr; }
  const SgdParams& hyper() const { return hp_; }
  std::vector<Tensor*> state() override;

 private:
  SgdParams hp_;
  std::vector<Tensor> velocity_;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Parameter*> params, const AdamParams& hp);
  void step() override;
  float lr() const override { return hp_.lr; }
  void set_lr(float lr) override { hp_.lr = lr; }
  const AdamParams& hyper() const { return hp_; }
  std::vector<Tensor*> state() override;

 private:
  AdamParams hp_;
  std::vector<Tensor> m_, v_;
};

}  // namespace magmasr
