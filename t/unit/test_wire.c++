/* The wire format against the WHATWG "interpreting an event stream" rules: events are encoded,
 * then parsed back by an independent implementation of those rules written here from the
 * spec, and must come back exactly. */
/* nlohmann first: check.h defines macros (fail) that its headers would trip on. */
#include <nlohmann/json.hpp>

#include "unit.h"

#include "sse/config_values.h"
#include "sse/wire.h"

#include <string>
#include <vector>

using namespace sse;

namespace {

struct Parsed {
    std::string type, data, last_id;
};

/* HTML Living Standard, 9.2.6: lines end at CRLF, LF or CR; a blank line dispatches; a line
 * starting with ':' is a comment; "field: value" drops one leading space of the value. */
struct WhatwgParser {
    std::vector<Parsed> events;
    std::string data, type, last_id_buffer, last_id;
    long retry = -1;
    int unknown_fields = 0;

    void feed(const std::string &stream)
    {
        std::size_t i = 0;
        while (i < stream.size()) {
            std::size_t end = stream.find_first_of("\r\n", i);
            ck_assert_msg(end != std::string::npos, "stream ends inside a line");
            std::string line = stream.substr(i, end - i);
            i = end + ((stream[end] == '\r' && end + 1 < stream.size() && stream[end + 1] == '\n') ? 2 : 1);
            if (line.empty()) {
                dispatch();
                continue;
            }
            if (line[0] == ':')
                continue;
            std::size_t colon = line.find(':');
            std::string field = line.substr(0, colon), value;
            if (colon != std::string::npos) {
                value = line.substr(colon + 1);
                if (!value.empty() && value[0] == ' ')
                    value.erase(0, 1);
            }
            if (field == "event")
                type = value;
            else if (field == "data")
                data += value + "\n";
            else if (field == "id") {
                if (value.find('\0') == std::string::npos)
                    last_id_buffer = value;
            } else if (field == "retry") {
                if (!value.empty() && value.find_first_not_of("0123456789") == std::string::npos)
                    retry = std::stol(value);
                else
                    ++unknown_fields;
            } else
                ++unknown_fields;
        }
    }
    void dispatch()
    {
        last_id = last_id_buffer;
        if (data.empty()) {
            type.clear();
            return;
        }
        if (data.back() == '\n')
            data.pop_back();
        events.push_back({type.empty() ? "message" : type, data, last_id});
        data.clear();
        type.clear();
    }
};

std::string normalise_newlines(const std::string &s)
{
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r') {
            out += '\n';
            if (i + 1 < s.size() && s[i + 1] == '\n')
                ++i;
        } else {
            out += s[i];
        }
    }
    return out;
}

void round_trip(const std::string &data, const std::string &type = "", const std::string &id = "7")
{
    EventFields ev;
    ev.id = id;
    ev.event = type;
    ev.has_data = true;
    ev.data = data;
    std::string wire;
    encode_comment("ok", wire);
    encode_event(ev, wire);
    WhatwgParser p;
    p.feed(wire);
    ck_assert_int_eq(p.events.size(), 1);
    assert_str(p.events[0].data, normalise_newlines(data));
    assert_str(p.events[0].type, type.empty() ? "message" : type);
    assert_str(p.events[0].last_id, id);
    ck_assert_int_eq(p.unknown_fields, 0);
}

} // namespace

START_TEST(data_round_trips)
{
    const char *cases[] = {"hello", "", " leading space", "  two spaces", "trailing space ",
                           "a\nb", "a\r\nb", "a\rb", "a\n", "\n", "\n\n", "\r\n\r\n", "a\r",
                           "data: inner", ":not a comment", "id: 5", "x\n\nevent: y",
                           "\xC3\xA9t\xC3\xA9 \xF0\x9F\x8E\x89", "tab\there", "a\r\r\nb\n\rc"};
    for (const char *c : cases)
        round_trip(c);
    round_trip(std::string("nul\0inside", 10));
    round_trip(std::string(100000, 'x'));
}
END_TEST

START_TEST(type_id_and_retry)
{
    round_trip("x", "update", "abc-1");
    round_trip("x", "with space", "id with spaces");
    EventFields ev;
    ev.id = "9";
    ev.retry = 2500;
    ev.has_data = true;
    ev.data = "d";
    std::string wire;
    encode_event(ev, wire);
    assert_str(wire, "id: 9\nretry: 2500\ndata: d\n\n");
    WhatwgParser p;
    p.feed(wire);
    ck_assert_int_eq(p.retry, 2500);
}
END_TEST

START_TEST(retry_only_and_comments)
{
    EventFields ev;
    ev.id = "3";
    ev.retry = 100;
    std::string wire;
    encode_event(ev, wire);
    encode_comment("keep\nalive", wire);
    encode_retry(42, wire);
    WhatwgParser p;
    p.feed(wire);
    ck_assert_int_eq(p.events.size(), 0); /* no data: nothing dispatched */
    ck_assert_int_eq(p.retry, 42);
    assert_str(p.last_id, "3");           /* but the id still moves lastEventId */
    ck_assert_int_eq(p.unknown_fields, 0);
}
END_TEST

START_TEST(split_lines_rules)
{
    auto l = split_lines("a\r\nb\rc\nd");
    ck_assert_int_eq(l.size(), 4);
    assert_str(l[3], "d");
    ck_assert_int_eq(split_lines("").size(), 1);
    ck_assert_int_eq(split_lines("\r\n").size(), 2);
    ck_assert_int_eq(split_lines("\n\r").size(), 3);
}
END_TEST

START_TEST(utf8_validation)
{
    ck_assert(is_valid_utf8("plain"));
    ck_assert(is_valid_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));
    ck_assert(!is_valid_utf8("\xC3"));             /* truncated */
    ck_assert(!is_valid_utf8("\xC0\xAF"));         /* overlong */
    ck_assert(!is_valid_utf8("\xED\xA0\x80"));     /* surrogate */
    ck_assert(!is_valid_utf8("\xF4\x90\x80\x80")); /* above U+10FFFF */
    ck_assert(!is_valid_utf8("\xFF"));
    ck_assert(!is_valid_utf8("a\x80"));
    /* Past the eight-byte ASCII steps: a bad or a good sequence at every offset of a word. */
    for (std::size_t at = 0; at < 24; ++at) {
        const std::string ascii(at, 'x');
        ck_assert(is_valid_utf8(ascii + "\xE2\x82\xAC" + ascii));
        ck_assert(!is_valid_utf8(ascii + "\xC0\xAF" + ascii));
        ck_assert(!is_valid_utf8(ascii + "\xFF" + ascii));
        ck_assert(!is_valid_utf8(ascii + "\xE2\x82"));
    }
}
END_TEST

START_TEST(channel_names)
{
    ck_assert(validate_channel_name("news").empty());
    ck_assert(validate_channel_name("A-z_0.9~:@/x").empty());
    ck_assert(validate_channel_name(std::string(255, 'a')).empty());
    ck_assert(!validate_channel_name("").empty());
    ck_assert(!validate_channel_name(std::string(256, 'a')).empty());
    std::string err = validate_channel_name("bad name");
    ck_assert_msg(err.find("\"bad name\"") != std::string::npos, "%s", err.c_str());
    ck_assert_msg(err.find("0x20") != std::string::npos, "%s", err.c_str());
    ck_assert(validate_channel_name("semi;colon").find("';'") != std::string::npos);
    ck_assert(!validate_channel_name("caf\xC3\xA9").empty());
}
END_TEST

START_TEST(event_validation)
{
    EventFields ev;
    ev.has_data = true;
    ck_assert(validate_event(ev).empty());
    ev.id = "a\nb";
    ck_assert(validate_event(ev).find("event id") != std::string::npos);
    ev.id = std::string("a\0b", 3);
    ck_assert(!validate_event(ev).empty());
    ev.id = "ok";
    ev.event = "x\ry";
    ck_assert(validate_event(ev).find("event type") != std::string::npos);
    ev.event = "";
    ev.data = "\xFF";
    ck_assert(validate_event(ev).find("UTF-8") != std::string::npos);
    ev.data = "";
    ev.has_data = false;
    ck_assert(validate_event(ev).find("nothing to publish") != std::string::npos);
    ev.retry = 10;
    ck_assert(validate_event(ev).empty());
    ev.id = std::string(kMaxEventIdBytes + 1, 'i');
    ck_assert(!validate_event(ev).empty());
}
END_TEST

START_TEST(retry_parsing)
{
    ck_assert_int_eq(parse_retry("0"), 0);
    ck_assert_int_eq(parse_retry("3000"), 3000);
    ck_assert_int_eq(parse_retry(""), -1);
    ck_assert_int_eq(parse_retry("-1"), -1);
    ck_assert_int_eq(parse_retry("1e3"), -1);
    ck_assert_int_eq(parse_retry(" 5"), -1);
    ck_assert_int_eq(parse_retry("86400001"), -1);
}
END_TEST

START_TEST(channel_lists)
{
    std::vector<std::string> c;
    append_channel_list("a,,b,a", c);
    append_channel_list("c,b", c);
    ck_assert_int_eq(c.size(), 3);
    assert_str(c[2], "c");
}
END_TEST

/* Directive values (sse/config_values.h): whole text or nothing, never wrapped. */
START_TEST(directive_sizes_and_numbers)
{
    std::uint64_t v = 7;
    ck_assert(parse_size("16M", std::uint64_t(64) << 30, v) && v == (std::uint64_t(16) << 20));
    ck_assert(parse_size("256k", 1 << 20, v) && v == 256 * 1024);
    ck_assert(parse_size("64G", std::uint64_t(64) << 30, v) && v == (std::uint64_t(64) << 30));
    ck_assert(parse_size("0", 10, v) && v == 0);
    v = 7;
    for (const char *bad : {"", "K", "-1", " 1", "1 ", "1KB", "1T", "0x10", "65G",
                            "18446744073709551617", "18446744073709551615K", "99999999999999999999"})
        ck_assert_msg(!parse_size(bad, std::uint64_t(64) << 30, v) && v == 7, "%s", bad);
    std::int64_t n = 0;
    ck_assert(parse_number("3600", 1, 3600, n) && n == 3600);
    n = 7;
    for (const char *bad : {"0", "3601", "", "+5", "5s", "0000000000005", "-1"})
        ck_assert_msg(!parse_number(bad, 1, 3600, n) && n == 7, "%s", bad);
    ck_assert(parse_number("000000000005", 1, 3600, n) && n == 5);
}
END_TEST

START_TEST(latin1_to_utf8)
{
    assert_str(utf8_from_latin1("abc-1"), "abc-1");
    assert_str(utf8_from_latin1("\xfc-1"), "\xc3\xbc-1"); /* what fetch() sends for "ü-1" */
    assert_str(utf8_from_latin1("\xff"), "\xc3\xbf");
    ck_assert(is_valid_utf8(utf8_from_latin1("\x80\xa0\xfe")));
}
END_TEST

/* append_json_string() writes what nlohmann::json's dump() writes, for every byte below 0x80
 * (each control character, quote, backslash, DEL) and for multi-byte UTF-8. */
START_TEST(json_strings_as_nlohmann_writes_them)
{
    std::vector<std::string> samples = {"", "bench", "a/b:c@d~e.f_g-h", "1796000000000001",
                                        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                        "\"quoted\" and \\back\\slash", "\x7f"};
    std::string all_ascii;
    for (int c = 0; c < 0x80; ++c)
        all_ascii += static_cast<char>(c);
    samples.push_back(all_ascii);
    for (const std::string &s : samples) {
        std::string mine;
        append_json_string(s, mine);
        assert_str(mine, nlohmann::json(s).dump());
    }
}
END_TEST

/* Bytes that are not UTF-8 (a stray continuation byte, a truncated sequence, an overlong form)
 * become U+FFFD as dump() with error_handler_t::replace writes them, instead of invalid JSON. */
START_TEST(json_strings_replace_what_is_not_utf8)
{
    for (const std::string s : {"a\x80" "b", "caf\xc3", "\xc0\xaf/etc", "ok \xff\xfe end"}) {
        std::string mine;
        append_json_string(s, mine);
        assert_str(mine, nlohmann::json(s).dump(-1, ' ', false,
                                                nlohmann::json::error_handler_t::replace));
        ck_assert(is_valid_utf8(mine));
    }
}
END_TEST

Suite *wire_suite()
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("encoding");
    tcase_add_test(tc, data_round_trips);
    tcase_add_test(tc, type_id_and_retry);
    tcase_add_test(tc, retry_only_and_comments);
    tcase_add_test(tc, split_lines_rules);
    tcase_add_test(tc, json_strings_as_nlohmann_writes_them);
    tcase_add_test(tc, json_strings_replace_what_is_not_utf8);
    suite_add_tcase(s, tc);
    tc = tcase_create("validation");
    tcase_add_test(tc, utf8_validation);
    tcase_add_test(tc, channel_names);
    tcase_add_test(tc, event_validation);
    tcase_add_test(tc, retry_parsing);
    tcase_add_test(tc, channel_lists);
    tcase_add_test(tc, latin1_to_utf8);
    tcase_add_test(tc, directive_sizes_and_numbers);
    suite_add_tcase(s, tc);
    return s;
}
