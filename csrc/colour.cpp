#include "colour.hpp"

#include "cpu_features.hpp"

#include <algorithm>
#include <cstring>

namespace jaxvis {
namespace {

using i64 = std::int64_t;

// e^x for the sigmoid, written out so the loops vectorize: std::exp is a libm call that the
// compiler vectorizes only under -ffast-math, which the extension is not built with. Cephes'
// expf: e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2, e^r by a degree-6 polynomial,
// 2^n set in the exponent bits (within ~2 ulp of std::exp; the tests compare against jax.nn.sigmoid).
// n is rounded by adding and subtracting 1.5 * 2^23 (exact for |x / ln 2| < 2^22): std::floor is a
// libm call on baseline x86-64. This file is compiled with -fno-trapping-math (CMakeLists.txt):
// otherwise GCC may not if-convert the clamp below, and no loop that calls this vectorizes.
inline float exp_vectorizable(float x) {
    constexpr float kRound = 12582912.0f;      // 1.5 * 2^23
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // keeps 2^n a normal float
    const float n = (x * 1.44269504088896341f + kRound) - kRound;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;                      // x - n ln 2, in two parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float er = p * r * r + r + 1.0f;
    const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
    float two_to_n;
    std::memcpy(&two_to_n, &bits, sizeof two_to_n);
    return er * two_to_n;
}

inline void colour_sigmoid_body(const float* __restrict__ latent, const float* colour, float* __restrict__ rgb, i64 n) {
    const float* l0 = latent;
    const float* l1 = latent + n;
    const float* l2 = latent + 2 * n;
    const float m00 = colour[0], m01 = colour[1], m02 = colour[2];
    const float m10 = colour[3], m11 = colour[4], m12 = colour[5];
    const float m20 = colour[6], m21 = colour[7], m22 = colour[8];
    for (i64 p = 0; p < n; ++p) {
        const float r = m00 * l0[p] + m01 * l1[p] + m02 * l2[p];
        const float g = m10 * l0[p] + m11 * l1[p] + m12 * l2[p];
        const float b = m20 * l0[p] + m21 * l1[p] + m22 * l2[p];
        rgb[3 * p] = 1.0f / (1.0f + exp_vectorizable(-r));
        rgb[3 * p + 1] = 1.0f / (1.0f + exp_vectorizable(-g));
        rgb[3 * p + 2] = 1.0f / (1.0f + exp_vectorizable(-b));
    }
}

inline void colour_sigmoid_adjoint_body(const float* __restrict__ g, const float* __restrict__ rgb, const float* colour,
                                        float* __restrict__ grad_latent, i64 n) {
    float* l0 = grad_latent;
    float* l1 = grad_latent + n;
    float* l2 = grad_latent + 2 * n;
    const float m00 = colour[0], m01 = colour[1], m02 = colour[2];
    const float m10 = colour[3], m11 = colour[4], m12 = colour[5];
    const float m20 = colour[6], m21 = colour[7], m22 = colour[8];
    for (i64 p = 0; p < n; ++p) {
        const float yr = rgb[3 * p], yg = rgb[3 * p + 1], yb = rgb[3 * p + 2];
        const float dr = g[3 * p] * (yr * (1.0f - yr));
        const float dg = g[3 * p + 1] * (yg * (1.0f - yg));
        const float db = g[3 * p + 2] * (yb * (1.0f - yb));
        l0[p] = m00 * dr + m10 * dg + m20 * db;
        l1[p] = m01 * dr + m11 * dg + m21 * db;
        l2[p] = m02 * dr + m12 * dg + m22 * db;
    }
}

void colour_sigmoid_baseline(const float* latent, const float* colour, float* rgb, i64 n) {
    colour_sigmoid_body(latent, colour, rgb, n);
}
void colour_sigmoid_adjoint_baseline(const float* g, const float* rgb, const float* colour, float* grad_latent, i64 n) {
    colour_sigmoid_adjoint_body(g, rgb, colour, grad_latent, n);
}

// Also compiled for AVX2 + FMA and picked at run time, as the DFT's butterflies are (spectral.cpp).
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void colour_sigmoid_avx2(const float* latent, const float* colour, float* rgb, i64 n) {
    colour_sigmoid_body(latent, colour, rgb, n);
}
__attribute__((target("avx2,fma"))) void colour_sigmoid_adjoint_avx2(const float* g, const float* rgb, const float* colour,
                                                                    float* grad_latent, i64 n) {
    colour_sigmoid_adjoint_body(g, rgb, colour, grad_latent, n);
}
#endif

}  // namespace

void colour_sigmoid(const float* latent, const float* colour, float* rgb, i64 n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx2_fma()) return colour_sigmoid_avx2(latent, colour, rgb, n);
#endif
    colour_sigmoid_baseline(latent, colour, rgb, n);
}

void colour_sigmoid_adjoint(const float* g, const float* rgb, const float* colour, float* grad_latent, i64 n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx2_fma()) return colour_sigmoid_adjoint_avx2(g, rgb, colour, grad_latent, n);
#endif
    colour_sigmoid_adjoint_baseline(g, rgb, colour, grad_latent, n);
}

}  // namespace jaxvis
