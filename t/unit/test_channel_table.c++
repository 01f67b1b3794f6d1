/* The registry's channel table against hostile clients (security finding 2): a closed
 * channel is never dropped by strangers' churn, channels only subscribers named take at most
 * their share, the hash index stays exact through churn and through a holder killed at any
 * point of a change, and the refusal log is rate-limited. */
#include "unit.h"

#include "sse/bus.h"
#include "sse/registry.h"

#include <map>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sse;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;
using Outcome = Registry::Join::Outcome;

struct Table {
    void *mem = nullptr;
    std::size_t size = 0;
    Registry reg;
    Table(std::uint32_t subs, std::uint32_t chans) : size(Registry::bytes_needed(subs, chans))
    {
        mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert(mem != MAP_FAILED);
        ck_assert(Registry::format(mem, size, subs, chans).empty());
        std::string err;
        reg = Registry::attach(mem, size, &err);
        ck_assert_msg(reg.valid(), "%s", err.c_str());
    }
    ~Table() { munmap(mem, size); }
};

std::vector<std::string> names(const std::string &prefix, int from, int n)
{
    std::vector<std::string> out;
    for (int i = from; i < from + n; ++i)
        out.push_back(prefix + std::to_string(i));
    return out;
}

bool closed_view(Registry &reg, const std::string &c)
{
    bool closed = false;
    std::int64_t retry;
    reg.subscribe_view({c}, &closed, &retry);
    return closed;
}

/* The table as the registry reports it agrees with itself: every listed channel is found by
 * name (the index names each used entry once, and only those), the totals count them, and
 * each channel's subscribers are those of `streams` (name -> open streams naming it). */
void assert_consistent(Registry &reg, const std::map<std::string, std::uint64_t> &streams)
{
    const auto all = reg.channels();
    const RegistryTotals t = reg.totals();
    ck_assert_uint_eq(all.size(), t.channels);
    ck_assert_uint_le(t.channels, t.max_channels);
    std::uint64_t unpublished = 0;
    for (std::size_t i = 0; i < all.size(); ++i) {
        if (i > 0)
            ck_assert_msg(all[i - 1].name != all[i].name, "%s: two entries", all[i].name.c_str());
        ChannelInfo ci;
        ck_assert_msg(reg.channel(all[i].name, &ci), "%s: listed, not found by name",
                      all[i].name.c_str());
        auto it = streams.find(all[i].name);
        ck_assert_uint_eq(ci.subscribers, it == streams.end() ? 0 : it->second);
        if (ci.published == 0 && !ci.closed)
            ++unpublished;
    }
    for (const auto &[name, n] : streams) {
        ChannelInfo ci;
        ck_assert_msg(n == 0 || reg.channel(name, &ci), "%s: has streams, no entry", name.c_str());
    }
    ck_assert_uint_eq(unpublished, t.unpublished_channels);
    ck_assert_uint_le(t.unpublished_channels, t.max_unpublished_channels);
}

/* Joins one stream on `chans`; on success counts it in `streams`. */
struct Stream {
    std::uint32_t slot;
    std::uint64_t serial;
    std::vector<std::string> chans;
};

} // namespace

START_TEST(closed_channel_stays_closed_through_churn)
{
    /* Finding 2: a stranger's fresh names made the LRU drop the closed entry (the channel
     * then answered 200 again). A closed entry is never dropped, however many come and go. */
    Table tb(16, 8);
    Registry &reg = tb.reg;
    reg.note_publish({"gone"}, -1, kT0);
    ck_assert_int_eq(reg.close_channels({"gone"}, kT0 + 1).size(), 1);
    std::int64_t t = kT0 + 2;
    for (int i = 0; i < 200; ++i) {
        /* Anonymous churn: a stream on a fresh name that ends, and publishes to fresh names. */
        auto j = reg.join(getpid(), "", "", {"churn" + std::to_string(i)}, DuplicatePolicy::Allow,
                          ++t);
        ck_assert(j.outcome == Outcome::Joined);
        ck_assert(reg.leave(j.slot, j.serial));
        reg.note_publish({"pub" + std::to_string(i)}, -1, ++t);
    }
    ck_assert_msg(closed_view(reg, "gone"), "the closed channel was forgotten by churn");
    ck_assert_uint_ge(reg.totals().dropped_channels, 390);
    /* The next publish reopens it; then it can be dropped like any other. */
    reg.note_publish({"gone"}, -1, ++t);
    ck_assert(!closed_view(reg, "gone"));
    for (int i = 0; i < 20; ++i)
        reg.note_publish({"later" + std::to_string(i)}, -1, ++t);
    ChannelInfo ci;
    ck_assert(!reg.channel("gone", &ci));
    assert_consistent(reg, {});
}
END_TEST

START_TEST(table_of_closed_channels_has_no_room)
{
    /* Every entry closed (a publisher's act): none is dropped; a subscribe that needs a new
     * entry is refused (SSE0109), a publish to a new channel is not counted; a publish that
     * reopens one makes it droppable again. */
    Table tb(16, 4);
    Registry &reg = tb.reg;
    const auto closed = names("c", 0, 4);
    reg.note_publish(closed, -1, kT0);
    ck_assert_int_eq(reg.close_channels(closed, kT0 + 1).size(), 4);
    ck_assert(reg.join(getpid(), "", "", {"new"}, DuplicatePolicy::Allow, kT0 + 2).outcome ==
              Outcome::TooManyChannels);
    reg.note_publish({"fresh"}, -1, kT0 + 3);
    ChannelInfo ci;
    ck_assert(!reg.channel("fresh", &ci));
    for (const auto &c : closed)
        ck_assert(closed_view(reg, c));
    reg.note_publish({"c2"}, -1, kT0 + 4);
    auto j = reg.join(getpid(), "", "", {"new"}, DuplicatePolicy::Allow, kT0 + 5);
    ck_assert(j.outcome == Outcome::Joined);
    ck_assert(!reg.channel("c2", &ci));
    ck_assert(closed_view(reg, "c0") && closed_view(reg, "c1") && closed_view(reg, "c3"));
    ck_assert(reg.leave(j.slot, j.serial));
}
END_TEST

START_TEST(unpublished_channels_take_at_most_their_share)
{
    /* Finding 2: 157 streams x 64 made-up names took all 10,000 entries. Names only
     * subscribers gave take at most the share; publishers' channels keep the rest. */
    Table tb(64, 20);
    Registry &reg = tb.reg;
    reg.set_max_unpublished(10);
    ck_assert_uint_eq(reg.max_unpublished(), 10);
    std::int64_t t = kT0;
    reg.note_publish({"news"}, -1, ++t); /* published before the attack, idle */
    std::vector<Registry::Join> attacker;
    for (int i = 0; i < 5; ++i) {
        attacker.push_back(reg.join(getpid(), "", "", names("x" + std::to_string(i) + "-", 0, 2),
                                    DuplicatePolicy::Allow, ++t));
        ck_assert(attacker.back().outcome == Outcome::Joined);
    }
    /* The share is taken: more made-up names are refused, however few. */
    auto more = reg.join(getpid(), "", "", {"x-more"}, DuplicatePolicy::Allow, ++t);
    ck_assert(more.outcome == Outcome::TooManyUnpublished);
    ck_assert(reg.join(getpid(), "", "", {"news", "x-more"}, DuplicatePolicy::Allow, ++t).outcome ==
              Outcome::TooManyUnpublished);
    ck_assert_uint_eq(reg.totals().refused_unpublished, 2);
    /* A victim on the published channel, publishes to new channels, subscribers of those. */
    auto victim = reg.join(getpid(), "", "", {"news"}, DuplicatePolicy::Allow, ++t);
    ck_assert(victim.outcome == Outcome::Joined);
    reg.note_publish(names("p", 0, 9), -1, ++t);
    std::vector<Registry::Join> readers;
    for (const auto &p : names("p", 0, 9)) {
        readers.push_back(reg.join(getpid(), "", "", {p}, DuplicatePolicy::Allow, ++t));
        ck_assert(readers.back().outcome == Outcome::Joined);
    }
    ck_assert_uint_eq(reg.totals().channels, 20);
    /* Now the table is full: a new channel of any kind has no room. */
    ck_assert(reg.join(getpid(), "", "", {"x-more"}, DuplicatePolicy::Allow, ++t).outcome ==
              Outcome::TooManyChannels);
    /* The attacker's streams end: their idle entries make room for new made-up names,
     * never the publishers' idle entries, which keep the 20 - 10 entries the share leaves. */
    for (auto &j : readers)
        ck_assert(reg.leave(j.slot, j.serial));
    for (auto &j : attacker)
        ck_assert(reg.leave(j.slot, j.serial));
    for (int i = 0; i < 50; ++i) {
        auto j = reg.join(getpid(), "", "", {"y" + std::to_string(i)}, DuplicatePolicy::Allow, ++t);
        ck_assert(j.outcome == Outcome::Joined);
        ck_assert(reg.leave(j.slot, j.serial));
    }
    ChannelInfo ci;
    for (const auto &p : names("p", 0, 9))
        ck_assert_msg(reg.channel(p, &ci) && ci.published == 1, "%s: dropped for made-up names",
                      p.c_str());
    ck_assert(reg.channel("news", &ci) && ci.subscribers == 1);
    ck_assert_uint_eq(reg.totals().unpublished_channels, 10);
    /* A DELETE makes an entry a publisher's: it leaves the share. */
    ck_assert_int_eq(reg.close_channels({"y49"}, ++t).size(), 1);
    ck_assert_uint_eq(reg.totals().unpublished_channels, 9);
    ck_assert(closed_view(reg, "y49"));
    ck_assert(reg.leave(victim.slot, victim.serial));
    assert_consistent(reg, {});
}
END_TEST

START_TEST(share_counts_the_entries_a_join_frees_and_pins)
{
    /* The room a join needs is decided before anything changes, from the entries it touches
     * only: a replaced stream's idle entries count, its own entries are never dropped. */
    Table tb(16, 8);
    Registry &reg = tb.reg;
    reg.set_max_unpublished(3);
    auto a = reg.join(getpid(), "alice", "", {"u0", "u1", "u2"}, DuplicatePolicy::Allow, kT0);
    ck_assert(a.outcome == Outcome::Joined);
    /* Replace: u0..u2 are freed by the replaced stream, u3 takes one of them; u1 is kept. */
    auto b = reg.join(getpid(), "alice", "", {"u1", "u3"}, DuplicatePolicy::Replace, kT0 + 1);
    ck_assert(b.outcome == Outcome::Joined);
    ck_assert_int_eq(b.replaced.size(), 1);
    ChannelInfo ci;
    ck_assert(reg.channel("u1", &ci) && ci.subscribers == 1);
    ck_assert(reg.channel("u3", &ci) && ci.subscribers == 1);
    ck_assert_uint_eq(reg.totals().unpublished_channels, 3);
    /* A failed replace frees nothing. */
    auto c = reg.join(getpid(), "alice", "", {"u4", "u5", "u6", "u7"}, DuplicatePolicy::Replace,
                      kT0 + 2);
    ck_assert(c.outcome == Outcome::TooManyUnpublished);
    ck_assert_int_eq(c.replaced.size(), 0);
    ck_assert(reg.holds(b.slot, b.serial));
    assert_consistent(reg, {{"u1", 1}, {"u3", 1}});
    ck_assert(reg.leave(b.slot, b.serial));
}
END_TEST

namespace {

/* Random operations on a small table with colliding names, checked against a model of
 * the streams after each step. */
void churn(Registry &reg, std::mt19937 &rng, int steps, std::vector<Stream> &open,
           std::map<std::string, std::uint64_t> &streams, std::int64_t &t, bool check)
{
    auto name = [&] { return "n" + std::to_string(rng() % 40); };
    for (int step = 0; step < steps; ++step) {
        const unsigned op = rng() % 10;
        if (op < 4) {
            std::vector<std::string> chans;
            for (unsigned k = 1 + rng() % 3; k > 0; --k)
                chans.push_back(name());
            auto j = reg.join(getpid(), "", "", chans, DuplicatePolicy::Allow, ++t);
            if (j.outcome == Outcome::Joined) {
                for (const auto &c : chans)
                    ++streams[c];
                open.push_back({j.slot, j.serial, chans});
            }
        } else if (op < 7 && !open.empty()) {
            const std::size_t at = rng() % open.size();
            ck_assert(reg.leave(open[at].slot, open[at].serial));
            for (const auto &c : open[at].chans)
                --streams[c];
            open.erase(open.begin() + long(at));
        } else if (op < 9) {
            reg.note_publish({name(), name()}, -1, ++t);
        } else {
            const std::string c = name();
            ChannelInfo ci;
            const bool existed = reg.close_channels({c}, ++t).size() == 1;
            ck_assert(existed == reg.channel(c, &ci) && (!existed || closed_view(reg, c)));
        }
        if (check)
            assert_consistent(reg, streams);
    }
}

/* Kills the process at the `kill_at`-th test point passed (any point). */
int points_left = -1;
void die_at_nth_point(RegistryPoint)
{
    if (points_left >= 0 && points_left-- == 0)
        raise(SIGKILL);
}

} // namespace

START_TEST(index_stays_exact_through_churn)
{
    /* Backward-shift deletion, drops from both idle lists, the share: thousands of random
     * steps on a 16-entry table (32 index cells, 40 names: long probe runs), checked after
     * each one. */
    Table tb(64, 16);
    Registry &reg = tb.reg;
    reg.set_max_unpublished(8);
    std::mt19937 rng(12);
    std::vector<Stream> open;
    std::map<std::string, std::uint64_t> streams;
    std::int64_t t = kT0;
    churn(reg, rng, 4000, open, streams, t, true);
    ck_assert_uint_gt(reg.totals().dropped_channels, 100);
}
END_TEST

START_TEST(holder_killed_at_any_point_leaves_a_usable_table)
{
    /* A child runs the same churn and is killed at its n-th registry point (inside a
     * drop, an index shift, an entry write, a slot commit...), holding the lock. The next
     * locker repairs: the table is consistent with the streams that are still open, and
     * it goes on working. 60 rounds, each killed at another point. */
    Table tb(256, 16);
    Registry &reg = tb.reg;
    reg.set_max_unpublished(8);
    std::mt19937 rng(7);
    std::vector<Stream> open;
    std::map<std::string, std::uint64_t> streams;
    std::int64_t t = kT0;
    churn(reg, rng, 200, open, streams, t, false);
    int killed = 0;
    for (int round = 0; round < 60; ++round) {
        const int at = round * 7 % 97;
        pid_t child = fork();
        ck_assert(child >= 0);
        if (child == 0) {
            std::mt19937 crng{static_cast<unsigned>(round)};
            std::vector<Stream> copen; /* its own streams only */
            std::map<std::string, std::uint64_t> cstreams;
            std::int64_t ct = t;
            points_left = at;
            set_registry_test_hook(die_at_nth_point);
            churn(reg, crng, 100, copen, cstreams, ct, false);
            _exit(0);
        }
        int st = 0;
        ck_assert(waitpid(child, &st, 0) == child);
        killed += WIFSIGNALED(st);
        /* The child's streams are reaped (its pid is gone); ours are as the model says. */
        reg.note_gone(child);
        reg.reap_noted();
        reg.reap_dead();
        assert_consistent(reg, streams);
        churn(reg, rng, 50, open, streams, t, true);
    }
    ck_assert_int_gt(killed, 40);
}
END_TEST

START_TEST(refusal_log_is_rate_limited)
{
    LogThrottle throttle(10 * 1000000);
    std::uint64_t skipped = 99;
    ck_assert(throttle.allow(kT0, &skipped));
    ck_assert_uint_eq(skipped, 0);
    for (int i = 1; i <= 1000; ++i)
        ck_assert(!throttle.allow(kT0 + i * 1000, &skipped));
    ck_assert(!throttle.allow(kT0 + 10 * 1000000 - 1, &skipped));
    ck_assert(throttle.allow(kT0 + 10 * 1000000, &skipped));
    ck_assert_uint_eq(skipped, 1001);
    ck_assert(throttle.allow(kT0 + 30 * 1000000, &skipped));
    ck_assert_uint_eq(skipped, 0);
}
END_TEST

/* A holder killed with the lock held, then the next locker's repair with every allocation
 * failing: the repair must not throw (it owns the lock, not yet marked consistent: a throw
 * left it so for good, and every other process waited on it forever). Another process then
 * takes the lock, and the table is whole. */
START_TEST(repair_allocates_nothing)
{
    Table tb(64, 16);
    Registry &reg = tb.reg;
    for (int i = 0; i < 10; ++i)
        reg.note_publish({"c" + std::to_string(i)}, -1, kT0 + i);
    Registry::Join mine = reg.join(getpid(), "", "", {"s"}, DuplicatePolicy::Allow, kT0 + 20);
    ck_assert(mine.outcome == Outcome::Joined);
    pid_t child = fork();
    ck_assert(child >= 0);
    if (child == 0) {
        points_left = 0; /* killed at its first point: join() holding the lock */
        set_registry_test_hook(die_at_nth_point);
        reg.join(getpid(), "", "", {"t"}, DuplicatePolicy::Allow, kT0 + 30);
        _exit(0);
    }
    int st = 0;
    ck_assert(waitpid(child, &st, 0) == child);
    ck_assert(WIFSIGNALED(st));
    const std::vector<std::string> chans{"c1"};
    unit_fail_allocations = true;
    try {
        reg.note_publish(chans, -1, kT0 + 40); /* repairs first; its own work may then throw */
    } catch (const std::bad_alloc &) {
    }
    unit_fail_allocations = false;
    /* Another process takes the lock (a bounded wait: a safety net, not a measure). */
    pid_t other = fork();
    ck_assert(other >= 0);
    if (other == 0) {
        reg.totals();
        _exit(0);
    }
    bool done = false;
    for (int i = 0; i < 400 && !done; ++i) {
        done = waitpid(other, &st, WNOHANG) == other;
        if (!done)
            usleep(50000);
    }
    if (!done) {
        kill(other, SIGKILL);
        waitpid(other, &st, 0);
        ck_abort_msg("the registry's lock stayed owned after a repair that met a failed allocation");
    }
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_consistent(reg, {{"s", 1}});
    ck_assert_uint_eq(reg.totals().channels, 11);
}
END_TEST

/* The least recently used channel is the one used first, whatever the clock said: after a
 * clock stepped back an hour, the entry used last carried the oldest time and was dropped
 * first (the idle list heads are compared by time). */
START_TEST(lru_order_survives_a_clock_stepped_back)
{
    Table t(8, 2);
    Registry &reg = t.reg;
    reg.set_max_unpublished(2);
    /* Far ahead of the real clock, which stamps leave() below: the step back. */
    const std::int64_t later = kT0 + 40LL * 365 * 86400 * 1000000;
    reg.note_publish({"first"}, -1, later);                /* idle, published */
    Registry::Join j = reg.join(1, "", "", {"second"}, DuplicatePolicy::Allow, later - 3600LL * 1000000);
    ck_assert(j.outcome == Outcome::Joined);
    ck_assert(reg.leave(j.slot, j.serial));                 /* idle, unpublished, used last */
    reg.note_publish({"third"}, -1, later + 1);             /* full: drops the LRU entry */
    ChannelInfo ci;
    ck_assert_msg(!reg.channel("first", &ci), "the least recently used entry was kept");
    ck_assert_msg(reg.channel("second", &ci), "the most recently used entry was dropped");
    ck_assert(reg.channel("third", &ci));
}
END_TEST

/* A clock stepped back by an hour: the next line is at most one period away, not an hour. */
START_TEST(refusal_log_survives_a_clock_stepped_back)
{
    LogThrottle throttle(10 * 1000000);
    std::uint64_t skipped = 99;
    ck_assert(throttle.allow(kT0 + 3600LL * 1000000, &skipped));
    ck_assert(!throttle.allow(kT0, &skipped));
    ck_assert(!throttle.allow(kT0 + 10 * 1000000 - 1, &skipped));
    ck_assert(throttle.allow(kT0 + 10 * 1000000, &skipped));
    ck_assert_uint_eq(skipped, 2);
    ck_assert(!throttle.allow(kT0 + 15 * 1000000, &skipped));
}
END_TEST

Suite *channel_table_suite()
{
    Suite *s = suite_create("channel_table");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, closed_channel_stays_closed_through_churn);
    tcase_add_test(tc, table_of_closed_channels_has_no_room);
    tcase_add_test(tc, unpublished_channels_take_at_most_their_share);
    tcase_add_test(tc, share_counts_the_entries_a_join_frees_and_pins);
    tcase_add_test(tc, index_stays_exact_through_churn);
    tcase_add_test(tc, holder_killed_at_any_point_leaves_a_usable_table);
    tcase_add_test(tc, refusal_log_is_rate_limited);
    tcase_add_test(tc, refusal_log_survives_a_clock_stepped_back);
    tcase_add_test(tc, lru_order_survives_a_clock_stepped_back);
    tcase_add_test(tc, repair_allocates_nothing);
    suite_add_tcase(s, tc);
    return s;
}
