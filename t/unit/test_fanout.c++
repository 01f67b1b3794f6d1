/* One subscriber's delivery rules (sse/delivery.h) and the per-process fan-out
 * (sse/fanout.h), with a fake sink: every record kind, audiences, overrun, the restart retry,
 * keep-alive timing, token expiry, a lost slot, the slow-consumer rule, many channels per
 * stream, an event on two channels delivered once, EndStream by serial, the catch-up. */
#include "unit.h"

#include "sse/bus.h"
#include "sse/delivery.h"
#include "sse/fanout.h"
#include "sse/front_queue.h"
#include "sse/stream_open.h"
#include "sse/token.h"

#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace sse;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;
constexpr std::int64_t kSec = 1000000;
/* Events with data up to this long carry it as their id too (see wire()). */
constexpr std::size_t kMaxIdFromData = 50;

/* A bus in ordinary memory (one process: no sharing needed). */
struct TestBus {
    std::unique_ptr<std::uint64_t[]> mem;
    Bus bus;
    explicit TestBus(std::size_t size = 1 << 20) : mem(new std::uint64_t[size / 8])
    {
        ck_assert(Bus::format(mem.get(), size, kT0).empty());
        std::string err;
        bus = Bus::attach(mem.get(), size, &err);
        ck_assert_msg(bus.valid(), "%s", err.c_str());
    }
    void event(const std::vector<std::string> &channels, const std::string &data,
               const Audience &audience = {})
    {
        EventFields ev;
        ev.has_data = true;
        ev.data = data;
        ev.id = data.size() <= kMaxIdFromData ? data : ""; /* its wire then says which it is */
        bus.publish(channels, ev, kT0, audience);
    }
    /* An event of type `type` ("": untyped) whose data and id are `data`. */
    void typed(const std::vector<std::string> &channels, const std::string &type,
               const std::string &data)
    {
        EventFields ev;
        ev.has_data = true;
        ev.data = data;
        ev.id = data;
        ev.event = type;
        bus.publish(channels, ev, kT0);
    }
    void close(const std::vector<std::string> &channels)
    {
        std::string notice;
        encode_close_notice("channel-closed", channels, notice);
        bus.publish_control(RecordKind::CloseChannels, channels, {}, notice, kT0);
    }
    void end_stream(std::uint64_t serial, const std::vector<std::string> &channels)
    {
        Audience target;
        target.only = {stream_target(serial)};
        bus.publish_control(RecordKind::EndStream, channels, target, replaced_notice(), kT0);
    }
};

/* A stream of the fake transport: what it was written, how it ended. */
struct FakeStream : Subscriber {
    FakeStream(Bus bus, std::vector<std::string> channels, std::string client_id,
               DeliverySettings settings, std::size_t max_pending = 1 << 20)
        : Subscriber(live_reader(bus, channels, client_id), channels, client_id, settings,
                     max_pending, kT0)
    {
    }
    static BusReader live_reader(Bus bus, const std::vector<std::string> &channels,
                                 const std::string &client_id)
    {
        BusReader r(bus, ChannelSet(channels), client_id);
        r.start_live();
        return r;
    }
    std::string out;
    bool is_ended = false;
    EndReason why = EndReason::ClientClosed;
    std::size_t takes = std::string::npos; /* bytes the connection takes per write */
};

/* Writes what the connection takes (FakeStream::takes) and records the end; a stream told
 * to come back gets its restart bytes, as the hub's transport does. */
struct FakeSink : FanOutSink {
    std::int64_t now = kT0;
    FanOut *fan = nullptr;
    void write_queued(Subscriber &s) override
    {
        auto &f = static_cast<FakeStream &>(s);
        std::size_t n = 0;
        for (const auto &piece : s.queue()) {
            const std::size_t skip = n == 0 ? s.front_offset() : 0;
            f.out.append(*piece, skip, std::string::npos);
            n += piece->size() - skip;
        }
        if (n > f.takes) {
            f.out.resize(f.out.size() - (n - f.takes));
            n = f.takes;
        }
        s.consumed(n);
        s.wrote(n, now);
    }
    void ended(Subscriber &s, EndReason why) override
    {
        auto &f = static_cast<FakeStream &>(s);
        f.is_ended = true;
        f.why = why;
        if (comes_back(why))
            s.delivery().restart_bytes(f.out);
    }
};

/* The wire of a short event TestBus::event() published. */
std::string data_line(const std::string &d) { return "id: " + d + "\ndata: " + d + "\n\n"; }

bool has(const std::string &out, const std::string &part)
{
    return out.find(part) != std::string::npos;
}

std::size_t count_of(const std::string &out, const std::string &part)
{
    std::size_t n = 0;
    for (std::size_t p = out.find(part); p != std::string::npos; p = out.find(part, p + 1))
        ++n;
    return n;
}

DeliverySettings settings(std::uint64_t serial, std::int64_t retry_ms = -1,
                          std::int64_t token_expires = 0)
{
    DeliverySettings s;
    s.keepalive_us = 15 * kSec;
    s.retry_ms = retry_ms;
    s.token_expires_us = token_expires;
    s.serial = serial;
    return s;
}

/* ---- Delivery ---- */

START_TEST(end_reason_names)
{
    assert_str(end_reason_name(EndReason::ClientClosed), "client-closed");
    assert_str(end_reason_name(EndReason::WriteFailed), "write-failed");
    assert_str(end_reason_name(EndReason::FellBehind), "fell-behind");
    assert_str(end_reason_name(EndReason::ServerRestart), "server-restart");
    assert_str(end_reason_name(EndReason::ChannelClosed), "channel-closed");
    assert_str(end_reason_name(EndReason::Replaced), "replaced");
    assert_str(end_reason_name(EndReason::HubFailed), "hub-failed");
    assert_str(end_reason_name(EndReason::TokenExpired), "token-expired");
    ck_assert(comes_back(EndReason::ServerRestart));
    ck_assert(comes_back(EndReason::HubFailed));
    ck_assert(!comes_back(EndReason::FellBehind));
    ck_assert(!comes_back(EndReason::TokenExpired));
}
END_TEST

START_TEST(opening_bytes)
{
    std::string out;
    Delivery::opening(3000, true, "", out);
    assert_str(out, ": ok\n\nretry: 3000\n\n");
    out.clear();
    Delivery::opening(-1, false, "42", out);
    std::string expected = ": ok\n\n";
    encode_missed_notice("unknown-last-event-id", "42", expected);
    assert_str(out, expected);
}
END_TEST

START_TEST(record_kinds)
{
    const Delivery d(settings(7), kT0);
    BusEvent e;
    e.kind = RecordKind::Event;
    ck_assert(d.on_record(e).kind == RecordAction::Kind::SendEvent);
    e.kind = RecordKind::CloseChannels;
    RecordAction a = d.on_record(e);
    ck_assert(a.kind == RecordAction::Kind::SendAndEnd);
    ck_assert(a.reason == EndReason::ChannelClosed);
    e.kind = RecordKind::EndStream;
    e.audience.only = {stream_target(8)};
    ck_assert(d.on_record(e).kind == RecordAction::Kind::Skip);
    e.audience.only.push_back(stream_target(7));
    a = d.on_record(e);
    ck_assert(a.kind == RecordAction::Kind::SendAndEnd);
    ck_assert(a.reason == EndReason::Replaced);
    /* No slot (a socket subscriber): no EndStream is for it, "0" included. */
    const Delivery none(settings(0), kT0);
    e.audience.only = {"0"};
    ck_assert(none.on_record(e).kind == RecordAction::Kind::Skip);
    /* A Gap record: its notice, and the stream goes on, whatever its filters (event types, a
     * Mercure subscriber's topics: the record has none and is never taken for an update). */
    DeliverySettings filtered = settings(9);
    filtered.event_types = {"update"};
    filtered.mercure = std::make_shared<MercureFilter>(std::vector<std::string>{"*"}, nullptr);
    BusEvent gap;
    gap.kind = RecordKind::Gap;
    Delivery::gap_notice(gap.wire);
    for (const Delivery *rules : {&d, &none}) {
        ck_assert(rules->on_record(gap).kind == RecordAction::Kind::SendNotice);
    }
    ck_assert(Delivery(filtered, kT0).on_record(gap).kind == RecordAction::Kind::SendNotice);
    assert_str(gap.wire, "event: sse-missed\ndata: {\"reason\":\"lost\"}\n\n");
}
END_TEST

/* Every stream gets a Gap record's notice once, at its place among the events, whatever its
 * channels and filters: the fan-out's shared reader for started streams, a stream's own
 * catch-up for the records before it was started (not both); a stream started after the
 * record does not get it. read_stream() (the blocking and socket paths) gives the same. */
START_TEST(fanout_gap_notice_to_every_stream)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    std::string notice;
    Delivery::gap_notice(notice);
    DeliverySettings mercure = settings(3);
    mercure.mercure = std::make_shared<MercureFilter>(
        std::vector<std::string>{"https://example.com/books/{id}"}, nullptr);
    DeliverySettings typed = settings(4);
    typed.event_types = {"update"};
    FakeStream a(tb.bus, {"a"}, "", settings(1)), b(tb.bus, {"b"}, "id-b", settings(2)),
        m(tb.bus, {mercure_hub_channel("test")}, "", mercure), t(tb.bus, {"a"}, "", typed);
    BusReader blocking(tb.bus, ChannelSet({"b"}));
    blocking.start_live();
    for (FakeStream *st : {&a, &b, &m, &t})
        fan.add(*st);
    tb.event({"a"}, "e1");
    tb.bus.publish_gap(notice, kT0); /* before a's start: its catch-up reads it */
    fan.start(a);
    fan.run(4096);
    for (FakeStream *st : {&b, &m, &t})
        fan.start(*st);
    tb.event({"a"}, "e2");
    tb.bus.publish_gap(notice, kT0); /* the shared reader's */
    tb.event({"b"}, "e3");
    fan.run(4096);
    FakeStream late(tb.bus, {"a"}, "", settings(5));
    fan.add(late);
    fan.start(late);
    tb.event({"a"}, "e4");
    fan.run(4096);
    assert_str(a.out, data_line("e1") + notice + data_line("e2") + notice + data_line("e4"));
    assert_str(b.out, notice + notice + data_line("e3"));
    assert_str(m.out, notice + notice);
    assert_str(t.out, notice + notice);
    assert_str(late.out, data_line("e4"));
    ck_assert(a.events_sent == 3 && b.events_sent == 1 && m.events_sent == 0);
    std::string out;
    int events = 0;
    const Delivery rules(settings(0), kT0);
    ck_assert(read_stream(blocking, rules, [&](std::string &&bytes, bool ev) {
                  out += bytes;
                  events += ev ? 1 : 0;
                  return true;
              }).drained);
    assert_str(out, notice + notice + data_line("e3"));
    ck_assert_int_eq(events, 1);
}
END_TEST

/* The client keeps the reconnection delay it was told (the channel's or SSERetry's). */
START_TEST(restart_retry)
{
    std::string out;
    Delivery(settings(1, 5000), kT0).restart_bytes(out);
    assert_str(out, "retry: 5000\n\n");
    out.clear();
    Delivery(settings(1, -1), kT0).restart_bytes(out);
    assert_str(out, "retry: 2000\n\n");
    ck_assert_int_eq(Delivery(settings(1, 0), kT0).restart_retry_ms(), 0);
}
END_TEST

START_TEST(keepalive_timing)
{
    Delivery d(settings(1), kT0);
    ck_assert(!d.keepalive_due(kT0 + 15 * kSec - 1));
    ck_assert(d.keepalive_due(kT0 + 15 * kSec));
    ck_assert_int_eq(d.next_wake_us(kT0 + 5 * kSec), 10 * kSec);
    d.wrote(kT0 + 10 * kSec);
    ck_assert(!d.keepalive_due(kT0 + 15 * kSec));
    ck_assert(d.keepalive_due(kT0 + 25 * kSec));
    ck_assert_int_eq(d.next_wake_us(kT0 + 30 * kSec), 0);
    std::string out;
    Delivery::keepalive_bytes(out);
    assert_str(out, ": keepalive\n\n");
    DeliverySettings quiet; /* no keep-alive, no token: nothing to wake for */
    ck_assert(!Delivery(quiet, kT0).keepalive_due(kT0 + 3600 * kSec));
    ck_assert_int_eq(Delivery(quiet, kT0).next_wake_us(kT0), -1);
}
END_TEST

START_TEST(token_expiry)
{
    const Delivery d(settings(1, -1, kT0 + 3 * kSec), kT0);
    ck_assert(!d.token_expired(kT0 + 3 * kSec - 1));
    ck_assert(d.token_expired(kT0 + 3 * kSec));
    ck_assert_int_eq(d.next_wake_us(kT0 + kSec), 2 * kSec); /* before the keep-alive */
    ck_assert_int_eq(d.next_wake_us(kT0 + 4 * kSec), 0);
    ck_assert(!Delivery(settings(1), kT0).token_expired(kT0 + 365 * 86400 * kSec));
}
END_TEST

/* A stream's own reader: events, then a CloseChannels record ends it after its notice. */
START_TEST(read_stream_rules)
{
    TestBus tb;
    BusReader r(tb.bus, ChannelSet({"a"}), "");
    r.start_live();
    tb.event({"a"}, "one");
    tb.event({"b"}, "other");
    tb.end_stream(9, {"a"});
    tb.event({"a"}, "two");
    tb.close({"a"});
    tb.event({"a"}, "after");
    const Delivery d(settings(1), kT0);
    std::string out;
    int events = 0;
    ReadStop stop = read_stream(r, d, [&](std::string &&b, bool ev) {
        out += b;
        events += ev;
        return true;
    });
    ck_assert(stop.ended && !stop.drained);
    ck_assert(stop.reason == EndReason::ChannelClosed);
    ck_assert_int_eq(events, 2);
    ck_assert(has(out, data_line("one")) && has(out, data_line("two")));
    ck_assert(!has(out, "other") && !has(out, "after") && !has(out, "replaced"));
    ck_assert(has(out, "channel-closed"));
    /* `out` may stop a batch: one piece at a time. */
    BusReader r2(tb.bus, ChannelSet({"a"}), "");
    r2.start_live();
    tb.event({"a"}, "x");
    tb.event({"a"}, "y");
    out.clear();
    stop = read_stream(r2, d, [&](std::string &&b, bool) {
        out += b;
        return false;
    });
    ck_assert(!stop.ended && !stop.drained);
    assert_str(out, data_line("x"));
}
END_TEST

/* The ?event= rule: a listed type, "message" for the untyped event (and for an explicit
 * "event: message"), every type for an empty list. */
START_TEST(event_type_filter_rule)
{
    const std::vector<std::string> none, ab = {"a", "b"}, msg = {"message"};
    ck_assert(event_type_listed(none, "") && event_type_listed(none, "x"));
    ck_assert(event_type_listed(ab, "a") && event_type_listed(ab, "b"));
    ck_assert(!event_type_listed(ab, "c") && !event_type_listed(ab, ""));
    ck_assert(!event_type_listed(ab, "message") && !event_type_listed(ab, "A"));
    ck_assert(event_type_listed(msg, "") && event_type_listed(msg, "message"));
    ck_assert(!event_type_listed(msg, "a"));
    DeliverySettings filtered = settings(1);
    filtered.event_types = ab;
    const Delivery d(filtered, kT0), all(settings(1), kT0);
    ck_assert(d.wants_type("a") && !d.wants_type("") && !d.wants_type("c"));
    ck_assert(all.wants_type("") && all.wants_type("c"));
}
END_TEST

/* read_stream() (the blocking loop, the socket daemon, FanOut's catch-up) applies the
 * filter, in replay too; a close notice is not filtered. */
START_TEST(read_stream_filters_types)
{
    TestBus tb;
    tb.typed({"a"}, "x", "r-x");
    tb.typed({"a"}, "", "r-msg");
    tb.typed({"a"}, "y", "r-y");
    BusReader r(tb.bus, ChannelSet({"a"}), "");
    ck_assert(!r.start_after("no-such-id", HistoryLimits(), kT0)); /* replays all */
    tb.typed({"a"}, "x", "l-x");
    tb.typed({"a"}, "z", "l-z");
    tb.typed({"a"}, "", "l-msg");
    tb.close({"a"});
    DeliverySettings st = settings(1);
    st.event_types = {"x", "message"};
    const Delivery d(st, kT0);
    std::string out;
    int events = 0;
    const ReadStop stop = read_stream(r, d, [&](std::string &&b, bool ev) {
        out += b;
        events += ev;
        return true;
    });
    ck_assert(stop.ended && stop.reason == EndReason::ChannelClosed);
    ck_assert_int_eq(events, 4);
    ck_assert(has(out, "r-x") && has(out, "r-msg") && has(out, "l-x") && has(out, "l-msg"));
    ck_assert(!has(out, "r-y") && !has(out, "l-z"));
    ck_assert(has(out, "channel-closed"));
}
END_TEST

/* ---- FanOut ---- */

START_TEST(fanout_events_and_close)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream a(tb.bus, {"a"}, "", settings(1)), b(tb.bus, {"b"}, "", settings(2));
    fan.add(a);
    fan.start(a);
    fan.add(b);
    fan.start(b);
    tb.event({"a"}, "for-a");
    tb.event({"b"}, "for-b");
    ck_assert(!fan.run(4096));
    assert_str(a.out, data_line("for-a"));
    assert_str(b.out, data_line("for-b"));
    ck_assert_int_eq(a.events_sent, 1);
    tb.close({"a"});
    tb.event({"a"}, "late");
    fan.run(4096);
    ck_assert(a.is_ended && a.why == EndReason::ChannelClosed);
    ck_assert(has(a.out, "channel-closed") && !has(a.out, "late"));
    ck_assert(!b.is_ended);
    ck_assert_int_eq(fan.size(), 1);
    ck_assert_int_eq(a.events_sent, 1); /* the notice is not an event */
}
END_TEST

START_TEST(fanout_end_stream_by_serial)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream a(tb.bus, {"c"}, "u", settings(11)), b(tb.bus, {"c"}, "u", settings(12));
    for (FakeStream *s : {&a, &b}) {
        fan.add(*s);
        fan.start(*s);
    }
    tb.end_stream(11, {"c"});
    tb.event({"c"}, "still");
    fan.run(4096);
    ck_assert(a.is_ended && a.why == EndReason::Replaced);
    assert_str(a.out, replaced_notice());
    ck_assert(!b.is_ended);
    assert_str(b.out, data_line("still"));
}
END_TEST

START_TEST(fanout_audiences)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream anon(tb.bus, {"c"}, "", settings(1)), alice(tb.bus, {"c"}, "alice", settings(2)),
        bob(tb.bus, {"c"}, "bob", settings(3));
    for (FakeStream *s : {&anon, &alice, &bob}) {
        fan.add(*s);
        fan.start(*s);
    }
    Audience only;
    only.only = {"alice"};
    tb.event({"c"}, "only-alice", only);
    Audience except;
    except.except = {"alice"};
    tb.event({"c"}, "not-alice", except);
    fan.run(4096);
    assert_str(anon.out, data_line("not-alice"));
    assert_str(alice.out, data_line("only-alice"));
    assert_str(bob.out, data_line("not-alice"));
}
END_TEST

/* The shared reader fell more than a ring behind: every stream is told. */
START_TEST(fanout_overrun)
{
    TestBus tb(Bus::min_size() + 64 * 1024);
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream a(tb.bus, {"a"}, "", settings(1)), b(tb.bus, {"b"}, "", settings(2));
    for (FakeStream *s : {&a, &b}) {
        fan.add(*s);
        fan.start(*s);
    }
    for (int i = 0; i < 2000; ++i)
        tb.event({"a"}, "e" + std::to_string(i) + std::string(100, 'x'));
    fan.run(100000);
    std::string notice;
    Delivery::overrun_notice(notice);
    ck_assert(has(a.out, notice) && has(b.out, notice));
    ck_assert(has(a.out, "e1999"));
    ck_assert(!a.is_ended && !b.is_ended);
}
END_TEST

/* A stop: each stream gets its restart retry, the channel's if one was given. */
START_TEST(fanout_restart_retry)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream told(tb.bus, {"a"}, "", settings(1, 7000)), plain(tb.bus, {"a"}, "", settings(2));
    for (FakeStream *s : {&told, &plain}) {
        fan.add(*s);
        fan.start(*s);
    }
    fan.end_all(EndReason::ServerRestart);
    ck_assert(told.is_ended && told.why == EndReason::ServerRestart);
    assert_str(told.out, "retry: 7000\n\n");
    assert_str(plain.out, "retry: 2000\n\n");
    ck_assert_int_eq(fan.size(), 0);
}
END_TEST

START_TEST(fanout_keepalive_token_lost_slot)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream quiet(tb.bus, {"a"}, "", settings(1)),
        token(tb.bus, {"a"}, "", settings(2, -1, kT0 + 20 * kSec)),
        lost(tb.bus, {"a"}, "", settings(3));
    for (FakeStream *s : {&quiet, &token, &lost}) {
        fan.add(*s);
        fan.start(*s);
    }
    auto lost_slot = [&](const Subscriber &s) { return &s == &lost; };
    sink.now = kT0 + 14 * kSec;
    fan.tick(sink.now, nullptr);
    ck_assert(quiet.out.empty());
    sink.now = kT0 + 15 * kSec;
    fan.tick(sink.now, nullptr);
    assert_str(quiet.out, ": keepalive\n\n");
    sink.now = kT0 + 20 * kSec;
    fan.tick(sink.now, lost_slot);
    ck_assert(!quiet.is_ended);
    ck_assert(token.is_ended && token.why == EndReason::TokenExpired);
    ck_assert(has(token.out, token_expired_notice()));
    ck_assert(lost.is_ended && lost.why == EndReason::Replaced);
    ck_assert(has(lost.out, replaced_notice()));
    ck_assert_int_eq(quiet.events_sent, 0); /* keep-alives are not events */
}
END_TEST

/* SSEMaxPending bounds what waits behind the piece being written. */
START_TEST(fanout_slow_consumer)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream slow(tb.bus, {"a"}, "", settings(1), 100), big(tb.bus, {"b"}, "", settings(2), 100);
    slow.takes = 0;
    big.takes = 0;
    for (FakeStream *s : {&slow, &big}) {
        fan.add(*s);
        fan.start(*s);
    }
    tb.event({"b"}, std::string(500, 'y')); /* one piece larger than the limit */
    tb.event({"a"}, std::string(60, 'x'));
    fan.run(4096);
    ck_assert(!slow.is_ended && !big.is_ended);
    tb.event({"a"}, std::string(60, 'x'));
    fan.run(4096);
    ck_assert(!slow.is_ended); /* 60 + a few bytes wait behind the front */
    tb.event({"a"}, std::string(60, 'x'));
    fan.run(4096);
    ck_assert(slow.is_ended && slow.why == EndReason::FellBehind);
    ck_assert(!big.is_ended);
}
END_TEST

START_TEST(fanout_many_channels_once)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream s(tb.bus, {"a", "b", "c"}, "", settings(1));
    fan.add(s);
    fan.start(s);
    tb.event({"a"}, "1");
    tb.event({"b"}, "2");
    tb.event({"c", "a", "b"}, "3");
    tb.event({"d"}, "4");
    fan.run(4096);
    assert_str(s.out, data_line("1") + data_line("2") + data_line("3"));
    ck_assert_int_eq(count_of(s.out, data_line("3")), 1);
    ck_assert_int_eq(s.events_sent, 3);
}
END_TEST

/* The channel index keeps each channel's streams in an array, and the fan-out its streams;
 * a stream leaves by taking the last one's place. Streams leave from the front, the middle
 * and the end of their lists (one named a channel twice, several are on two channels): after
 * each leave every stream left still gets each event of its channels once, and the keep-alive
 * of a tick, and the ones gone get nothing. */
START_TEST(fanout_index_leaves_keep_the_others)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    const std::vector<std::vector<std::string>> channels = {
        {"a"}, {"a", "b"}, {"b", "a"}, {"a", "a"}, {"b"}, {"a", "b", "c"}, {"c", "a"}};
    std::vector<std::unique_ptr<FakeStream>> s;
    for (std::size_t i = 0; i < channels.size(); ++i) {
        s.push_back(std::make_unique<FakeStream>(tb.bus, channels[i], "", settings(i + 1)));
        fan.add(*s[i]);
        fan.start(*s[i]);
    }
    std::vector<std::string> expect(s.size());
    auto on = [&](std::size_t i, const std::string &ch) {
        for (const auto &c : channels[i])
            if (c == ch)
                return true;
        return false;
    };
    int round = 0;
    auto publish_and_check = [&] {
        const std::string one = "x" + std::to_string(round), two = "y" + std::to_string(round);
        ++round;
        tb.event({"a"}, one);
        tb.event({"b", "a"}, two);
        tb.event({"c"}, one + "c");
        fan.run(4096);
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i]->is_ended)
                continue;
            if (on(i, "a"))
                expect[i] += data_line(one);
            if (on(i, "a") || on(i, "b"))
                expect[i] += data_line(two);
            if (on(i, "c"))
                expect[i] += data_line(one + "c");
            assert_str(s[i]->out, expect[i]);
        }
    };
    publish_and_check();
    /* The first of "a", one in the middle of both lists, the one that named "a" twice, the
     * last of "c": each leave moves another stream within a list. */
    for (std::size_t gone : {0, 2, 3, 6, 5}) {
        fan.end(*s[gone], EndReason::ClientClosed);
        publish_and_check();
    }
    ck_assert_int_eq(fan.size(), 2);
    /* The streams taken on are an array too: the tick reaches the two left, once each. */
    std::string keepalive;
    Delivery::keepalive_bytes(keepalive);
    sink.now = kT0 + 16 * kSec;
    fan.tick(sink.now, nullptr);
    for (std::size_t i = 0; i < s.size(); ++i)
        ck_assert_int_eq(count_of(s[i]->out, keepalive), s[i]->is_ended ? 0 : 1);
    for (std::size_t i : {1, 4})
        expect[i] += keepalive;
    /* The two left (on "a" and "b"; on "b") leave too: nothing of theirs stays indexed. */
    fan.end(*s[4], EndReason::ClientClosed);
    publish_and_check();
    fan.end(*s[1], EndReason::ClientClosed);
    for (std::uint64_t w : fan.interest().words())
        ck_assert(w == 0);
    tb.event({"a", "b", "c"}, "nobody");
    fan.run(4096);
    for (const auto &f : s)
        ck_assert(!has(f->out, "nobody"));
}
END_TEST

/* Streams end while a round's streams are written (a failed write ends its stream from inside
 * the sink's write_queued()); here the sink ends other streams of the round, the harder case:
 * they are out of the index before their turn, are not written, and the next record goes to
 * the others once each. */
START_TEST(fanout_end_during_writes)
{
    struct EndingSink : FakeSink {
        std::map<Subscriber *, Subscriber *> ends; /* writing the key ends the value */
        void write_queued(Subscriber &s) override
        {
            FakeSink::write_queued(s);
            auto it = ends.find(&s);
            if (it != ends.end())
                fan->end(*it->second, EndReason::WriteFailed);
        }
    };
    TestBus tb;
    EndingSink sink;
    FanOut fan(tb.bus, sink);
    sink.fan = &fan;
    FakeStream a(tb.bus, {"a"}, "", settings(1)), b(tb.bus, {"a", "b"}, "", settings(2)),
        c(tb.bus, {"a"}, "", settings(3)), d(tb.bus, {"b", "a"}, "", settings(4));
    for (FakeStream *f : {&a, &b, &c, &d}) {
        fan.add(*f);
        fan.start(*f);
    }
    /* Whichever of the round is written first ends the two others but one. */
    sink.ends = {{&a, &b}, {&b, &c}, {&c, &d}, {&d, &a}};
    tb.event({"a"}, "1");
    fan.run(4096);
    int got = 0, ended = 0;
    for (FakeStream *f : {&a, &b, &c, &d}) {
        got += f->out == data_line("1");
        ended += f->is_ended;
        ck_assert(!f->is_ended || f->why == EndReason::WriteFailed);
    }
    /* Each ended stream was ended by a written one, before or after its own write. */
    ck_assert_int_ge(got, 2);
    ck_assert_int_ge(ended, 1);
    ck_assert_int_eq(fan.size(), 4 - ended);
    sink.ends.clear();
    tb.event({"b", "a"}, "2");
    fan.run(4096);
    for (FakeStream *f : {&a, &b, &c, &d}) {
        if (f->is_ended)
            ck_assert(!has(f->out, data_line("2")));
        else
            ck_assert_int_eq(count_of(f->out, data_line("2")), 1);
    }
}
END_TEST

/* What was published between the stream's first bytes and start() comes from its own reader;
 * the shared reader then gives nothing twice. */
START_TEST(fanout_catch_up)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream s(tb.bus, {"a"}, "", settings(1));
    tb.event({"a"}, "before");
    fan.run(4096); /* the shared reader passes it: s is not started */
    fan.add(s);
    fan.start(s);
    tb.event({"a"}, "after");
    fan.run(4096);
    assert_str(s.out, data_line("before") + data_line("after"));
    /* A stream whose catch-up holds its end ends at start(). */
    FakeStream t(tb.bus, {"a"}, "", settings(2));
    tb.close({"a"});
    fan.run(4096);
    fan.add(t);
    fan.start(t);
    ck_assert(t.is_ended && t.why == EndReason::ChannelClosed);
    ck_assert(has(t.out, "channel-closed"));
}
END_TEST

/* A process without streams leaves the bus unread (its hub does not wake for publishes):
 * more than a ring is published meanwhile. The stream that comes next gets what followed its
 * own first bytes and then everything live, without an overrun notice for what nobody here
 * needed; so does the next stream after the process had none again. */
START_TEST(fanout_first_stream_after_none)
{
    TestBus tb(Bus::min_size() + 64 * 1024);
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    std::string notice;
    Delivery::overrun_notice(notice);
    for (int round = 0; round < 2; ++round) {
        for (int i = 0; i < 2000; ++i)
            tb.event({"a"}, "e" + std::to_string(i) + std::string(100, 'x'));
        ck_assert(!fan.run(1)); /* nothing to deliver to: nothing read (reading would leave
                                  * more than 1 record to read, and say so) */
        for (int i = 0; i < 2000; ++i)
            tb.event({"a"}, "f" + std::to_string(i) + std::string(100, 'x'));
        const std::string r = std::to_string(round);
        FakeStream s(tb.bus, {"a"}, "", settings(1));     /* its first bytes end here */
        tb.event({"a"}, "between" + r);
        fan.add(s);
        fan.start(s);
        tb.event({"a"}, "after" + r);
        fan.run(4096);
        assert_str(s.out, data_line("between" + r) + data_line("after" + r));
        ck_assert(!has(s.out, notice));
        fan.end(s, EndReason::ClientClosed);
        ck_assert_int_eq(fan.size(), 0);
    }
}
END_TEST

/* The fan-out's wake-up interest holds the channels of the streams it indexes, from start()
 * to end(), counted: a channel two streams share stays while one of them does. */
START_TEST(fanout_interest_follows_streams)
{
    TestBus tb(Bus::min_size());
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream a(tb.bus, {"a", "shared"}, "", settings(1));
    FakeStream b(tb.bus, {"b", "shared"}, "", settings(2));
    fan.add(a);
    ck_assert(!fan.interest().may_hold("a")); /* not indexed before start() */
    fan.start(a);
    fan.add(b);
    fan.start(b);
    ck_assert(fan.interest().may_hold("a") && fan.interest().may_hold("b"));
    fan.end(a, EndReason::ClientClosed);
    ck_assert(fan.interest().may_hold("shared") && fan.interest().may_hold("b"));
    fan.end(b, EndReason::ClientClosed);
    for (std::uint64_t w : fan.interest().words())
        ck_assert(w == 0);
}
END_TEST

/* The shared reader and the catch-up filter per stream: streams of one channel with and
 * without a filter each get their own selection; the overrun notice is not filtered. */
START_TEST(fanout_filters_types)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    DeliverySettings only_x = settings(1), only_msg = settings(2);
    only_x.event_types = {"x"};
    only_msg.event_types = {"message"};
    FakeStream fx(tb.bus, {"c"}, "", only_x), fm(tb.bus, {"c"}, "", only_msg),
        all(tb.bus, {"c"}, "", settings(3));
    tb.typed({"c"}, "x", "early-x"); /* before start(): the catch-up reads it */
    tb.typed({"c"}, "y", "early-y");
    for (FakeStream *s : {&fx, &fm, &all}) {
        fan.add(*s);
        fan.start(*s);
    }
    tb.typed({"c"}, "x", "live-x");
    tb.typed({"c"}, "", "live-msg");
    tb.typed({"c"}, "y", "live-y");
    fan.run(4096);
    ck_assert(has(fx.out, "early-x") && has(fx.out, "live-x"));
    ck_assert(!has(fx.out, "early-y") && !has(fx.out, "live-msg") && !has(fx.out, "live-y"));
    ck_assert_int_eq(fx.events_sent, 2);
    assert_str(fm.out, "id: live-msg\ndata: live-msg\n\n");
    ck_assert_int_eq(all.events_sent, 5);
}
END_TEST

/* Mercure updates on the hub's channel: each subscriber gets the updates its selectors select,
 * the private ones only when its claims select one of their topics; through the catch-up
 * (before start), the shared reader, and a stream's own reader from the earliest record. */
START_TEST(fanout_filters_mercure_topics)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    auto update = [&](std::vector<std::string> topics, const std::string &data, bool priv) {
        EventFields ev;
        ev.has_data = true;
        ev.data = data;
        ev.id = "urn:uuid:" + data;
        UpdateTopics t{std::move(topics), priv};
        tb.bus.publish({mercure_hub_channel("test")}, ev, kT0, {}, &t);
    };
    const std::vector<std::string> claims = {"https://example.com/books/{id}"};
    DeliverySettings books = settings(1), with_claims = settings(2), star = settings(3);
    books.mercure = std::make_shared<MercureFilter>(
        std::vector<std::string>{"https://example.com/books/{id}"}, nullptr);
    with_claims.mercure = std::make_shared<MercureFilter>(
        std::vector<std::string>{"https://example.com/books/{id}"}, &claims);
    star.mercure = std::make_shared<MercureFilter>(std::vector<std::string>{"*"}, nullptr);
    FakeStream fb(tb.bus, {mercure_hub_channel("test")}, "", books),
        fc(tb.bus, {mercure_hub_channel("test")}, "", with_claims), fs(tb.bus, {mercure_hub_channel("test")}, "", star),
        native(tb.bus, {"c"}, "", settings(4));
    update({"https://example.com/books/1"}, "early-book", false); /* the catch-up reads it */
    for (FakeStream *st : {&fb, &fc, &fs, &native}) {
        fan.add(*st);
        fan.start(*st);
    }
    update({"https://example.com/books/2"}, "live-book", false);
    update({"https://example.com/authors/1"}, "live-author", false);
    update({"https://example.com/books/3", "https://example.com/x"}, "private-book", true);
    update({"https://example.com/authors/2"}, "private-author", true);
    tb.event({"c"}, "native");
    fan.run(4096);
    ck_assert(has(fb.out, "early-book") && has(fb.out, "live-book"));
    ck_assert(!has(fb.out, "live-author") && !has(fb.out, "private"));
    ck_assert_int_eq(fb.events_sent, 2);
    ck_assert(has(fc.out, "private-book") && !has(fc.out, "private-author"));
    ck_assert_int_eq(fc.events_sent, 3);
    ck_assert(has(fs.out, "live-author") && !has(fs.out, "private") && !has(fs.out, "native"));
    ck_assert_int_eq(fs.events_sent, 3);
    assert_str(native.out, data_line("native"));

    /* The same rules for a stream's own reader, from the earliest record on. */
    BusReader r(tb.bus, ChannelSet({mercure_hub_channel("test")}));
    r.start_earliest(HistoryLimits{}, kT0);
    const Delivery rules(with_claims, kT0);
    std::string got;
    read_stream(r, rules, [&](std::string &&b, bool) {
        got += b;
        return true;
    });
    ck_assert(has(got, "early-book") && has(got, "live-book") && has(got, "private-book"));
    ck_assert(!has(got, "author") && !has(got, "native"));
}
END_TEST

/* A write taking part of a piece: the rest goes at the next push. */
START_TEST(fanout_partial_writes)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream s(tb.bus, {"a"}, "", settings(1));
    s.takes = 5;
    fan.add(s);
    fan.start(s);
    tb.event({"a"}, "hello");
    fan.run(4096);
    assert_str(s.out, data_line("hello").substr(0, 5));
    ck_assert_int_eq(s.events_sent, 0);
    s.takes = std::string::npos;
    fan.push(s);
    assert_str(s.out, data_line("hello"));
    ck_assert_int_eq(s.events_sent, 1);
    ck_assert_int_eq(s.bytes_sent, data_line("hello").size());
}
END_TEST

/* SSE_EVENTS counts events, not the keep-alive between them, whether the queue goes out in
 * pieces or whole. */
START_TEST(fanout_counts_events_only)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    FakeStream s(tb.bus, {"a"}, "", settings(1));
    s.takes = 0;
    fan.add(s);
    fan.start(s);
    tb.event({"a"}, "one");
    fan.run(4096);
    fan.tick(kT0 + 15 * kSec, nullptr);
    tb.event({"a"}, "two");
    fan.run(4096);
    s.takes = data_line("one").size() + 3; /* into the keep-alive */
    fan.push(s);
    ck_assert_int_eq(s.events_sent, 1);
    s.takes = std::string(": keepalive\n\n").size(); /* the rest of it, 3 bytes into "two" */
    fan.push(s);
    ck_assert_int_eq(s.events_sent, 1);
    s.takes = std::string::npos;
    fan.push(s);
    ck_assert_int_eq(s.events_sent, 2);
    assert_str(s.out, data_line("one") + ": keepalive\n\n" + data_line("two"));
}
END_TEST


/* ---- The tick's wheel: only the streams whose keep-alive or exp came are visited, and what
 * each stream gets is what a walk of every stream gave. ---- */

/* Many streams written at scattered times (a write does not touch the wheel), ticks at
 * uneven instants: twice in one second, seconds skipped (late ticks), one more than the
 * wheel's 64 seconds late. After each tick every stream has exactly the keep-alives of a
 * model that looks at every stream: one when silent for its interval, none when written
 * recently. */
START_TEST(fanout_tick_keepalives_like_a_full_walk)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    constexpr std::size_t kStreams = 300;
    std::vector<std::unique_ptr<FakeStream>> s;
    std::vector<std::int64_t> last(kStreams, kT0);
    std::vector<std::size_t> expect(kStreams, 0);
    fan.tick(kT0, nullptr, false); /* the first tick: the wheel starts here */
    for (std::size_t i = 0; i < kStreams; ++i) {
        DeliverySettings set = settings(i + 1);
        set.keepalive_us = (5 + std::int64_t(i % 13)) * kSec;
        s.push_back(std::make_unique<FakeStream>(tb.bus, std::vector<std::string>{"a"}, "", set));
        fan.add(*s[i]);
        fan.start(*s[i]);
    }
    std::string keepalive;
    Delivery::keepalive_bytes(keepalive);
    std::int64_t t = kT0;
    const std::int64_t steps[] = {300000,  700000,  1000000, 250000,  4000000, 900000,
                                  1100000, 7300000, 1000000, 500000,  500000,  3000000};
    for (int round = 0; round < 60; ++round) {
        t += steps[round % 12] + (round == 40 ? 70 * kSec : 0);
        /* Writes between ticks, to a stream in seven, at an instant of its own. */
        for (std::size_t i = std::size_t(round) % 7; i < kStreams; i += 7) {
            const std::int64_t at = t - std::int64_t(i % 5) * 100000;
            if (at > last[i]) {
                s[i]->wrote(0, at);
                last[i] = at;
            }
        }
        sink.now = t;
        fan.tick(t, nullptr, false);
        for (std::size_t i = 0; i < kStreams; ++i) {
            if (t - last[i] >= s[i]->delivery().settings().keepalive_us) {
                ++expect[i];
                last[i] = t;
            }
            ck_assert_msg(count_of(s[i]->out, keepalive) == expect[i],
                          "round %d stream %zu: %zu keep-alives, expected %zu", round, i,
                          count_of(s[i]->out, keepalive), expect[i]);
        }
    }
    ck_assert_int_eq(fan.size(), kStreams);
}
END_TEST

/* A token that expires before the stream's keep-alive ends it at the first tick at or after
 * its exp, not later; one further than the wheel's 64 seconds the same (it waits in the last
 * bucket and is moved on). */
START_TEST(fanout_tick_token_before_keepalive)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    fan.tick(kT0, nullptr, false);
    FakeStream soon(tb.bus, {"a"}, "", settings(1, -1, kT0 + 3 * kSec + 500000)),
        far(tb.bus, {"a"}, "", settings(2, -1, kT0 + 100 * kSec + 200000));
    soon.wrote(0, kT0 + 300000);
    for (FakeStream *f : {&soon, &far}) {
        fan.add(*f);
        fan.start(*f);
    }
    for (std::int64_t sec = 1; sec <= 110; ++sec) {
        /* Writes keep `far` from its keep-alives: only its exp ends it. */
        far.wrote(0, kT0 + sec * kSec);
        sink.now = kT0 + sec * kSec + 300000;
        fan.tick(sink.now, nullptr, false);
        ck_assert_msg(soon.is_ended == (sec >= 4), "soon at %lld", (long long)sec);
        ck_assert_msg(far.is_ended == (sec >= 100), "far at %lld", (long long)sec);
    }
    ck_assert(soon.why == EndReason::TokenExpired && has(soon.out, token_expired_notice()));
    ck_assert(far.why == EndReason::TokenExpired && has(far.out, token_expired_notice()));
    ck_assert(!has(soon.out, ": keepalive")); /* its exp came first */
}
END_TEST

/* Streams in one bucket leave from its middle (swap with its last): the ones left still get
 * their keep-alives, the ones gone (freed) are not reached. */
START_TEST(fanout_tick_leave_middle_of_bucket)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    fan.tick(kT0, nullptr, false);
    std::vector<std::unique_ptr<FakeStream>> s;
    for (std::uint64_t i = 0; i < 6; ++i) {
        s.push_back(std::make_unique<FakeStream>(tb.bus, std::vector<std::string>{"a"}, "",
                                                 settings(i + 1)));
        fan.add(*s.back());
        fan.start(*s.back());
    }
    /* One tick files them all in the bucket of kT0 + 15 s, in this order. */
    sink.now = kT0 + kSec;
    fan.tick(sink.now, nullptr, false);
    for (std::size_t gone : {1, 5, 3}) { /* the middle, the last, the one moved into 1 */
        fan.end(*s[gone], EndReason::ClientClosed);
        s[gone].reset();
    }
    sink.now = kT0 + 15 * kSec;
    fan.tick(sink.now, nullptr, false);
    for (std::size_t i : {0, 2, 4})
        assert_str(s[i]->out, ": keepalive\n\n");
    fan.end(*s[2], EndReason::ClientClosed);
    s[2].reset();
    sink.now = kT0 + 30 * kSec;
    fan.tick(sink.now, nullptr, false);
    for (std::size_t i : {0, 4})
        assert_str(s[i]->out, ": keepalive\n\n: keepalive\n\n");
    ck_assert_int_eq(fan.size(), 2);
}
END_TEST

/* A tick that throws halfway through a bucket (here the slot callback) leaves no stream in
 * the wheel that says it is elsewhere: the streams ended afterwards leave it cleanly, and the
 * others get their keep-alives on time. Before the wheel was forgotten on a throw, ending the
 * streams still taken out of the bucket wrote through an empty bucket's back(). */
START_TEST(fanout_tick_throw_forgets_the_wheel)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    fan.tick(kT0, nullptr, false);
    std::vector<std::unique_ptr<FakeStream>> s;
    for (std::uint64_t i = 0; i < 8; ++i) {
        s.push_back(std::make_unique<FakeStream>(tb.bus, std::vector<std::string>{"a"}, "",
                                                 settings(i + 1)));
        fan.add(*s.back());
        fan.start(*s.back());
    }
    int calls = 0;
    auto throwing = [&](const Subscriber &) -> bool {
        if (++calls == 3)
            throw std::runtime_error("slot read failed");
        return false;
    };
    sink.now = kT0 + kSec;
    bool threw = false;
    try {
        fan.tick(sink.now, throwing, false);
    } catch (const std::runtime_error &) {
        threw = true;
    }
    ck_assert(threw);
    for (std::size_t gone : {1, 4, 6, 7}) {
        fan.end(*s[gone], EndReason::ClientClosed);
        s[gone].reset();
    }
    sink.now = kT0 + 2 * kSec;
    fan.tick(sink.now, nullptr, false);
    sink.now = kT0 + 17 * kSec;
    fan.tick(sink.now, nullptr, false);
    for (std::size_t i : {0, 2, 3, 5})
        assert_str(s[i]->out, ": keepalive\n\n");
    fan.end(*s[3], EndReason::ClientClosed);
    s[3].reset();
    sink.now = kT0 + 32 * kSec;
    fan.tick(sink.now, nullptr, false);
    for (std::size_t i : {0, 2, 5})
        assert_str(s[i]->out, ": keepalive\n\n: keepalive\n\n");
    ck_assert_int_eq(fan.size(), 3);
}
END_TEST

/* The registry's slots are read for every stream only when the caller says they moved; else
 * only for the streams the tick visits, among them each one started since the last tick. */
START_TEST(fanout_tick_slots_read_when_moved)
{
    TestBus tb;
    FakeSink sink;
    FanOut fan(tb.bus, sink);
    fan.tick(kT0, nullptr, false);
    std::vector<std::unique_ptr<FakeStream>> s;
    for (std::uint64_t i = 0; i < 10; ++i) {
        s.push_back(std::make_unique<FakeStream>(tb.bus, std::vector<std::string>{"a"}, "",
                                                 settings(i + 1)));
        fan.add(*s.back());
        fan.start(*s.back());
    }
    std::size_t reads = 0;
    const Subscriber *taken = nullptr;
    auto lost_slot = [&](const Subscriber &x) {
        ++reads;
        return &x == taken;
    };
    /* The new streams are visited once, their slots read. */
    fan.tick(kT0 + kSec, lost_slot, false);
    ck_assert_int_eq(reads, 10);
    reads = 0;
    fan.tick(kT0 + 2 * kSec, lost_slot, false);
    ck_assert_int_eq(reads, 0);
    /* A slot taken: every slot is read, the stream ends replaced. */
    taken = s[4].get();
    fan.tick(kT0 + 3 * kSec, lost_slot, true);
    ck_assert_int_eq(reads, 10);
    ck_assert(s[4]->is_ended && s[4]->why == EndReason::Replaced);
    ck_assert(has(s[4]->out, replaced_notice()));
    /* One started between two ticks, its slot already taken: it ends at the next tick. */
    FakeStream late(tb.bus, {"a"}, "", settings(11));
    fan.add(late);
    fan.start(late);
    taken = &late;
    reads = 0;
    fan.tick(kT0 + 4 * kSec, lost_slot, false);
    ck_assert_int_eq(reads, 1);
    ck_assert(late.is_ended && late.why == EndReason::Replaced);
}
END_TEST

} // namespace

/* FrontQueueOne holds a piece pushed onto an empty queue in itself, the others in its
 * vector: whatever the pushes, pops and clears, its order, size, front and iteration are a
 * plain deque's, and the held piece is let go when popped. */
START_TEST(front_queue_one_is_a_fifo)
{
    FrontQueueOne<SharedBytes> q;
    ck_assert(q.empty() && q.begin() == q.end());
    ck_assert_uint_eq(q.capacity(), 0);
    auto kept = std::make_shared<const std::string>("kept");
    q.push_back(kept);
    ck_assert_uint_eq(q.capacity(), 0); /* one piece: held in the queue itself */
    ck_assert_int_eq(kept.use_count(), 2);
    q.pop_front();
    ck_assert_int_eq(kept.use_count(), 1);
    ck_assert(q.empty());
    std::deque<SharedBytes> model;
    std::vector<SharedBytes> pieces;
    for (int i = 0; i < 64; ++i)
        pieces.push_back(std::make_shared<const std::string>(std::to_string(i)));
    unsigned seed = 12345;
    auto next = [&] { return seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff; };
    for (int step = 0; step < 20000; ++step) {
        const unsigned op = next() % 16;
        if (op < 8) {
            const SharedBytes &p = pieces[next() % pieces.size()];
            q.push_back(p);
            model.push_back(p);
        } else if (op < 15) {
            if (!model.empty()) {
                q.pop_front();
                model.pop_front();
            }
        } else {
            q.clear();
            model.clear();
        }
        ck_assert_uint_eq(q.size(), model.size());
        ck_assert(q.empty() == model.empty());
        if (!model.empty())
            ck_assert(q.front() == model.front());
        auto m = model.begin();
        for (auto it = q.begin(); it != q.end(); ++it, ++m) {
            ck_assert(m != model.end());
            ck_assert(*it == *m && it->get() == m->get());
        }
        ck_assert(m == model.end());
    }
}
END_TEST

START_TEST(front_queue_fifo)
{
    FrontQueue<SharedBytes> q;
    ck_assert(q.empty());
    ck_assert_uint_eq(q.capacity(), 0); /* an idle stream's queue holds no memory */
    auto kept = std::make_shared<const std::string>("kept");
    q.push_back(kept);
    q.push_back(kept);
    ck_assert_int_eq(kept.use_count(), 3);
    q.pop_front(); /* the queue is not empty: the popped slot itself lets go */
    ck_assert_int_eq(kept.use_count(), 2);
    q.pop_front();
    ck_assert_int_eq(kept.use_count(), 1);
    ck_assert(q.empty());
    /* Pushes and pops interleaved, over many compactions: the order holds. */
    std::uint64_t next_in = 0, next_out = 0;
    FrontQueue<std::uint64_t> n;
    for (int round = 0; round < 200; ++round) {
        for (int i = 0; i < 7; ++i)
            n.push_back(next_in++);
        for (int i = 0; i < 5; ++i, n.pop_front())
            ck_assert_uint_eq(n.front(), next_out++);
        ck_assert_uint_eq(n.size(), next_in - next_out);
        std::uint64_t expect = next_out;
        for (auto it = n.begin(); it != n.end(); ++it)
            ck_assert_uint_eq(*it, expect++);
        ck_assert_uint_eq(expect, next_in);
    }
    ck_assert_uint_gt(n.capacity(), 64);
    while (!n.empty()) {
        ck_assert_uint_eq(n.front(), next_out++);
        n.pop_front();
    }
    ck_assert_uint_eq(next_out, next_in);
    ck_assert_uint_le(n.capacity(), 64); /* emptied: the burst's slots are given back */
    for (int i = 0; i < 1000; ++i)
        n.push_back(1);
    n.clear();
    ck_assert(n.empty() && n.begin() == n.end());
    ck_assert_uint_le(n.capacity(), 64);
}
END_TEST

Suite *fanout_suite()
{
    Suite *s = suite_create("delivery");
    TCase *tc = tcase_create("delivery");
    tcase_add_test(tc, end_reason_names);
    tcase_add_test(tc, opening_bytes);
    tcase_add_test(tc, record_kinds);
    tcase_add_test(tc, restart_retry);
    tcase_add_test(tc, keepalive_timing);
    tcase_add_test(tc, token_expiry);
    tcase_add_test(tc, read_stream_rules);
    tcase_add_test(tc, event_type_filter_rule);
    tcase_add_test(tc, read_stream_filters_types);
    suite_add_tcase(s, tc);
    tc = tcase_create("fanout");
    tcase_add_test(tc, front_queue_fifo);
    tcase_add_test(tc, front_queue_one_is_a_fifo);
    tcase_add_test(tc, fanout_events_and_close);
    tcase_add_test(tc, fanout_end_stream_by_serial);
    tcase_add_test(tc, fanout_audiences);
    tcase_add_test(tc, fanout_overrun);
    tcase_add_test(tc, fanout_restart_retry);
    tcase_add_test(tc, fanout_keepalive_token_lost_slot);
    tcase_add_test(tc, fanout_slow_consumer);
    tcase_add_test(tc, fanout_many_channels_once);
    tcase_add_test(tc, fanout_index_leaves_keep_the_others);
    tcase_add_test(tc, fanout_end_during_writes);
    tcase_add_test(tc, fanout_catch_up);
    tcase_add_test(tc, fanout_first_stream_after_none);
    tcase_add_test(tc, fanout_interest_follows_streams);
    tcase_add_test(tc, fanout_partial_writes);
    tcase_add_test(tc, fanout_counts_events_only);
    tcase_add_test(tc, fanout_filters_types);
    tcase_add_test(tc, fanout_filters_mercure_topics);
    tcase_add_test(tc, fanout_gap_notice_to_every_stream);
    tcase_add_test(tc, fanout_tick_keepalives_like_a_full_walk);
    tcase_add_test(tc, fanout_tick_token_before_keepalive);
    tcase_add_test(tc, fanout_tick_leave_middle_of_bucket);
    tcase_add_test(tc, fanout_tick_slots_read_when_moved);
    tcase_add_test(tc, fanout_tick_throw_forgets_the_wheel);
    suite_add_tcase(s, tc);
    return s;
}
