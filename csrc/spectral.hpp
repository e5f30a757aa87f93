// The FFT image parameterization's 2-D real inverse DFT and its adjoint, one channel plane at a time.
//
// Why by hand: the only FFT inside the jitted step is XLA's (DUCC), which XLA CPU runs on one thread
// inside a loop and on cache-cold buffers (the whole batch at once, after the network has streamed
// through the cache): 2.5-3.7 ms forward + 1.3 ms backward per 128 px step of 16 images, against
// ~1.1 ms for the same transforms warm. No FFT library joins the build cheaply (PyPI's ducc0 sdist
// did not build here; MKL would add hundreds of MB), so the transform is written here: each
// plane is transformed on its own in L2-sized scratch, planes spread over the cores; tests compare
// both directions with jnp.fft.irfft2 and its autodiff transpose.
//
// Algorithm: mixed-radix decimation in time on split-complex rows (radix 4, 2 and 3 butterflies;
// other factors through a generic O(r^2) one, which is why jaxvis uses it for 7-smooth sizes only):
// an FFT "along the outer axis" of an [n][m] array transforms every column at once, so the inner
// loops run over m contiguous floats and vectorize. The H-axis pass works on [H][W/2+1]; the W-axis
// pass works on [W][ceil(H/2)], two real output rows per complex transform (real and imaginary part).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace jaxvis {

// Twiddles and the input order of one length-n DFT (sign +1: inverse, unnormalized; -1: forward).
struct DftPlan {
    int n = 0;
    int sign = 1;
    std::vector<int> radices;        // stage by stage, the first stage's first
    std::vector<int> load_position;  // natural index i is loaded to row load_position[i]
    std::vector<std::vector<float>> twiddles;        // per stage: (re, im) of w^(q j), [L][r - 1][2]
    std::vector<std::vector<float>> root_re, root_im;        // per stage: [r * r], e^(sign 2 pi i p q / r)
};

// A cached plan (built once per (n, sign), thread-safe).
std::shared_ptr<const DftPlan> dft_plan(int n, int sign);

// DFT along the outer axis of rows re/im [n][m], in place; the rows must already be in the plan's
// load order (row load_position[i] holds natural element i).
void dft_rows(const DftPlan& plan, float* re, float* im, std::int64_t m);

// Scratch for one plane of size height x width (reused across the planes a worker takes).
struct SpectralScratch {
    std::vector<float> a_re, a_im, b_re, b_im, c_re, c_im;  // the passes' arrays, and transposes' staging
    std::vector<float> zero;                                // a row of zeros (an odd height's last pair)
    void reserve(std::int64_t height, std::int64_t width);
};

// One plane: out[h * out_stride_row + w * out_stride_col] = sum over frequencies of
// weights[f] * (pairs[f][0] + i pairs[f][1]) * e^(+2 pi i (h fy / H + w fx / W)), the Hermitian
// extension over fx understood, the imaginary parts of the fx = 0 and fx = W/2 columns (after the
// H-axis pass) ignored, as numpy's irfft2 does, without its 1 / (H W). pairs: [H][W/2+1][2].
void inverse_real_plane(const float* pairs, const float* weights, std::int64_t height, std::int64_t width,
                        float* out, std::int64_t out_stride_row, std::int64_t out_stride_col,
                        SpectralScratch& scratch);

// Its exact transpose: grad_pairs[H][W/2+1][2] from g[h * g_stride_row + w * g_stride_col].
void inverse_real_plane_adjoint(const float* g, std::int64_t g_stride_row, std::int64_t g_stride_col,
                                const float* weights, std::int64_t height, std::int64_t width,
                                float* grad_pairs, SpectralScratch& scratch);

}  // namespace jaxvis
