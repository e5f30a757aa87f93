// Batched NHWC float32 image kernels; see image_kernels.hpp for the contract.
//
// Layout of the work: every kernel produces its output one row at a time, so the
// B * H_out output rows of the whole batch form one range, cut into contiguous
// chunks that worker threads (one per core) take from a shared counter. A big
// batch is therefore split by images and a single large photo by rows, with the
// same code. Separable filters keep a small ring of horizontally filtered rows,
// so each source row is filtered once per chunk (plus k - 1 halo rows where a
// chunk starts); bicubic resize does the same with a ring of 4 rows.
#include "image_kernels.hpp"

#include "cpu_features.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define JAXVIS_X86_DISPATCH 1
#define JAXVIS_INLINE inline __attribute__((always_inline))
#else
#define JAXVIS_X86_DISPATCH 0
#define JAXVIS_INLINE inline
#endif

namespace jaxvis {
namespace {

using i64 = std::int64_t;

// Index of p in [0, n) under BORDER_REFLECT_101, repeated as often as needed.
inline i64 reflect101(i64 p, i64 n) {
    if (n == 1) return 0;
    const i64 period = 2 * n - 2;
    p = (p < 0 ? -p : p) % period;
    return p < n ? p : period - p;
}

inline i64 wrap_index(i64 p, i64 n) {
    p %= n;
    return p < 0 ? p + n : p;
}

// ---------------------------------------------------------------- row arithmetic

// d[j] = sum_i w[i] * s[i][j] for j < n: the inner loop of every filter here.
// Taps are taken four at a time so d is read and written once per four taps.
template <int G, bool ACC>
JAXVIS_INLINE void taps_pass(float* __restrict d, const float* const* s, const float* w, i64 n) {
    const float* __restrict s0 = s[0];
    const float* __restrict s1 = s[G > 1 ? 1 : 0];
    const float* __restrict s2 = s[G > 2 ? 2 : 0];
    const float* __restrict s3 = s[G > 3 ? 3 : 0];
    const float w0 = w[0], w1 = G > 1 ? w[1] : 0.f, w2 = G > 2 ? w[2] : 0.f, w3 = G > 3 ? w[3] : 0.f;
    for (i64 j = 0; j < n; ++j) {
        float v = w0 * s0[j];
        if (G > 1) v += w1 * s1[j];
        if (G > 2) v += w2 * s2[j];
        if (G > 3) v += w3 * s3[j];
        d[j] = ACC ? d[j] + v : v;
    }
}

JAXVIS_INLINE void weighted_sum_body(float* d, const float* const* s, const float* w, i64 taps, i64 n) {
    for (i64 i = 0; i < taps; i += 4) {
        const i64 g = std::min<i64>(4, taps - i);
        const bool acc = i > 0;
        if (g == 4) acc ? taps_pass<4, true>(d, s + i, w + i, n) : taps_pass<4, false>(d, s + i, w + i, n);
        else if (g == 3) acc ? taps_pass<3, true>(d, s + i, w + i, n) : taps_pass<3, false>(d, s + i, w + i, n);
        else if (g == 2) acc ? taps_pass<2, true>(d, s + i, w + i, n) : taps_pass<2, false>(d, s + i, w + i, n);
        else acc ? taps_pass<1, true>(d, s + i, w + i, n) : taps_pass<1, false>(d, s + i, w + i, n);
    }
}

using WeightedSumFn = void (*)(float*, const float* const*, const float*, i64, i64);

void weighted_sum_generic(float* d, const float* const* s, const float* w, i64 taps, i64 n) {
    weighted_sum_body(d, s, w, taps, n);
}

#if JAXVIS_X86_DISPATCH
// The same loops compiled for AVX2 + FMA, chosen at run time when the CPU has
// them; the extension itself stays built for baseline x86-64 (no -march=native).
__attribute__((target("avx2,fma"))) void weighted_sum_avx2(float* d, const float* const* s, const float* w,
                                                          i64 taps, i64 n) {
    weighted_sum_body(d, s, w, taps, n);
}
#endif

// JAXVIS_NATIVE_NO_AVX2=1 in the environment forces the baseline loops (for tests).
WeightedSumFn pick_weighted_sum() {
#if JAXVIS_X86_DISPATCH
    if (use_avx2_fma()) return weighted_sum_avx2;
#endif
    return weighted_sum_generic;
}

const WeightedSumFn weighted_sum = pick_weighted_sum();

// ---------------------------------------------------------------- separable filter

// out = ky (vertical) * kx (horizontal) * in, BORDER_REFLECT_101, anchors ax, ay.
void separable_filter(const float* in, float* out, const Shape& s, const std::vector<float>& kx,
                      int ax, const std::vector<float>& ky, int ay, int num_threads) {
    const i64 H = s.height, W = s.width, C = s.channels, row_len = W * C;
    const i64 kw = static_cast<i64>(kx.size()), kh = static_cast<i64>(ky.size());

    parallel_rows(s.batch, H, row_len, num_threads, [&](i64 b, i64 y0, i64 y1) {
        const float* img = in + b * H * row_len;
        float* dst = out + b * H * row_len;
        std::vector<float> pad(static_cast<size_t>((W + kw - 1) * C));
        std::vector<float> ring(static_cast<size_t>(kh * row_len));
        std::vector<i64> tag(static_cast<size_t>(kh), INT64_MIN);
        std::vector<const float*> rows(static_cast<size_t>(kh));

        // Horizontal pass of source row `sy` into `dst_row`.
        std::vector<const float*> taps(static_cast<size_t>(kw));
        auto filter_row = [&](i64 sy, float* dst_row) {
            const float* src = img + sy * row_len;
            float* p = pad.data();
            for (i64 px = 0; px < ax; ++px)
                std::memcpy(p + px * C, src + reflect101(px - ax, W) * C, C * sizeof(float));
            std::memcpy(p + ax * C, src, row_len * sizeof(float));
            for (i64 px = ax + W; px < W + kw - 1; ++px)
                std::memcpy(p + px * C, src + reflect101(px - ax, W) * C, C * sizeof(float));
            for (i64 i = 0; i < kw; ++i) taps[static_cast<size_t>(i)] = p + i * C;
            weighted_sum(dst_row, taps.data(), kx.data(), kw, row_len);
        };

        for (i64 y = y0; y < y1; ++y) {
            // Padded rows y - ay .. y - ay + kh - 1; ring slot = padded row mod kh.
            for (i64 i = 0; i < kh; ++i) {
                const i64 pr = y - ay + i;
                const i64 slot = wrap_index(pr, kh);
                float* r = ring.data() + slot * row_len;
                if (tag[static_cast<size_t>(slot)] != pr) {
                    filter_row(reflect101(pr, H), r);
                    tag[static_cast<size_t>(slot)] = pr;
                }
                rows[static_cast<size_t>(i)] = r;
            }
            weighted_sum(dst + y * row_len, rows.data(), ky.data(), kh, row_len);
        }
    });
}

// ---------------------------------------------------------------- bicubic resize

// Keys cubic weights (a = -0.75) for the 4 taps around a sample at fraction x in
// [0, 1), with OpenCV's formula, evaluated in double as OpenCV 5 does. (OpenCV 4
// rounded the sample position to float first; its results differ from these by
// up to ~4e-5 at coordinates in the hundreds.)
inline void cubic_coeffs(double x, float* c) {
    const double A = -0.75;
    const double c0 = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
    const double c1 = ((A + 2) * x - (A + 3)) * x * x + 1;
    const double c2 = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
    c[0] = static_cast<float>(c0);
    c[1] = static_cast<float>(c1);
    c[2] = static_cast<float>(c2);
    c[3] = static_cast<float>(1.0 - c0 - c1 - c2);
}

// For each output coordinate d: the first of its 4 source taps and their weights.
// Half-pixel centres: the sample sits at (d + 0.5) * (in / out) - 0.5 in the source.
void cubic_table(i64 in_size, i64 out_size, std::vector<i64>& start, std::vector<float>& w) {
    const double scale = 1.0 / (static_cast<double>(out_size) / static_cast<double>(in_size));
    start.resize(static_cast<size_t>(out_size));
    w.resize(static_cast<size_t>(out_size * 4));
    for (i64 d = 0; d < out_size; ++d) {
        const double f = (d + 0.5) * scale - 0.5;
        const double fl = std::floor(f);
        start[static_cast<size_t>(d)] = static_cast<i64>(fl) - 1;
        cubic_coeffs(f - fl, w.data() + d * 4);
    }
}

template <int CN>
void hresize_row(const float* __restrict src, float* __restrict dst, i64 out_w, i64 C,
                 const i64* __restrict xofs, const float* __restrict alpha) {
    const i64 cn = CN > 0 ? CN : C;
    for (i64 dx = 0; dx < out_w; ++dx) {
        const i64* o = xofs + dx * 4;
        const float* a = alpha + dx * 4;
        const float *s0 = src + o[0], *s1 = src + o[1], *s2 = src + o[2], *s3 = src + o[3];
        float* d = dst + dx * cn;
        for (i64 c = 0; c < cn; ++c) d[c] = s0[c] * a[0] + s1[c] * a[1] + s2[c] * a[2] + s3[c] * a[3];
    }
}

}  // namespace

int available_cores() {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
}

// ---------------------------------------------------------------- jitter

void jitter(const float* in, float* out, const Shape& s, const std::int32_t* shifts,
            BorderMode mode, float cval, int num_threads) {
    const i64 H = s.height, W = s.width, C = s.channels, row_len = W * C;
    parallel_rows(s.batch, H, row_len, num_threads, [&](i64 b, i64 y0, i64 y1) {
        const float* img = in + b * H * row_len;
        float* dst = out + b * H * row_len;
        const i64 dy = shifts[2 * b], dx = shifts[2 * b + 1];
        // Output columns [x0, x1) read source columns x - dx inside the image.
        const i64 x0 = std::clamp<i64>(dx, 0, W), x1 = std::clamp<i64>(W + dx, 0, W);
        const i64 wrap_dx = wrap_index(dx, W);
        for (i64 y = y0; y < y1; ++y) {
            float* d = dst + y * row_len;
            const i64 sy_raw = y - dy;
            if (mode == BorderMode::Constant && (sy_raw < 0 || sy_raw >= H)) {
                std::fill(d, d + row_len, cval);
                continue;
            }
            const i64 sy = mode == BorderMode::Wrap ? wrap_index(sy_raw, H) : reflect101(sy_raw, H);
            const float* src = img + sy * row_len;
            if (mode == BorderMode::Wrap) {  // out[x] = in[(x - dx) mod W]: two blocks
                std::memcpy(d + wrap_dx * C, src, (W - wrap_dx) * C * sizeof(float));
                std::memcpy(d, src + (W - wrap_dx) * C, wrap_dx * C * sizeof(float));
                continue;
            }
            if (x1 > x0) std::memcpy(d + x0 * C, src + (x0 - dx) * C, (x1 - x0) * C * sizeof(float));
            auto edge = [&](i64 xa, i64 xb) {
                for (i64 x = xa; x < xb; ++x) {
                    if (mode == BorderMode::Constant)
                        std::fill(d + x * C, d + (x + 1) * C, cval);
                    else
                        std::memcpy(d + x * C, src + reflect101(x - dx, W) * C, C * sizeof(float));
                }
            };
            edge(0, std::min(x0, W));
            edge(std::max(x1, x0), W);
        }
    });
}

// ---------------------------------------------------------------- blurs

void box_blur(const float* in, float* out, const Shape& s, int ksize_h, int ksize_w,
              int num_threads) {
    const std::vector<float> kx(static_cast<size_t>(ksize_w), 1.0f);
    const std::vector<float> ky(static_cast<size_t>(ksize_h),
                                static_cast<float>(1.0 / (static_cast<double>(ksize_w) * ksize_h)));
    separable_filter(in, out, s, kx, ksize_w / 2, ky, ksize_h / 2, num_threads);
}

int gaussian_ksize_for_sigma(double sigma) {
    // cvRound is round-half-to-even; the "| 1" makes the tie direction irrelevant.
    return static_cast<int>(std::lrint(sigma * 4 * 2 + 1)) | 1;
}

std::vector<float> gaussian_kernel(int ksize, double sigma) {
    std::vector<float> k(static_cast<size_t>(ksize));
    const double scale2x = -0.5 / (sigma * sigma);
    double sum = 0;
    for (int i = 0; i < ksize; ++i) {
        const double x = i - (ksize - 1) * 0.5;
        k[static_cast<size_t>(i)] = static_cast<float>(std::exp(scale2x * x * x));
        sum += k[static_cast<size_t>(i)];
    }
    sum = 1.0 / sum;
    for (auto& v : k) v = static_cast<float>(v * sum);
    return k;
}

void gaussian_blur(const float* in, float* out, const Shape& s, double sigma, int ksize,
                   int num_threads) {
    const std::vector<float> k = gaussian_kernel(ksize, sigma);
    separable_filter(in, out, s, k, ksize / 2, k, ksize / 2, num_threads);
}

// ---------------------------------------------------------------- resize

void resize_bicubic(const float* in, float* out, const Shape& s, int out_h, int out_w,
                    int num_threads) {
    const i64 H = s.height, W = s.width, C = s.channels;
    const i64 OH = out_h, OW = out_w, in_row = W * C, out_row = OW * C;

    std::vector<i64> xstart, ystart;
    std::vector<float> alpha, beta;
    cubic_table(W, OW, xstart, alpha);
    cubic_table(H, OH, ystart, beta);
    // Column taps clamped to the image (BORDER_REPLICATE), stored as float offsets.
    std::vector<i64> xofs(static_cast<size_t>(OW * 4));
    for (i64 dx = 0; dx < OW; ++dx)
        for (i64 k = 0; k < 4; ++k)
            xofs[static_cast<size_t>(dx * 4 + k)] = std::clamp<i64>(xstart[static_cast<size_t>(dx)] + k, 0, W - 1) * C;

    auto hresize = C == 1 ? hresize_row<1> : C == 2 ? hresize_row<2> : C == 3 ? hresize_row<3>
                 : C == 4 ? hresize_row<4> : hresize_row<0>;

    parallel_rows(s.batch, OH, out_row, num_threads, [&](i64 b, i64 y0, i64 y1) {
        const float* img = in + b * H * in_row;
        float* dst = out + b * OH * out_row;
        // Ring of 4 horizontally resized source rows, slot = source row & 3: the
        // (clamped) rows one output row needs are distinct consecutive integers.
        std::vector<float> ring(static_cast<size_t>(4 * out_row));
        i64 tag[4] = {-1, -1, -1, -1};
        for (i64 y = y0; y < y1; ++y) {
            const float* r[4];
            for (i64 k = 0; k < 4; ++k) {
                const i64 sy = std::clamp<i64>(ystart[static_cast<size_t>(y)] + k, 0, H - 1);
                float* slot = ring.data() + (sy & 3) * out_row;
                if (tag[sy & 3] != sy) {
                    hresize(img + sy * in_row, slot, OW, C, xofs.data(), alpha.data());
                    tag[sy & 3] = sy;
                }
                r[k] = slot;
            }
            weighted_sum(dst + y * out_row, r, beta.data() + y * 4, 4, out_row);
        }
    });
}

}  // namespace jaxvis
