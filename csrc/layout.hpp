// Conv weight layouts: torch / ONNX OIHW kernels into the HWIO layout jaxvis's convs use.
#pragma once

#include <cstdint>

namespace jaxvis {

// out[k, i, o] = in[o, i, k] for float32 `in` [O, I, K] (K = kh * kw taps), `out` [K, I, O];
// the arrays must not overlap. Spread over `num_threads` (0: all cores).
void oihw_to_hwio(const float* in, float* out, std::int64_t o, std::int64_t i, std::int64_t k, int num_threads);

}  // namespace jaxvis
