// Hyper-parameters of one optimizer step, shared by the CPU and CUDA update kernels.
#pragma once

namespace magmasr {

/// SGD with momentum, PyTorch's rule (dampening 0):
///   g' = g + weight_decay * p
///   v  = momentum * v + g'                 (v unused and may be null when momentum == 0)
///   p -= lr * (nesterov ? g' + momentum * v : v)      (v replaced by g' when momentum == 0)
/// `lr` here is the effective rate: the optimizer's rate times the parameter's multiplier.
struct SgdParams {
  float lr = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

/// Adam (Kingma & Ba) with bias correction; `decoupled` gives AdamW's weight decay:
///   g' = g + weight_decay * p                   (when !decoupled)
///   m  = beta1 * m + (1 - beta1) * g'
///   v  = beta2 * v + (1 - beta2) * g'^2
///   p -= lr * weight_decay * p                  (when decoupled, before the step)
///   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)      with t = step >= 1
struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;
};

}  // namespace magmasr
