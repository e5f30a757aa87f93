// parallel_rows: the work split shared by the image kernels and the warp custom call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "image_kernels.hpp"

namespace jaxvis {

using i64 = std::int64_t;

// Smallest amount of output (in floats) worth a thread of its own: below this,
// starting a thread costs more than it saves.
inline constexpr i64 kMinFloatsPerWorker = 1 << 15;
// Chunks of rows per worker: enough to rebalance when one is preempted, few enough
// that the halo rows a separable filter recomputes at each chunk start stay cheap.
inline constexpr i64 kChunksPerWorker = 8;

// Calls fn(b, y0, y1) for row ranges [y0, y1) of image b that together cover all
// batch * rows output rows, spread over up to `num_threads` threads. The rows are
// handed out in chunks from a shared counter, several per worker, so a worker the
// OS preempts (a busy machine) does not hold up the others.
template <class Fn>
void parallel_rows(i64 batch, i64 rows, i64 floats_per_row, int num_threads, const Fn& fn) {
    const i64 total = batch * rows;
    if (total <= 0) return;
    i64 workers = num_threads > 0 ? num_threads : available_cores();
    workers = std::min(workers, total);
    workers = std::min(workers, std::max<i64>(1, total * floats_per_row / kMinFloatsPerWorker));
    workers = std::max<i64>(workers, 1);
    const i64 chunks = workers == 1 ? 1 : std::min(total, workers * kChunksPerWorker);

    std::atomic<i64> next_chunk{0};
    // A worker's exception (only std::bad_alloc for its scratch rows is possible)
    // must not terminate the process: keep the first one and rethrow it after join.
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&]() {
        try {
            for (i64 c = next_chunk++; c < chunks; c = next_chunk++) {
                i64 g0 = total * c / chunks;
                const i64 g1 = total * (c + 1) / chunks;
                while (g0 < g1) {
                    const i64 b = g0 / rows;
                    const i64 y0 = g0 - b * rows;
                    const i64 y1 = std::min(rows, y0 + (g1 - g0));
                    fn(b, y0, y1);
                    g0 += y1 - y0;
                }
            }
        } catch (...) {
            const std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next_chunk = chunks;  // stop handing out work
        }
    };

    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(workers - 1));
    for (i64 w = 1; w < workers; ++w) {
        try {
            threads.emplace_back(work);
        } catch (const std::system_error&) {
            break;  // out of threads: the ones running (and this one) take all chunks
        }
    }
    work();
    for (auto& t : threads) t.join();
    if (error) std::rethrow_exception(error);
}


}  // namespace jaxvis
