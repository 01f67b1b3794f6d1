/* Resume latency: how long BusReader::start_after takes (and draining the replay it queued)
 * on a full bus of small events, for the cases a reconnecting client hits:
 *   recent   the bus id of the event 300 records back (a client that was briefly away)
 *   gone     a bus id older than anything retained (a client away for long)
 *   pub      a publisher-given id about 300 records back, of an event on the reader's channel
 *            (the id a client holds is one it received)
 *   unknown  a publisher-style id the bus never held (searched for across the whole ring)
 * Events go round-robin to 4 channels; the reader subscribes to one, with the default
 * SSEHistory (100 events, 3600 s). Nothing else runs on the bus while it is measured.
 *
 *   make bench-resume                  (or: build/resume-bench [MEGABYTES ...])
 * Prints, per bus size, the median and the worst of 20 resumes of each kind, in ms. */
#include "sse/bus.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/mman.h>
#include <vector>

using namespace sse;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;
constexpr int kRepeats = 20;

double ms_since(Clock::time_point t0)
{
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void run(std::size_t megabytes, bool publisher_ids)
{
    const std::size_t size = megabytes << 20;
    void *mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || !Bus::format(mem, size, kT0).empty()) {
        std::fprintf(stderr, "cannot make a %zu MB bus\n", megabytes);
        std::exit(1);
    }
    std::string err;
    Bus bus = Bus::attach(mem, size, &err);

    /* Fill until the ring has wrapped once more than its size: full, and evicting. */
    const std::string data(60, 'x');
    std::vector<std::string> channels[4] = {{"c0"}, {"c1"}, {"c2"}, {"c3"}};
    std::uint64_t i = 0;
    std::int64_t now = kT0;
    auto publish_one = [&]() {
        EventFields ev;
        ev.has_data = true;
        ev.data = data;
        if (publisher_ids)
            ev.id = "p" + std::to_string(i);
        bus.publish(channels[i % 4], ev, now);
        ++i;
        now += 10; /* 100,000 events/s: the whole ring is well within the age limit */
    };
    while (bus.stats().evicted == 0)
        publish_one();
    const std::uint64_t first_fill = i;
    while (i < 2 * first_fill)
        publish_one();
    BusStats st = bus.stats();
    const std::uint64_t retained = st.next_seq - st.oldest_seq;

    struct Case {
        const char *name;
        std::string id;
        bool expect_found;
    };
    std::vector<Case> cases;
    if (publisher_ids) {
        cases.push_back({"pub", "p" + std::to_string((i - 300) & ~std::uint64_t(3)), true});
        cases.push_back({"unknown", "p-none", false});
    } else {
        cases.push_back({"recent", std::to_string(st.next_seq - 300), true});
        cases.push_back({"gone", std::to_string(st.oldest_seq - 1000), false});
    }
    for (const auto &c : cases) {
        std::vector<double> resume_ms, total_ms;
        std::size_t replayed = 0;
        for (int r = 0; r < kRepeats; ++r) {
            BusReader reader(bus, ChannelSet({"c0"}));
            auto t0 = Clock::now();
            bool found = reader.start_after(c.id, HistoryLimits{100, 3600}, now);
            resume_ms.push_back(ms_since(t0));
            BusEvent e;
            replayed = 0;
            for (BusReader::Next n; (n = reader.next(&e)) != BusReader::Next::None;)
                replayed += n == BusReader::Next::Event;
            total_ms.push_back(ms_since(t0));
            if (found != c.expect_found) {
                std::fprintf(stderr, "%s: start_after said %d\n", c.name, found);
                std::exit(1);
            }
        }
        std::sort(resume_ms.begin(), resume_ms.end());
        std::sort(total_ms.begin(), total_ms.end());
        std::printf("bus=%zuMB retained=%llu case=%-7s replayed=%zu start_after_ms median=%.3f "
                    "max=%.3f with_replay_ms median=%.3f max=%.3f\n",
                    megabytes, static_cast<unsigned long long>(retained), c.name, replayed,
                    resume_ms[kRepeats / 2], resume_ms.back(), total_ms[kRepeats / 2],
                    total_ms.back());
        std::fflush(stdout);
    }
    munmap(mem, size);
}

} // namespace

int main(int argc, char **argv)
{
    std::vector<std::size_t> sizes;
    for (int a = 1; a < argc; ++a)
        sizes.push_back(std::strtoull(argv[a], nullptr, 10));
    if (sizes.empty())
        sizes = {16, 256};
    for (std::size_t mb : sizes) {
        run(mb, false);
        run(mb, true);
    }
    return 0;
}
