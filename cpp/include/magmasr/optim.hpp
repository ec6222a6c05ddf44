// Optimizers over a list of parameters. Each step skips frozen parameters, those without a gradient and those
// with lr_mult 0 (their state does not move either), and scales the learning rate by the parameter's lr_mult.
// Like PyTorch, each parameter counts its own updates: Adam's bias correction uses that count, so a layer
// unfrozen after N steps starts with the correction of a first step, not of step N + 1.
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
  /// A rate >= 0 and finite; anything else is a ValueError.
  virtual void set_lr(float lr) = 0;
  /// Calls of step() so far (for schedules and checkpoints).
  int64_t steps() const { return steps_; }
  void set_steps(int64_t s);
  /// Updates each parameter has received (params() order); Adam's bias correction counts these.
  const std::vector<int64_t>& param_steps() const { return param_steps_; }
  void set_param_steps(const std::vector<int64_t>& s);
  const std::vector<Parameter*>& params() const { return params_; }
  /// The optimizer's per-parameter state (momentum buffers, moments), for checkpoints.
  virtual std::vector<Tensor*> state() = 0;

 protected:
  void check_lr(const char* who, float lr) const;
  std::vector<Parameter*> params_;
  int64_t steps_ = 0;
  std::vector<int64_t> param_steps_;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Parameter*> params, const SgdParams& hp);
  void step() override;
  float lr() const override { return hp_.lr; }
  void set_lr(float lr) override {
    check_lr("SGD", lr);
    hp_.lr = lr;
  }
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
  void set_lr(float lr) override {
    check_lr("Adam", lr);
    hp_.lr = lr;
  }
  const AdamParams& hyper() const { return hp_; }
  std::vector<Tensor*> state() override;

 private:
  AdamParams hp_;
  std::vector<Tensor> m_, v_;
};

}  // namespace magmasr
