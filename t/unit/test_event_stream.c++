/* sse::EventStreamParser against the WHATWG "Interpreting an event stream" rules, one rule per
 * test, and every stream again in pieces of every size and at every split point. */
#include "unit.h"

#include "sse/event_stream.h"

#include <cstdint>
#include <string>
#include <vector>

using namespace sse;

namespace {

std::vector<StreamEvent> read_whole(std::string_view bytes, EventStreamParser &p)
{
    std::vector<StreamEvent> out;
    ck_assert(p.feed(bytes, out));
    return out;
}

void assert_same(const std::vector<StreamEvent> &a, const std::vector<StreamEvent> &b,
                 const char *how)
{
    ck_assert_msg(a.size() == b.size(), "%s: %zu events, not %zu", how, a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        assert_str(a[i].type, b[i].type);
        assert_str(a[i].data, b[i].data);
        assert_str(a[i].last_event_id, b[i].last_event_id);
    }
}

/* The events, last id and retry of `bytes` read whole, in pieces of each size from 1 to its
 * length, and split in two at every point, all equal. */
std::vector<StreamEvent> read_every_way(std::string_view bytes)
{
    EventStreamParser whole;
    std::vector<StreamEvent> expected = read_whole(bytes, whole);
    for (std::size_t size = 1; size <= bytes.size(); ++size) {
        EventStreamParser p;
        std::vector<StreamEvent> got;
        for (std::size_t at = 0; at < bytes.size(); at += size)
            ck_assert(p.feed(bytes.substr(at, size), got));
        assert_same(got, expected, "pieces");
        assert_str(p.last_event_id(), whole.last_event_id());
        ck_assert_int_eq(p.retry_ms(), whole.retry_ms());
    }
    for (std::size_t at = 0; at <= bytes.size(); ++at) {
        EventStreamParser p;
        std::vector<StreamEvent> got;
        ck_assert(p.feed(bytes.substr(0, at), got));
        ck_assert(p.feed(bytes.substr(at), got));
        assert_same(got, expected, "split");
    }
    return expected;
}

void assert_event(const StreamEvent &e, std::string_view type, std::string_view data,
                  std::string_view id)
{
    assert_str(e.type, type);
    assert_str(e.data, data);
    assert_str(e.last_event_id, id);
}

} // namespace

START_TEST(dispatch_and_defaults)
{
    auto ev = read_every_way("data: a\n\nevent: t\ndata: b\n\ndata: c\n\n");
    ck_assert_uint_eq(ev.size(), 3);
    assert_event(ev[0], "message", "a", "");
    assert_event(ev[1], "t", "b", "");
    assert_event(ev[2], "message", "c", ""); /* the type does not carry over */
}
END_TEST

START_TEST(line_ends)
{
    for (const char *s : {"data: a\r\ndata: b\r\n\r\n", "data: a\rdata: b\r\r",
                          "data: a\ndata: b\n\n", "data: a\rdata: b\r\n\n"}) {
        auto ev = read_every_way(s);
        ck_assert_uint_eq(ev.size(), 1);
        assert_event(ev[0], "message", "a\nb", "");
    }
    /* CR then LF is one line end; LF then CR is two, the second a blank line. */
    auto ev = read_every_way("data: a\n\rdata: b\n\n");
    ck_assert_uint_eq(ev.size(), 2);
    /* A CR at the end of one read, then another line: the CR ended the line. */
    EventStreamParser p;
    std::vector<StreamEvent> got;
    ck_assert(p.feed("data: a\r", got));
    ck_assert(p.feed("data: b\r", got));
    ck_assert(p.feed("\n", got));
    ck_assert_uint_eq(got.size(), 0);
    ck_assert(p.feed("\r", got));
    ck_assert_uint_eq(got.size(), 1);
    assert_str(got[0].data, "a\nb");
}
END_TEST

START_TEST(bom_once_at_start)
{
    auto ev = read_every_way("\xEF\xBB\xBF" "data: a\n\n");
    ck_assert_uint_eq(ev.size(), 1);
    assert_str(ev[0].data, "a");
    /* A second BOM is part of the first field's name: "\uFEFFdata" is no field. */
    ck_assert_uint_eq(read_every_way("\xEF\xBB\xBF\xEF\xBB\xBF" "data: a\n\n").size(), 0);
    /* Elsewhere it is text. */
    ev = read_every_way("data: \xEF\xBB\xBF" "a\n\n");
    assert_str(ev[0].data, "\xEF\xBB\xBF" "a");
    /* A new connection's stream may start with one again. */
    EventStreamParser p;
    read_whole("\xEF\xBB\xBF" "data: a\n\n", p);
    p.start_connection();
    ev = read_whole("\xEF\xBB\xBF" "data: b\n\n", p);
    ck_assert_uint_eq(ev.size(), 1);
    assert_str(ev[0].data, "b");
}
END_TEST

START_TEST(comments_and_fields)
{
    auto ev = read_every_way(": hello\n:data: no\ndata:x\ndata:  two spaces\ndata\n"
                             "unknown: y\nDATA: z\n data: w\n\n");
    ck_assert_uint_eq(ev.size(), 1);
    /* no space: the value as is; two spaces: one is kept; no colon: an empty value */
    assert_str(ev[0].data, "x\n two spaces\n");
    /* "data" alone dispatches an event with empty data; its LF is the one removed */
    ev = read_every_way("data\n\n");
    ck_assert_uint_eq(ev.size(), 1);
    assert_str(ev[0].data, "");
    ev = read_every_way("data\ndata\n\n");
    assert_str(ev[0].data, "\n");
    ev = read_every_way("data: a:b: c\nevent:\n\n");
    assert_event(ev[0], "message", "a:b: c", "");
}
END_TEST

START_TEST(empty_data_dispatches_nothing)
{
    auto ev = read_every_way("event: t\n\nid: 7\n\n\n\ndata: a\n\n");
    ck_assert_uint_eq(ev.size(), 1);
    assert_event(ev[0], "message", "a", "7"); /* the type was reset, the id kept */
}
END_TEST

START_TEST(last_event_id_rules)
{
    const std::string s = std::string("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
                                      "id: 2\n\ndata: d\n\nid: x") +
                          '\0' + "y\ndata: e\n\ndata: f\nid: 3\n\n";
    auto ev = read_every_way(s);
    ck_assert_uint_eq(ev.size(), 6);
    assert_event(ev[0], "message", "a", "1");
    assert_event(ev[1], "message", "b", "1"); /* it persists */
    assert_event(ev[2], "message", "c", "");  /* "id" alone empties it */
    assert_event(ev[3], "message", "d", "2"); /* set by a block without data */
    assert_event(ev[4], "message", "e", "2"); /* an id holding NUL is ignored */
    assert_event(ev[5], "message", "f", "3"); /* the field's place in the block does not matter */
    /* A resumed parser starts from its id; an id without dispatch is not the last id yet. */
    EventStreamParser p("41");
    ev = read_whole("data: a\n\nid: 42\n", p);
    assert_str(ev[0].last_event_id, "41");
    assert_str(p.last_event_id(), "41");
    p.start_connection(); /* the undispatched 42 is dropped with the rest */
    ev = read_whole("data: b\n\n", p);
    assert_str(ev[0].last_event_id, "41");
}
END_TEST

START_TEST(retry_rules)
{
    struct {
        const char *stream;
        std::int64_t retry;
    } cases[] = {
        {"retry: 3000\n", 3000},     {"retry:25\n", 25},           {"retry: 0\n", 0},
        {"retry: 3000ms\n", -1},     {"retry: -5\n", -1},          {"retry: +5\n", -1},
        {"retry:\n", -1},            {"retry\n", -1},              {"retry: 1 0\n", -1},
        {"retry:  10\n", -1},        {"retry: 1.5\n", -1},         {"retry: \xD9\xA3\n", -1},
        {"retry: 99999999999999999999999\n", INT64_MAX},
        {"retry: 500\nretry: x\n", 500}, {"retry: 500\nretry: 7\n", 7},
    };
    for (const auto &c : cases) {
        EventStreamParser p;
        read_every_way(c.stream);
        ck_assert_uint_eq(read_whole(c.stream, p).size(), 0); /* retry dispatches nothing */
        ck_assert_msg(p.retry_ms() == c.retry, "%s: %lld", c.stream, (long long)p.retry_ms());
    }
    /* It survives a new connection, as the reconnection time does. */
    EventStreamParser p;
    read_whole("retry: 1234\n", p);
    p.start_connection();
    ck_assert_int_eq(p.retry_ms(), 1234);
}
END_TEST

START_TEST(trailing_lf_and_data_lines)
{
    auto ev = read_every_way("data: a\ndata:\n\ndata:\ndata:\n\ndata: \n\n");
    ck_assert_uint_eq(ev.size(), 3);
    assert_str(ev[0].data, "a\n"); /* only the last LF goes */
    assert_str(ev[1].data, "\n");
    assert_str(ev[2].data, "");
}
END_TEST

START_TEST(unfinished_event_is_not_dispatched)
{
    EventStreamParser p;
    auto ev = read_whole("data: a\n\ndata: b\nid: 9\ndata: partial line", p);
    ck_assert_uint_eq(ev.size(), 1);
    p.start_connection();
    ev = read_whole("line\n\n", p); /* the old partial line is gone: "line" is no field */
    ck_assert_uint_eq(ev.size(), 0);
    ev = read_whole("data: c\n\n", p);
    ck_assert_uint_eq(ev.size(), 1);
    assert_event(ev[0], "message", "c", "");
}
END_TEST

START_TEST(utf8_decoding)
{
    /* malformed bytes become U+FFFD (one per maximal subpart), in every split */
    auto ev = read_every_way("data: a\xFF" "b\xE2\x82" "c\xF0\x9F\x98\x80\xED\xA0\x80\n\n");
    ck_assert_uint_eq(ev.size(), 1);
    assert_str(ev[0].data, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xF0\x9F\x98\x80"
                           "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    /* an unfinished sequence before the line end is replaced, and the LF still ends it */
    ev = read_every_way("event: \xC3\ndata: \xE2\x82\xAC\n\n");
    assert_event(ev[0], "\xEF\xBF\xBD", "\xE2\x82\xAC", "");
    std::size_t bad = 0;
    assert_str(utf8_decode("\xEF\xBB\xBFx\xC3", &bad), "x\xEF\xBF\xBD");
    ck_assert_uint_eq(bad, 1);
    assert_str(utf8_decode("\xEF\xBB\xBF\xEF\xBB\xBF", &bad), "\xEF\xBB\xBF");
    ck_assert_uint_eq(bad, 0);
}
END_TEST

START_TEST(pending_limit)
{
    EventStreamParser p({}, 16);
    std::vector<StreamEvent> got;
    ck_assert(p.feed("data: 0123456789\n\n", got)); /* 16 bytes of line: at the limit */
    ck_assert_uint_eq(got.size(), 1);
    ck_assert(!p.feed("data: 0123456789a\n\n", got));
    p.start_connection();
    ck_assert(p.feed("data: 01234\ndata: 01", got));
    ck_assert(!p.feed("234", got)); /* "01234\n" of data and "data: 01234" of line: 17 */
    p.start_connection();
    ck_assert(p.feed("data: x\n\n", got));
    ck_assert_uint_eq(got.size(), 2);
}
END_TEST

START_TEST(a_stream_of_everything)
{
    auto ev = read_every_way("\xEF\xBB\xBF: comment\r\nretry: 10\rretry: x\nid: 1\r\n"
                             "event: e\ndata: a\r\ndata:b\r\r\ndata: c\xE2\x82\xAC\n\n"
                             "data\r\n\r\nid: 2\n\n");
    ck_assert_uint_eq(ev.size(), 3);
    assert_event(ev[0], "e", "a\nb", "1");
    assert_event(ev[1], "message", "c\xE2\x82\xAC", "1");
    assert_event(ev[2], "message", "", "1");
}
END_TEST

Suite *event_stream_suite()
{
    Suite *s = suite_create("event_stream");
    TCase *tc = tcase_create("whatwg");
    tcase_add_test(tc, dispatch_and_defaults);
    tcase_add_test(tc, line_ends);
    tcase_add_test(tc, bom_once_at_start);
    tcase_add_test(tc, comments_and_fields);
    tcase_add_test(tc, empty_data_dispatches_nothing);
    tcase_add_test(tc, last_event_id_rules);
    tcase_add_test(tc, retry_rules);
    tcase_add_test(tc, trailing_lf_and_data_lines);
    tcase_add_test(tc, unfinished_event_is_not_dispatched);
    tcase_add_test(tc, utf8_decoding);
    tcase_add_test(tc, pending_limit);
    tcase_add_test(tc, a_stream_of_everything);
    suite_add_tcase(s, tc);
    return s;
}
