// Which build of the vectorized loops to run: the extension is built for baseline x86-64 (no
// -march=native), and its hot loops are also compiled for AVX2 + FMA (`target` attributes).
#pragma once

#include <cstdlib>

namespace jaxvis {

// Whether the CPU has AVX2 and FMA and JAXVIS_NATIVE_NO_AVX2 (set by the tests to check the
// baseline loops) is unset or 0. Decided once per process.
inline bool use_avx2_fma() {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static const bool use = [] {
        const char* off = std::getenv("JAXVIS_NATIVE_NO_AVX2");
        if (off && *off && *off != '0') return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return use;
#else
    return false;
#endif
}

}  // namespace jaxvis
