/* Presence records (bounded size, no Last-Event-ID) and the budget that keeps them from
 * turning the bus over (sse/presence.h). */
/* nlohmann first: check.h defines macros (fail) that its headers would trip on. */
#include <nlohmann/json.hpp>

#include "unit.h"

#include "sse/presence.h"

#include <string>

namespace {

using sse::PresenceFacts;

START_TEST(small_record_lists_every_channel)
{
    PresenceFacts f;
    f.client_id = "alice";
    f.channels = {"room", "news"};
    f.remote = "203.0.113.9";
    f.time_ms = 1795291563745;
    f.reason = "client-closed";
    const auto j = nlohmann::json::parse(sse::presence_data(f));
    ck_assert(j["channels"] == nlohmann::json({"room", "news"}));
    ck_assert_int_eq(j["channel_count"].get<int>(), 2);
    assert_str(j["client"].get<std::string>(), "alice");
    assert_str(j["remote"].get<std::string>(), "203.0.113.9");
    assert_str(j["reason"].get<std::string>(), "client-closed");
    ck_assert(!j.contains("skipped"));
    ck_assert(!j.contains("lastEventId"));
}
END_TEST

START_TEST(anonymous_is_null)
{
    PresenceFacts f;
    f.channels = {"a"};
    f.skipped = 7;
    const auto j = nlohmann::json::parse(sse::presence_data(f));
    ck_assert(j["client"].is_null());
    ck_assert(j["remote"].is_null());
    ck_assert_int_eq(j["skipped"].get<int>(), 7);
}
END_TEST

/* The worst case: a 128-byte id of quotes (escaped to 256), 64 names of 255 bytes, an IPv6
 * address, a reason and a huge skipped count. */
START_TEST(worst_case_stays_within_the_bound)
{
    PresenceFacts f;
    f.client_id = std::string(128, '"');
    for (int i = 0; i < 64; ++i)
        f.channels.push_back(std::to_string(i) + std::string(250, 'x'));
    f.channels.push_back("short");
    f.remote = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    f.time_ms = 9999999999999;
    f.reason = "process-died";
    f.skipped = ~std::uint64_t(0);
    const std::string d = sse::presence_data(f);
    ck_assert_uint_le(d.size(), sse::kMaxPresenceDataBytes);
    const auto j = nlohmann::json::parse(d);
    ck_assert_int_eq(j["channel_count"].get<int>(), 65);
    assert_str(j["client"].get<std::string>(), f.client_id);
    /* A name that does not fit ends the list: the listed ones are the first ones. */
    ck_assert_uint_lt(j["channels"].size(), 65);
    for (std::size_t i = 0; i < j["channels"].size(); ++i)
        assert_str(j["channels"][i].get<std::string>(), f.channels[i]);

    f.client_id = "bob";
    const std::string d2 = sse::presence_data(f);
    ck_assert_uint_le(d2.size(), sse::kMaxPresenceDataBytes);
    ck_assert_uint_ge(nlohmann::json::parse(d2)["channels"].size(), 1);
}
END_TEST

START_TEST(budget_allows_a_burst_then_the_rate)
{
    sse::PresenceShared shared;
    sse::PresenceBudget b(&shared, 60, 5); /* one a second, bursts of 5 */
    std::uint64_t told = 99;
    const std::int64_t t0 = 1'000'000'000;
    for (int i = 0; i < 5; ++i) {
        ck_assert(b.take(t0, &told));
        ck_assert_uint_eq(told, 0);
    }
    ck_assert(!b.take(t0, &told));
    ck_assert(!b.take(t0 + 500'000, &told));
    ck_assert_uint_eq(b.skipped(), 2);
    /* One interval later one more is allowed, and it is told of the two skipped. */
    ck_assert(b.take(t0 + 1'000'000, &told));
    ck_assert_uint_eq(told, 2);
    ck_assert(!b.take(t0 + 1'000'000, &told));
    ck_assert(b.take(t0 + 2'000'000, &told));
    ck_assert_uint_eq(told, 1);
    ck_assert_uint_eq(b.skipped(), 3);
    /* After a long quiet spell, a full burst again (not more). */
    int allowed = 0;
    for (int i = 0; i < 20; ++i)
        allowed += b.take(t0 + 3'600'000'000LL, &told) ? 1 : 0;
    ck_assert_int_eq(allowed, 5);
}
END_TEST

/* A clock stepped back by an hour after a burst: the budget resumes at its rate from the
 * new time (one interval later), instead of skipping every record for the hour. */
START_TEST(budget_survives_a_clock_stepped_back)
{
    sse::PresenceShared shared;
    sse::PresenceBudget b(&shared, 60, 5); /* one a second, bursts of 5 */
    std::uint64_t told = 0;
    const std::int64_t t0 = 10'000'000'000LL;
    for (int i = 0; i < 5; ++i)
        ck_assert(b.take(t0, &told));
    const std::int64_t back = t0 - 3'600'000'000LL;
    ck_assert(!b.take(back, &told)); /* the burst is still spent */
    ck_assert(b.take(back + 1'000'000, &told));
    ck_assert_uint_eq(told, 1);
    ck_assert(!b.take(back + 1'000'000, &told));
    /* And the rate still holds afterwards: 60 more seconds, about 60 more records. */
    int allowed = 0;
    for (std::int64_t t = 0; t < 60'000'000; t += 100'000)
        allowed += b.take(back + 1'000'000 + t, &told) ? 1 : 0;
    ck_assert_int_le(allowed, 60);
    ck_assert_int_ge(allowed, 59);
}
END_TEST

/* Another server's record (SSERedis) takes from the budget but leaves the count of skipped
 * records for this server's next own record: its data cannot be changed to say it. */
START_TEST(budget_quiet_take_leaves_the_count)
{
    sse::PresenceShared shared;
    sse::PresenceBudget b(&shared, 60, 1); /* one a second */
    std::uint64_t told = 99;
    const std::int64_t t0 = 1'000'000'000;
    ck_assert(b.take(t0, &told));
    ck_assert(!b.take(t0, nullptr)); /* over the budget: skipped, counted */
    ck_assert(!b.take(t0, &told));
    ck_assert_uint_eq(b.skipped(), 2);
    ck_assert(b.take(t0 + 1'000'000, nullptr)); /* another server's: tells nothing */
    ck_assert(b.take(t0 + 2'000'000, &told));
    ck_assert_uint_eq(told, 2); /* this server's next one tells both */
}
END_TEST

/* Late connects of another server are dropped after kPresenceMaxAgeMs; disconnects never. */
START_TEST(stale_presence)
{
    const std::int64_t now = 1'800'000'000'000LL;
    ck_assert(sse::is_presence_event_type("connect"));
    ck_assert(sse::is_presence_event_type("reconnect"));
    ck_assert(sse::is_presence_event_type("disconnect"));
    ck_assert(!sse::is_presence_event_type("Connect"));
    ck_assert(!sse::is_presence_event_type(""));
    ck_assert(!sse::presence_too_old("connect", now - sse::kPresenceMaxAgeMs, now));
    ck_assert(sse::presence_too_old("connect", now - sse::kPresenceMaxAgeMs - 1, now));
    ck_assert(sse::presence_too_old("reconnect", now - 3'600'000, now));
    ck_assert(!sse::presence_too_old("disconnect", now - 3'600'000, now));
    ck_assert(!sse::presence_too_old("connect", now + 5'000, now)); /* a clock ahead */
}
END_TEST

START_TEST(budget_from_the_bus_size)
{
    sse::PresenceShared shared;
    auto b = sse::PresenceBudget::for_bus(&shared, 1u << 20);
    ck_assert_uint_eq(b.per_minute(), 128);
    ck_assert_uint_eq(b.burst(), 128);
    auto tiny = sse::PresenceBudget::for_bus(&shared, 4096);
    ck_assert_uint_eq(tiny.per_minute(), 1);
    /* Records written in any minute: the burst plus a minute's rate, never more. */
    std::uint64_t told, written = 0;
    for (std::int64_t t = 0; t < 60'000'000; t += 10'000)
        written += b.take(5'000'000'000LL + t, &told) ? 1 : 0;
    ck_assert_uint_le(written, 128 + 128);
    ck_assert_uint_ge(written, 128 + 127);
}
END_TEST

} // namespace

Suite *presence_suite()
{
    Suite *s = suite_create("presence");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, small_record_lists_every_channel);
    tcase_add_test(tc, anonymous_is_null);
    tcase_add_test(tc, worst_case_stays_within_the_bound);
    tcase_add_test(tc, budget_allows_a_burst_then_the_rate);
    tcase_add_test(tc, budget_from_the_bus_size);
    tcase_add_test(tc, budget_survives_a_clock_stepped_back);
    tcase_add_test(tc, budget_quiet_take_leaves_the_count);
    tcase_add_test(tc, stale_presence);
    suite_add_tcase(s, tc);
    return s;
}
