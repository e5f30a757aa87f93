// XLA FFI handlers for the FFT image parameterization on CPU (jaxvis.param.spatial.fft), see
// spectral.hpp for why the transform is done here.
//
//   forward:  pairs [..., C, H, W/2+1, 2], weights [H, W/2+1]  ->  latent [..., H, W, C]
//             latent[.., h, w, c] = unnormalized inverse real 2-D DFT of weights * (re + i im)
//   backward: g [..., H, W, C], weights  ->  grad_pairs [..., C, H, W/2+1, 2] (the exact transpose)
//
// and, for lucid's default parameterization (3 decorrelated channels, then the sigmoid), the same
// with the pixel-wise tail fused (colour.hpp says why):
//
//   image_forward:  pairs [..., 3, H, W/2+1, 2], weights, colour [3, 3]  ->  rgb [..., H, W, 3]
//                   rgb = sigmoid(latent @ colour^T), latent as `forward` computes it
//   image_backward: g [..., H, W, 3], rgb (image_forward's output), weights, colour  ->  grad_pairs
//
// Each (image, channel) plane is independent; the planes (the images, for the fused calls) are
// spread over the cores.
#include <cstdint>
#include <vector>

#include "colour.hpp"
#include "parallel.hpp"
#include "spectral.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using i64 = std::int64_t;

struct Planes {
    i64 images, channels, height, width, half;
};

// Shapes from the pairs-side buffer [..., C, H, W/2+1, 2]; the width is even (2 * (W/2+1 - 1)).
ffi::Error planes_of(ffi::Span<const i64> pair_dims, ffi::Buffer<ffi::F32>& weights, Planes* out) {
    if (pair_dims.size() < 4 || pair_dims[pair_dims.size() - 1] != 2)
        return ffi::Error::InvalidArgument("spectral: params must be [..., C, H, W/2+1, 2]");
    const std::size_t n = pair_dims.size();
    Planes p{1, pair_dims[n - 4], pair_dims[n - 3], 2 * (pair_dims[n - 2] - 1), pair_dims[n - 2]};
    for (std::size_t i = 0; i + 4 < n; ++i) p.images *= pair_dims[i];
    auto w = weights.dimensions();  // [H, W/2+1], with leading 1s under vmap
    if (w.size() < 2 || w[w.size() - 2] != p.height || w[w.size() - 1] != p.half ||
        static_cast<i64>(weights.element_count()) != p.height * p.half)
        return ffi::Error::InvalidArgument("spectral: weights must be [H, W/2+1]");
    if (p.height < 1 || p.width < 2) return ffi::Error::InvalidArgument("spectral: empty image");
    *out = p;
    return ffi::Error::Success();
}

ffi::Error SpectralForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pairs, ffi::Buffer<ffi::F32> weights,
                               ffi::ResultBuffer<ffi::F32> latent) {
    Planes p;
    if (auto error = planes_of(pairs.dimensions(), weights, &p); error.failure()) return error;
    const i64 plane_pairs = p.height * p.half * 2, image_floats = p.height * p.width * p.channels;
    jaxvis::parallel_rows_on(pool, p.images * p.channels, 1, p.height * p.width, [&](i64 plane, i64, i64) {
        thread_local jaxvis::SpectralScratch scratch;
        const i64 b = plane / p.channels, c = plane % p.channels;
        jaxvis::inverse_real_plane(pairs.typed_data() + plane * plane_pairs, weights.typed_data(), p.height, p.width,
                                   latent->typed_data() + b * image_floats + c, p.width * p.channels, p.channels,
                                   scratch);
    });
    return ffi::Error::Success();
}

ffi::Error SpectralBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> weights,
                                ffi::ResultBuffer<ffi::F32> grad_pairs) {
    Planes p;
    if (auto error = planes_of(grad_pairs->dimensions(), weights, &p); error.failure()) return error;
    const i64 plane_pairs = p.height * p.half * 2, image_floats = p.height * p.width * p.channels;
    if (static_cast<i64>(g.element_count()) != p.images * image_floats)
        return ffi::Error::InvalidArgument("spectral: g must be [..., H, W, C]");
    jaxvis::parallel_rows_on(pool, p.images * p.channels, 1, p.height * p.width, [&](i64 plane, i64, i64) {
        thread_local jaxvis::SpectralScratch scratch;
        const i64 b = plane / p.channels, c = plane % p.channels;
        jaxvis::inverse_real_plane_adjoint(g.typed_data() + b * image_floats + c, p.width * p.channels, p.channels,
                                           weights.typed_data(), p.height, p.width,
                                           grad_pairs->typed_data() + plane * plane_pairs, scratch);
    });
    return ffi::Error::Success();
}

ffi::Error colour_planes_of(ffi::Span<const i64> pair_dims, ffi::Buffer<ffi::F32>& weights,
                            ffi::Buffer<ffi::F32>& colour, Planes* out) {
    if (auto error = planes_of(pair_dims, weights, out); error.failure()) return error;
    if (out->channels != 3 || colour.element_count() != 9)  // colour: [3, 3], with leading 1s under vmap
        return ffi::Error::InvalidArgument("spectral image: needs 3 channels and a [3, 3] colour matrix");
    return ffi::Error::Success();
}

// One image's three latent planes, channel-major in a worker's scratch (stays in L2 for the mix).
float* latent_scratch(i64 floats) {
    thread_local std::vector<float> planes;
    if (static_cast<i64>(planes.size()) < floats) planes.resize(static_cast<std::size_t>(floats));
    return planes.data();
}

ffi::Error ImageForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pairs, ffi::Buffer<ffi::F32> weights, ffi::Buffer<ffi::F32> colour,
                            ffi::ResultBuffer<ffi::F32> rgb) {
    Planes p;
    if (auto error = colour_planes_of(pairs.dimensions(), weights, colour, &p); error.failure()) return error;
    const i64 plane_pairs = p.height * p.half * 2, pixels = p.height * p.width;
    jaxvis::parallel_rows_on(pool, p.images, 1, 3 * pixels, [&](i64 b, i64, i64) {
        thread_local jaxvis::SpectralScratch scratch;
        float* latent = latent_scratch(3 * pixels);
        for (i64 c = 0; c < 3; ++c)
            jaxvis::inverse_real_plane(pairs.typed_data() + (3 * b + c) * plane_pairs, weights.typed_data(), p.height,
                                       p.width, latent + c * pixels, p.width, 1, scratch);
        jaxvis::colour_sigmoid(latent, colour.typed_data(), rgb->typed_data() + b * 3 * pixels, pixels);
    });
    return ffi::Error::Success();
}

ffi::Error ImageBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> rgb, ffi::Buffer<ffi::F32> weights,
                             ffi::Buffer<ffi::F32> colour, ffi::ResultBuffer<ffi::F32> grad_pairs) {
    Planes p;
    if (auto error = colour_planes_of(grad_pairs->dimensions(), weights, colour, &p); error.failure()) return error;
    const i64 plane_pairs = p.height * p.half * 2, pixels = p.height * p.width;
    if (static_cast<i64>(g.element_count()) != p.images * 3 * pixels || rgb.element_count() != g.element_count())
        return ffi::Error::InvalidArgument("spectral image: g and rgb must be [..., H, W, 3]");
    jaxvis::parallel_rows_on(pool, p.images, 1, 3 * pixels, [&](i64 b, i64, i64) {
        thread_local jaxvis::SpectralScratch scratch;
        float* latent = latent_scratch(3 * pixels);
        jaxvis::colour_sigmoid_adjoint(g.typed_data() + b * 3 * pixels, rgb.typed_data() + b * 3 * pixels,
                                       colour.typed_data(), latent, pixels);
        for (i64 c = 0; c < 3; ++c)
            jaxvis::inverse_real_plane_adjoint(latent + c * pixels, p.width, 1, weights.typed_data(), p.height, p.width,
                                               grad_pairs->typed_data() + (3 * b + c) * plane_pairs, scratch);
    });
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisSpectralForward, SpectralForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisSpectralBackward, SpectralBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisSpectralImageForward, ImageForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisSpectralImageBackward, ImageBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
