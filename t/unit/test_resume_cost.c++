/* What one resume with a Last-Event-ID the bus never held costs in memory (security review,
 * finding 6): the replay is collected while the ring is walked, within SSEHistory, so the
 * allocations of start_after do not grow with the number of retained records. Counted with a
 * replacement of the global operator new that counts while armed (allocations, not time). */
#include "unit.h"

#include "sse/bus.h"

#include <cstdlib>
#include <new>
#include <string>

bool unit_fail_allocations = false;

namespace {
bool g_counting = false;
std::size_t g_allocations = 0, g_bytes = 0;
} // namespace

void *operator new(std::size_t n)
{
    if (unit_fail_allocations)
        throw std::bad_alloc();
    if (g_counting) {
        ++g_allocations;
        g_bytes += n;
    }
    if (void *p = std::malloc(n ? n : 1))
        return p;
    throw std::bad_alloc();
}
void *operator new[](std::size_t n) { return operator new(n); }
/* The nothrow forms too (std::stable_sort's buffer, std::thread): left to the sanitizer's own
 * operator new, their blocks would reach the free() below and be reported as mismatched. */
void *operator new(std::size_t n, const std::nothrow_t &) noexcept
{
    try {
        return operator new(n);
    } catch (const std::bad_alloc &) {
        return nullptr;
    }
}
void *operator new[](std::size_t n, const std::nothrow_t &t) noexcept { return operator new(n, t); }
void operator delete(void *p, const std::nothrow_t &) noexcept { std::free(p); }
void operator delete[](void *p, const std::nothrow_t &) noexcept { std::free(p); }
void operator delete(void *p) noexcept { std::free(p); }
void operator delete[](void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t) noexcept { std::free(p); }

using namespace sse;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;
constexpr int kRetained = 100000;

START_TEST(bogus_resume_allocates_within_history)
{
    const std::size_t size = 16u << 20;
    void *mem = std::aligned_alloc(4096, size);
    ck_assert(mem && Bus::format(mem, size, kT0).empty());
    std::string err;
    Bus bus = Bus::attach(mem, size, &err);
    ck_assert_msg(bus.valid(), "%s", err.c_str());
    /* Publisher-given ids: no bus id can tell the walk where to stop, so it looks at every
     * block (the costliest resume). */
    for (int i = 0; i < kRetained; ++i) {
        EventFields ev;
        ev.has_data = true;
        ev.data = "e" + std::to_string(i);
        ev.id = "id-" + std::to_string(i);
        bus.publish({i % 2 ? "a" : "b"}, ev, kT0);
    }
    ck_assert_int_ge(bus.stats().next_seq - bus.stats().oldest_seq, kRetained);

    BusReader r(bus, ChannelSet({"a", "b"}));
    g_allocations = g_bytes = 0;
    g_counting = true;
    const bool found = r.start_after("no-such-id", HistoryLimits{100, 0}, kT0);
    g_counting = false;
    ck_assert(!found);
    /* Before: a candidate (with a vector of its own) per retained record of the channels,
     * over 100,000 allocations and megabytes, then cut to SSEHistory. */
    ck_assert_msg(g_allocations < 1000, "%zu allocations for one resume over %d records",
                  g_allocations, kRetained);
    ck_assert_msg(g_bytes < (1u << 20), "%zu bytes allocated for one resume", g_bytes);
    fprintf(stderr, "# bogus resume over %d retained records: %zu allocations, %zu bytes\n",
            kRetained, g_allocations, g_bytes);

    /* And what it queued is SSEHistory's: the newest 100 of each channel. */
    BusEvent ev;
    int n = 0;
    while (r.next(&ev) == BusReader::Next::Event)
        ++n;
    ck_assert_int_eq(n, 200);
    std::free(mem);
}
END_TEST

} // namespace

Suite *resume_cost_suite()
{
    Suite *s = suite_create("resume_cost");
    TCase *tc = tcase_create("bogus id");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bogus_resume_allocates_within_history);
    suite_add_tcase(s, tc);
    return s;
}
