// Batched image kernels for jaxvis: plain C++17, no Python.
//
// Contract shared by every kernel: images are dense, C-contiguous float32 arrays
// laid out NHWC (batch, height, width, channels). Each kernel reads `in`, writes a
// separate `out` (never in place), follows OpenCV's conventions so results match
// cv2 / NumPy to float rounding, and spreads the rows of the whole batch over
// worker threads (`num_threads` <= 0 means "one per available core"). Inputs are
// validated by the caller (the Python wrapper); these functions assume valid,
// positive sizes and throw only std::bad_alloc (scratch rows), after all
// worker threads have finished.
#pragma once

#include <cstdint>
#include <vector>

namespace jaxvis {

struct Shape {
    std::int64_t batch, height, width, channels;
};

// How `jitter` fills pixels whose source lies outside the image.
enum class BorderMode {
    Wrap,      // periodic, equal to np.roll
    Reflect,   // mirror without repeating the edge (np.pad "reflect", cv::BORDER_REFLECT_101),
               // reflected as often as needed, so any shift is valid
    Constant,  // fill with `cval`
};

// Cores available to this process (affinity-aware on Linux), at least 1.
int available_cores();

// out[b, y, x, c] = in[b, y - dy, x - dx, c] with shifts[b] = (dy, dx); any
// integer shift is valid (wrap is modulo the size, reflect repeats the mirror).
void jitter(const float* in, float* out, const Shape& s, const std::int32_t* shifts,
            BorderMode mode, float cval, int num_threads);

// Normalized box filter, equal to cv::blur(img, Size(ksize_w, ksize_h)) per
// image: anchor at (k / 2), border BORDER_REFLECT_101, even sizes allowed.
void box_blur(const float* in, float* out, const Shape& s, int ksize_h, int ksize_w,
              int num_threads);

// OpenCV's kernel size for a float image when ksize = 0: cvRound(sigma * 8 + 1) | 1.
int gaussian_ksize_for_sigma(double sigma);

// The normalized 1-D Gaussian kernel of cv::getGaussianKernel(ksize, sigma, CV_32F), sigma > 0.
std::vector<float> gaussian_kernel(int ksize, double sigma);

// Separable Gaussian blur, equal to cv::GaussianBlur(img, Size(k, k), sigma) with
// BORDER_REFLECT_101. `ksize` must be odd and positive (resolve 0 with
// gaussian_ksize_for_sigma first).
void gaussian_blur(const float* in, float* out, const Shape& s, double sigma, int ksize,
                   int num_threads);

// Bicubic resize, equal to cv::resize(img, Size(out_w, out_h), 0, 0, INTER_CUBIC):
// Keys kernel with a = -0.75, half-pixel centres, replicated border, and no
// antialiasing when shrinking. `out` has shape (batch, out_h, out_w, channels).
void resize_bicubic(const float* in, float* out, const Shape& s, int out_h, int out_w,
                    int num_threads);

}  // namespace jaxvis
