/* The bus: ordering, wrap-around, eviction, overrun detection, resume and history limits,
 * several writer processes, and writers killed with SIGKILL in the middle of a publish. */
#include "unit.h"

#include "sse/bus.h"

#include <csignal>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sse;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000; /* a fixed "now", in microseconds */

struct SharedBus {
    void *mem = nullptr;
    std::size_t size = 0;
    Bus bus;
    explicit SharedBus(std::size_t n) : size(n)
    {
        mem = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert(mem != MAP_FAILED);
        ck_assert(Bus::format(mem, n, kT0).empty());
        std::string err;
        bus = Bus::attach(mem, n, &err);
        ck_assert_msg(bus.valid(), "%s", err.c_str());
    }
    ~SharedBus() { munmap(mem, size); }
};

EventFields data_event(const std::string &data, const std::string &id = "")
{
    EventFields ev;
    ev.has_data = true;
    ev.data = data;
    ev.id = id;
    return ev;
}

/* The data of an encoded single-line event. */
std::string data_of(const BusEvent &e)
{
    std::size_t p = e.wire.find("data: ");
    ck_assert(p != std::string::npos);
    std::size_t end = e.wire.find('\n', p);
    return e.wire.substr(p + 6, end - p - 6);
}

/* A payload that says who wrote it and carries its own length check. */
std::string payload(int writer, int i, std::size_t filler)
{
    return "w" + std::to_string(writer) + ":" + std::to_string(i) + ":" +
           std::to_string(filler) + ":" + std::string(filler, 'a' + (i % 26));
}

bool payload_ok(const std::string &d, int *writer, int *i)
{
    std::size_t filler;
    char c;
    int used = 0;
    if (sscanf(d.c_str(), "w%d:%d:%zu%c%n", writer, i, &filler, &c, &used) != 4 || c != ':')
        return false;
    return d.size() == static_cast<std::size_t>(used) + filler &&
           d.find_first_not_of(static_cast<char>('a' + (*i % 26)), used) == std::string::npos;
}

std::vector<BusEvent> drain(BusReader &r, int *overruns = nullptr)
{
    std::vector<BusEvent> out;
    BusEvent e;
    for (;;) {
        auto n = r.next(&e);
        if (n == BusReader::Next::None)
            return out;
        if (n == BusReader::Next::Overrun) {
            if (overruns)
                ++*overruns;
            continue;
        }
        out.push_back(e);
    }
}

} // namespace

START_TEST(publish_order_and_channel_filter)
{
    SharedBus sb(1 << 20);
    BusReader ra(sb.bus, ChannelSet({"a"}));
    BusReader rab(sb.bus, ChannelSet({"a", "b"}));
    ra.start_live();
    rab.start_live();
    auto p1 = sb.bus.publish({"a"}, data_event("1"), kT0);
    sb.bus.publish({"b"}, data_event("2"), kT0);
    sb.bus.publish({"a", "b"}, data_event("3", "custom"), kT0);
    auto ea = drain(ra);
    auto eab = drain(rab);
    ck_assert_int_eq(ea.size(), 2);
    ck_assert_int_eq(eab.size(), 3); /* the event on both channels comes once */
    assert_str(data_of(ea[0]), "1");
    assert_str(data_of(ea[1]), "3");
    assert_str(ea[0].id, std::to_string(p1.seq));
    ck_assert(ea[0].seq >= static_cast<std::uint64_t>(kT0)); /* seqs start at creation time */
    assert_str(ea[1].id, "custom");
    ck_assert(ea[1].wire.rfind("id: custom\n", 0) == 0);
    ck_assert_int_eq(eab[2].channels.size(), 2);
    BusStats st = sb.bus.stats();
    ck_assert_int_eq(st.published, 3);
    ck_assert_int_eq(st.next_seq - st.oldest_seq, 3);
}
END_TEST

START_TEST(wrap_around_keeps_every_event_for_a_reader_that_keeps_up)
{
    SharedBus sb(Bus::min_size());
    BusReader r(sb.bus, ChannelSet({"c"}));
    r.start_live();
    std::mt19937 rng(42);
    int next_expected = 0;
    for (int i = 0; i < 20000; ++i) {
        sb.bus.publish({"c"}, data_event(payload(0, i, rng() % 3000)), kT0);
        if (rng() % 4 == 0 || i == 19999) {
            int overruns = 0;
            for (const auto &e : drain(r, &overruns)) {
                int w, k;
                ck_assert_msg(payload_ok(data_of(e), &w, &k), "corrupt payload");
                ck_assert_int_eq(k, next_expected);
                ++next_expected;
            }
            ck_assert_int_eq(overruns, 0);
        }
        BusStats st = sb.bus.stats();
        ck_assert(st.bytes_used <= st.ring_size);
    }
    ck_assert_int_eq(next_expected, 20000);
    BusStats st = sb.bus.stats();
    ck_assert(st.evicted > 0);
    ck_assert_int_eq(st.evicted + (st.next_seq - st.oldest_seq), 20000);
}
END_TEST

START_TEST(eviction_keeps_the_newest)
{
    SharedBus sb(Bus::min_size());
    for (int i = 0; i < 5000; ++i)
        sb.bus.publish({"c"}, data_event(payload(0, i, 100), "e" + std::to_string(i)), kT0);
    BusReader r(sb.bus, ChannelSet({"c"}));
    /* e0 was evicted long ago: everything retained comes back, and the caller is told. */
    ck_assert(!r.start_after("e0", HistoryLimits{1000000, 0}, kT0));
    auto ev = drain(r);
    BusStats st = sb.bus.stats();
    ck_assert_int_eq(ev.size(), st.next_seq - st.oldest_seq);
    ck_assert(ev.size() > 100);
    assert_str(ev.back().id, "e4999");
    for (std::size_t i = 1; i < ev.size(); ++i)
        ck_assert_int_eq(ev[i].seq, ev[i - 1].seq + 1);
}
END_TEST

START_TEST(overrun_is_detected)
{
    SharedBus sb(Bus::min_size());
    BusReader r(sb.bus, ChannelSet({"c"}));
    r.start_live();
    sb.bus.publish({"c"}, data_event(payload(0, 0, 10)), kT0);
    BusEvent e;
    ck_assert(r.next(&e) == BusReader::Next::Event);
    for (int i = 1; i < 3000; ++i) /* far more than the ring holds */
        sb.bus.publish({"c"}, data_event(payload(0, i, 200)), kT0);
    ck_assert(r.next(&e) == BusReader::Next::Overrun);
    auto rest = drain(r);
    ck_assert(!rest.empty());
    BusStats st = sb.bus.stats();
    ck_assert_int_eq(rest.front().seq, st.oldest_seq);
    int w, k;
    ck_assert(payload_ok(data_of(rest.back()), &w, &k));
    ck_assert_int_eq(k, 2999);
}
END_TEST

START_TEST(resume_after_an_id)
{
    SharedBus sb(1 << 20);
    std::vector<PublishResult> p;
    for (int i = 0; i < 10; ++i)
        p.push_back(sb.bus.publish({i % 2 ? "odd" : "even"}, data_event(std::to_string(i)),
                                   kT0 + i * 1000000LL));
    BusReader r(sb.bus, ChannelSet({"odd", "even"}));
    ck_assert(r.start_after(p[6].id, HistoryLimits{100, 0}, kT0 + 10000000));
    auto ev = drain(r);
    ck_assert_int_eq(ev.size(), 3);
    assert_str(data_of(ev[0]), "7");
    /* then live */
    sb.bus.publish({"odd"}, data_event("live"), kT0);
    ev = drain(r);
    ck_assert_int_eq(ev.size(), 1);
    assert_str(data_of(ev[0]), "live");

    /* A bus id from another channel is still a position. */
    BusReader only_odd(sb.bus, ChannelSet({"odd"}));
    ck_assert(only_odd.start_after(p[6].id, HistoryLimits{100, 0}, kT0));
    ev = drain(only_odd);
    ck_assert_int_eq(ev.size(), 3); /* 7, 9, live */

    /* The newest id: nothing to replay, but found. */
    BusReader newest(sb.bus, ChannelSet({"odd"}));
    ck_assert(newest.start_after(std::to_string(sb.bus.stats().next_seq - 1),
                                 HistoryLimits{100, 0}, kT0));
    ck_assert_int_eq(drain(newest).size(), 0);

    /* An id the bus never issued. */
    BusReader unknown(sb.bus, ChannelSet({"even"}));
    ck_assert(!unknown.start_after("nope", HistoryLimits{100, 0}, kT0));
    ck_assert_int_eq(drain(unknown).size(), 5);
}
END_TEST

START_TEST(history_limits)
{
    SharedBus sb(1 << 20);
    for (int i = 0; i < 10; ++i)
        sb.bus.publish({"a"}, data_event(std::to_string(i)), kT0 + i * 1000000LL);
    sb.bus.publish({"b"}, data_event("b"), kT0 + 10000000);
    BusReader count(sb.bus, ChannelSet({"a", "b"}));
    ck_assert(!count.start_after("unknown", HistoryLimits{3, 0}, kT0 + 10000000));
    auto ev = drain(count);
    ck_assert_int_eq(ev.size(), 4); /* the newest 3 of a, the one of b */
    assert_str(data_of(ev[0]), "7");
    assert_str(data_of(ev[3]), "b");

    BusReader age(sb.bus, ChannelSet({"a"}));
    /* now = t0 + 10 s, max age 4 s: events published at t0+6 .. t0+9 */
    ck_assert(!age.start_after("unknown", HistoryLimits{100, 4}, kT0 + 10000000));
    ev = drain(age);
    ck_assert_int_eq(ev.size(), 4);
    assert_str(data_of(ev[0]), "6");

    BusReader none(sb.bus, ChannelSet({"a"}));
    none.start_after("unknown", HistoryLimits{0, 0}, kT0);
    ck_assert_int_eq(drain(none).size(), 0);
}
END_TEST

START_TEST(layout_checks_on_attach)
{
    SharedBus sb(1 << 20);
    std::string err;
    ck_assert(!Bus::attach(sb.mem, (1 << 20) - 8, &err).valid());
    ck_assert(err.find("bytes") != std::string::npos);
    std::vector<char> zero(1 << 16, 0);
    ck_assert(!Bus::attach(zero.data(), zero.size(), &err).valid());
    ck_assert(!Bus::format(zero.data(), 1024, kT0).empty());
    /* An event over half the ring is refused whole, and the bus stays usable. */
    SharedBus small(Bus::min_size());
    bool refused = false;
    try {
        small.bus.publish({"c"}, data_event(std::string(Bus::min_size(), 'x')), kT0);
    } catch (const EventTooLarge &e) {
        refused = e.bytes > small.bus.max_record_bytes();
    }
    ck_assert(refused);
    ck_assert_int_eq(small.bus.stats().published, 0);
    small.bus.publish({"c"}, data_event("ok"), kT0);
    ck_assert_int_eq(small.bus.stats().published, 1);
}
END_TEST

/* Several processes publish at once while this one reads: nothing lost, nothing duplicated,
 * each writer's events in its order. */
START_TEST(writers_in_several_processes)
{
    SharedBus sb(64 << 20);
    const int writers = 4, per_writer = 3000;
    BusReader r(sb.bus, ChannelSet({"c"}));
    r.start_live();
    std::vector<pid_t> pids;
    for (int w = 0; w < writers; ++w) {
        pid_t pid = fork();
        ck_assert(pid >= 0);
        if (pid == 0) {
            for (int i = 0; i < per_writer; ++i)
                sb.bus.publish({"c"}, data_event(payload(w, i, i % 500)), kT0);
            _exit(0);
        }
        pids.push_back(pid);
    }
    std::vector<int> next(writers, 0);
    int total = 0;
    time_t deadline = time(nullptr) + 30;
    while (total < writers * per_writer && time(nullptr) < deadline) {
        std::uint32_t seen = sb.bus.wake_word();
        auto ev = drain(r);
        for (const auto &e : ev) {
            int w, i;
            ck_assert_msg(payload_ok(data_of(e), &w, &i), "corrupt payload");
            ck_assert_int_eq(i, next[w]);
            ++next[w];
            ++total;
        }
        if (ev.empty())
            sb.bus.wait(seen, 100);
    }
    for (pid_t pid : pids) {
        int status;
        waitpid(pid, &status, 0);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ck_assert_int_eq(total, writers * per_writer);
    ck_assert_int_eq(sb.bus.stats().published, writers * per_writer);
}
END_TEST

/* A writer killed with SIGKILL at random moments, often while holding the lock: the next
 * writer recovers the lock, and every retained event is whole. */
START_TEST(writer_killed_mid_publish)
{
    SharedBus sb(Bus::min_size() * 4);
    std::mt19937 rng(7);
    std::uint64_t recoveries = 0;
    int kills = 0;
    for (; kills < 400 && recoveries < 5; ++kills) {
        pid_t pid = fork();
        ck_assert(pid >= 0);
        if (pid == 0) {
            for (int i = 0;; ++i)
                sb.bus.publish({"c"}, data_event(payload(1, i, 1000 + i % 2000)), kT0);
        }
        usleep(200 + rng() % 3000);
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        auto res = sb.bus.publish({"c"}, data_event(payload(2, kills, 10)), kT0);
        if (res.recovered_lock)
            ++recoveries;
    }
    ck_assert_msg(recoveries > 0, "no kill landed inside publish in %d tries", kills);
    ck_assert_int_eq(sb.bus.stats().lock_recoveries, recoveries);

    BusReader r(sb.bus, ChannelSet({"c"}));
    ck_assert(!r.start_after("none", HistoryLimits{1000000, 0}, kT0));
    int overruns = 0;
    auto ev = drain(r, &overruns);
    ck_assert_int_eq(overruns, 0);
    ck_assert(!ev.empty());
    for (std::size_t i = 0; i < ev.size(); ++i) {
        int w, k;
        ck_assert_msg(payload_ok(data_of(ev[i]), &w, &k), "corrupt event after a kill");
        if (i)
            ck_assert_int_eq(ev[i].seq, ev[i - 1].seq + 1);
    }
    int w, k;
    payload_ok(data_of(ev.back()), &w, &k);
    ck_assert_int_eq(w, 2);
}
END_TEST

Suite *bus_suite()
{
    Suite *s = suite_create("bus");
    TCase *tc = tcase_create("ring");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, publish_order_and_channel_filter);
    tcase_add_test(tc, wrap_around_keeps_every_event_for_a_reader_that_keeps_up);
    tcase_add_test(tc, eviction_keeps_the_newest);
    tcase_add_test(tc, overrun_is_detected);
    tcase_add_test(tc, resume_after_an_id);
    tcase_add_test(tc, history_limits);
    tcase_add_test(tc, layout_checks_on_attach);
    suite_add_tcase(s, tc);
    tc = tcase_create("processes");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, writers_in_several_processes);
    tcase_add_test(tc, writer_killed_mid_publish);
    suite_add_tcase(s, tc);
    return s;
}
