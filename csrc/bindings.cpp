// pybind11 bindings for jaxvis._core: the only file that knows about Python.
//
// Private module. jaxvis/native.py validates user input and raises JaxvisError;
// the checks here only guard the C++ against misuse (ValueError), and arrays are
// taken with noconvert() so nothing is ever silently copied or cast. Each call
// allocates the output with the GIL held, then releases the GIL for the compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "image_kernels.hpp"
#include "layout.hpp"

#ifdef JAXVIS_WITH_XLA_FFI
#include "xla/ffi/api/c_api.h"
extern "C" XLA_FFI_Error* JaxvisWarpForward(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* JaxvisWarpBackward(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* JaxvisSpectralForward(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* JaxvisSpectralBackward(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* JaxvisSpectralImageForward(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* JaxvisSpectralImageBackward(XLA_FFI_CallFrame* call_frame);
#endif

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using IntArray = py::array_t<std::int32_t, py::array::c_style>;

jaxvis::Shape image_shape(const FloatArray& images) {
    if (images.ndim() != 4) throw std::invalid_argument("images must be 4-D (batch, height, width, channels)");
    const jaxvis::Shape s{images.shape(0), images.shape(1), images.shape(2), images.shape(3)};
    if (s.batch < 0 || s.height <= 0 || s.width <= 0 || s.channels <= 0)
        throw std::invalid_argument("images must have positive height, width and channels");
    return s;
}

void require_positive(std::int64_t v, const char* name) {
    if (v <= 0) throw std::invalid_argument(std::string(name) + " must be positive");
}

FloatArray new_images(std::int64_t b, std::int64_t h, std::int64_t w, std::int64_t c) {
    return FloatArray({b, h, w, c});
}

jaxvis::BorderMode parse_mode(const std::string& mode) {
    if (mode == "wrap") return jaxvis::BorderMode::Wrap;
    if (mode == "reflect") return jaxvis::BorderMode::Reflect;
    if (mode == "constant") return jaxvis::BorderMode::Constant;
    throw std::invalid_argument("mode must be 'wrap', 'reflect' or 'constant', got '" + mode + "'");
}

FloatArray jitter(const FloatArray& images, const IntArray& shifts, const std::string& mode,
                  float cval, int num_threads) {
    const auto s = image_shape(images);
    if (shifts.ndim() != 2 || shifts.shape(0) != s.batch || shifts.shape(1) != 2)
        throw std::invalid_argument("shifts must have shape (batch, 2)");
    const auto m = parse_mode(mode);
    FloatArray out = new_images(s.batch, s.height, s.width, s.channels);
    const float* in = images.data();
    const std::int32_t* sh = shifts.data();
    float* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        jaxvis::jitter(in, o, s, sh, m, cval, num_threads);
    }
    return out;
}

FloatArray box_blur(const FloatArray& images, int ksize_h, int ksize_w, int num_threads) {
    const auto s = image_shape(images);
    require_positive(ksize_h, "ksize_h");
    require_positive(ksize_w, "ksize_w");
    FloatArray out = new_images(s.batch, s.height, s.width, s.channels);
    const float* in = images.data();
    float* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        jaxvis::box_blur(in, o, s, ksize_h, ksize_w, num_threads);
    }
    return out;
}

FloatArray gaussian_blur(const FloatArray& images, double sigma, int ksize, int num_threads) {
    const auto s = image_shape(images);
    if (!(sigma > 0)) throw std::invalid_argument("sigma must be positive");
    if (ksize == 0) ksize = jaxvis::gaussian_ksize_for_sigma(sigma);
    if (ksize <= 0 || ksize % 2 == 0) throw std::invalid_argument("ksize must be 0 or a positive odd number");
    FloatArray out = new_images(s.batch, s.height, s.width, s.channels);
    const float* in = images.data();
    float* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        jaxvis::gaussian_blur(in, o, s, sigma, ksize, num_threads);
    }
    return out;
}

FloatArray resize_bicubic(const FloatArray& images, int out_h, int out_w, int num_threads) {
    const auto s = image_shape(images);
    require_positive(out_h, "out_h");
    require_positive(out_w, "out_w");
    FloatArray out = new_images(s.batch, out_h, out_w, s.channels);
    const float* in = images.data();
    float* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        jaxvis::resize_bicubic(in, o, s, out_h, out_w, num_threads);
    }
    return out;
}

void oihw_to_hwio(const FloatArray& kernel, FloatArray out, int num_threads) {
    if (kernel.ndim() != 4) throw std::invalid_argument("kernel must be 4-D (O, I, kh, kw)");
    const auto o = kernel.shape(0), i = kernel.shape(1), kh = kernel.shape(2), kw = kernel.shape(3);
    if (out.ndim() != 4 || out.shape(0) != kh || out.shape(1) != kw || out.shape(2) != i || out.shape(3) != o)
        throw std::invalid_argument("out must have the shape (kh, kw, I, O) of the kernel (O, I, kh, kw)");
    const float* in = kernel.data();
    float* dst = out.mutable_data();
    if (kernel.size() == 0) return;
    if (dst < in + kernel.size() && in < dst + out.size()) throw std::invalid_argument("kernel and out overlap");
    py::gil_scoped_release release;
    jaxvis::oihw_to_hwio(in, dst, o, i, kh * kw, num_threads);
}

#ifdef JAXVIS_WITH_XLA_FFI
using FfiHandler = XLA_FFI_Error* (*)(XLA_FFI_CallFrame*);

// {name: handler} as capsules, for jax.ffi.register_ffi_target.
py::dict ffi_handlers(std::initializer_list<std::pair<const char*, FfiHandler>> named) {
    py::dict handlers;
    for (const auto& [name, handler] : named) handlers[name] = py::capsule(reinterpret_cast<void*>(handler));
    return handlers;
}
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "jaxvis private C++ image kernels (batched NHWC float32); use jaxvis.native instead.";

    m.def("jitter", &jitter, py::arg("images").noconvert(), py::arg("shifts").noconvert(),
          py::arg("mode"), py::arg("cval"), py::arg("num_threads") = 0,
          "out[b, y, x] = images[b, y - dy, x - dx] with shifts[b] = (dy, dx).");
    m.def("box_blur", &box_blur, py::arg("images").noconvert(), py::arg("ksize_h"),
          py::arg("ksize_w"), py::arg("num_threads") = 0, "cv2.blur per image.");
    m.def("gaussian_blur", &gaussian_blur, py::arg("images").noconvert(), py::arg("sigma"),
          py::arg("ksize") = 0, py::arg("num_threads") = 0, "cv2.GaussianBlur per image.");
    m.def("resize_bicubic", &resize_bicubic, py::arg("images").noconvert(), py::arg("out_h"),
          py::arg("out_w"), py::arg("num_threads") = 0, "cv2.resize(INTER_CUBIC) per image.");
    m.def("gaussian_ksize_for_sigma", &jaxvis::gaussian_ksize_for_sigma, py::arg("sigma"),
          "OpenCV's kernel size for sigma when ksize = 0 (float images).");
    m.def("oihw_to_hwio", &oihw_to_hwio, py::arg("kernel").noconvert(), py::arg("out").noconvert(),
          py::arg("num_threads") = 0, "out[kh, kw, I, O] = kernel[O, I, kh, kw] (float32, C order, GIL released).");
    m.def("available_cores", &jaxvis::available_cores, "Cores the kernels use by default.");
#ifdef JAXVIS_WITH_XLA_FFI
    m.def("warp_ffi_handlers", [] { return ffi_handlers({{"forward", &JaxvisWarpForward}, {"backward", &JaxvisWarpBackward}}); },
          "XLA FFI handlers of the render step's warp on CPU.");
    m.def("spectral_ffi_handlers", [] {
        return ffi_handlers({{"forward", &JaxvisSpectralForward},
                             {"backward", &JaxvisSpectralBackward},
                             {"image_forward", &JaxvisSpectralImageForward},
                             {"image_backward", &JaxvisSpectralImageBackward}});
    }, "XLA FFI handlers of the FFT parameterization's inverse DFT (alone, and with colour and sigmoid) on CPU.");
#else  // built without XLA's headers: no custom calls
    m.def("warp_ffi_handlers", [] { return py::dict(); }, "{} (built without XLA's FFI headers).");
    m.def("spectral_ffi_handlers", [] { return py::dict(); }, "{} (built without XLA's FFI headers).");
#endif
}
