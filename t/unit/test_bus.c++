/* The bus: ordering, wrap-around, eviction, overrun detection, resume and history limits,
 * several writer processes, and writers killed with SIGKILL in the middle of a publish. */
#include "unit.h"

#include "sse/bus.h"
#include "sse/publisher.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace sse;

/* bus.c++'s test seams: called after a record's bytes are copied for parsing; and inside a
 * publish, with the lock held, at step 0 (space released), 1 (record written), 2 (indexed, not
 * committed). */
namespace sse::bus_testing {
extern void (*after_record_copy)();
extern void (*inside_publish)(int step);
}

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000; /* a fixed "now", in microseconds */

/* A bus in shared memory, followed by an inaccessible page: a read past the segment faults. */
struct SharedBus {
    void *mem = nullptr;
    std::size_t size = 0;
    Bus bus;
    explicit SharedBus(std::size_t n) : size(n)
    {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        n = (n + page - 1) / page * page;
        size = n;
        mem = mmap(nullptr, n + page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert(mem != MAP_FAILED);
        ck_assert(mprotect(static_cast<char *>(mem) + n, page, PROT_NONE) == 0);
        ck_assert(Bus::format(mem, n, kT0).empty());
        std::string err;
        bus = Bus::attach(mem, n, &err);
        ck_assert_msg(bus.valid(), "%s", err.c_str());
    }
    ~SharedBus() { munmap(mem, size + static_cast<std::size_t>(sysconf(_SC_PAGESIZE))); }
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

/* A Mercure update's topics and private mark travel in its record, live and in replay; a
 * record without them reads as before (no topics, not private). */
START_TEST(mercure_topics_travel_with_the_record)
{
    SharedBus sb(1 << 20);
    BusReader r(sb.bus, ChannelSet({"#mercure", "a"}));
    r.start_live();
    std::string long_topic = "https://example.com/caf\xc3\xa9/" + std::string(20000, 'x');
    UpdateTopics t{{"https://example.com/books/1", long_topic, "raw"}, true};
    sb.bus.publish({"#mercure"}, data_event("m", "urn:uuid:1"), kT0, {}, &t);
    sb.bus.publish({"a"}, data_event("plain"), kT0);
    UpdateTopics pub{{"t"}, false};
    sb.bus.publish({"#mercure"}, data_event("line1\nline2", "urn:uuid:2"), kT0, {}, &pub);
    for (int pass = 0; pass < 2; ++pass) {
        auto got = drain(r);
        ck_assert_int_eq(got.size(), 3);
        ck_assert_int_eq(got[0].topics.size(), 3);
        assert_str(got[0].topics[1], long_topic);
        assert_str(got[0].topics[2], "raw");
        ck_assert(got[0].private_update);
        assert_str(got[0].id, "urn:uuid:1");
        assert_str(data_of(got[0]), "m");
        ck_assert(got[1].topics.empty() && !got[1].private_update);
        assert_str(data_of(got[1]), "plain");
        ck_assert(!got[2].private_update);
        assert_str(got[2].wire, "id: urn:uuid:2\ndata: line1\ndata: line2\n\n");
        r.start_earliest(HistoryLimits{}, kT0); /* the same again, replayed */
    }
    /* A resume finds a Mercure id like any publisher-given id. */
    BusReader after(sb.bus, ChannelSet({"#mercure"}));
    ck_assert(after.start_after("urn:uuid:1", HistoryLimits{}, kT0));
    auto rest = drain(after);
    ck_assert_int_eq(rest.size(), 1);
    assert_str(rest[0].id, "urn:uuid:2");
}
END_TEST

/* What a publish through Redis checks before it hands an update on (check_update_fits()):
 * the draft's rules, and the size the record will take with its topics, so that an update no
 * server's bus can take is refused to its publisher rather than skipped by every reader. */
START_TEST(an_update_is_measured_with_its_topics)
{
    SharedBus sb(Bus::min_size());
    const std::string channel = "#mercure:h";
    UpdateTopics t{{std::string(300, 't'), std::string(300, 'u')}, true};
    EventFields ev = data_event("", "urn:uuid:1");
    const std::size_t bare = sb.bus.event_record_bytes({channel}, ev);
    const std::size_t with = sb.bus.event_record_bytes({channel}, ev, {}, &t);
    ck_assert_uint_ge(with, bare + 600);
    /* Data that fits without the topics and not with them. */
    ev.data = std::string(sb.bus.max_record_bytes() - with + 8, 'x');
    ck_assert_uint_le(sb.bus.event_record_bytes({channel}, ev), sb.bus.max_record_bytes());
    PublishAttempt a = check_update_fits(sb.bus, channel, t, ev);
    ck_assert(a.outcome == PublishAttempt::Outcome::TooLarge);
    bool refused = false;
    try {
        sb.bus.publish({channel}, ev, kT0, {}, &t);
    } catch (const EventTooLarge &) {
        refused = true;
    }
    ck_assert_msg(refused, "the bus took what check_update_fits() refused");
    ev.data.resize(ev.data.size() - 16);
    ck_assert(check_update_fits(sb.bus, channel, t, ev).outcome == PublishAttempt::Outcome::Published);
    ck_assert(publish_update(sb.bus, nullptr, channel, t, ev, kT0).outcome ==
              PublishAttempt::Outcome::Published);
    /* The draft's rules, as publish_update() has them. */
    UpdateTopics star{{"*"}, false};
    a = check_update_fits(sb.bus, channel, star, data_event("d", "urn:uuid:2"));
    ck_assert(a.outcome == PublishAttempt::Outcome::BadRequest);
    ck_assert(a.error.find("\"*\" is no topic") != std::string::npos);
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
    /* Read until every writer has exited, then once more: however slow the machine, no wall
     * clock decides (the test case's timeout is the safety net). */
    std::size_t running = pids.size();
    for (bool last = false;;) {
        std::uint32_t seen = sb.bus.wake_word();
        auto ev = drain(r);
        for (const auto &e : ev) {
            int w, i;
            ck_assert_msg(payload_ok(data_of(e), &w, &i), "corrupt payload");
            ck_assert_int_eq(i, next[w]);
            ++next[w];
            ++total;
        }
        if (last)
            break;
        for (pid_t &pid : pids) {
            int status;
            if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
                ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                pid = 0;
                --running;
            }
        }
        last = running == 0;
        if (ev.empty() && !last)
            sb.bus.wait(seen, 100);
    }
    ck_assert_int_eq(total, writers * per_writer);
    ck_assert_int_eq(sb.bus.stats().published, writers * per_writer);
}
END_TEST

/* In a writer child: the step of a publish at which it dies, and after how many passes. */
int kill_step = -1;
int kill_countdown = 0;
void die_at_step(int step)
{
    if (step == kill_step && --kill_countdown == 0)
        raise(SIGKILL);
}

/* A writer killed with SIGKILL inside a publish, at each step where it holds the lock (space
 * released, record written, record indexed but not committed), after a varying number of
 * publishes so that some kills land while evicting and some across the ring's end: the next
 * writer recovers the lock every time, and every retained event is whole. */
START_TEST(writer_killed_mid_publish)
{
    SharedBus sb(Bus::min_size() * 4);
    std::mt19937 rng(7);
    const int kills = 60;
    for (int k = 0; k < kills; ++k) {
        pid_t pid = fork();
        ck_assert(pid >= 0);
        if (pid == 0) {
            kill_step = k % 3;
            kill_countdown = 1 + static_cast<int>(rng() % 200);
            bus_testing::inside_publish = die_at_step;
            for (int i = 0;; ++i)
                sb.bus.publish({"c"}, data_event(payload(1, i, 1000 + i % 2000)), kT0);
        }
        rng(); /* the parent's generator keeps pace with the child's copy */
        int status = 0;
        waitpid(pid, &status, 0);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "writer %d did not die inside a publish (status %d)", k, status);
        auto res = sb.bus.publish({"c"}, data_event(payload(2, k, 10)), kT0);
        ck_assert_msg(res.recovered_lock, "kill %d (step %d): the lock was not recovered", k, k % 3);
    }
    ck_assert_int_eq(sb.bus.stats().lock_recoveries, kills);

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

    /* The seq index after the kills (an entry a killed writer left unwritten is stepped
     * over): a resume from any retained bus id replays exactly what follows it. */
    for (std::size_t i = 0; i + 1 < ev.size(); ++i) {
        BusReader from(sb.bus, ChannelSet({"c"}));
        ck_assert(from.start_after(std::to_string(ev[i].seq), HistoryLimits{1000000, 0}, kT0));
        auto rest = drain(from);
        ck_assert_int_eq(rest.size(), ev.size() - i - 1);
        ck_assert_int_eq(rest.front().seq, ev[i].seq + 1);
    }
}
END_TEST

namespace {

/* One subscriber resuming (300 events back, or from near the tail) on a full ring that writers keep publishing into,
 * then reading on until it has passed what was published by the time start_after returned.
 * Every event of the channel must come once and in order, with no gap unless the reader was
 * told (start_after false before the first, Overrun before any other). Returns a description
 * of the first violation, or empty. `stop` bounds it in time. */
std::string resume_under_load(Bus bus, int resumes, std::chrono::steady_clock::time_point stop,
                              int *done, int *told)
{
    *done = *told = 0;
    for (int n = 0; n < resumes && std::chrono::steady_clock::now() < stop; ++n) {
        /* 300 back, or just ahead of the tail: then the writers evict what the resume reads */
        const BusStats st = bus.stats();
        const std::uint64_t id = n % 2 ? st.oldest_seq + 20 : st.next_seq - 300;
        BusReader r(bus, ChannelSet({"c"}));
        bool informed = !r.start_after(std::to_string(id), HistoryLimits{1000000, 0}, kT0);
        *told += informed;
        const std::uint64_t target = bus.stats().next_seq;
        std::uint64_t last = id;
        BusEvent e;
        for (long spins = 0; last + 1 < target && spins < 100000000; ++spins) {
            BusReader::Next next = r.next(&e);
            if (next == BusReader::Next::None) {
                std::this_thread::yield();
                continue;
            }
            if (next == BusReader::Next::Overrun) {
                informed = true;
                ++*told;
                continue;
            }
            if (e.seq <= last)
                return "event " + std::to_string(e.seq) + " after " + std::to_string(last) +
                       " (duplicate or out of order)";
            if (e.seq != last + 1 && !informed)
                return "events " + std::to_string(last + 1) + " to " + std::to_string(e.seq - 1) +
                       " lost without a notice (resume " + std::to_string(n) + ")";
            last = e.seq;
            informed = false;
        }
        if (last + 1 < target)
            return "the reader never caught up";
        ++*done;
    }
    return {};
}

/* Fills the ring (it evicts from then on) with small events on "c". */
void fill(Bus bus)
{
    for (int i = 0; bus.stats().evicted < 1000; ++i)
        bus.publish({"c"}, data_event(payload(9, i, 20)), kT0);
}

} // namespace

/* Finding 1: a resume while writers publish into a full ring. Before the fix, start_after gave
 * up after 8 scans (the tail moved during each) and started live at the head of the moment:
 * what was published during the last scan was neither replayed nor sent, without a notice.
 * The writers pause between publishes, as real ones do: writers that never pause overwrite
 * the tail while the old scan reads it, and it then reported the id unknown (told) instead. */
START_TEST(resume_on_a_busy_full_ring_threads)
{
    SharedBus sb(4 << 20);
    fill(sb.bus);
    std::atomic<bool> stop_writers{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < 2; ++w)
        writers.emplace_back([&, w] {
            for (int i = 0; !stop_writers.load(); ++i) {
                sb.bus.publish({"c"}, data_event(payload(w, i, 20)), kT0);
                usleep(20);
            }
        });
    int done, told;
    std::string err = resume_under_load(sb.bus, 40, std::chrono::steady_clock::now() +
                                                         std::chrono::seconds(3), &done, &told);
    stop_writers.store(true);
    for (auto &t : writers)
        t.join();
    ck_assert_msg(err.empty(), "%s", err.c_str());
    ck_assert(done > 0);
}
END_TEST

START_TEST(resume_on_a_busy_full_ring_processes)
{
    SharedBus sb(4 << 20);
    fill(sb.bus);
    auto *stop_writers = static_cast<std::atomic<int> *>(
        mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
             -1, 0));
    ck_assert(stop_writers != MAP_FAILED);
    stop_writers->store(0);
    std::vector<pid_t> writers, readers;
    for (int w = 0; w < 2; ++w) {
        pid_t pid = fork();
        ck_assert(pid >= 0);
        if (pid == 0) {
            for (int i = 0; !stop_writers->load(); ++i) {
                sb.bus.publish({"c"}, data_event(payload(w, i, 20)), kT0);
                usleep(20);
            }
            _exit(0);
        }
        writers.push_back(pid);
    }
    for (int k = 0; k < 2; ++k) {
        pid_t pid = fork();
        ck_assert(pid >= 0);
        if (pid == 0) {
            int done, told;
            std::string err = resume_under_load(
                sb.bus, 20, std::chrono::steady_clock::now() + std::chrono::seconds(3), &done,
                &told);
            if (!err.empty())
                fprintf(stderr, "reader %d: %s\n", k, err.c_str());
            _exit(!err.empty() ? 1 : done == 0 ? 2 : 0);
        }
        readers.push_back(pid);
    }
    int failed = 0;
    for (pid_t pid : readers) {
        int status;
        waitpid(pid, &status, 0);
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop_writers->store(1);
    for (pid_t pid : writers)
        waitpid(pid, nullptr, 0);
    munmap(stop_writers, sizeof(std::atomic<int>));
    ck_assert_msg(failed == 0, "%d of 2 reader processes saw a loss without a notice", failed);
}
END_TEST

/* Resuming by a bus id anywhere in a ring that wrapped many times (the seq index and its
 * fallbacks): exactly the events after it, from the next one on. */
START_TEST(resume_by_bus_id_anywhere)
{
    SharedBus sb(Bus::min_size() * 2);
    std::mt19937 rng(3);
    for (int i = 0; i < 30000; ++i)
        sb.bus.publish({"c"}, data_event(payload(0, i, rng() % 400)), kT0);
    BusStats st = sb.bus.stats();
    ck_assert(st.evicted > 0);
    for (std::uint64_t id = st.oldest_seq; id < st.next_seq; ++id) {
        BusReader r(sb.bus, ChannelSet({"c"}));
        ck_assert(r.start_after(std::to_string(id), HistoryLimits{1000000, 0}, kT0));
        auto ev = drain(r);
        ck_assert_int_eq(ev.size(), st.next_seq - id - 1);
        for (std::size_t i = 0; i < ev.size(); ++i)
            ck_assert_int_eq(ev[i].seq, id + 1 + i);
    }
    BusReader gone(sb.bus, ChannelSet({"c"}));
    ck_assert(!gone.start_after(std::to_string(st.oldest_seq - 1), HistoryLimits{5, 0}, kT0));
    auto ev = drain(gone);
    ck_assert_int_eq(ev.size(), 5);
    ck_assert_int_eq(ev.back().seq, st.next_seq - 1);
}
END_TEST

/* The resume's backward walk (index blocks, block filters, early stops) against the old
 * forward scan, written out here over a copy of every record: same found, same replay, for
 * channel sets, ids (bus ids, publisher ids reused across channels, gone, unknown), counts and
 * closed channels, on a ring that wrapped many times. */
START_TEST(resume_walk_agrees_with_a_full_scan)
{
    SharedBus sb(Bus::min_size() * 4);
    BusReader everything(sb.bus, ChannelSet::all());
    everything.start_live();
    std::vector<BusEvent> model;
    std::mt19937 rng(11);
    const std::vector<std::string> names = {"a", "b", "c", "d", "rare"};
    for (int i = 0; i < 20000; ++i) {
        std::vector<std::string> ch = {names[rng() % 1000 < 5 ? 4 : rng() % 4]};
        if (rng() % 10 == 0 && ch[0] != "a")
            ch.push_back("a");
        if (rng() % 700 == 0) {
            sb.bus.publish_control(RecordKind::CloseChannels, {names[rng() % 4]}, {}, "closed",
                                   kT0);
        } else {
            std::string id = rng() % 3 == 0 ? "x" + std::to_string(rng() % 40) : "";
            sb.bus.publish(ch, data_event("d", id), kT0);
        }
        if (i % 50 == 0 || i == 19999) {
            int overruns = 0;
            for (auto &e : drain(everything, &overruns))
                model.push_back(e);
            ck_assert_int_eq(overruns, 0);
        }
    }
    const BusStats st = sb.bus.stats();
    std::vector<BusEvent> retained;
    for (auto &e : model)
        if (e.seq >= st.oldest_seq)
            retained.push_back(e);
    ck_assert_int_eq(retained.size(), st.next_seq - st.oldest_seq);

    for (int trial = 0; trial < 400; ++trial) {
        std::vector<std::string> subscribed;
        for (const auto &n : names)
            if (rng() % 3 == 0)
                subscribed.push_back(n);
        if (subscribed.empty())
            subscribed.push_back(names[rng() % names.size()]);
        std::string id;
        switch (rng() % 4) {
        case 0: id = retained[rng() % retained.size()].id; break;
        case 1: id = "x" + std::to_string(rng() % 40); break;
        case 2: id = std::to_string(st.oldest_seq - 1 - rng() % 100); break;
        default: id = "nope"; break;
        }
        const std::uint64_t counts[] = {0, 1, 3, 100, 1000000};
        const std::uint64_t count = counts[rng() % 5];

        /* The forward scan of 8826880, on the copy. */
        const std::size_t n = subscribed.size();
        std::vector<std::pair<std::uint64_t, std::vector<bool>>> candidates;
        std::uint64_t match_mine = 0, match_any = 0;
        for (const auto &e : retained) {
            std::vector<bool> on(n, false);
            bool mine = false;
            for (std::size_t k = 0; k < n; ++k)
                for (const auto &c : e.channels)
                    if (c == subscribed[k])
                        on[k] = mine = true;
            if (e.kind == RecordKind::CloseChannels) {
                for (auto &c : candidates)
                    for (std::size_t k = 0; k < n; ++k)
                        if (on[k])
                            c.second[k] = false;
            } else if (e.kind == RecordKind::Event) {
                if (e.id == id) {
                    match_any = e.seq + 1;
                    if (mine)
                        match_mine = e.seq + 1;
                }
                if (mine)
                    candidates.push_back({e.seq, on});
            }
        }
        const std::uint64_t after = match_mine ? match_mine : match_any;
        std::vector<std::uint64_t> kept(n, 0), expected;
        bool left_out = false; /* an event after the id that the count leaves out */
        for (auto it = candidates.rbegin(); it != candidates.rend() && it->first >= after; ++it) {
            bool wanted = false, open = false;
            for (std::size_t k = 0; k < n; ++k) {
                open = open || it->second[k];
                if (it->second[k] && kept[k] < count) {
                    ++kept[k];
                    wanted = true;
                }
            }
            if (wanted)
                expected.insert(expected.begin(), it->first);
            else if (open)
                left_out = true;
        }

        BusReader r(sb.bus, ChannelSet(subscribed));
        const bool found = r.start_after(id, HistoryLimits{count, 0}, kT0);
        std::vector<std::uint64_t> got;
        for (const auto &e : drain(r))
            got.push_back(e.seq);
        ck_assert_msg(found == (after != 0 && !left_out), "trial %d: found %d for id %s", trial,
                      found, id.c_str());
        ck_assert_msg(got == expected, "trial %d: %zu events replayed, %zu expected (id %s)",
                      trial, got.size(), expected.size(), id.c_str());
    }
}
END_TEST

namespace {
SharedBus *g_overwrite_bus;
bool g_overwrite_armed;

/* A writer that wraps the whole ring, filling it with bytes that read as large lengths. */
void overwrite_the_ring()
{
    if (!g_overwrite_armed)
        return;
    g_overwrite_armed = false;
    for (int i = 0; i < 60; ++i)
        g_overwrite_bus->bus.publish({"c"}, data_event(std::string(3000, '\xfe')), kT0);
}
} // namespace

/* Finding 5: a record evicted and overwritten after the reader checked its bounds. Before the
 * fix the reader read the lengths of its audience again from the ring (n_targets x 254 bytes,
 * far past the segment: SIGSEGV on the guard page); now it parses its own copy and reports
 * the overrun. The seam runs the writer exactly inside that window. */
START_TEST(record_overwritten_while_parsed)
{
    SharedBus sb(Bus::min_size());
    BusReader hub(sb.bus, ChannelSet::all());
    hub.start_live();
    Audience many;
    for (int i = 0; i < 1500; ++i)
        many.only.push_back("a");
    sb.bus.publish({"c"}, data_event("targeted"), kT0, many);
    g_overwrite_bus = &sb;
    g_overwrite_armed = true;
    bus_testing::after_record_copy = overwrite_the_ring;
    BusEvent e;
    BusReader::Next first = hub.next(&e);
    bus_testing::after_record_copy = nullptr;
    ck_assert(!g_overwrite_armed);
    ck_assert(first == BusReader::Next::Overrun);
    auto rest = drain(hub);
    ck_assert(!rest.empty());
    for (const auto &r : rest)
        assert_str(data_of(r), std::string(3000, '\xfe'));
}
END_TEST

/* Finding 6: a wake_all() between a reader's wake_word() and its wait() is not lost. */
START_TEST(wake_all_between_wake_word_and_wait)
{
    SharedBus sb(Bus::min_size());
    std::uint32_t seen = sb.bus.wake_word();
    sb.bus.wake_all();
    ck_assert(sb.bus.wake_word() != seen);
    auto t0 = std::chrono::steady_clock::now();
    sb.bus.wait(seen, 20000);
    ck_assert(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}
END_TEST

/* wait_or() returns on whichever word changed after it was read: a publish (also from another
 * process) or a local wake-up, whether it came before the wait or while it slept. Where the
 * kernel has no futex_waitv it says so at once. */
START_TEST(wait_or_returns_on_either_word)
{
    SharedBus sb(Bus::min_size());
    LocalWake local;
    const auto waits_less_than_10s = [&](const std::function<void()> &meanwhile) {
        const std::uint32_t seen = sb.bus.wake_word(), local_seen = local.word();
        std::thread other(meanwhile);
        const auto t0 = std::chrono::steady_clock::now();
        const bool waited = sb.bus.wait_or(seen, local, local_seen, 20000);
        const bool quick = std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10);
        other.join();
        return waited && quick;
    };
    if (!Bus::can_wait_or()) {
        ck_assert(!sb.bus.wait_or(sb.bus.wake_word(), local, local.word(), 20000));
        return;
    }
    std::uint32_t seen = sb.bus.wake_word(), local_seen = local.word();
    sb.bus.wake_all();
    ck_assert(sb.bus.wait_or(seen, local, local_seen, 20000)); /* before: no sleep */
    seen = sb.bus.wake_word();
    local.wake();
    ck_assert(local.word() != local_seen);
    ck_assert(sb.bus.wait_or(seen, local, local_seen, 20000));
    const auto later = [] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); };
    ck_assert(waits_less_than_10s([&] { later(); local.wake(); }));
    ck_assert(waits_less_than_10s([&] {
        later();
        pid_t pid = fork();
        if (pid == 0) {
            sb.bus.publish({"a"}, data_event("x"), kT0);
            _exit(0);
        }
        waitpid(pid, nullptr, 0);
    }));
}
END_TEST

/* A publisher and a reader in two threads, in lock step many times: the reader looks for the
 * next event and, finding none, sleeps (wait() and wait_or() in turn); the publisher publishes
 * the next one as soon as the reader has taken the previous one, so every publish races the
 * reader's check-then-sleep. A publish skips FUTEX_WAKE when it reads no sleeper: if a reader
 * could be counted too late (after the kernel compared the word) or the count read too early
 * (before the word changed), it would sleep through that publish until its timeout. The
 * count of sleepers is back at 0 afterwards. Bounded: 20,000 rounds, each sleep 10 s at most. */
START_TEST(no_wake_up_lost_between_check_and_sleep)
{
    SharedBus sb(Bus::min_size() * 4);
    const int rounds = 20000;
    const auto timeout = std::chrono::seconds(10);
    const bool waitv = Bus::can_wait_or();
    std::atomic<int> taken{0};
    LocalWake ack, local; /* ack: the reader took one; local: never woken (wait_or's other word) */
    BusReader r(sb.bus, ChannelSet({"c"}));
    r.start_live();
    std::thread publisher([&] {
        std::mt19937 rng(11);
        for (int i = 0; i < rounds; ++i) {
            /* Spins a little (a futex wake-up would come long after the reader is asleep),
             * then sleeps; publishes after a varying delay, to land anywhere in the reader's
             * check-then-sleep. */
            for (int spins = 0;; ++spins) {
                const std::uint32_t seen = ack.word();
                if (taken.load() >= i)
                    break;
                if (spins > 20000)
                    ack.wait(seen, 10000);
            }
            for (volatile unsigned d = rng() % 4000; d > 0; --d) {
            }
            sb.bus.publish({"c"}, data_event(std::to_string(i)), kT0);
        }
    });
    int got = 0, slept_to_timeout = 0;
    std::mt19937 rng(5);
    while (got < rounds && slept_to_timeout == 0) {
        const std::uint32_t seen = sb.bus.wake_word(), local_seen = local.word();
        BusEvent e;
        if (r.next(&e) == BusReader::Next::Event) {
            assert_str(data_of(e), std::to_string(got));
            taken.store(++got);
            ack.wake();
            continue;
        }
        /* A varying time between the look and the sleep, as a hub's round has. */
        for (volatile unsigned d = rng() % 8000; d > 0; --d) {
        }
        const auto t0 = std::chrono::steady_clock::now();
        if (waitv && got % 2)
            ck_assert(sb.bus.wait_or(seen, local, local_seen, 10000));
        else
            sb.bus.wait(seen, 10000);
        if (std::chrono::steady_clock::now() - t0 >= timeout)
            ++slept_to_timeout;
    }
    taken.store(rounds); /* lets the publisher finish if the loop stopped early */
    ack.wake();
    publisher.join();
    ck_assert_msg(slept_to_timeout == 0, "a wake-up was lost after %d events", got);
    ck_assert_int_eq(got, rounds);
    ck_assert_int_eq(sb.bus.stats().waiters, 0);
}
END_TEST

/* The count of sleepers: 1 while a reader waits (here: in another process), 0 once it woke;
 * the FUTEX_WAKE call is made only while one is counted. */
START_TEST(waiters_counted_while_asleep)
{
    SharedBus sb(Bus::min_size());
    ck_assert_int_eq(sb.bus.stats().waiters, 0);
    ck_assert(!sb.bus.wake_all()); /* nobody asleep: no system call */
    const std::uint32_t seen = sb.bus.wake_word();
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        sb.bus.wait(seen, 20000);
        _exit(sb.bus.wake_word() != seen ? 0 : 1);
    }
    /* Bounded: 20 s at most for the child to be counted. */
    for (int i = 0; i < 2000 && sb.bus.stats().waiters == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ck_assert_int_eq(sb.bus.stats().waiters, 1);
    ck_assert(sb.bus.wake_all()); /* a sleeper: the call is made (it wakes the child) */
    int status = 0;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(sb.bus.stats().waiters, 0);
}
END_TEST

/* Finding 9: the clock steps back between two publishes; the second event is newer along seq
 * and must not be cut by age while the first is kept (nor cut the first off). */
/* EndStream records carry stream serials in audience.only; stream_target, names_stream and
 * ended_streams are the only code that knows it, and agree. */
START_TEST(end_stream_targets)
{
    BusEvent e;
    e.kind = RecordKind::EndStream;
    e.audience.only = {stream_target(17), stream_target(3)};
    ck_assert(ended_streams(e) == std::vector<std::uint64_t>({17, 3}));
    ck_assert(names_stream(e, 17) && names_stream(e, 3) && !names_stream(e, 4));
    e.kind = RecordKind::Event; /* there `only` holds client ids */
    ck_assert(ended_streams(e).empty());
    ck_assert(!names_stream(e, 17));
}
END_TEST

START_TEST(age_cut_with_a_clock_that_steps_back)
{
    SharedBus sb(1 << 20);
    sb.bus.publish({"a"}, data_event("first"), kT0 + 10000000);
    sb.bus.publish({"a"}, data_event("second"), kT0 + 5000000); /* clock stepped back 5 s */
    BusReader r(sb.bus, ChannelSet({"a"}));
    /* now = t0 + 12 s, max age 4 s: both were published at t0 + 10 s as far as the bus knows */
    r.start_after("unknown", HistoryLimits{100, 4}, kT0 + 12000000);
    auto ev = drain(r);
    ck_assert_int_eq(ev.size(), 2);
    assert_str(data_of(ev[0]), "first");
    assert_str(data_of(ev[1]), "second");
    ck_assert_int_eq(ev[1].time_us, kT0 + 10000000);
}
END_TEST

START_TEST(gap_record_reaches_every_reader_once)
{
    /* A Gap record has no channel: every reader gets it live (a stream of any channel, one
     * with a client id, a hub's reader of all channels), with its notice; a resume never
     * replays it. */
    SharedBus sb(1 << 20);
    BusReader ra(sb.bus, ChannelSet({"a"}));
    BusReader rb(sb.bus, ChannelSet({"b"}), "client-1");
    BusReader hub(sb.bus, ChannelSet::all());
    for (BusReader *r : {&ra, &rb, &hub})
        r->start_live();
    ck_assert_int_eq(sb.bus.stats().after_gap, 0);
    auto e1 = sb.bus.publish({"a"}, data_event("1"), kT0);
    auto g1 = sb.bus.publish_gap("notice", kT0);
    ck_assert_uint_eq(g1.seq, e1.seq + 1);
    ck_assert_uint_eq(sb.bus.stats().after_gap, g1.seq + 1);
    ck_assert_uint_eq(sb.bus.stats().next_seq, g1.seq + 1);
    sb.bus.publish({"b"}, data_event("2"), kT0);
    auto g3 = sb.bus.publish_gap("notice", kT0);
    ck_assert_uint_eq(g3.seq, g1.seq + 2);
    auto kinds = [](const std::vector<BusEvent> &v) {
        std::string out;
        for (const BusEvent &e : v)
            out += e.kind == RecordKind::Gap ? std::string("<gap>,") : data_of(e) + ",";
        return out;
    };
    assert_str(kinds(drain(ra)), "1,<gap>,<gap>,");
    assert_str(kinds(drain(rb)), "<gap>,2,<gap>,");
    std::vector<BusEvent> all = drain(hub);
    assert_str(kinds(all), "1,<gap>,2,<gap>,");
    assert_str(all[1].wire, "notice");
    ck_assert(all[1].channels.empty());
    /* Not replayed, not counted in a channel's history. */
    BusReader resumed(sb.bus, ChannelSet({"a", "b"}));
    resumed.start_earliest(HistoryLimits(), kT0);
    assert_str(kinds(drain(resumed)), "1,2,");
    ck_assert_int_eq(sb.bus.channel_history("a").retained, 1);
}
END_TEST

START_TEST(stream_opened_between_two_gaps_gets_the_second)
{
    /* Two gaps with nothing published between are still two records: a stream placed at the
     * head after the first (live, or resumed from after it) may have lost events at the
     * second, and only a record of its own tells it. (Merged into one record, this stream
     * was never told.) */
    SharedBus sb(1 << 20);
    sb.bus.publish({"c"}, data_event("1"), kT0);
    auto g1 = sb.bus.publish_gap("notice", kT0);
    BusReader live(sb.bus, ChannelSet({"c"}));
    live.start_live();
    auto g2 = sb.bus.publish_gap("notice", kT0);
    ck_assert_uint_eq(g2.seq, g1.seq + 1);
    auto got = drain(live);
    ck_assert_int_eq(got.size(), 1);
    ck_assert(got[0].kind == RecordKind::Gap);
}
END_TEST

START_TEST(resume_across_a_gap_is_not_found)
{
    /* From an event before the newest gap: false (the caller sends sse-missed), the events
     * after the id queued, the gap not returned live; from after it: true. From an event
     * between two gaps: false. */
    SharedBus sb(1 << 20);
    auto e1 = sb.bus.publish({"c"}, data_event("1"), kT0);
    sb.bus.publish_gap("notice", kT0);
    auto e2 = sb.bus.publish({"c"}, data_event("2", "given-2"), kT0);
    auto e3 = sb.bus.publish({"c"}, data_event("3"), kT0);
    BusReader r(sb.bus, ChannelSet({"c"}));
    ck_assert(!r.start_after(e1.id, HistoryLimits(), kT0));
    auto got = drain(r);
    ck_assert_int_eq(got.size(), 2);
    assert_str(data_of(got[0]), "2");
    assert_str(data_of(got[1]), "3");
    ck_assert(r.start_after(e2.id, HistoryLimits(), kT0));
    ck_assert_int_eq(drain(r).size(), 1);
    sb.bus.publish_gap("notice", kT0);
    ck_assert(!r.start_after(e3.id, HistoryLimits(), kT0));
    ck_assert_int_eq(drain(r).size(), 0);
}
END_TEST

namespace {
Bus *gap_bus = nullptr;
void gap_during_walk()
{
    bus_testing::after_record_copy = nullptr;
    gap_bus->publish_gap("notice", kT0);
}
} // namespace

START_TEST(gap_marked_during_a_resume_comes_live)
{
    /* A gap marked while a resume walks the ring (after its snapshot) is after its position:
     * the resume is found, and the Gap record comes live, once. */
    SharedBus sb(1 << 20);
    auto e1 = sb.bus.publish({"c"}, data_event("1"), kT0);
    sb.bus.publish({"c"}, data_event("2"), kT0);
    BusReader r(sb.bus, ChannelSet({"c"}));
    gap_bus = &sb.bus;
    bus_testing::after_record_copy = gap_during_walk;
    const bool found = r.start_after(e1.id, HistoryLimits(), kT0);
    bus_testing::after_record_copy = nullptr;
    ck_assert(found);
    auto got = drain(r);
    ck_assert_int_eq(got.size(), 2);
    assert_str(data_of(got[0]), "2");
    ck_assert(got[1].kind == RecordKind::Gap);
}
END_TEST

Suite *bus_suite()
{
    Suite *s = suite_create("bus");
    TCase *tc = tcase_create("ring");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, publish_order_and_channel_filter);
    tcase_add_test(tc, mercure_topics_travel_with_the_record);
    tcase_add_test(tc, an_update_is_measured_with_its_topics);
    tcase_add_test(tc, wrap_around_keeps_every_event_for_a_reader_that_keeps_up);
    tcase_add_test(tc, eviction_keeps_the_newest);
    tcase_add_test(tc, overrun_is_detected);
    tcase_add_test(tc, resume_after_an_id);
    tcase_add_test(tc, history_limits);
    tcase_add_test(tc, layout_checks_on_attach);
    tcase_add_test(tc, resume_by_bus_id_anywhere);
    tcase_add_test(tc, resume_walk_agrees_with_a_full_scan);
    tcase_add_test(tc, record_overwritten_while_parsed);
    tcase_add_test(tc, wake_all_between_wake_word_and_wait);
    tcase_add_test(tc, wait_or_returns_on_either_word);
    tcase_add_test(tc, no_wake_up_lost_between_check_and_sleep);
    tcase_add_test(tc, age_cut_with_a_clock_that_steps_back);
    tcase_add_test(tc, end_stream_targets);
    tcase_add_test(tc, gap_record_reaches_every_reader_once);
    tcase_add_test(tc, resume_across_a_gap_is_not_found);
    tcase_add_test(tc, stream_opened_between_two_gaps_gets_the_second);
    tcase_add_test(tc, gap_marked_during_a_resume_comes_live);
    suite_add_tcase(s, tc);
    tc = tcase_create("processes");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, writers_in_several_processes);
    tcase_add_test(tc, writer_killed_mid_publish);
    tcase_add_test(tc, waiters_counted_while_asleep);
    tcase_add_test(tc, resume_on_a_busy_full_ring_threads);
    tcase_add_test(tc, resume_on_a_busy_full_ring_processes);
    suite_add_tcase(s, tc);
    return s;
}
