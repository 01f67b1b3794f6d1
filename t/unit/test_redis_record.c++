/* SSERedis's pure part (sse/redis_record.h): URLs, stream ids, and a record's round trip
 * through the fields of a stream entry, binary bytes included; Mercure updates (kind
 * "update"), the entries of the version before them, and entries no writer makes. */
#include "unit.h"

#include "sse/redis_link.h"
#include "sse/redis_record.h"

#include <string>
#include <vector>

using namespace sse;

namespace {

std::vector<std::pair<std::string_view, std::string_view>>
views(const std::vector<std::pair<std::string, std::string>> &f)
{
    std::vector<std::pair<std::string_view, std::string_view>> v;
    for (const auto &[k, val] : f)
        v.emplace_back(k, val);
    return v;
}

START_TEST(url_forms)
{
    RedisUrl u;
    assert_str(parse_redis_url("redis://127.0.0.1", &u), "");
    assert_str(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 6379);
    ck_assert_int_eq(u.db, 0);
    ck_assert(!u.has_password);

    assert_str(parse_redis_url("redis://:s3cr@t@redis.example:6380/2", &u), "");
    assert_str(u.host, "redis.example");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.db, 2);
    ck_assert(u.has_password);
    assert_str(u.user, "");
    assert_str(u.password, "s3cr@t"); /* the last '@' ends the credentials */
    assert_str(u.display(), "redis://redis.example:6380/2"); /* no password in logs */

    assert_str(parse_redis_url("redis://app:pw@[::1]:7000", &u), "");
    assert_str(u.host, "::1");
    assert_str(u.user, "app");
    ck_assert_int_eq(u.port, 7000);
    assert_str(u.display(), "redis://[::1]:7000/0");

    assert_str(parse_redis_url("unix:/run/redis/redis.sock", &u), "");
    assert_str(u.socket_path, "/run/redis/redis.sock");
    assert_str(u.display(), "unix:/run/redis/redis.sock");
    ck_assert(!u.has_password);

    RedisUrl v;
    assert_str(parse_redis_url("unix:/run/redis/redis.sock?user=app&password=s3cr:t@x&db=3", &v), "");
    assert_str(v.socket_path, "/run/redis/redis.sock");
    assert_str(v.user, "app");
    assert_str(v.password, "s3cr:t@x");
    ck_assert(v.has_password);
    ck_assert_int_eq(v.db, 3);
    assert_str(v.display(), "unix:/run/redis/redis.sock?db=3");
}
END_TEST

START_TEST(url_errors)
{
    RedisUrl u;
    for (const char *bad : {"", "127.0.0.1:6379", "rediss://h", "redis://", "redis://h:",
                            "redis://h:0", "redis://h:65536", "redis://h:x", "redis://h/x",
                            "redis://pw@h", "redis://[::1", "redis://[::1]x", "unix:",
                            "unix:relative.sock", "unix:/s?db=x", "unix:/s?pass=1",
                            "unix:/s?db=1000001", "redis://h/1000001"}) {
        std::string err = parse_redis_url(bad, &u);
        ck_assert_msg(!err.empty(), "\"%s\" was accepted", bad);
        ck_assert_msg(err.find("expected redis://") != std::string::npos ||
                          err.find("absolute") != std::string::npos,
                      "\"%s\": %s", bad, err.c_str());
    }
}
END_TEST

START_TEST(url_for_log_hides_secrets)
{
    assert_str(redis_url_for_log("redis://app:s3cr@t@h:99999/2"), "redis://(credentials hidden)@h:99999/2");
    assert_str(redis_url_for_log("redis://h:99999"), "redis://h:99999");
    assert_str(redis_url_for_log("unix:/s?password=s3cr&db=x"), "unix:/s?(parameters hidden)");
    assert_str(redis_url_for_log("unix:/s"), "unix:/s");
}
END_TEST

START_TEST(entry_time_near_now_or_now)
{
    const std::int64_t now = 1796054767995000; /* µs */
    ck_assert_int_eq(entry_time_us(StreamId{1796054767990, 0}, now), 1796054767990000);
    ck_assert_int_eq(entry_time_us(StreamId{1796054777000, 3}, now), 1796054777000000);
    ck_assert_int_eq(entry_time_us(StreamId{18446744073709551ull, 0}, now), now);
    ck_assert_int_eq(entry_time_us(StreamId{UINT64_MAX, 0}, now), now);
    ck_assert_int_eq(entry_time_us(StreamId{1, 0}, now), now);
    ck_assert_int_eq(entry_time_us(StreamId{1796054767995 + 10001, 0}, now), now);
}
END_TEST

START_TEST(stream_ids)
{
    StreamId a, b;
    ck_assert(parse_stream_id("1732982400000-0", &a));
    ck_assert(parse_stream_id("1732982400000-12", &b));
    ck_assert(a < b && !(b < a) && !(a == b));
    assert_str(b.text(), "1732982400000-12");
    ck_assert(parse_stream_id("0-0", &a) && a == StreamId{});
    for (const char *bad : {"", "1", "-1", "1-", "a-1", "1-1-1", " 1-1", "1-+1"})
        ck_assert_msg(!parse_stream_id(bad, &a), "\"%s\" parsed", bad);
    assert_str(redis_stream_key("sse:"), "sse:stream");
}
END_TEST

START_TEST(event_round_trip)
{
    StreamRecord r;
    r.channels = {"news", "a/b"};
    r.audience.only = {"alice", "bob"};
    r.audience.except = {"carol"};
    r.fields.id = "given-1";
    r.fields.event = "update";
    r.fields.data = std::string("line1\r\nline2\0,bin\xff", 18);
    r.fields.has_data = true;
    r.fields.retry = 2500;
    StreamRecord back;
    assert_str(decode_stream_record(views(encode_stream_record(r)), &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Event);
    ck_assert(back.channels == r.channels);
    ck_assert(back.audience.only == r.audience.only);
    ck_assert(back.audience.except == r.audience.except);
    assert_str(back.fields.id, "given-1");
    assert_str(back.fields.event, "update");
    ck_assert(back.fields.has_data && back.fields.data == r.fields.data);
    ck_assert_int_eq(back.fields.retry, 2500);
}
END_TEST

/* What a publisher left out stays out: no id (the entry id is used), no type, no data (a
 * retry-only publish) and empty data (an event with one empty line) are told apart. */
START_TEST(absent_fields)
{
    StreamRecord r;
    r.channels = {"c"};
    r.fields.retry = 100;
    auto f = encode_stream_record(r);
    ck_assert_int_eq(f.size(), 3); /* kind, channels, retry */
    StreamRecord back;
    assert_str(decode_stream_record(views(f), &back), "");
    ck_assert(!back.fields.has_data && back.fields.id.empty() && back.fields.event.empty());
    ck_assert(back.audience.everyone());

    r.fields.retry = -1;
    r.fields.has_data = true;
    assert_str(decode_stream_record(views(encode_stream_record(r)), &back), "");
    ck_assert(back.fields.has_data && back.fields.data.empty() && back.fields.retry == -1);
}
END_TEST

START_TEST(close_round_trip)
{
    StreamRecord r;
    r.kind = StreamRecord::Kind::Close;
    r.channels = {"x", "y"};
    StreamRecord back;
    assert_str(decode_stream_record(views(encode_stream_record(r)), &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Close);
    ck_assert(back.channels == r.channels);
}
END_TEST

START_TEST(bad_entries)
{
    StreamRecord back;
    using F = std::vector<std::pair<std::string_view, std::string_view>>;
    ck_assert(!decode_stream_record(F{{"channels", "a"}}, &back).empty());          /* no kind */
    ck_assert(!decode_stream_record(F{{"kind", "event"}}, &back).empty());          /* no channels */
    ck_assert(!decode_stream_record(F{{"kind", "other"}, {"channels", "a"}}, &back).empty());
    ck_assert(!decode_stream_record(F{{"kind", "event"}, {"channels", "a"}, {"retry", "x"}},
                                    &back).empty());
    /* A field of a later version is ignored. */
    assert_str(decode_stream_record(F{{"kind", "event"}, {"channels", "a"}, {"data", "d"},
                                      {"later", "1"}}, &back), "");
}
END_TEST

using Fields = std::vector<std::pair<std::string_view, std::string_view>>;

/* A Mercure update: its hub (a comma in the name stays in it), its topics (an empty one, one
 * with a comma and a URI template's characters) in order, its private mark, its fields. */
START_TEST(update_round_trip)
{
    StreamRecord r;
    r.kind = StreamRecord::Kind::Update;
    r.hub = "#mercure:example.com/a,b";
    r.update.topics = {"https://example.com/books/1", "", "urn:x,y", "caf\xc3\xa9 {id}"};
    r.update.is_private = true;
    r.fields.id = "urn:uuid:0b7d1d6c-1c4e-4f0a-9a55-1c0e5f1c9d10";
    r.fields.event = "book";
    r.fields.data = "line1\nline2";
    r.fields.has_data = true;
    r.fields.retry = 1200;
    const auto f = encode_stream_record(r);
    /* A reader of the version before refuses "update" as an unknown kind (SSE0705); nothing
     * in the entry reads to it as an event: it has no "channels". */
    assert_str(f.front().first, "kind");
    assert_str(f.front().second, "update");
    for (const auto &kv : f)
        ck_assert(kv.first != "channels" && kv.first != "only" && kv.first != "except");
    StreamRecord back;
    assert_str(decode_stream_record(views(f), &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Update);
    assert_str(back.hub, r.hub);
    ck_assert(back.update.topics == r.update.topics);
    ck_assert(back.update.is_private);
    ck_assert(back.channels.empty() && back.audience.everyone());
    assert_str(back.fields.id, r.fields.id);
    assert_str(back.fields.event, "book");
    ck_assert(back.fields.has_data && back.fields.data == r.fields.data);
    ck_assert_int_eq(back.fields.retry, 1200);

    /* Public, one topic that is empty, empty data, no type nor retry. */
    r.update.is_private = false;
    r.update.topics = {""};
    r.fields.event.clear();
    r.fields.data.clear();
    r.fields.retry = -1;
    assert_str(decode_stream_record(views(encode_stream_record(r)), &back), "");
    ck_assert(!back.update.is_private);
    ck_assert(back.update.topics == std::vector<std::string>{""});
    ck_assert(back.fields.has_data && back.fields.data.empty() && back.fields.event.empty());
    ck_assert_int_eq(back.fields.retry, -1);
}
END_TEST

/* The entries the version before "update" wrote read as they did, with the new fields of
 * an update ignored where they mean nothing (an event's). */
START_TEST(older_entries_still_read)
{
    StreamRecord back;
    assert_str(decode_stream_record(Fields{{"kind", "event"}, {"channels", "news,sport"},
                                           {"only", "alice"}, {"event", "e"}, {"data", "d"},
                                           {"retry", "300"}}, &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Event);
    ck_assert(back.channels == (std::vector<std::string>{"news", "sport"}));
    ck_assert(back.audience.only == std::vector<std::string>{"alice"});
    ck_assert(back.fields.id.empty() && back.fields.data == "d" && back.fields.retry == 300);
    ck_assert(back.hub.empty() && back.update.topics.empty() && !back.update.is_private);
    assert_str(decode_stream_record(Fields{{"kind", "close"}, {"channels", "news"}}, &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Close);
    assert_str(decode_stream_record(Fields{{"kind", "event"}, {"channels", "a"}, {"data", "d"},
                                           {"topics", "t\n"}, {"private", "1"}}, &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Event && back.channels.size() == 1);
}
END_TEST

/* Update entries no hub writes are refused, saying why (the reader logs SSE0705 and skips
 * them); so are those that would reach a native channel. */
START_TEST(bad_update_entries)
{
    const std::string_view id = "urn:uuid:1";
    std::string many_topics;
    for (int i = 0; i < 65; ++i)
        many_topics += "t" + std::to_string(i) + "\n";
    const std::string newlines(1 << 20, '\n'); /* a million empty topics: refused at the 65th */
    const std::string long_topic = std::string(16385, 't') + "\n";
    const struct {
        Fields fields;
        const char *error;
    } cases[] = {
        {{{"kind", "update"}, {"topics", "t\n"}, {"id", id}}, "is no hub's channel"},
        {{{"kind", "update"}, {"hub", "news"}, {"topics", "t\n"}, {"id", id}},
         "is no hub's channel"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"id", id}}, "without topics"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", ""}, {"id", id}},
         "without topics"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", "t"}, {"id", id}},
         "do not end with a newline"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", "t\n"}}, "without id"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", "t\n"}, {"id", id},
          {"private", "yes"}}, "private \"yes\" is not 1"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", "t\n"}, {"id", id},
          {"channels", "news"}}, "with channels or clients"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", "t\n"}, {"id", id},
          {"only", "alice"}}, "with channels or clients"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"topics", "t\n"}, {"id", id},
          {"retry", "-1"}}, "is not a number"},
        {{{"kind", "Update"}, {"hub", "#mercure:h"}, {"topics", "t\n"}, {"id", id}},
         "unknown kind"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"id", id},
          {"topics", "t\n/.well-known/mercure/subscriptions/t/s\n"}}, "hub's own namespace"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"id", id},
          {"topics", "https://h/.well-known/mercure/subscriptions\n"}}, "hub's own namespace"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"id", id}, {"topics", many_topics}},
         "more than 64 topics"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"id", id}, {"topics", newlines}},
         "more than 64 topics"},
        {{{"kind", "update"}, {"hub", "#mercure:h"}, {"id", id}, {"topics", long_topic}},
         "a topic longer than 16384 bytes"},
    };
    for (const auto &c : cases) {
        StreamRecord back;
        const std::string error = decode_stream_record(c.fields, &back);
        ck_assert_msg(error.find(c.error) != std::string::npos, "\"%s\" does not say \"%s\"",
                      error.c_str(), c.error);
    }
    /* A hub's channel longer than any channel. */
    StreamRecord back;
    const std::string long_hub = "#mercure:" + std::string(kMaxChannelNameBytes, 'h');
    ck_assert(!decode_stream_record(Fields{{"kind", "update"}, {"hub", long_hub},
                                           {"topics", "t\n"}, {"id", id}}, &back).empty());
}
END_TEST

/* A server's own presence record, sent on to the others (kind "presence"): the record's
 * channel, type and data verbatim, and where it comes from. An older reader refuses the kind
 * (SSE0705) rather than deliver it as an event. */
START_TEST(presence_round_trip)
{
    StreamRecord r;
    r.kind = StreamRecord::Kind::Presence;
    r.channels = {"presence"};
    r.fields.event = "disconnect";
    r.fields.data = R"({"channel_count":1,"channels":["lobby"],"client":"amy","remote":"127.0.0.1",)"
                    R"("reason":"closed","time":1800000000123})";
    r.fields.has_data = true;
    r.server = "web1:80";
    r.token = "0123456789abcdef0123456789abcdef";
    r.time_ms = 1800000000123;
    r.seq = 1764554400000001;
    const auto f = encode_stream_record(r);
    assert_str(f.front().first, "kind");
    assert_str(f.front().second, "presence");
    for (const auto &kv : f)
        ck_assert(kv.first != "id" && kv.first != "only" && kv.first != "except" &&
                  kv.first != "retry");
    StreamRecord back;
    assert_str(decode_stream_record(views(f), &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Presence);
    ck_assert(back.channels == r.channels);
    assert_str(back.fields.event, "disconnect");
    ck_assert(back.fields.has_data);
    assert_str(back.fields.data, r.fields.data);
    assert_str(back.server, "web1:80");
    assert_str(back.token, r.token);
    ck_assert(back.time_ms == r.time_ms);
    ck_assert(back.seq == r.seq);
    ck_assert(back.fields.id.empty() && back.fields.retry == -1 && back.audience.everyone());
}
END_TEST

/* Presence entries no server writes are refused, saying why. */
START_TEST(bad_presence_entries)
{
    const std::string_view d = R"({"client":null})";
    const struct {
        Fields fields;
        const char *error;
    } cases[] = {
        {{{"kind", "presence"}, {"event", "connect"}, {"data", d}, {"server", "h:1"},
          {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "exactly one channel"},
        {{{"kind", "presence"}, {"channels", "p,q"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "exactly one channel"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "message"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "of type \"message\""},
        {{{"kind", "presence"}, {"channels", "p"}, {"data", d}, {"server", "h:1"},
          {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "of type \"\""},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"server", "h:1"},
          {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "without data"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "without its server and token"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"time", "5"}, {"seq", "9"}}, "without its server and token"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"seq", "9"}}, "without its time and seq"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}}, "without its time and seq"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "x"}}, "without its time and seq"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "-5"}, {"seq", "9"}},
         "without its time and seq"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "99999999999999999999"},
          {"seq", "9"}}, "without its time and seq"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "9"}, {"id", "x"}}, "with an id"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "9"}, {"retry", "10"}}, "with an id"},
        {{{"kind", "presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "9"}, {"only", "amy"}}, "with an id"},
        {{{"kind", "Presence"}, {"channels", "p"}, {"event", "connect"}, {"data", d},
          {"server", "h:1"}, {"token", "t"}, {"time", "5"}, {"seq", "9"}}, "unknown kind"},
    };
    for (const auto &c : cases) {
        StreamRecord back;
        const std::string error = decode_stream_record(c.fields, &back);
        ck_assert_msg(error.find(c.error) != std::string::npos, "\"%s\" does not say \"%s\"",
                      error.c_str(), c.error);
    }
    /* The fields a presence entry has mean nothing to an event: ignored there. */
    StreamRecord back;
    assert_str(decode_stream_record(Fields{{"kind", "event"}, {"channels", "a"}, {"data", "x"},
                                           {"server", "h:1"}, {"token", "t"}, {"time", "x"},
                                           {"seq", "-1"}}, &back), "");
    ck_assert(back.kind == StreamRecord::Kind::Event);
}
END_TEST

START_TEST(history_gaps)
{
    const StreamId cursor{1000, 3};
    StreamHistory h;
    h.has_epoch = true;
    h.epoch = "e1";
    /* No epoch known yet: nothing to compare, whatever Redis holds. */
    ck_assert(find_history_gap("", h, cursor, StreamId{}) == HistoryGap::None);
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::None);
    /* Another epoch, or none: the stream's history was lost. */
    ck_assert(find_history_gap("e0", h, cursor, StreamId{}) == HistoryGap::Lost);
    StreamHistory gone;
    ck_assert(find_history_gap("e1", gone, cursor, StreamId{}) == HistoryGap::Lost);
    /* The oldest entry left is the cursor's, or older: nothing missed; newer: missed. */
    h.inspected = true;
    h.has_first = true;
    h.first = StreamId{900, 0};
    h.last_generated = StreamId{2000, 0};
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::None);
    h.first = cursor;
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::None);
    h.first = StreamId{1000, 4};
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::Trimmed);
    ck_assert(find_history_gap("e0", h, cursor, StreamId{}) == HistoryGap::Lost);
    h.inspected = false;
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::None);
    /* None left: missed when entries after the cursor were added. */
    h.inspected = true;
    h.has_first = false;
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::Trimmed);
    h.last_generated = cursor;
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::None);
    /* An entry after the cursor XDELed. */
    h.has_first = true;
    h.first = StreamId{900, 0};
    h.max_deleted = StreamId{1500, 0};
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::Trimmed);
    /* Reported once: not again while the cursor is before it; a later XDEL is new. */
    ck_assert(find_history_gap("e1", h, cursor, StreamId{1500, 0}) == HistoryGap::None);
    ck_assert(find_history_gap("e1", h, cursor, StreamId{1400, 0}) == HistoryGap::Trimmed);
    h.max_deleted = StreamId{1000, 2};
    ck_assert(find_history_gap("e1", h, cursor, StreamId{}) == HistoryGap::None);
    /* Every entry ever added still held: a cursor older than the stream missed nothing. */
    StreamHistory whole;
    whole.has_epoch = true;
    whole.epoch = "e1";
    whole.inspected = true;
    whole.has_first = true;
    whole.first = StreamId{1500, 0};
    whole.last_generated = StreamId{1600, 0};
    whole.has_counts = true;
    whole.entries_added = whole.length = 2;
    ck_assert(find_history_gap("e1", whole, StreamId{}, StreamId{}) == HistoryGap::None);
    ck_assert(find_history_gap("e1", whole, cursor, StreamId{}) == HistoryGap::None);
    whole.length = 1; /* one removed: the cursor before the oldest left missed it */
    ck_assert(find_history_gap("e1", whole, cursor, StreamId{}) == HistoryGap::Trimmed);
    whole.has_counts = false; /* Redis 6: no count, judged by the ids */
    whole.length = 2;
    ck_assert(find_history_gap("e1", whole, cursor, StreamId{}) == HistoryGap::Trimmed);
    /* Epochs are 32 hex digits and differ. */
    const std::string a = new_stream_epoch(), b = new_stream_epoch();
    ck_assert_int_eq(a.size(), 32);
    ck_assert(a.find_first_not_of("0123456789abcdef") == std::string::npos);
    ck_assert(a != b);
}
END_TEST

} // namespace

Suite *redis_record_suite()
{
    Suite *s = suite_create("redis_record");
    TCase *tc = tcase_create("redis_record");
    tcase_add_test(tc, url_forms);
    tcase_add_test(tc, url_errors);
    tcase_add_test(tc, url_for_log_hides_secrets);
    tcase_add_test(tc, entry_time_near_now_or_now);
    tcase_add_test(tc, stream_ids);
    tcase_add_test(tc, event_round_trip);
    tcase_add_test(tc, absent_fields);
    tcase_add_test(tc, close_round_trip);
    tcase_add_test(tc, bad_entries);
    tcase_add_test(tc, update_round_trip);
    tcase_add_test(tc, older_entries_still_read);
    tcase_add_test(tc, bad_update_entries);
    tcase_add_test(tc, presence_round_trip);
    tcase_add_test(tc, bad_presence_entries);
    tcase_add_test(tc, history_gaps);
    suite_add_tcase(s, tc);
    return s;
}
