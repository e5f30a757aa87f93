// jaxvis._onednn: 2-D convolutions on CPU as XLA FFI custom calls into oneDNN (the library that
// PyTorch's CPU convolutions use), forward and input gradient (backward data), float32.
//
// Why: XLA CPU's own convolution (lax.conv) runs dense 3x3 convs at ~60 GFLOP/s on the 2-core
// machines, oneDNN at ~170-185 (benchmarks/README.md). A separate extension module, so that a
// missing libdnnl.so at run time only disables these calls (ImportError -> the XLA formulations),
// never jaxvis._core.
//
// Layouts, as jaxvis.models.layers uses them: activations NHWC ([..., H, W, C]: leading dims are
// folded into the batch, as vmap's expand_dims makes them), kernels HWIO [kh, kw, Cin/groups, Cout]
// (grouped: output channel g*(Cout/groups) + o belongs to group g, as lax's feature_group_count).
// The conv's attributes travel as one int64 array `conv` = [stride_h, stride_w, pad_top,
// pad_bottom, pad_left, pad_right, dilation_h, dilation_w, groups] (pads >= 0, dilation >= 1).
//
// oneDNN picks its fastest algorithm (convolution_auto) and weight layout (format_tag::any).
// Weights are reordered into that layout by a custom call of their own ("pack"), whose output the
// conv calls take: inside a render's loop the weights do not change, and XLA hoists the pack out of
// the loop. `packed_floats(...)` tells Python the packed size (0: the kernel's own HWIO layout is
// the primitive's, no pack needed). Primitives are built once per (shape, attributes) and cached.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "parallel.hpp"
#include "xla/ffi/api/ffi.h"

#if DNNL_CPU_THREADING_RUNTIME != DNNL_RUNTIME_OMP
#error "jaxvis._onednn expects a oneDNN built with OpenMP (the onednn-cpu-gomp wheel)"
#endif
// libgomp's, loaded with libdnnl (its dependency)
extern "C" int omp_get_max_threads(void);
extern "C" void omp_set_num_threads(int);

namespace ffi = xla::ffi;
namespace py = pybind11;
using dnnl::memory;
using i64 = std::int64_t;

namespace {

enum Kind : i64 { kForward = 0, kBackwardData = 1 };

// One conv: batch, input, output and kernel sizes, attributes, direction.
struct Key {
    std::array<i64, 16> v{};  // kind, n, h, w, c, oh, ow, o, kh, kw, sh, sw, pt, pb, pl, pr
    std::array<i64, 3> more{};  // dh, dw, groups
    bool operator==(const Key& other) const { return v == other.v && more == other.more; }
};

struct KeyHash {
    std::size_t operator()(const Key& key) const {
        std::size_t h = 1469598103934665603ull;
        for (i64 x : key.v) h = (h ^ static_cast<std::size_t>(x)) * 1099511628211ull;
        for (i64 x : key.more) h = (h ^ static_cast<std::size_t>(x)) * 1099511628211ull;
        return h;
    }
};

struct Conv {
    Kind kind;
    std::string impl;  // oneDNN's name of the implementation it chose
    dnnl::primitive primitive;
    memory::desc io_in, io_out;  // forward: src, dst; backward data: diff_dst, diff_src
    memory::desc user_weights, weights;  // HWIO as given, and the primitive's layout
    memory::desc scratchpad;  // user-provided (per executing thread): pieces of a call run concurrently
    bool packed = false;  // weights differ from user_weights: the conv takes the pack's output
    dnnl::reorder pack;  // user_weights -> weights
};

dnnl::engine& engine() {
    static dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
    return cpu;
}

struct Shape {
    i64 n, h, w, c, oh, ow, o, kh, kw;
};

struct Attrs {
    i64 sh, sw, pt, pb, pl, pr, dh, dw, groups;
};

Attrs attrs_of(const i64* conv) {
    return {conv[0], conv[1], conv[2], conv[3], conv[4], conv[5], conv[6], conv[7], conv[8]};
}

memory::desc activations(i64 n, i64 c, i64 h, i64 w) {
    return memory::desc({n, c, h, w}, memory::data_type::f32, memory::format_tag::nhwc);
}

// HWIO [kh, kw, I, O] (I = Cin / groups) as oneDNN's logical (O, I, kh, kw), or (G, O/G, I, kh, kw).
memory::desc hwio(const Shape& s, i64 groups) {
    const i64 in = s.c / groups;
    if (groups == 1) return memory::desc({s.o, in, s.kh, s.kw}, memory::data_type::f32, memory::format_tag::hwio);
    const i64 og = s.o / groups;
    return memory::desc({groups, og, in, s.kh, s.kw}, memory::data_type::f32,
                        memory::dims{og, 1, s.o, s.kw * in * s.o, in * s.o});
}

memory::desc any_weights(const Shape& s, i64 groups) {
    const i64 in = s.c / groups;
    if (groups == 1) return memory::desc({s.o, in, s.kh, s.kw}, memory::data_type::f32, memory::format_tag::any);
    return memory::desc({groups, s.o / groups, in, s.kh, s.kw}, memory::data_type::f32, memory::format_tag::any);
}

// convolution_auto (oneDNN picks direct or Winograd); JAXVIS_ONEDNN_ALGORITHM=direct|winograd for tests
dnnl::algorithm algorithm() {
    static const dnnl::algorithm chosen = [] {
        const char* env = std::getenv("JAXVIS_ONEDNN_ALGORITHM");
        const std::string name = env ? env : "auto";
        if (name == "direct") return dnnl::algorithm::convolution_direct;
        if (name == "winograd") return dnnl::algorithm::convolution_winograd;
        return dnnl::algorithm::convolution_auto;
    }();
    return chosen;
}

std::shared_ptr<const Conv> build(Kind kind, const Shape& s, const Attrs& a) {
    auto& eng = engine();
    const memory::dims strides{a.sh, a.sw}, dilates{a.dh - 1, a.dw - 1};
    const memory::dims pad_l{a.pt, a.pl}, pad_r{a.pb, a.pr};
    const memory::desc src = activations(s.n, s.c, s.h, s.w), dst = activations(s.n, s.o, s.oh, s.ow);
    const memory::desc weights = any_weights(s, a.groups);
    auto conv = std::make_shared<Conv>();
    conv->kind = kind;
    conv->user_weights = hwio(s, a.groups);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::convolution_forward::primitive_desc forward(eng, dnnl::prop_kind::forward_inference,
                                                      algorithm(), src, weights, dst,
                                                      strides, dilates, pad_l, pad_r, attr);
    if (kind == kForward) {
        conv->primitive = dnnl::convolution_forward(forward);
        conv->impl = forward.impl_info_str();
        conv->io_in = forward.src_desc();
        conv->io_out = forward.dst_desc();
        conv->weights = forward.weights_desc();
        conv->scratchpad = forward.scratchpad_desc();
    } else {
        dnnl::convolution_forward::primitive_desc hint(eng, dnnl::prop_kind::forward_training,
                                                       algorithm(), src, weights, dst,
                                                       strides, dilates, pad_l, pad_r);
        dnnl::convolution_backward_data::primitive_desc backward(eng, algorithm(), src,
                                                                 weights, dst, strides, dilates, pad_l, pad_r,
                                                                 hint, attr);
        conv->primitive = dnnl::convolution_backward_data(backward);
        conv->impl = backward.impl_info_str();
        conv->io_in = backward.diff_dst_desc();
        conv->io_out = backward.diff_src_desc();
        conv->weights = backward.weights_desc();
        conv->scratchpad = backward.scratchpad_desc();
    }
    if (conv->io_in != (kind == kForward ? src : dst) || conv->io_out != (kind == kForward ? dst : src))
        throw std::runtime_error("oneDNN chose a non-NHWC activation layout");
    conv->packed = conv->weights != conv->user_weights;
    if (conv->packed) conv->pack = dnnl::reorder(memory(conv->user_weights, eng, nullptr),
                                                 memory(conv->weights, eng, nullptr));
    return conv;
}

std::shared_ptr<const Conv> lookup(Kind kind, const Shape& s, const Attrs& a) {
    static std::mutex mutex;
    static std::unordered_map<Key, std::shared_ptr<const Conv>, KeyHash> cache;
    Key key;
    key.v = {kind, s.n, s.h, s.w, s.c, s.oh, s.ow, s.o, s.kh, s.kw, a.sh, a.sw, a.pt, a.pb, a.pl, a.pr};
    key.more = {a.dh, a.dw, a.groups};
    {
        const std::lock_guard<std::mutex> lock(mutex);
        auto found = cache.find(key);
        if (found != cache.end()) return found->second;
    }
    auto conv = build(kind, s, a);  // outside the lock: building can take milliseconds
    const std::lock_guard<std::mutex> lock(mutex);
    return cache.emplace(key, std::move(conv)).first->second;
}

Attrs checked_attrs(ffi::Span<const i64> conv) {
    if (conv.size() != 9) throw std::invalid_argument("onednn conv: `conv` must hold 9 attributes");
    Attrs a = attrs_of(conv.begin());
    if (a.sh < 1 || a.sw < 1 || a.dh < 1 || a.dw < 1 || a.groups < 1 || a.pt < 0 || a.pb < 0 || a.pl < 0 || a.pr < 0)
        throw std::invalid_argument("onednn conv: strides, dilations, groups >= 1 and pads >= 0 required");
    return a;
}

// x [..., H, W, C] -> (N, H, W, C), leading dims folded.
std::array<i64, 4> nhwc(ffi::Span<const i64> dims, const char* what) {
    if (dims.size() < 4) throw std::invalid_argument(std::string("onednn conv: ") + what + " must be [..., H, W, C]");
    i64 n = 1;
    for (std::size_t i = 0; i + 3 < dims.size(); ++i) n *= dims[i];
    const std::size_t r = dims.size();
    return {n, dims[r - 3], dims[r - 2], dims[r - 1]};
}

// kernel [..., kh, kw, I, O] with leading dims of size 1 (vmap's expand_dims of an unbatched kernel).
std::array<i64, 4> kernel_dims(ffi::Span<const i64> dims) {
    if (dims.size() < 4) throw std::invalid_argument("onednn conv: the kernel must be [kh, kw, I, O]");
    for (std::size_t i = 0; i + 4 < dims.size(); ++i)
        if (dims[i] != 1) throw std::invalid_argument("onednn conv: a batched kernel is not supported");
    const std::size_t r = dims.size();
    return {dims[r - 4], dims[r - 3], dims[r - 2], dims[r - 1]};
}

template <class Fn>
ffi::Error guarded(Fn&& fn) {
    try {
        fn();
        return ffi::Error::Success();
    } catch (const dnnl::error& e) {
        return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
    } catch (const std::exception& e) {
        return ffi::Error::InvalidArgument(e.what());
    }
}

// oneDNN's OpenMP threads limited to 1 on this thread while alive. The conv's work is split over
// XLA's intra-op pool instead (by images, handed out from a shared counter, csrc/parallel.hpp):
// OpenMP's static split over both cores of a shared machine waits for the slowest thread at every
// barrier, and its spinning threads would compete with XLA's own after the call.
struct SerialOmp {
    int previous;
    SerialOmp() : previous(omp_get_max_threads()) {
        if (previous != 1) omp_set_num_threads(1);
    }
    ~SerialOmp() {
        if (previous != 1) omp_set_num_threads(previous);
    }
    SerialOmp(const SerialOmp&) = delete;
    SerialOmp& operator=(const SerialOmp&) = delete;
};

// Images per primitive call: about two pieces per core, so a preempted worker's piece is taken over.
i64 sub_batch(i64 n) {
    static const i64 pieces = [] {
        const char* env = std::getenv("JAXVIS_ONEDNN_PIECES");
        const i64 value = env ? std::atoll(env) : 0;
        return value > 0 ? value : 2 * static_cast<i64>(jaxvis::available_cores());
    }();
    return std::max<i64>(1, (n + pieces - 1) / pieces);
}

// The primitive for `n` images of the conv `s` (built serial, as it runs).
std::shared_ptr<const Conv> lookup_serial(Kind kind, Shape s, const Attrs& a, i64 n) {
    const SerialOmp serial;
    s.n = n;
    return lookup(kind, s, a);
}

// Runs `conv` on (input, weights) -> output, one thread.
void execute(const Conv& conv, const void* input, const void* weights, void* output) {
    const SerialOmp serial;
    auto& eng = engine();
    dnnl::stream stream(eng);
    memory in(conv.io_in, eng, const_cast<void*>(input));
    memory w(conv.weights, eng, const_cast<void*>(weights));
    memory out(conv.io_out, eng, output);
    // this thread's scratch, kept between calls (64-byte aligned)
    thread_local std::vector<float> scratch;
    const std::size_t floats = conv.scratchpad.get_size() / sizeof(float) + 16;
    if (scratch.size() < floats) scratch.assign(floats, 0.0f);
    void* aligned = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(scratch.data()) + 63) & ~std::uintptr_t{63});
    memory pad(conv.scratchpad, eng, aligned);
    if (conv.kind == kForward)
        conv.primitive.execute(stream, {{DNNL_ARG_SRC, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, out},
                                        {DNNL_ARG_SCRATCHPAD, pad}});
    else
        conv.primitive.execute(stream, {{DNNL_ARG_DIFF_DST, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, out},
                                        {DNNL_ARG_SCRATCHPAD, pad}});
    stream.wait();
}

// `weights` (in the layout `from`) in the layout `to`: the buffer itself, or a reordered copy in `keep`.
const void* in_layout(const memory::desc& from, const memory::desc& to, const void* weights,
                      std::unique_ptr<memory>& keep) {
    if (from == to) return weights;
    const SerialOmp serial;
    auto& eng = engine();
    dnnl::stream stream(eng);
    memory source(from, eng, const_cast<void*>(weights));
    keep = std::make_unique<memory>(to, eng);
    dnnl::reorder(source, *keep).execute(stream, source, *keep);
    stream.wait();
    return keep->get_data_handle();
}

// The conv of shape `s` in pieces of sub_batch(s.n) images spread over the pool. `weights` are in
// the layout of the piece primitive for `packed_batch` images (what `pack` made; vmap folds more
// images into the batch than that, and oneDNN may choose another layout for the pieces then, or
// for the last, smaller piece: the weights are reordered once first).
void run(ffi::ThreadPool& pool, Kind kind, const Shape& s, const Attrs& a, i64 packed_batch, const void* input,
         ffi::AnyBuffer weights, void* output) {
    const i64 sb = sub_batch(s.n), pieces = (s.n + sb - 1) / sb, tail = s.n - (pieces - 1) * sb;
    const auto packed_for = lookup_serial(kind, s, a, sub_batch(packed_batch));
    if (weights.size_bytes() != packed_for->weights.get_size())
        throw std::invalid_argument("onednn conv: the weights are not in the primitive's layout");
    const auto full = lookup_serial(kind, s, a, sb), last = tail == sb ? full : lookup_serial(kind, s, a, tail);
    std::unique_ptr<memory> full_copy, last_copy;
    const void* full_weights = in_layout(packed_for->weights, full->weights, weights.untyped_data(), full_copy);
    const void* last_weights = in_layout(packed_for->weights, last->weights, weights.untyped_data(), last_copy);
    const bool forward = kind == kForward;
    const i64 in_floats = forward ? s.h * s.w * s.c : s.oh * s.ow * s.o;
    const i64 out_floats = forward ? s.oh * s.ow * s.o : s.h * s.w * s.c;
    const float* in = static_cast<const float*>(input);
    float* out = static_cast<float*>(output);
    jaxvis::parallel_rows_on(pool, pieces, 1, sb * out_floats, [&](i64 piece, i64, i64) {
        const bool is_last = piece == pieces - 1;
        execute(is_last ? *last : *full, in + piece * sb * in_floats, is_last ? last_weights : full_weights,
                out + piece * sb * out_floats);
    });
}

Shape shape_of(const std::array<i64, 4>& x, const std::array<i64, 4>& y, const std::array<i64, 4>& k) {
    return {x[0], x[1], x[2], x[3], y[1], y[2], y[3], k[0], k[1]};
}

void check_shapes(const std::array<i64, 4>& x, const std::array<i64, 4>& y, const std::array<i64, 4>& k,
                  const Attrs& a) {
    if (x[0] != y[0] || x[3] != k[2] * a.groups || y[3] != k[3] || k[3] % a.groups)
        throw std::invalid_argument("onednn conv: batch, channels or groups do not match the kernel");
    const i64 oh = (x[1] + a.pt + a.pb - ((k[0] - 1) * a.dh + 1)) / a.sh + 1;
    const i64 ow = (x[2] + a.pl + a.pr - ((k[1] - 1) * a.dw + 1)) / a.sw + 1;
    if (oh != y[1] || ow != y[2]) throw std::invalid_argument("onednn conv: output size does not match the attributes");
}

// Forward: x [..., H, W, C], weights (packed, or the HWIO kernel) -> y [..., Ho, Wo, O].
// `kernel_shape` [kh, kw, I, O]: the kernel's shape, as the packed buffer does not show it.
ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer weights, ffi::Result<ffi::AnyBuffer> y,
                       ffi::Span<const i64> conv, ffi::Span<const i64> kernel_shape, i64 packed_batch) {
    return guarded([&] {
        const Attrs a = checked_attrs(conv);
        const auto xd = nhwc(x.dimensions(), "x"), yd = nhwc(y->dimensions(), "y");
        const auto kd = kernel_dims(kernel_shape);
        check_shapes(xd, yd, kd, a);
        run(pool, kForward, shape_of(xd, yd, kd), a, packed_batch, x.untyped_data(), weights, y->untyped_data());
    });
}

// Backward data: g [..., Ho, Wo, O], weights -> grad_x [..., H, W, C].
ffi::Error BackwardDataImpl(ffi::ThreadPool pool, ffi::AnyBuffer g, ffi::AnyBuffer weights, ffi::Result<ffi::AnyBuffer> grad_x,
                            ffi::Span<const i64> conv, ffi::Span<const i64> kernel_shape, i64 packed_batch) {
    return guarded([&] {
        const Attrs a = checked_attrs(conv);
        const auto xd = nhwc(grad_x->dimensions(), "grad_x"), yd = nhwc(g.dimensions(), "g");
        const auto kd = kernel_dims(kernel_shape);
        check_shapes(xd, yd, kd, a);
        run(pool, kBackwardData, shape_of(xd, yd, kd), a, packed_batch, g.untyped_data(), weights, grad_x->untyped_data());
    });
}

// Pack: the HWIO kernel -> the layout of the (kind, x_shape, y_shape) primitive.
ffi::Error PackImpl(ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> packed, ffi::Span<const i64> conv,
                    ffi::Span<const i64> x_shape, ffi::Span<const i64> y_shape, i64 kind) {
    return guarded([&] {
        const Attrs a = checked_attrs(conv);
        const auto xd = nhwc(x_shape, "x"), yd = nhwc(y_shape, "y");
        const auto kd = kernel_dims(kernel.dimensions());
        check_shapes(xd, yd, kd, a);
        const auto c = lookup_serial(kind == kForward ? kForward : kBackwardData, shape_of(xd, yd, kd), a,
                                     sub_batch(xd[0]));
        if (!c->packed || packed->size_bytes() != c->weights.get_size())
            throw std::invalid_argument("onednn conv: pack output of the wrong size");
        const SerialOmp serial;
        auto& eng = engine();
        dnnl::stream stream(eng);
        memory from(c->user_weights, eng, kernel.untyped_data());
        memory to(c->weights, eng, packed->untyped_data());
        c->pack.execute(stream, from, to);
        stream.wait();
    });
}

// Floats of the packed weights for this conv; 0 when the primitive takes the HWIO kernel as it is.
i64 packed_floats(i64 kind, std::vector<i64> x, std::vector<i64> y, std::vector<i64> k, std::vector<i64> conv) {
    if (conv.size() != 9 || k.size() != 4) throw std::invalid_argument("packed_floats: bad attributes");
    const Attrs a = checked_attrs(ffi::Span<const i64>(conv.data(), conv.size()));
    const auto xd = nhwc(ffi::Span<const i64>(x.data(), x.size()), "x");
    const auto yd = nhwc(ffi::Span<const i64>(y.data(), y.size()), "y");
    const std::array<i64, 4> kd{k[0], k[1], k[2], k[3]};
    check_shapes(xd, yd, kd, a);
    const auto c = lookup_serial(kind == kForward ? kForward : kBackwardData, shape_of(xd, yd, kd), a,
                                 sub_batch(xd[0]));
    return c->packed ? static_cast<i64>(c->weights.get_size() / sizeof(float)) : 0;
}

}  // namespace

namespace {

// The forward and backward-data calls take the same operands and attributes: (x or dy, packed
// weights) -> y or dx.
auto conv_binding() {
    return ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>()
        .Attr<ffi::Span<const i64>>("conv")
        .Attr<ffi::Span<const i64>>("kernel_shape")
        .Attr<i64>("packed_batch");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisOnednnForward, ForwardImpl, conv_binding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisOnednnBackwardData, BackwardDataImpl, conv_binding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisOnednnPack, PackImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const i64>>("conv")
                                  .Attr<ffi::Span<const i64>>("x_shape")
                                  .Attr<ffi::Span<const i64>>("y_shape")
                                  .Attr<i64>("kind"));

PYBIND11_MODULE(_onednn, m) {
    m.doc() = "jaxvis private: 2-D convolutions as XLA FFI custom calls into oneDNN (CPU, float32).";
    m.def("ffi_handlers", [] {
        py::dict handlers;
        handlers["forward"] = py::capsule(reinterpret_cast<void*>(&JaxvisOnednnForward));
        handlers["backward_data"] = py::capsule(reinterpret_cast<void*>(&JaxvisOnednnBackwardData));
        handlers["pack"] = py::capsule(reinterpret_cast<void*>(&JaxvisOnednnPack));
        return handlers;
    }, "XLA FFI handlers: forward, backward_data, pack.");
    m.def("packed_floats", &packed_floats, py::arg("kind"), py::arg("x_shape"), py::arg("y_shape"),
          py::arg("kernel_shape"), py::arg("conv"),
          "Floats of the packed weights of a conv (kind 0 forward, 1 backward data); 0: the HWIO kernel as is.");
    m.def("implementation", [](i64 kind, std::vector<i64> x, std::vector<i64> y, std::vector<i64> k,
                               std::vector<i64> conv) {
        packed_floats(kind, x, y, k, conv);
        const Attrs a = checked_attrs(ffi::Span<const i64>(conv.data(), conv.size()));
        const auto xd = nhwc(ffi::Span<const i64>(x.data(), x.size()), "x");
        const auto yd = nhwc(ffi::Span<const i64>(y.data(), y.size()), "y");
        return lookup_serial(kind == kForward ? kForward : kBackwardData, shape_of(xd, yd, {k[0], k[1], k[2], k[3]}),
                             a, sub_batch(xd[0]))->impl;
    }, "oneDNN's implementation name for a conv's primitive (as packed_floats' arguments).");
    m.def("version", [] {
        const dnnl_version_t* v = dnnl::version();
        return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
               " (" + v->hash + ", cpu runtime " + std::to_string(v->cpu_runtime) + ")";
    }, "The oneDNN library's version.");
}
