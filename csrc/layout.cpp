// OIHW -> HWIO by hand rather than NumPy: NumPy's copy of the transposed view walks the source one
// float per cache line (and its two-pass variant copies twice); this walks it in 16 x 16 tiles, so
// each cache line read is used 16 times while it is hot, and every write is a run of 16 floats.
// Loading an all-conv model is mostly this copy (tests/convert/test_kernel_layout.py checks it against
// NumPy's transpose; benchmarks/bench_graph.py measures the load).
#include "layout.hpp"

#include <algorithm>

#include "parallel.hpp"

namespace jaxvis {

namespace {

constexpr i64 kTile = 16;

// Source columns [c0, c1) of in viewed as [O, C] (C = I * K): column c = i * K + k is row k * I + i
// of out viewed as [K * I, O].
void transpose_columns(const float* in, float* out, i64 o, i64 i, i64 k, i64 c0, i64 c1) {
    const i64 columns = i * k;
    for (i64 cb = c0; cb < c1; cb += kTile) {
        const i64 ce = std::min(cb + kTile, c1);
        for (i64 ob = 0; ob < o; ob += kTile) {
            const i64 oe = std::min(ob + kTile, o);
            for (i64 c = cb; c < ce; ++c) {
                float* dst = out + ((c % k) * i + c / k) * o;
                const float* src = in + c;
                for (i64 r = ob; r < oe; ++r) dst[r] = src[r * columns];
            }
        }
    }
}

}  // namespace

void oihw_to_hwio(const float* in, float* out, i64 o, i64 i, i64 k, int num_threads) {
    const i64 tiles = (i * k + kTile - 1) / kTile;
    parallel_rows(1, tiles, kTile * o, num_threads, [&](i64, i64 t0, i64 t1) {
        transpose_columns(in, out, o, i, k, t0 * kTile, std::min(t1 * kTile, i * k));
    });
}

}  // namespace jaxvis
