// XLA FFI handlers for the render step's bilinear warp (jaxvis.transforms.warp) on CPU.
//
// Why C++ here: inside the jitted step XLA fuses the JAX warp's gathers into their consumers (the
// stem convolution's padding in the forward pass, the colour mixing's gradient in the backward
// pass) and recomputes them there; a custom call is a fusion boundary, and the exact adjoint of
// bilinear sampling is a plain scatter-add, which is cheap in a serial loop. A render step of the
// default job (16 images, 128 px) is 1.13x the bare network passes with it, 1.44x with the JAX warp.
//
// Both handlers take image-shaped buffers [..., H, W, C] (any leading batch dims, as vmap makes
// them), m [..., 2, 2] and offset [..., 2], one per image, and follow transforms._warp exactly:
//   source(q) = m @ q + offset (q = (row, column) of an output pixel),
//   out[q]    = bilinear interpolation of the image at source(q), corners outside read cval;
//   grad[p]   = sum over q of (bilinear weight of p in out[q]) * g[q]  (the transpose).
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "parallel.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Layout {
    std::int64_t images, height, width, channels;
};

ffi::Error layout_of(ffi::Buffer<ffi::F32>& image, ffi::Buffer<ffi::F32>& m,
                     ffi::Buffer<ffi::F32>& offset, Layout* out) {
    auto dims = image.dimensions();
    if (dims.size() < 3) return ffi::Error::InvalidArgument("warp: image must be [..., H, W, C]");
    Layout l{1, dims[dims.size() - 3], dims[dims.size() - 2], dims[dims.size() - 1]};
    for (std::size_t i = 0; i + 3 < dims.size(); ++i) l.images *= dims[i];
    if (m.element_count() != 4 * static_cast<std::size_t>(l.images) ||
        offset.element_count() != 2 * static_cast<std::size_t>(l.images))
        return ffi::Error::InvalidArgument("warp: m and offset must hold one [2, 2] / [2] per image");
    *out = l;
    return ffi::Error::Success();
}

// floor for |x| < 2^31: std::floor is a libm call on baseline x86-64 (no SSE4.1 `roundss`), which
// made the whole warp ~2x slower. Sample positions lie within a few image sizes of the image.
inline float floor_of(float x) {
    const float t = static_cast<float>(static_cast<std::int32_t>(x));  // rounds toward zero
    return t > x ? t - 1.0f : t;
}

// Samples of output pixels (qy, qx0 .. qx0 + n - 1): the top-left corner (y0, x0) of each and its
// bilinear fractions (wy, wx), by the same operations, in the same order, as transforms._source and
// _warp_forward. Plain loops over arrays, which the compiler vectorizes (given -fno-trapping-math,
// see CMakeLists.txt, for floor_of's compare): computed per pixel inside the interpolation loop,
// this arithmetic took ~25% of the forward warp's time.
constexpr int kBlock = 64;

struct SampleBlock {
    std::int32_t y0[kBlock], x0[kBlock];
    float wy[kBlock], wx[kBlock];
};

inline void samples_of_block(const float* m, const float* offset, float qy, std::int64_t qx0, int n, SampleBlock* b) {
    const float m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], o0 = offset[0], o1 = offset[1];
    const float first = static_cast<float>(qx0);
    for (int i = 0; i < n; ++i) {
        const float qx = first + static_cast<float>(i);  // exact: image widths are far below 2^24
        const float sy = m0 * qy + m1 * qx + o0;
        const float sx = m2 * qy + m3 * qx + o1;
        const float fy = floor_of(sy), fx = floor_of(sx);
        b->y0[i] = static_cast<std::int32_t>(fy);
        b->x0[i] = static_cast<std::int32_t>(fx);
        b->wy[i] = sy - fy;
        b->wx[i] = sx - fx;
    }
}

inline bool inside(std::int64_t y, std::int64_t x, const Layout& l) {
    return y >= 0 && y < l.height && x >= 0 && x < l.width;
}

// RGB pixels as one SSE register each (the 4th lane reads the next pixel's red and is never
// stored): a corner is one load instead of three, the interpolation four lanes at a time, with the
// scalar loops' operations in the same order, so the results are the same to the bit. A load's
// 4th lane must stay inside the image: the callers keep the last pixel of an image to the
// scalar path (`last_pixel`).
#if defined(__SSE2__)
#define JAXVIS_WARP_SSE 1
inline __m128 load_rgb(const float* p) { return _mm_loadu_ps(p); }

// (p[0], p[1], p[2], 0) without reading p[3]
inline __m128 load_rgb_exact(const float* p) {
    const __m128 low = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p)));
    return _mm_movelh_ps(low, _mm_load_ss(p + 2));
}

inline void store_rgb(float* p, __m128 v) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), v);
    _mm_store_ss(p + 2, _mm_movehl_ps(v, v));
}
#else
#define JAXVIS_WARP_SSE 0
#endif

// Output rows [y0, y1) of one image. kChannels > 0 fixes the channel count at compile time (RGB
// and gray, the common cases, get unrolled channel loops: ~3x faster); 0 reads it from `l`.
// Samples whose four corners are all inside take a branch-free path; the rest read cval outside.
template <int kChannels>
void forward_rows(const float* __restrict__ src, float* __restrict__ dst, const float* m, const float* offset,
                  const Layout& l, float cval, std::int64_t y0, std::int64_t y1) {
    const std::int64_t channels = kChannels > 0 ? kChannels : l.channels;
    const std::int64_t row = l.width * channels;
    SampleBlock block;
    for (std::int64_t qy = y0; qy < y1; ++qy) {
        float* o = dst + qy * row;
        for (std::int64_t qx0 = 0; qx0 < l.width; qx0 += kBlock) {
            const int n = static_cast<int>(std::min<std::int64_t>(kBlock, l.width - qx0));
            samples_of_block(m, offset, static_cast<float>(qy), qx0, n, &block);
            for (int i = 0; i < n; ++i, o += channels) {
                const std::int64_t sy0 = block.y0[i], sx0 = block.x0[i];
                const float a = 1 - block.wy[i], b = block.wy[i], c0 = 1 - block.wx[i], c1 = block.wx[i];
                if (sy0 >= 0 && sy0 + 1 < l.height && sx0 >= 0 && sx0 + 1 < l.width) {
                    const float* p = src + (sy0 * l.width + sx0) * channels;
#if JAXVIS_WARP_SSE
                    if (kChannels == 3 && !(sy0 + 2 == l.height && sx0 + 2 == l.width)) {  // not the last pixel
                        const __m128 va = _mm_set1_ps(a), vb = _mm_set1_ps(b);
                        const __m128 vc0 = _mm_set1_ps(c0), vc1 = _mm_set1_ps(c1);
                        const __m128 top = _mm_add_ps(_mm_mul_ps(vc0, load_rgb(p)), _mm_mul_ps(vc1, load_rgb(p + 3)));
                        const __m128 bottom = _mm_add_ps(_mm_mul_ps(vc0, load_rgb(p + row)),
                                                         _mm_mul_ps(vc1, load_rgb(p + row + 3)));
                        store_rgb(o, _mm_add_ps(_mm_mul_ps(va, top), _mm_mul_ps(vb, bottom)));
                        continue;
                    }
#endif
                    for (std::int64_t c = 0; c < channels; ++c)
                        o[c] = a * (c0 * p[c] + c1 * p[c + channels]) + b * (c0 * p[c + row] + c1 * p[c + row + channels]);
                    continue;
                }
                const float* corner[4];
                for (int k = 0; k < 4; ++k) {
                    const std::int64_t y = sy0 + k / 2, x = sx0 + k % 2;
                    corner[k] = inside(y, x, l) ? src + (y * l.width + x) * channels : nullptr;
                }
                for (std::int64_t c = 0; c < channels; ++c) {
                    float v[4];
                    for (int k = 0; k < 4; ++k) v[k] = corner[k] ? corner[k][c] : cval;
                    o[c] = a * (c0 * v[0] + c1 * v[1]) + b * (c0 * v[2] + c1 * v[3]);
                }
            }
        }
    }
}

// The adjoint for one whole image (a sample scatters into any row): grad = 0, then every output
// pixel adds its weighted cotangent to its four corners, in a fixed order (deterministic).
// Neighbouring samples of a row usually share a column of corners (x0 advances by one), so for
// RGB and gray the right column's contributions wait in registers and are added together with the
// next sample's left column: half the read-modify-writes, and none that reloads a value just
// stored (measured ~10% of the adjoint's time). Other channel counts take the general path.
template <int kChannels>
void backward_image(const float* __restrict__ g, float* __restrict__ grad, const float* m, const float* offset,
                    const Layout& l) {
    constexpr int kMaxPending = kChannels > 0 ? kChannels : 1;
    const std::int64_t channels = kChannels > 0 ? kChannels : l.channels;
    const std::int64_t row = l.width * channels;
    std::fill(grad, grad + l.height * row, 0.0f);
    SampleBlock block;
    for (std::int64_t qy = 0; qy < l.height; ++qy) {
        const float* gq = g + qy * row;
        float* pending = nullptr;  // the top corner of the waiting right column
        float top[kMaxPending], bottom[kMaxPending];
        auto flush = [&]() {
            if (!pending) return;
            for (int c = 0; c < kMaxPending; ++c) {
                pending[c] += top[c];
                pending[c + row] += bottom[c];
            }
            pending = nullptr;
        };
        for (std::int64_t qx0 = 0; qx0 < l.width; qx0 += kBlock) {
            const int n = static_cast<int>(std::min<std::int64_t>(kBlock, l.width - qx0));
            samples_of_block(m, offset, static_cast<float>(qy), qx0, n, &block);
            for (int i = 0; i < n; ++i, gq += channels) {
                const std::int64_t sy0 = block.y0[i], sx0 = block.x0[i];
                const float wy = block.wy[i], wx = block.wx[i];
                const float w[4] = {(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx};
                if (kChannels > 0 && sy0 >= 0 && sy0 + 1 < l.height && sx0 >= 0 && sx0 + 1 < l.width) {
                    float* d = grad + (sy0 * l.width + sx0) * channels;
                    if (d == pending) {
                        for (int c = 0; c < kMaxPending; ++c) {
                            d[c] += top[c] + w[0] * gq[c];
                            d[c + row] += bottom[c] + w[2] * gq[c];
                        }
                        pending = nullptr;
                    } else {
                        flush();
                        for (int c = 0; c < kMaxPending; ++c) {
                            d[c] += w[0] * gq[c];
                            d[c + row] += w[2] * gq[c];
                        }
                    }
                    for (int c = 0; c < kMaxPending; ++c) {
                        top[c] = w[1] * gq[c];
                        bottom[c] = w[3] * gq[c];
                    }
                    pending = d + channels;
                    continue;
                }
                flush();
                for (int k = 0; k < 4; ++k) {
                    const std::int64_t y = sy0 + k / 2, x = sx0 + k % 2;
                    if (!inside(y, x, l)) continue;
                    float* d = grad + (y * l.width + x) * channels;
                    for (std::int64_t c = 0; c < channels; ++c) d[c] += w[k] * gq[c];
                }
            }
        }
        flush();
    }
}

#if JAXVIS_WARP_SSE
// backward_image<3> with each RGB pixel in one SSE register (see load_rgb): the same operations in
// the same order. Read-modify-writes load exactly three floats (load_rgb_exact), so none reads or
// writes past a pixel.
void backward_image_rgb(const float* __restrict__ g, float* __restrict__ grad, const float* m, const float* offset,
                        const Layout& l) {
    const std::int64_t row = l.width * 3;
    std::fill(grad, grad + l.height * row, 0.0f);
    const auto add = [](float* p, __m128 v) { store_rgb(p, _mm_add_ps(load_rgb_exact(p), v)); };
    const auto times = [](float w, __m128 v) { return _mm_mul_ps(_mm_set1_ps(w), v); };
    SampleBlock block;
    for (std::int64_t qy = 0; qy < l.height; ++qy) {
        const float* gq = g + qy * row;
        float* pending = nullptr;  // the top corner of the waiting right column
        __m128 top = _mm_setzero_ps(), bottom = _mm_setzero_ps();
        const auto flush = [&]() {
            if (!pending) return;
            add(pending, top);
            add(pending + row, bottom);
            pending = nullptr;
        };
        for (std::int64_t qx0 = 0; qx0 < l.width; qx0 += kBlock) {
            const int n = static_cast<int>(std::min<std::int64_t>(kBlock, l.width - qx0));
            samples_of_block(m, offset, static_cast<float>(qy), qx0, n, &block);
            for (int i = 0; i < n; ++i, gq += 3) {
                const std::int64_t sy0 = block.y0[i], sx0 = block.x0[i];
                const float wy = block.wy[i], wx = block.wx[i];
                const float w[4] = {(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx};
                const __m128 gv = load_rgb_exact(gq);
                if (sy0 >= 0 && sy0 + 1 < l.height && sx0 >= 0 && sx0 + 1 < l.width) {
                    float* d = grad + (sy0 * l.width + sx0) * 3;
                    if (d == pending) {
                        add(d, _mm_add_ps(top, times(w[0], gv)));
                        add(d + row, _mm_add_ps(bottom, times(w[2], gv)));
                        pending = nullptr;
                    } else {
                        flush();
                        add(d, times(w[0], gv));
                        add(d + row, times(w[2], gv));
                    }
                    top = times(w[1], gv);
                    bottom = times(w[3], gv);
                    pending = d + 3;
                    continue;
                }
                flush();
                for (int k = 0; k < 4; ++k) {
                    const std::int64_t y = sy0 + k / 2, x = sx0 + k % 2;
                    if (inside(y, x, l)) add(grad + (y * l.width + x) * 3, times(w[k], gv));
                }
            }
        }
        flush();
    }
}
#endif

ffi::Error WarpForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> image, ffi::Buffer<ffi::F32> m,
                           ffi::Buffer<ffi::F32> offset, float cval,
                           ffi::ResultBuffer<ffi::F32> out) {
    Layout l;
    if (auto error = layout_of(image, m, offset, &l); error.failure()) return error;
    const std::int64_t plane = l.height * l.width * l.channels;
    const auto rows = l.channels == 3 ? forward_rows<3> : l.channels == 1 ? forward_rows<1> : forward_rows<0>;
    // Output rows are independent: split them over the cores (XLA runs a custom call on one thread;
    // the helpers are tasks on its intra-op pool).
    jaxvis::parallel_rows_on(pool, l.images, l.height, l.width * l.channels, [&](std::int64_t b, std::int64_t y0, std::int64_t y1) {
        rows(image.typed_data() + b * plane, out->typed_data() + b * plane, m.typed_data() + 4 * b,
             offset.typed_data() + 2 * b, l, cval, y0, y1);
    });
    return ffi::Error::Success();
}

ffi::Error WarpBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> m,
                            ffi::Buffer<ffi::F32> offset, ffi::ResultBuffer<ffi::F32> grad) {
    Layout l;
    if (auto error = layout_of(g, m, offset, &l); error.failure()) return error;
    const std::int64_t plane = l.height * l.width * l.channels;
#if JAXVIS_WARP_SSE
    const auto rgb = backward_image_rgb;
#else
    const auto rgb = backward_image<3>;
#endif
    const auto image = l.channels == 3 ? rgb : l.channels == 1 ? backward_image<1> : backward_image<0>;
    // A sample scatters into any row of its image, so the split is by whole images.
    jaxvis::parallel_rows_on(pool, l.images, 1, plane, [&](std::int64_t b, std::int64_t, std::int64_t) {
        image(g.typed_data() + b * plane, grad->typed_data() + b * plane, m.typed_data() + 4 * b,
              offset.typed_data() + 2 * b, l);
    });
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisWarpForward, WarpForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("cval")
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisWarpBackward, WarpBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
