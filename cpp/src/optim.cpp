#include "magmasr/optim.hpp"

#include <cmath>

#include "magmasr/error.hpp"
#include "magmasr/ops.hpp"

namespace magmasr {
namespace {
bool updatable(const Parameter* p) { return p->trainable && p->grad.defined() && p->lr_mult != 0.0f; }

// State tensors follow their parameter's device and shape (a model moved after the optimizer was made).
void match(Tensor& state, const Parameter* p) {
  if (!state.defined() || state.shape() != p->value.shape())
    state = Tensor::zeros(p->value.shape(), p->value.device());
  else if (state.device() != p->value.device())
    state = state.to(p->value.device());
}
}  // namespace

Optimizer::Optimizer(std::vector<Parameter*> params)
    : params_(std::move(params)), param_steps_(params_.size(), 0) {
  MAGMASR_REQUIRE(!params_.empty(), ValueError, "optimizer: no parameters given");
  for (const Parameter* p : params_) MAGMASR_REQUIRE(p != nullptr, ValueError, "optimizer: null parameter");
}

void Optimizer::check_lr(const char* who, float lr) const {
  MAGMASR_REQUIRE(lr >= 0.0f && std::isfinite(lr), ValueError, who, ": lr must be >= 0 and finite, got ", lr);
}

void Optimizer::set_steps(int64_t s) {
  MAGMASR_REQUIRE(s >= 0, ValueError, "optimizer: steps must be >= 0, got ", s);
  steps_ = s;
}

void Optimizer::set_param_steps(const std::vector<int64_t>& s) {
  MAGMASR_REQUIRE(s.size() == params_.size(), ValueError, "optimizer: param_steps needs one count per parameter (",
                  params_.size(), "), got ", s.size());
  for (const int64_t v : s) MAGMASR_REQUIRE(v >= 0, ValueError, "optimizer: param_steps must be >= 0, got ", v);
  param_steps_ = s;
}

void Optimizer::zero_grad() {
  for (Parameter* p : params_)
    if (p->grad.defined()) p->grad.fill_(0.0f);
}

SGD::SGD(std::vector<Parameter*> params, const SgdParams& hp)
    : Optimizer(std::move(params)), hp_(hp), velocity_(params_.size()) {
  check_lr("SGD", hp.lr);
  MAGMASR_REQUIRE(hp.momentum >= 0.0f && hp.momentum < 1.0f, ValueError, "SGD: momentum must be in [0, 1), got ",
                  hp.momentum);
  MAGMASR_REQUIRE(hp.weight_decay >= 0.0f, ValueError, "SGD: weight_decay must be >= 0, got ", hp.weight_decay);
  MAGMASR_REQUIRE(!hp.nesterov || hp.momentum > 0.0f, ValueError, "SGD: nesterov needs a momentum > 0");
}

void SGD::step() {
  ++steps_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    if (!updatable(p)) continue;
    SgdParams hp = hp_;
    hp.lr = hp_.lr * p->lr_mult;
    if (hp.momentum != 0.0f) match(velocity_[i], p);
    ops::sgd_update(p->value, p->grad, velocity_[i], hp);
    ++param_steps_[i];
  }
}

std::vector<Tensor*> SGD::state() {
  std::vector<Tensor*> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    match(velocity_[i], params_[i]);
    out.push_back(&velocity_[i]);
  }
  return out;
}

Adam::Adam(std::vector<Parameter*> params, const AdamParams& hp)
    : Optimizer(std::move(params)), hp_(hp), m_(params_.size()), v_(params_.size()) {
  check_lr("Adam", hp.lr);
  MAGMASR_REQUIRE(hp.beta1 >= 0.0f && hp.beta1 < 1.0f && hp.beta2 >= 0.0f && hp.beta2 < 1.0f, ValueError,
                  "Adam: betas must be in [0, 1), got ", hp.beta1, ", ", hp.beta2);
  MAGMASR_REQUIRE(hp.eps > 0.0f, ValueError, "Adam: eps must be > 0, got ", hp.eps);
  MAGMASR_REQUIRE(hp.weight_decay >= 0.0f, ValueError, "Adam: weight_decay must be >= 0, got ", hp.weight_decay);
}

void Adam::step() {
  ++steps_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    if (!updatable(p)) continue;
    AdamParams hp = hp_;
    hp.lr = hp_.lr * p->lr_mult;
    match(m_[i], p);
    match(v_[i], p);
    ops::adam_update(p->value, p->grad, m_[i], v_[i], hp, ++param_steps_[i]);
  }
}

std::vector<Tensor*> Adam::state() {
  std::vector<Tensor*> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    match(m_[i], params_[i]);
    match(v_[i], params_[i]);
    out.push_back(&m_[i]);
    out.push_back(&v_[i]);
  }
  return out;
}

}  // namespace magmasr
