// parallel_rows: the work split shared by the image kernels and the custom calls.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
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

inline i64 worker_count(i64 total, i64 floats_per_row, int num_threads) {
    i64 workers = num_threads > 0 ? num_threads : available_cores();
    workers = std::min(workers, total);
    workers = std::min(workers, std::max<i64>(1, total * floats_per_row / kMinFloatsPerWorker));
    return std::max<i64>(workers, 1);
}

// The rows of `batch` images handed out in chunks from a shared counter, several per
// worker, so a worker the OS preempts (a busy machine) does not hold up the others.
template <class Fn>
class RowChunks {
  public:
    RowChunks(i64 batch, i64 rows, i64 workers, const Fn& fn)
        : total_(batch * rows), rows_(rows),
          chunks_(workers == 1 ? 1 : std::min(batch * rows, workers * kChunksPerWorker)), fn_(fn) {}

    // Takes chunks until none is left, calling fn(b, y0, y1) for each row range [y0, y1) of
    // image b. A worker's exception (only std::bad_alloc for scratch memory is possible) must
    // not terminate the process: the first one is kept for rethrow() and the work stops.
    void work() {
        try {
            for (i64 c = next_chunk_++; c < chunks_; c = next_chunk_++) {
                i64 g0 = total_ * c / chunks_;
                const i64 g1 = total_ * (c + 1) / chunks_;
                while (g0 < g1) {
                    const i64 b = g0 / rows_;
                    const i64 y0 = g0 - b * rows_;
                    const i64 y1 = std::min(rows_, y0 + (g1 - g0));
                    fn_(b, y0, y1);
                    g0 += y1 - y0;
                }
            }
        } catch (...) {
            const std::lock_guard<std::mutex> lock(error_mutex_);
            if (!error_) error_ = std::current_exception();
            next_chunk_ = chunks_;  // stop handing out work
        }
    }

    void rethrow() {
        if (error_) std::rethrow_exception(error_);
    }

  private:
    const i64 total_, rows_, chunks_;
    const Fn& fn_;
    std::atomic<i64> next_chunk_{0};
    std::exception_ptr error_;
    std::mutex error_mutex_;
};

// Calls fn(b, y0, y1) for row ranges [y0, y1) of image b that together cover all
// batch * rows output rows, on the calling thread and up to `num_threads` - 1 new ones.
template <class Fn>
void parallel_rows(i64 batch, i64 rows, i64 floats_per_row, int num_threads, const Fn& fn) {
    if (batch * rows <= 0) return;
    const i64 workers = worker_count(batch * rows, floats_per_row, num_threads);
    RowChunks<Fn> chunks(batch, rows, workers, fn);
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(workers - 1));
    for (i64 w = 1; w < workers; ++w) {
        try {
            threads.emplace_back([&chunks] { chunks.work(); });
        } catch (const std::system_error&) {
            break;  // out of threads: the ones running (and this one) take all chunks
        }
    }
    chunks.work();
    for (auto& t : threads) t.join();
    chunks.rethrow();
}

// The same split with the helpers run as tasks of a thread pool (XLA's intra-op pool, for the
// custom calls: a task is queued in microseconds, a new thread took ~40 us to start and join).
// `pool.Schedule(task)` runs task() some time later, on a pool thread. The caller works too and
// then waits only for helpers that have started: a helper that starts after the caller ran out
// of work returns without touching it. So a pool whose threads are all busy (or all in such a
// call, waiting) costs parallelism, never a deadlock, and a task may outlive the call.
template <class Pool, class Fn>
void parallel_rows_on(Pool& pool, i64 batch, i64 rows, i64 floats_per_row, const Fn& fn) {
    if (batch * rows <= 0) return;
    struct Run {
        Run(i64 batch, i64 rows, i64 workers, const Fn& fn) : chunks(batch, rows, workers, fn) {}
        RowChunks<Fn> chunks;
        std::mutex mutex;
        std::condition_variable idle;
        bool closed = false;
        int active = 0;

        void help() {
            {
                const std::lock_guard<std::mutex> lock(mutex);
                if (closed) return;
                ++active;
            }
            chunks.work();
            const std::lock_guard<std::mutex> lock(mutex);
            if (--active == 0) idle.notify_all();
        }
        void close() {
            std::unique_lock<std::mutex> lock(mutex);
            closed = true;
            idle.wait(lock, [this] { return active == 0; });
        }
    };
    const i64 workers = worker_count(batch * rows, floats_per_row, 0);
    auto run = std::make_shared<Run>(batch, rows, workers, fn);
    for (i64 w = 1; w < workers; ++w) pool.Schedule([run] { run->help(); });
    run->chunks.work();
    run->close();
    run->chunks.rethrow();
}

}  // namespace jaxvis
