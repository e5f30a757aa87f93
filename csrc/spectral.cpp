#include "spectral.hpp"

#include "cpu_features.hpp"

#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

namespace jaxvis {

namespace {

using i64 = std::int64_t;

std::vector<int> radices_of(int n) {
    std::vector<int> radices;
    while (n % 4 == 0) radices.push_back(4), n /= 4;
    for (int p = 2; n > 1; ++p)
        while (n % p == 0) radices.push_back(p), n /= p;
    return radices;
}

// Natural index of each row: the last stage combines the DFTs of x[q::r], q = 0..r-1, stored one
// after another, each ordered the same way by the stages before it.
std::vector<int> row_order(const std::vector<int>& indices, const std::vector<int>& radices, std::size_t stages) {
    if (stages == 0) return indices;
    const int r = radices[stages - 1];
    std::vector<int> order;
    order.reserve(indices.size());
    for (int q = 0; q < r; ++q) {
        std::vector<int> part;
        for (std::size_t i = q; i < indices.size(); i += r) part.push_back(indices[i]);
        const auto sub = row_order(part, radices, stages - 1);
        order.insert(order.end(), sub.begin(), sub.end());
    }
    return order;
}

std::shared_ptr<const DftPlan> make_plan(int n, int sign) {
    auto plan = std::make_shared<DftPlan>();
    plan->n = n;
    plan->sign = sign;
    plan->radices = radices_of(n);
    std::vector<int> natural(n);
    for (int i = 0; i < n; ++i) natural[i] = i;
    const auto order = row_order(natural, plan->radices, plan->radices.size());
    plan->load_position.assign(n, 0);
    for (int p = 0; p < n; ++p) plan->load_position[order[p]] = p;
    const double two_pi = 2.0 * std::acos(-1.0);
    int length = 1;
    for (int r : plan->radices) {
        const int combined = length * r;
        std::vector<float> w(2 * static_cast<std::size_t>(length) * (r - 1));
        for (int j = 0; j < length; ++j)
            for (int q = 1; q < r; ++q) {
                const double angle = sign * two_pi * q * j / combined;
                w[2 * (j * (r - 1) + q - 1)] = static_cast<float>(std::cos(angle));
                w[2 * (j * (r - 1) + q - 1) + 1] = static_cast<float>(std::sin(angle));
            }
        std::vector<float> rr(static_cast<std::size_t>(r) * r), ri(rr.size());
        for (int p = 0; p < r; ++p)
            for (int q = 0; q < r; ++q) {
                const double angle = sign * two_pi * ((p * q) % r) / r;
                rr[p * r + q] = static_cast<float>(std::cos(angle));
                ri[p * r + q] = static_cast<float>(std::sin(angle));
            }
        plan->twiddles.push_back(std::move(w));
        plan->root_re.push_back(std::move(rr));
        plan->root_im.push_back(std::move(ri));
        length = combined;
    }
    return plan;
}

#define JAXVIS_INLINE inline __attribute__((always_inline))

// Multiply (r, i) by the complex w = (wr, wi) when kTwiddle (stage rows j > 0 carry a twiddle).
template <bool kTwiddle>
JAXVIS_INLINE void twiddled(float& r, float& i, float wr, float wi) {
    if (kTwiddle) {
        const float x = r;
        r = x * wr - i * wi;
        i = x * wi + i * wr;
    }
}

// Butterflies over m columns; rows are distinct (restrict), w holds (re, im) of w^q for q = 1..r-1.
template <bool kTwiddle>
JAXVIS_INLINE void radix2(float* __restrict__ r0, float* __restrict__ i0, float* __restrict__ r1,
                          float* __restrict__ i1, const float* w, i64 m) {
    for (i64 t = 0; t < m; ++t) {
        float br = r1[t], bi = i1[t];
        twiddled<kTwiddle>(br, bi, w[0], w[1]);
        const float ar = r0[t], ai = i0[t];
        r0[t] = ar + br, i0[t] = ai + bi;
        r1[t] = ar - br, i1[t] = ai - bi;
    }
}

template <bool kTwiddle>
JAXVIS_INLINE void radix3(float* __restrict__ r0, float* __restrict__ i0, float* __restrict__ r1,
                          float* __restrict__ i1, float* __restrict__ r2, float* __restrict__ i2, const float* w,
                          float s, i64 m) {
    const float c = s * 0.86602540378443864676f;  // sign * sqrt(3) / 2
    for (i64 t = 0; t < m; ++t) {
        float ar = r1[t], ai = i1[t], br = r2[t], bi = i2[t];
        twiddled<kTwiddle>(ar, ai, w[0], w[1]);
        twiddled<kTwiddle>(br, bi, w[2], w[3]);
        const float tr = ar + br, ti = ai + bi, ur = ar - br, ui = ai - bi;
        const float hr = r0[t] - 0.5f * tr, hi = i0[t] - 0.5f * ti;
        r0[t] += tr, i0[t] += ti;
        r1[t] = hr - c * ui, i1[t] = hi + c * ur;
        r2[t] = hr + c * ui, i2[t] = hi - c * ur;
    }
}

template <bool kTwiddle>
JAXVIS_INLINE void radix4(float* __restrict__ r0, float* __restrict__ i0, float* __restrict__ r1,
                          float* __restrict__ i1, float* __restrict__ r2, float* __restrict__ i2,
                          float* __restrict__ r3, float* __restrict__ i3, const float* w, float s, i64 m) {
    for (i64 t = 0; t < m; ++t) {
        float ar = r1[t], ai = i1[t], br = r2[t], bi = i2[t], cr = r3[t], ci = i3[t];
        twiddled<kTwiddle>(ar, ai, w[0], w[1]);
        twiddled<kTwiddle>(br, bi, w[2], w[3]);
        twiddled<kTwiddle>(cr, ci, w[4], w[5]);
        const float t0r = r0[t] + br, t0i = i0[t] + bi, t1r = r0[t] - br, t1i = i0[t] - bi;
        const float t2r = ar + cr, t2i = ai + ci, t3r = ar - cr, t3i = ai - ci;
        r0[t] = t0r + t2r, i0[t] = t0i + t2i;
        r2[t] = t0r - t2r, i2[t] = t0i - t2i;
        r1[t] = t1r - s * t3i, i1[t] = t1i + s * t3r;  // t1 + (sign i) t3
        r3[t] = t1r + s * t3i, i3[t] = t1i - s * t3r;  // t1 - (sign i) t3
    }
}

// Any radix r, O(r^2) per element: X_p = sum_q root^(p q) a_q.
void radix_any(float** re, float** im, const float* w, const float* root_re, const float* root_im, int r, i64 m,
               std::vector<float>& in_re, std::vector<float>& in_im) {
    in_re.resize(r), in_im.resize(r);
    for (i64 t = 0; t < m; ++t) {
        in_re[0] = re[0][t], in_im[0] = im[0][t];
        for (int q = 1; q < r; ++q) {
            in_re[q] = re[q][t], in_im[q] = im[q][t];
            if (w) twiddled<true>(in_re[q], in_im[q], w[2 * (q - 1)], w[2 * (q - 1) + 1]);
        }
        for (int p = 0; p < r; ++p) {
            float sr = 0, si = 0;
            for (int q = 0; q < r; ++q) {
                const float wr = root_re[p * r + q], wi = root_im[p * r + q];
                sr += in_re[q] * wr - in_im[q] * wi;
                si += in_re[q] * wi + in_im[q] * wr;
            }
            re[p][t] = sr, im[p][t] = si;
        }
    }
}

}  // namespace

std::shared_ptr<const DftPlan> dft_plan(int n, int sign) {
    static std::mutex mutex;
    static std::map<std::pair<int, int>, std::shared_ptr<const DftPlan>> plans;
    const std::lock_guard<std::mutex> lock(mutex);
    auto& plan = plans[{n, sign}];
    if (!plan) plan = make_plan(n, sign);
    return plan;
}

namespace {

template <bool kTwiddle>
JAXVIS_INLINE void butterfly(int r, float** re, float** im, const float* w, float s, const DftPlan& plan,
                             std::size_t stage, i64 m, std::vector<float>& in_re, std::vector<float>& in_im) {
    if (r == 4)
        radix4<kTwiddle>(re[0], im[0], re[1], im[1], re[2], im[2], re[3], im[3], w, s, m);
    else if (r == 2)
        radix2<kTwiddle>(re[0], im[0], re[1], im[1], w, m);
    else if (r == 3)
        radix3<kTwiddle>(re[0], im[0], re[1], im[1], re[2], im[2], w, s, m);
    else
        radix_any(re, im, kTwiddle ? w : nullptr, plan.root_re[stage].data(), plan.root_im[stage].data(), r, m,
                  in_re, in_im);
}

JAXVIS_INLINE void dft_rows_body(const DftPlan& plan, float* re, float* im, i64 m) {
    const float s = static_cast<float>(plan.sign);
    float* rows_re[64];
    float* rows_im[64];
    std::vector<float*> many_re, many_im;
    std::vector<float> in_re, in_im;
    i64 length = 1;
    for (std::size_t stage = 0; stage < plan.radices.size(); ++stage) {
        const int r = plan.radices[stage];
        const i64 combined = length * r;
        const float* w = plan.twiddles[stage].data();
        float** row_re = rows_re;
        float** row_im = rows_im;
        if (r > 64) many_re.resize(r), many_im.resize(r), row_re = many_re.data(), row_im = many_im.data();
        for (i64 block = 0; block < plan.n; block += combined)
            for (i64 j = 0; j < length; ++j) {
                for (int q = 0; q < r; ++q) {
                    row_re[q] = re + (block + j + q * length) * m;
                    row_im[q] = im + (block + j + q * length) * m;
                }
                if (j == 0)
                    butterfly<false>(r, row_re, row_im, nullptr, s, plan, stage, m, in_re, in_im);
                else
                    butterfly<true>(r, row_re, row_im, w + 2 * j * (r - 1), s, plan, stage, m, in_re, in_im);
            }
        length = combined;
    }
}

// The extension is built for baseline x86-64; the butterflies are also compiled for AVX2 + FMA and
// picked at run time (4 -> 8 floats per instruction), as image_kernels.cpp does for its blur.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void dft_rows_avx2(const DftPlan& plan, float* re, float* im, i64 m) {
    dft_rows_body(plan, re, im, m);
}
#endif

void dft_rows_baseline(const DftPlan& plan, float* re, float* im, i64 m) { dft_rows_body(plan, re, im, m); }

}  // namespace

void dft_rows(const DftPlan& plan, float* re, float* im, i64 m) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx2_fma()) return dft_rows_avx2(plan, re, im, m);
#endif
    dft_rows_baseline(plan, re, im, m);
}

namespace {

// dst[row_index(r) * dst_row + c] = src[c * src_row + r] for r < src_cols, c < src_rows: a transpose
// (of the W pass's [W][H/2] result into image rows, and back in the adjoint), with the destination
// rows optionally permuted (row_index: nullptr for r itself). In 4x4 register tiles where the
// sizes allow (naive, one float per load and store, it took ~40% of a plane's transform).
void transpose(const float* src, i64 src_row, i64 src_rows, i64 src_cols, float* dst, i64 dst_row,
               const int* row_index) {
    const auto dest = [&](i64 r) { return dst + (row_index ? row_index[r] : r) * dst_row; };
    i64 r0 = 0;
#if defined(__SSE2__)
    for (; r0 + 4 <= src_cols; r0 += 4) {
        float* d0 = dest(r0);
        float* d1 = dest(r0 + 1);
        float* d2 = dest(r0 + 2);
        float* d3 = dest(r0 + 3);
        i64 c0 = 0;
        for (; c0 + 4 <= src_rows; c0 += 4) {
            const float* s = src + c0 * src_row + r0;
            __m128 a = _mm_loadu_ps(s), b = _mm_loadu_ps(s + src_row);
            __m128 c = _mm_loadu_ps(s + 2 * src_row), d = _mm_loadu_ps(s + 3 * src_row);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            _mm_storeu_ps(d0 + c0, a), _mm_storeu_ps(d1 + c0, b), _mm_storeu_ps(d2 + c0, c), _mm_storeu_ps(d3 + c0, d);
        }
        for (; c0 < src_rows; ++c0)
            for (int k = 0; k < 4; ++k) dest(r0 + k)[c0] = src[c0 * src_row + r0 + k];
    }
#endif
    for (; r0 < src_cols; ++r0) {
        float* d = dest(r0);
        for (i64 c = 0; c < src_rows; ++c) d[c] = src[c * src_row + r0];
    }
}

}  // namespace

void SpectralScratch::reserve(i64 height, i64 width) {
    const i64 half = width / 2 + 1, pairs = (height + 1) / 2;
    const auto size = static_cast<std::size_t>(std::max(height * half, width * pairs));
    if (a_re.size() < size)
        for (auto* v : {&a_re, &a_im, &b_re, &b_im, &c_re, &c_im}) v->resize(size);
    if (zero.size() < static_cast<std::size_t>(half)) zero.assign(static_cast<std::size_t>(half), 0.0f);
}

void inverse_real_plane(const float* pairs, const float* weights, i64 height, i64 width, float* out,
                        i64 out_stride_row, i64 out_stride_col, SpectralScratch& scratch) {
    const i64 half = width / 2 + 1, nyquist = width / 2, row_pairs = (height + 1) / 2;
    const auto along_h = dft_plan(static_cast<int>(height), +1);
    const auto along_w = dft_plan(static_cast<int>(width), +1);
    scratch.reserve(height, width);
    float *a_re = scratch.a_re.data(), *a_im = scratch.a_im.data();
    float *b_re = scratch.b_re.data(), *b_im = scratch.b_im.data();

    // weighted spectrum, rows in the H pass's load order
    for (i64 h = 0; h < height; ++h) {
        const i64 row = along_h->load_position[h] * half;
        const float* p = pairs + h * half * 2;
        const float* w = weights + h * half;
        for (i64 k = 0; k < half; ++k) a_re[row + k] = p[2 * k] * w[k], a_im[row + k] = p[2 * k + 1] * w[k];
    }
    dft_rows(*along_h, a_re, a_im, half);

    // Rows 2j and 2j+1 as the real and imaginary part of one complex row, Hermitian-extended over
    // the W axis: z[k] = x_a[k] + i x_b[k] with x[W-k] = conj(x[k]); the imaginary parts of bins 0
    // and W/2 are dropped (numpy's irfft ignores them). Pair by pair, reading both rows along the
    // bins, into c [pairs][W]; then one transpose puts the pairs along b's rows (in the W pass's
    // load order).
    float *c_re = scratch.c_re.data(), *c_im = scratch.c_im.data();
    const float* zero = scratch.zero.data();
    for (i64 j = 0; j < row_pairs; ++j) {
        const float* ar = a_re + (2 * j) * half;
        const float* ai = a_im + (2 * j) * half;
        const bool has_b = 2 * j + 1 < height;
        const float* br = has_b ? ar + half : zero;
        const float* bi = has_b ? ai + half : zero;
        float* cr = c_re + j * width;
        float* ci = c_im + j * width;
        cr[0] = ar[0], ci[0] = br[0];
        for (i64 k = 1; k < nyquist; ++k) cr[k] = ar[k] - bi[k], ci[k] = ai[k] + br[k];
        cr[nyquist] = ar[nyquist], ci[nyquist] = br[nyquist];
        for (i64 k = nyquist + 1; k < width; ++k) {
            const i64 bin = width - k;
            cr[k] = ar[bin] + bi[bin], ci[k] = br[bin] - ai[bin];
        }
    }
    transpose(c_re, width, row_pairs, width, b_re, row_pairs, along_w->load_position.data());
    transpose(c_im, width, row_pairs, width, b_im, row_pairs, along_w->load_position.data());
    dft_rows(*along_w, b_re, b_im, row_pairs);

    if (out_stride_col == 1) {  // rows 2j from b_re's column j, rows 2j + 1 from b_im's
        transpose(b_re, row_pairs, width, row_pairs, out, 2 * out_stride_row, nullptr);
        transpose(b_im, row_pairs, width, height / 2, out + out_stride_row, 2 * out_stride_row, nullptr);
        return;
    }
    for (i64 j = 0; j < row_pairs; ++j) {  // output rows in order: the strided reads stay in the scratch
        float* even = out + (2 * j) * out_stride_row;
        for (i64 x = 0; x < width; ++x) even[x * out_stride_col] = b_re[x * row_pairs + j];
        if (2 * j + 1 == height) break;
        float* odd = even + out_stride_row;
        for (i64 x = 0; x < width; ++x) odd[x * out_stride_col] = b_im[x * row_pairs + j];
    }
}

void inverse_real_plane_adjoint(const float* g, i64 g_stride_row, i64 g_stride_col, const float* weights,
                                i64 height, i64 width, float* grad_pairs, SpectralScratch& scratch) {
    const i64 half = width / 2 + 1, nyquist = width / 2, row_pairs = (height + 1) / 2;
    // the transpose of an unnormalized inverse DFT (as a real map) is the forward DFT
    const auto along_h = dft_plan(static_cast<int>(height), -1);
    const auto along_w = dft_plan(static_cast<int>(width), -1);
    scratch.reserve(height, width);
    float *a_re = scratch.a_re.data(), *a_im = scratch.a_im.data();
    float *b_re = scratch.b_re.data(), *b_im = scratch.b_im.data();

    const int* position = along_w->load_position.data();
    if (g_stride_col == 1) {  // b_re's column j from row 2j, b_im's from row 2j + 1; rows in load order
        transpose(g, 2 * g_stride_row, row_pairs, width, b_re, row_pairs, position);
        transpose(g + g_stride_row, 2 * g_stride_row, height / 2, width, b_im, row_pairs, position);
        if (height % 2)  // the last row has no partner
            for (i64 x = 0; x < width; ++x) b_im[position[x] * row_pairs + row_pairs - 1] = 0.0f;
    } else {
        for (i64 j = 0; j < row_pairs; ++j) {  // input rows in order: the strided writes stay in the scratch
            const float* even = g + (2 * j) * g_stride_row;
            for (i64 x = 0; x < width; ++x) b_re[position[x] * row_pairs + j] = even[x * g_stride_col];
            const float* odd = even + g_stride_row;
            if (2 * j + 1 < height)
                for (i64 x = 0; x < width; ++x) b_im[position[x] * row_pairs + j] = odd[x * g_stride_col];
            else
                for (i64 x = 0; x < width; ++x) b_im[position[x] * row_pairs + j] = 0.0f;
        }
    }
    dft_rows(*along_w, b_re, b_im, row_pairs);

    // transpose of the Hermitian extension and pairing: bins k and W-k both feed bin k. Bin by bin,
    // reading along the pairs, into c [W/2+1][H]; then one transpose puts the bins along a's rows
    // (in the H pass's load order).
    float *c_re = scratch.c_re.data(), *c_im = scratch.c_im.data();
    const i64 full_pairs = height / 2;
    for (i64 k = 0; k < half; ++k) {
        const float* zr = b_re + k * row_pairs;
        const float* zi = b_im + k * row_pairs;
        float* cr = c_re + k * height;
        float* ci = c_im + k * height;
        if (k == 0 || k == nyquist) {
            for (i64 j = 0; j < full_pairs; ++j) cr[2 * j] = zr[j], ci[2 * j] = 0.0f, cr[2 * j + 1] = zi[j], ci[2 * j + 1] = 0.0f;
            if (height % 2) cr[height - 1] = zr[full_pairs], ci[height - 1] = 0.0f;
            continue;
        }
        const float* mr = b_re + (width - k) * row_pairs;
        const float* mi = b_im + (width - k) * row_pairs;
        for (i64 j = 0; j < full_pairs; ++j) {
            cr[2 * j] = zr[j] + mr[j], ci[2 * j] = zi[j] - mi[j];
            cr[2 * j + 1] = zi[j] + mi[j], ci[2 * j + 1] = mr[j] - zr[j];
        }
        if (height % 2) cr[height - 1] = zr[full_pairs] + mr[full_pairs], ci[height - 1] = zi[full_pairs] - mi[full_pairs];
    }
    transpose(c_re, height, half, height, a_re, half, along_h->load_position.data());
    transpose(c_im, height, half, height, a_im, half, along_h->load_position.data());
    dft_rows(*along_h, a_re, a_im, half);

    for (i64 h = 0; h < height; ++h) {
        float* p = grad_pairs + h * half * 2;
        const float* w = weights + h * half;
        for (i64 k = 0; k < half; ++k) p[2 * k] = a_re[h * half + k] * w[k], p[2 * k + 1] = a_im[h * half + k] * w[k];
    }
}

}  // namespace jaxvis
