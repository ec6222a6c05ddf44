// magmasr: the whole public C++ API.
#pragma once

#include "magmasr/device.hpp"
#include "magmasr/error.hpp"
#include "magmasr/file.hpp"
#include "magmasr/geometry.hpp"
#include "magmasr/layers.hpp"
#include "magmasr/ops.hpp"
#include "magmasr/optim.hpp"
#include "magmasr/safetensors.hpp"
#include "magmasr/sr.hpp"
#include "magmasr/tensor.hpp"
#include "magmasr/version.hpp"
