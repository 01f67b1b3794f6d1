/* The publish socket protocol: framing, fields, every malformed case, limits, and that any
 * split of the input gives the same frames. */
#include "unit.h"

#include "sse/socket_protocol.h"

#include <string>
#include <vector>

using namespace sse;

namespace {

std::vector<ClientBlock> parse(const std::string &in, std::size_t max = 1024)
{
    FrameParser p(max);
    std::vector<ClientBlock> out;
    p.feed(in, out);
    return out;
}

/* Feeds one byte at a time: the result must not depend on how reads split the stream. */
std::vector<ClientBlock> parse_bytewise(const std::string &in, std::size_t max = 1024)
{
    FrameParser p(max);
    std::vector<ClientBlock> out;
    for (char c : in)
        p.feed(std::string_view(&c, 1), out);
    return out;
}

void same_frames(const std::vector<ClientBlock> &a, const std::vector<ClientBlock> &b)
{
    ck_assert_int_eq(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        assert_str(a[i].error, b[i].error);
        assert_str(a[i].fields.data, b[i].fields.data);
        ck_assert_int_eq(a[i].channels.size(), b[i].channels.size());
    }
}

} // namespace

START_TEST(one_event_with_every_field)
{
    std::string in = "channel: news\nchannel: a,b\nevent: update\nid: 42\nretry: 3000\n"
                     "data: first line\ndata: second line\n\n";
    auto f = parse(in);
    ck_assert_int_eq(f.size(), 1);
    assert_str(f[0].error, "");
    ck_assert_int_eq(f[0].channels.size(), 3);
    assert_str(f[0].fields.event, "update");
    assert_str(f[0].fields.id, "42");
    ck_assert_int_eq(f[0].fields.retry, 3000);
    ck_assert(f[0].fields.has_data);
    assert_str(f[0].fields.data, "first line\nsecond line");
    same_frames(f, parse_bytewise(in));
}
END_TEST

START_TEST(line_ends_spaces_comments_blank_lines)
{
    std::string in = "\n\r\n: a comment\r\nchannel:x\r\ndata:no space\r\ndata:  two\r\ndata:\r\n\r\n\n";
    auto f = parse(in);
    ck_assert_int_eq(f.size(), 1);
    assert_str(f[0].error, "");
    assert_str(f[0].channels[0], "x");
    assert_str(f[0].fields.data, "no space\n two\n");
    same_frames(f, parse_bytewise(in));
}
END_TEST

START_TEST(several_events_and_recovery_after_errors)
{
    std::string in = "channel: a\ndata: 1\n\n"
                     "channel: a\nbogus: x\ndata: 2\n\n"
                     "no colon here\n\n"
                     "channel: a\nretry: soon\n\n"
                     "data: no channel\n\n"
                     "channel: a\ndata: 3\n\n";
    auto f = parse(in);
    ck_assert_int_eq(f.size(), 6);
    assert_str(f[0].error, "");
    ck_assert(f[1].error.find("unknown field \"bogus\"") != std::string::npos);
    ck_assert(f[2].error.find("without a colon") != std::string::npos);
    ck_assert(f[3].error.find("retry") != std::string::npos);
    ck_assert(f[4].error.find("no channel") != std::string::npos);
    assert_str(f[5].error, "");
    assert_str(f[5].fields.data, "3");
    same_frames(f, parse_bytewise(in));
}
END_TEST

START_TEST(size_limit)
{
    /* An event over the limit is refused, its lines skipped, and the next one is fine. */
    std::string big = "channel: a\ndata: " + std::string(200, 'x') + "\n\n";
    std::string in = big + "channel: a\ndata: ok\n\n";
    auto f = parse(in, 100);
    ck_assert_int_eq(f.size(), 2);
    ck_assert(f[0].error.find("larger than 100 bytes") != std::string::npos);
    assert_str(f[1].error, "");
    same_frames(f, parse_bytewise(in, 100));

    /* A line without end that floods: memory stays bounded, the event is refused when it ends. */
    FrameParser p(100);
    std::vector<ClientBlock> out;
    std::string chunk(10000, 'y');
    for (int i = 0; i < 100; ++i)
        p.feed(chunk, out);
    ck_assert(p.mid_event());
    p.feed("\n\nchannel: a\ndata: z\n\n", out);
    ck_assert_int_eq(out.size(), 2);
    ck_assert(!out[0].error.empty());
    assert_str(out[1].fields.data, "z");

    /* Exactly at the limit is fine: "channel: a\n" (11) + "data: " (6) + 82 + "\n" = 100. */
    auto exact = parse("channel: a\ndata: " + std::string(82, 'e') + "\n\n", 100);
    assert_str(exact[0].error, "");
    auto over = parse("channel: a\ndata: " + std::string(83, 'e') + "\n\n", 100);
    ck_assert(!over[0].error.empty());
}
END_TEST

/* Security finding 8 on the socket: one line (and many lines) of 65,000 only ids stop being
 * collected at the cap, so the event is refused without splitting the rest; the lists of the
 * next event start empty. */
START_TEST(hostile_lists_stop_at_the_cap)
{
    std::string line = "only: ";
    for (int i = 0; i < 65000; ++i)
        line += (i ? "," : "") + std::to_string(i);
    std::string many_lines;
    for (int i = 0; i < 65000; ++i)
        many_lines += "except: " + std::to_string(i) + "\n";
    auto f = parse("channel: a\n" + line + "\n" + many_lines + "data: x\n\n" +
                       "channel: a,a\nonly: 1\ndata: y\n\n",
                   std::size_t(4) << 20);
    ck_assert_int_eq(f.size(), 2);
    ck_assert_int_eq(f[0].audience.only.size(), kMaxTargetsPerEvent + 1);
    ck_assert_int_eq(f[0].audience.except.size(), kMaxTargetsPerEvent + 1);
    ck_assert(f[0].audience.validate().find("too many client ids") == 0);
    ck_assert_int_eq(f[1].channels.size(), 1);
    ck_assert_int_eq(f[1].audience.only.size(), 1);
    ck_assert(f[1].audience.except.empty());
}
END_TEST

START_TEST(incomplete_event_and_mid_event)
{
    FrameParser p(1024);
    std::vector<ClientBlock> out;
    ck_assert(!p.mid_event());
    p.feed("channel: a\ndata: par", out);
    ck_assert(p.mid_event());
    ck_assert_int_eq(out.size(), 0);
    p.feed("tial\n", out);
    ck_assert(p.mid_event());
    p.feed("\n", out);
    ck_assert(!p.mid_event());
    ck_assert_int_eq(out.size(), 1);
    assert_str(out[0].fields.data, "partial");
}
END_TEST

START_TEST(binary_garbage)
{
    std::string junk;
    for (int i = 0; i < 4096; ++i)
        junk += static_cast<char>((i * 7919) % 256);
    auto f = parse(junk + "\n\nchannel: a\ndata: after\n\n", 1 << 20);
    ck_assert(!f.empty());
    assert_str(f.back().fields.data, "after");
    assert_str(f.back().error, "");
}
END_TEST

START_TEST(encode_frame_round_trip)
{
    EventFields ev;
    ev.event = "t";
    ev.id = "i";
    ev.retry = 5;
    ev.has_data = true;
    ev.data = "a\r\nb\rc\n";
    std::string wire;
    encode_frame({"x", "y"}, ev, wire);
    auto f = parse(wire);
    ck_assert_int_eq(f.size(), 1);
    assert_str(f[0].error, "");
    assert_str(f[0].fields.data, "a\nb\nc\n");
    assert_str(f[0].fields.event, "t");
    assert_str(f[0].fields.id, "i");
    ck_assert_int_eq(f[0].fields.retry, 5);
    ck_assert_int_eq(f[0].channels.size(), 2);
    assert_str(ok_line("7"), "ok 7\n");
    assert_str(error_line("bad\nthing"), "error bad thing\n");
}
END_TEST

START_TEST(subscribe_blocks)
{
    std::string in;
    encode_subscribe_block({"presence", "news"}, "42", in);
    assert_str(in, "subscribe: presence,news\nlast-event-id: 42\n\n");
    in += "subscribe: a\nsubscribe: b,c\n\n";                /* repeated lines add up */
    in += "last-event-id: 9\n\n";                            /* no channel */
    in += "subscribe: a\ndata: x\n\n";                      /* mixed with an event */
    in += "channel: a\nlast-event-id: 1\ndata: x\n\n";      /* the other way round */
    in += "channel: a\ndata: still a publisher\n\n";
    auto f = parse(in);
    same_frames(f, parse_bytewise(in));
    ck_assert_int_eq(f.size(), 6);
    ck_assert(f[0].subscribe);
    assert_str(f[0].error, "");
    ck_assert_int_eq(f[0].subscribe_channels.size(), 2);
    assert_str(f[0].subscribe_channels[1], "news");
    assert_str(f[0].last_event_id, "42");
    ck_assert(f[0].channels.empty());
    ck_assert_int_eq(f[1].subscribe_channels.size(), 3);
    assert_str(f[1].subscribe_channels[2], "c");
    assert_str(f[1].last_event_id, "");
    ck_assert(f[2].error.find("no channel to subscribe to") != std::string::npos);
    ck_assert(f[3].error.find("takes only") != std::string::npos);
    ck_assert(f[4].error.find("takes only") != std::string::npos);
    ck_assert(!f[5].subscribe);
    assert_str(f[5].error, "");
    assert_str(f[5].fields.data, "still a publisher");
}
END_TEST

/* event-types: the filter of a subscribe block (HTTP's ?event=), repeatable and comma lists,
 * its names checked as a publish's event type; a line that makes the block a subscribe. */
START_TEST(subscribe_event_types)
{
    std::string in;
    encode_subscribe_block({"news"}, "", in, {"a", "message"});
    assert_str(in, "subscribe: news\nevent-types: a,message\n\n");
    in += "subscribe: n\nevent-types: x\nevent-types: y,x\n\n";
    in += "subscribe: n\nevent-types: bad\rtype\n\n";
    in += "event-types: x\ndata: publish?\nchannel: n\n\n";
    std::string many = "subscribe: n\nevent-types: ";
    for (std::size_t i = 0; i <= kMaxEventTypesPerStream; ++i)
        many += "t" + std::to_string(i) + ",";
    in += many + "\n\n";
    auto f = parse(in);
    same_frames(f, parse_bytewise(in));
    ck_assert_int_eq(f.size(), 5);
    assert_str(f[0].error, "");
    ck_assert_int_eq(f[0].event_types.size(), 2);
    assert_str(f[0].event_types[1], "message");
    ck_assert_int_eq(f[1].event_types.size(), 2);
    assert_str(f[1].event_types[1], "y");
    ck_assert(f[2].error.find("event-types: event type must not contain CR") != std::string::npos);
    ck_assert(f[3].error.find("takes only") != std::string::npos);
    ck_assert(f[4].error.find("more than") != std::string::npos);
}
END_TEST

/* The reasons clients act on: written and recognised from one declaration. */
START_TEST(refusal_reasons)
{
    const std::string busy = refusal(kBusyReason, "3 clients are connected");
    assert_str(busy, "busy: 3 clients are connected");
    assert_str(error_line(busy), "error busy: 3 clients are connected\n");
    ck_assert(is_refusal(busy, kBusyReason));
    ck_assert(!is_refusal(busy, kClosedReason));
    ck_assert(is_refusal(refusal(kClosedReason, "a channel of it was closed"), kClosedReason));
    ck_assert(!is_refusal("busybody: no", kBusyReason));
    ck_assert(!is_refusal("no channel: give a \"channel:\" line", kClosedReason));
}
END_TEST

Suite *protocol_suite()
{
    Suite *s = suite_create("socket_protocol");
    TCase *tc = tcase_create("frames");
    tcase_add_test(tc, one_event_with_every_field);
    tcase_add_test(tc, line_ends_spaces_comments_blank_lines);
    tcase_add_test(tc, several_events_and_recovery_after_errors);
    tcase_add_test(tc, size_limit);
    tcase_add_test(tc, hostile_lists_stop_at_the_cap);
    tcase_add_test(tc, incomplete_event_and_mid_event);
    tcase_add_test(tc, binary_garbage);
    tcase_add_test(tc, encode_frame_round_trip);
    tcase_add_test(tc, subscribe_blocks);
    tcase_add_test(tc, subscribe_event_types);
    tcase_add_test(tc, refusal_reasons);
    suite_add_tcase(s, tc);
    return s;
}
