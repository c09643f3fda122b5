// MoE Engine: the whole public API.
#pragma once

#include "moe/config.h"
#include "moe/configurable_moe.h"
#include "moe/dtype.h"
#include "moe/errors.h"
#include "moe/tensor.h"
#include "moe/weights.h"
