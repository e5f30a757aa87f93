// The FFT parameterization's pixel-wise tail, fused into its C++ custom call: decorrelated colour
// -> RGB (a 3x3 matrix) and the sigmoid to [0, 1], and the transpose of both for the gradient.
//
// Why here: as XLA ops between the C++ inverse DFT and the warp they are two more passes over the
// batch, after the DFT's output has left the cache (0.5 ms forward and 0.5 ms backward per 128 px
// step of 16 images); fused, each image is mixed while its three latent planes are still in L2.
#pragma once

#include <cstdint>

namespace jaxvis {

// rgb[3 p + c] = sigmoid(sum_k colour[c][k] * latent[k][p]) for p < n; latent holds 3 planes of n.
void colour_sigmoid(const float* latent, const float* colour, float* rgb, std::int64_t n);

// Its transpose at rgb (the forward's output): grad_latent[k][p] = sum_c colour[c][k] *
// g[3 p + c] * rgb[3 p + c] * (1 - rgb[3 p + c]).
void colour_sigmoid_adjoint(const float* g, const float* rgb, const float* colour, float* grad_latent,
                            std::int64_t n);

}  // namespace jaxvis
