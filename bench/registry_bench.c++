/* The cost of a subscribe that names 64 new channels when the channel table is full (each
 * new channel makes room by dropping the least recently used entry without subscribers):
 * Registry::join + leave, at SSEMaxChannels 10,000 (the default) and 100,000, for this
 * registry and for the one before the O(1) table (commit 58ea68a, which scanned the whole
 * table for each dropped entry), measured in the same run on the same machine.
 *
 *   make bench-registry     (or: build/registry-bench [CHANNELS ...])
 *
 * The old registry is compiled from `git show 58ea68a:src/registry.c++` (and its header)
 * with its namespace renamed to sse_old (Makefile), so both are linked into one program.
 * Prints per table size the median of the joins, in ms, for each, and old/new. */
#include "sse/registry.h"

#include "registry_old.h" /* build/bench/old: the old header, in namespace sse_old */

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;

template <typename Registry, typename Policy>
double median_join_ms(std::uint32_t channels, int joins, Policy allow)
{
    const std::size_t size = Registry::bytes_needed(1000, channels);
    void *mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || !Registry::format(mem, size, 1000, channels).empty()) {
        std::fprintf(stderr, "registry-bench: cannot make a registry of %u channels\n", channels);
        std::exit(1);
    }
    std::string err;
    Registry reg = Registry::attach(mem, size, &err);
    std::int64_t t = kT0;
    /* A full table of published channels without subscribers. */
    std::vector<std::string> batch;
    for (std::uint32_t i = 0; i < channels; ++i) {
        batch.push_back("published-" + std::to_string(i));
        if (batch.size() == 64 || i + 1 == channels) {
            reg.note_publish(batch, -1, ++t);
            batch.clear();
        }
    }
    std::vector<double> ms;
    for (int j = 0; j < joins; ++j) {
        std::vector<std::string> fresh;
        for (int k = 0; k < 64; ++k)
            fresh.push_back("fresh-" + std::to_string(j) + "-" + std::to_string(k));
        const auto t0 = Clock::now();
        auto joined = reg.join(getpid(), "", "", fresh, allow, ++t);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!reg.leave(joined.slot, joined.serial)) {
            std::fprintf(stderr, "registry-bench: a join of 64 new channels failed\n");
            std::exit(1);
        }
    }
    munmap(mem, size);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

} // namespace

int main(int argc, char **argv)
{
    std::vector<std::uint32_t> sizes;
    for (int i = 1; i < argc; ++i)
        sizes.push_back(static_cast<std::uint32_t>(std::strtoul(argv[i], nullptr, 10)));
    if (sizes.empty())
        sizes = {10000, 100000};
    std::printf("subscribe naming 64 new channels, table full (median of the joins, ms)\n");
    std::printf("%10s %12s %12s %10s\n", "channels", "old", "new", "old/new");
    for (std::uint32_t n : sizes) {
        const int joins = n > 50000 ? 10 : 30;
        const double old_ms = median_join_ms<sse_old::Registry>(n, joins,
                                                                 sse_old::DuplicatePolicy::Allow);
        const double new_ms = median_join_ms<sse::Registry>(n, 200, sse::DuplicatePolicy::Allow);
        std::printf("%10u %12.3f %12.3f %10.0f\n", n, old_ms, new_ms, old_ms / new_ms);
    }
    return 0;
}
