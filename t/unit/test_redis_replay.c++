/* A resume served from the Redis stream's entries (sse/redis_replay.h): what replay_from_entries()
 * gives one subscriber after its id, by the bus's own rules: channels, only/except, a
 * publisher's ids, closes, SSEHistory's count and age; and an id the entries do not hold. */
#include "unit.h"

#include "sse/redis_link.h"
#include "sse/redis_replay.h"

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace sse;

namespace {

constexpr std::int64_t kNowUs = 1796054767995000; /* the entries' times are near it */

StreamId entry_id(int n) { return StreamId{kNowUs / 1000 - 100 + static_cast<std::uint64_t>(n), 0}; }

StreamEntry event_entry(int n, std::vector<std::string> channels, std::string data,
                        Audience audience = {}, std::string publisher_id = {})
{
    StreamEntry e;
    e.id = entry_id(n);
    e.record.channels = std::move(channels);
    e.record.audience = std::move(audience);
    e.record.fields.id = std::move(publisher_id);
    e.record.fields.has_data = true;
    e.record.fields.data = std::move(data);
    return e;
}

/* The data (or "<kind>" for a record without data) of every event the replay yields. */
std::vector<std::string> replayed(StreamReplay &r)
{
    std::vector<std::string> out;
    BusEvent e;
    while (r.reader && r.reader->next(&e) == BusReader::Next::Event) {
        const std::size_t at = e.wire.find("data: ");
        out.push_back(at == std::string::npos ? "<no data>"
                                              : e.wire.substr(at + 6, e.wire.find('\n', at) - at - 6));
    }
    return out;
}

std::string joined(const std::vector<std::string> &v)
{
    std::string s;
    for (const auto &x : v)
        s += (s.empty() ? "" : ",") + x;
    return s;
}

std::vector<StreamEntry> five_on_two_channels()
{
    return {event_entry(1, {"a"}, "a1"), event_entry(2, {"b"}, "b2"), event_entry(3, {"a"}, "a3"),
            event_entry(4, {"a", "b"}, "ab4"), event_entry(5, {"b"}, "b5")};
}

START_TEST(after_an_entry_id_on_its_channels)
{
    const auto entries = five_on_two_channels();
    StreamReplay r = replay_from_entries(entries, {"a"}, "", entry_id(1).text(), {}, kNowUs);
    ck_assert(r.found);
    ck_assert(r.complete);
    ck_assert_uint_eq(r.entries, 5);
    assert_str(joined(replayed(r)), "a3,ab4");
    /* The id is a position whatever its channel: after b2, only what follows it. */
    StreamReplay from_b = replay_from_entries(entries, {"a"}, "", entry_id(2).text(), {}, kNowUs);
    ck_assert(from_b.found && from_b.complete);
    assert_str(joined(replayed(from_b)), "a3,ab4");
    /* The newest entry: found, nothing to replay. */
    StreamReplay last = replay_from_entries(entries, {"a", "b"}, "", entry_id(5).text(), {}, kNowUs);
    ck_assert(last.found && last.complete);
    assert_str(joined(replayed(last)), "");
}
END_TEST

START_TEST(the_event_ids_are_the_entry_ids)
{
    StreamReplay r = replay_from_entries(five_on_two_channels(), {"b"}, "", entry_id(2).text(), {},
                                         kNowUs);
    BusEvent e;
    ck_assert(r.reader->next(&e) == BusReader::Next::Event);
    assert_str(e.id, entry_id(4).text());
    ck_assert(e.wire.rfind("id: " + entry_id(4).text() + "\n", 0) == 0);
}
END_TEST

START_TEST(only_and_except)
{
    Audience to_ann, not_ann;
    to_ann.only = {"ann"};
    not_ann.except = {"ann"};
    const std::vector<StreamEntry> entries = {
        event_entry(1, {"a"}, "first"), event_entry(2, {"a"}, "for ann", to_ann),
        event_entry(3, {"a"}, "not for ann", not_ann), event_entry(4, {"a"}, "all")};
    const std::string after = entry_id(1).text();
    StreamReplay ann = replay_from_entries(entries, {"a"}, "ann", after, {}, kNowUs);
    assert_str(joined(replayed(ann)), "for ann,all");
    StreamReplay bob = replay_from_entries(entries, {"a"}, "bob", after, {}, kNowUs);
    assert_str(joined(replayed(bob)), "not for ann,all");
    StreamReplay anonymous = replay_from_entries(entries, {"a"}, "", after, {}, kNowUs);
    assert_str(joined(replayed(anonymous)), "not for ann,all");
}
END_TEST

START_TEST(publisher_ids)
{
    const std::vector<StreamEntry> entries = {
        event_entry(1, {"a"}, "x", {}, "order-1"), event_entry(2, {"a"}, "y", {}, "order-2"),
        event_entry(3, {"a"}, "z")};
    StreamReplay r = replay_from_entries(entries, {"a"}, "", "order-1", {}, kNowUs);
    ck_assert(r.found && r.complete);
    assert_str(joined(replayed(r)), "y,z");
    /* The entry id of an entry that has a publisher's id is not its id. */
    StreamReplay by_entry = replay_from_entries(entries, {"a"}, "", entry_id(1).text(), {}, kNowUs);
    ck_assert(!by_entry.found);
    ck_assert(!by_entry.reader);
}
END_TEST

START_TEST(unknown_ids_are_not_found)
{
    const auto entries = five_on_two_channels();
    for (const std::string &id : {std::string("nope"), entry_id(9).text(), StreamId{1, 0}.text()}) {
        StreamReplay r = replay_from_entries(entries, {"a"}, "", id, {}, kNowUs);
        ck_assert_msg(!r.found && !r.reader, "%s", id.c_str());
    }
    StreamReplay none = replay_from_entries({}, {"a"}, "", entry_id(1).text(), {}, kNowUs);
    ck_assert(!none.found);
}
END_TEST

START_TEST(history_count_and_age)
{
    std::vector<StreamEntry> entries;
    for (int n = 1; n <= 6; ++n)
        entries.push_back(event_entry(n, {"a"}, "e" + std::to_string(n)));
    HistoryLimits two;
    two.count = 2;
    StreamReplay r = replay_from_entries(entries, {"a"}, "", entry_id(1).text(), two, kNowUs);
    ck_assert(r.found);
    ck_assert(!r.complete); /* the missed notice goes first */
    assert_str(joined(replayed(r)), "e5,e6");
    /* SSEHistory's age counts from Redis's time, however long ago: two entries of two hours
     * ago, two of a second ago, an hour's limit. */
    const std::uint64_t now_ms = kNowUs / 1000;
    std::vector<StreamEntry> aged = {event_entry(1, {"a"}, "old1"), event_entry(2, {"a"}, "old2"),
                                     event_entry(3, {"a"}, "new3"), event_entry(4, {"a"}, "new4")};
    aged[0].id = StreamId{now_ms - 7200000, 0};
    aged[1].id = StreamId{now_ms - 7200000, 1};
    aged[2].id = StreamId{now_ms - 1000, 0};
    aged[3].id = StreamId{now_ms - 1000, 1};
    HistoryLimits hour;
    hour.max_age_s = 3600;
    StreamReplay late = replay_from_entries(aged, {"a"}, "", aged[0].id.text(), hour, kNowUs);
    ck_assert(late.found);
    ck_assert(!late.complete); /* old2 is left out */
    assert_str(joined(replayed(late)), "new3,new4");
    StreamReplay recent = replay_from_entries(aged, {"a"}, "", aged[1].id.text(), hour, kNowUs);
    ck_assert(recent.found && recent.complete);
    assert_str(joined(replayed(recent)), "new3,new4");
}
END_TEST

START_TEST(a_close_drops_what_came_before_it)
{
    StreamEntry close;
    close.id = entry_id(3);
    close.record.kind = StreamRecord::Kind::Close;
    close.record.channels = {"a"};
    const std::vector<StreamEntry> entries = {event_entry(1, {"a"}, "a1"), event_entry(2, {"a"}, "a2"),
                                              close, event_entry(4, {"a"}, "a4")};
    StreamReplay r = replay_from_entries(entries, {"a"}, "", entry_id(1).text(), {}, kNowUs);
    assert_str(joined(replayed(r)), "a4");
}
END_TEST

START_TEST(bad_entries_and_retry_only)
{
    StreamEntry bad = event_entry(2, {"a"}, "bad");
    bad.error = "unknown kind";
    StreamEntry no_channel = event_entry(3, {}, "none");
    StreamEntry retry_only = event_entry(4, {"a"}, "");
    retry_only.record.fields.has_data = false;
    retry_only.record.fields.retry = 5000;
    const std::vector<StreamEntry> entries = {event_entry(1, {"a"}, "a1"), bad, no_channel,
                                              retry_only, event_entry(5, {"a"}, "a5")};
    StreamReplay r = replay_from_entries(entries, {"a"}, "", entry_id(1).text(), {}, kNowUs);
    ck_assert_uint_eq(r.entries, 3); /* the two that no publish could make are skipped */
    /* found, but a skipped entry after the id may have been the client's: sse-missed first */
    ck_assert(r.found && !r.complete);
    assert_str(joined(replayed(r)), "<no data>,a5");
    /* one skipped before the id (a publisher's id looks back further) is not the client's */
    const std::vector<StreamEntry> older = {bad, event_entry(6, {"a"}, "a6", {}, "p6"),
                                            event_entry(7, {"a"}, "a7")};
    StreamReplay o = replay_from_entries(older, {"a"}, "", "p6", {}, kNowUs);
    ck_assert(o.found && o.complete);
    assert_str(joined(replayed(o)), "a7");
}
END_TEST

/* Another server's presence record is the Redis reader's (RemotePresence), never a replay's:
 * nothing on the private bus, not a skipped entry (the replay stays complete). */
START_TEST(presence_entries_are_not_replayed)
{
    StreamEntry presence = event_entry(2, {"presence"}, "{\"client\":\"x\"}");
    presence.record.kind = StreamRecord::Kind::Presence;
    const std::vector<StreamEntry> entries = {event_entry(1, {"presence"}, "p1"), presence,
                                              event_entry(3, {"presence"}, "p3")};
    StreamReplay r = replay_from_entries(entries, {"presence"}, "", entry_id(1).text(), {}, kNowUs);
    ck_assert(r.found && r.complete);
    ck_assert_uint_eq(r.entries, 2);
    assert_str(joined(replayed(r)), "p3");
}
END_TEST

START_TEST(updates_keep_their_topics)
{
    StreamEntry u;
    u.id = entry_id(2);
    u.record.kind = StreamRecord::Kind::Update;
    u.record.hub = "#mercure:shop";
    u.record.update.topics = {"https://example.com/books/1"};
    u.record.fields.id = "urn:uuid:2";
    u.record.fields.has_data = true;
    u.record.fields.data = "book";
    StreamEntry first = u;
    first.id = entry_id(1);
    first.record.fields.id = "urn:uuid:1";
    StreamReplay r = replay_from_entries({first, u}, {"#mercure:shop"}, "", "urn:uuid:1", {}, kNowUs);
    ck_assert(r.found && r.complete);
    BusEvent e;
    ck_assert(r.reader->next(&e) == BusReader::Next::Event);
    assert_str(e.id, "urn:uuid:2");
    ck_assert_uint_eq(e.topics.size(), 1);
    assert_str(e.topics[0], "https://example.com/books/1");
}
END_TEST

/* A Redis whose answer keeps coming, a little every 50 ms for 3 s (a large XREVRANGE reply on
 * a slow link): hiredis's timeout bounds each read, not the answer. entries_back() must give
 * up at its bound all the same (it took the whole 3 s when it waited for the reply with
 * redisGetReply). */
START_TEST(a_look_back_is_bounded_while_the_answer_trickles)
{
    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(listener, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
    ck_assert_int_eq(listen(listener, 1), 0);
    socklen_t len = sizeof addr;
    getsockname(listener, reinterpret_cast<sockaddr *>(&addr), &len);
    std::thread fake([listener] {
        const int c = accept(listener, nullptr, nullptr);
        char buf[512];
        if (c < 0 || read(c, buf, sizeof buf) <= 0)
            return;
        send(c, "*1\r\n", 4, MSG_NOSIGNAL);
        for (int i = 0; i < 60 && send(c, "*", 1, MSG_NOSIGNAL) == 1; ++i) /* never whole */
            usleep(50 * 1000);
        close(c);
    });
    RedisUrl url;
    assert_str(parse_redis_url("redis://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), &url),
               "");
    RedisWriter writer(url, "s");
    std::vector<StreamEntry> out;
    std::string err;
    const auto began = std::chrono::steady_clock::now();
    ck_assert(!writer.entries_back(StreamId{2, 0}, "-", 10, 300, out, &err));
    const auto took = std::chrono::steady_clock::now() - began;
    ck_assert_msg(took < std::chrono::milliseconds(2000), "took %lld ms: %s",
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
                  err.c_str());
    fake.join();
    close(listener);
}
END_TEST

} // namespace

Suite *redis_replay_suite()
{
    Suite *s = suite_create("redis_replay");
    TCase *tc = tcase_create("replay");
    tcase_add_test(tc, after_an_entry_id_on_its_channels);
    tcase_add_test(tc, the_event_ids_are_the_entry_ids);
    tcase_add_test(tc, only_and_except);
    tcase_add_test(tc, publisher_ids);
    tcase_add_test(tc, unknown_ids_are_not_found);
    tcase_add_test(tc, history_count_and_age);
    tcase_add_test(tc, a_close_drops_what_came_before_it);
    tcase_add_test(tc, bad_entries_and_retry_only);
    tcase_add_test(tc, presence_entries_are_not_replayed);
    tcase_add_test(tc, a_look_back_is_bounded_while_the_answer_trickles);
    tcase_add_test(tc, updates_keep_their_topics);
    suite_add_tcase(s, tc);
    return s;
}
