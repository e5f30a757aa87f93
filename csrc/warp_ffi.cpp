// XLA FFI handlers for the render step's bilinear warp (jaxvis.transforms.warp) on CPU.
//
// Why C++ here: inside the jitted step XLA fuses the warp's gathers with their neighbours (the
// stem convolution's padding in the forward pass, its 9-term input gradient in the backward
// pass) and recomputes those for every gathered element; a custom call is a fusion boundary, and
// the exact adjoint of bilinear sampling is a plain scatter-add, which is cheap in a serial loop.
//
// Both handlers take image-shaped buffers [..., H, W, C] (any leading batch dims, as vmap makes
// them), m [..., 2, 2] and offset [..., 2], one per image, and follow transforms._warp exactly:
//   source(q) = m @ q + offset (q = (row, column) of an output pixel),
//   out[q]    = bilinear interpolation of the image at source(q), corners outside read cval;
//   grad[p]   = sum over q of (bilinear weight of p in out[q]) * g[q]  (the transpose).
#include <algorithm>
#include <cmath>
#include <cstdint>

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

// The four corners of the sample of output pixel (qy, qx) and their bilinear weights.
struct Sample {
    std::int64_t y0, x0;
    float wy, wx;
    float w[4];  // (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)
};

// floor for |x| < 2^31: std::floor is a libm call on baseline x86-64 (no SSE4.1 `roundss`), which
// made the whole warp ~2x slower. Sample positions lie within a few image sizes of the image.
inline float floor_of(float x) {
    const float t = static_cast<float>(static_cast<std::int32_t>(x));  // rounds toward zero
    return t > x ? t - 1.0f : t;
}

inline Sample sample_at(const float* m, const float* offset, float qy, float qx) {
    // The same operations, in the same order, as transforms._source and _warp_forward.
    const float sy = m[0] * qy + m[1] * qx + offset[0];
    const float sx = m[2] * qy + m[3] * qx + offset[1];
    const float fy = floor_of(sy), fx = floor_of(sx);
    const float wy = sy - fy, wx = sx - fx;
    Sample s;
    s.y0 = static_cast<std::int64_t>(fy);
    s.x0 = static_cast<std::int64_t>(fx);
    s.wy = wy;
    s.wx = wx;
    s.w[0] = (1 - wy) * (1 - wx);
    s.w[1] = (1 - wy) * wx;
    s.w[2] = wy * (1 - wx);
    s.w[3] = wy * wx;
    return s;
}

inline bool inside(std::int64_t y, std::int64_t x, const Layout& l) {
    return y >= 0 && y < l.height && x >= 0 && x < l.width;
}

// Output rows [y0, y1) of one image. kChannels > 0 fixes the channel count at compile time (RGB
// and gray, the common cases, get unrolled channel loops: ~3x faster); 0 reads it from `l`.
// Samples whose four corners are all inside take a branch-free path; the rest read cval outside.
template <int kChannels>
void forward_rows(const float* src, float* dst, const float* m, const float* offset, const Layout& l,
                  float cval, std::int64_t y0, std::int64_t y1) {
    const std::int64_t channels = kChannels > 0 ? kChannels : l.channels;
    const std::int64_t row = l.width * channels;
    for (std::int64_t qy = y0; qy < y1; ++qy) {
        float* o = dst + qy * row;
        for (std::int64_t qx = 0; qx < l.width; ++qx, o += channels) {
            const Sample s = sample_at(m, offset, static_cast<float>(qy), static_cast<float>(qx));
            const float a = 1 - s.wy, b = s.wy, c0 = 1 - s.wx, c1 = s.wx;
            if (s.y0 >= 0 && s.y0 + 1 < l.height && s.x0 >= 0 && s.x0 + 1 < l.width) {
                const float* p = src + (s.y0 * l.width + s.x0) * channels;
                for (std::int64_t c = 0; c < channels; ++c)
                    o[c] = a * (c0 * p[c] + c1 * p[c + channels]) + b * (c0 * p[c + row] + c1 * p[c + row + channels]);
                continue;
            }
            const float* corner[4];
            for (int k = 0; k < 4; ++k) {
                const std::int64_t y = s.y0 + k / 2, x = s.x0 + k % 2;
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

// The adjoint for one whole image (a sample scatters into any row): grad = 0, then every output
// pixel adds its weighted cotangent to its four corners, in a fixed order (deterministic).
template <int kChannels>
void backward_image(const float* g, float* grad, const float* m, const float* offset, const Layout& l) {
    const std::int64_t channels = kChannels > 0 ? kChannels : l.channels;
    const std::int64_t row = l.width * channels;
    std::fill(grad, grad + l.height * row, 0.0f);
    for (std::int64_t qy = 0; qy < l.height; ++qy) {
        const float* gq = g + qy * row;
        for (std::int64_t qx = 0; qx < l.width; ++qx, gq += channels) {
            const Sample s = sample_at(m, offset, static_cast<float>(qy), static_cast<float>(qx));
            if (s.y0 >= 0 && s.y0 + 1 < l.height && s.x0 >= 0 && s.x0 + 1 < l.width) {
                float* d = grad + (s.y0 * l.width + s.x0) * channels;
                for (std::int64_t c = 0; c < channels; ++c) {
                    const float v = gq[c];
                    d[c] += s.w[0] * v;
                    d[c + channels] += s.w[1] * v;
                    d[c + row] += s.w[2] * v;
                    d[c + row + channels] += s.w[3] * v;
                }
                continue;
            }
            for (int k = 0; k < 4; ++k) {
                const std::int64_t y = s.y0 + k / 2, x = s.x0 + k % 2;
                if (!inside(y, x, l)) continue;
                float* d = grad + (y * l.width + x) * channels;
                for (std::int64_t c = 0; c < channels; ++c) d[c] += s.w[k] * gq[c];
            }
        }
    }
}

ffi::Error WarpForwardImpl(ffi::Buffer<ffi::F32> image, ffi::Buffer<ffi::F32> m,
                           ffi::Buffer<ffi::F32> offset, float cval,
                           ffi::ResultBuffer<ffi::F32> out) {
    Layout l;
    if (auto error = layout_of(image, m, offset, &l); error.failure()) return error;
    const std::int64_t plane = l.height * l.width * l.channels;
    const auto rows = l.channels == 3 ? forward_rows<3> : l.channels == 1 ? forward_rows<1> : forward_rows<0>;
    // Output rows are independent: split them over the cores (XLA runs a custom call on one thread).
    jaxvis::parallel_rows(l.images, l.height, l.width * l.channels, 0, [&](std::int64_t b, std::int64_t y0, std::int64_t y1) {
        rows(image.typed_data() + b * plane, out->typed_data() + b * plane, m.typed_data() + 4 * b,
             offset.typed_data() + 2 * b, l, cval, y0, y1);
    });
    return ffi::Error::Success();
}

ffi::Error WarpBackwardImpl(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> m,
                            ffi::Buffer<ffi::F32> offset, ffi::ResultBuffer<ffi::F32> grad) {
    Layout l;
    if (auto error = layout_of(g, m, offset, &l); error.failure()) return error;
    const std::int64_t plane = l.height * l.width * l.channels;
    const auto image = l.channels == 3 ? backward_image<3> : l.channels == 1 ? backward_image<1> : backward_image<0>;
    // A sample scatters into any row of its image, so the split is by whole images.
    jaxvis::parallel_rows(l.images, 1, plane, 0, [&](std::int64_t b, std::int64_t, std::int64_t) {
        image(g.typed_data() + b * plane, grad->typed_data() + b * plane, m.typed_data() + 4 * b,
              offset.typed_data() + 2 * b, l);
    });
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisWarpForward, WarpForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("cval")
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisWarpBackward, WarpBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
