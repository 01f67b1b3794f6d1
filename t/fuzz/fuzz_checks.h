/* Invariant checks shared by the fuzz targets (t/fuzz/fuzz_*.c++). A failed check traps, which
 * libFuzzer reports as a crash and saves the input under build/fuzz/<target>/crash-*. */
#ifndef SSE_FUZZ_CHECKS_H
#define SSE_FUZZ_CHECKS_H

#include "sse/audience.h"
#include "sse/event_stream.h"
#include "sse/socket_protocol.h"
#include "sse/wire.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace fuzz {

inline void check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

/* The spec reader's own verdict on UTF-8 (no replacement needed), independent of
 * sse::is_valid_utf8. */
inline bool utf8_ok(std::string_view s)
{
    std::size_t malformed = 0;
    std::string decoded = sse::utf8_decode(s, &malformed);
    /* A leading BOM is valid UTF-8 that the decoder drops. */
    return malformed == 0 && decoded.size() + (s.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0) == s.size();
}

/* An event the code accepted must be what it promises: id and type without CR, LF or NUL and
 * within their limits, everything UTF-8, retry in range, something to send. */
inline void check_acceptable_event(const sse::EventFields &ev)
{
    for (const std::string *line : {&ev.id, &ev.event}) {
        check(line->find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos);
        check(line->size() <= 1024 && utf8_ok(*line));
    }
    check(!ev.has_data || utf8_ok(ev.data));
    check(ev.retry >= -1 && ev.retry <= sse::kMaxRetryMs);
    check(ev.has_data || ev.retry >= 0);
}

/* A list after parsing: no empty item, no repeat, at most cap + 1 items (collecting stops
 * once over the cap). */
inline void check_list_shape(const std::vector<std::string> &items, std::size_t cap)
{
    check(items.size() <= cap + 1);
    std::unordered_set<std::string> seen;
    for (const auto &i : items)
        check(!i.empty() && seen.insert(i).second);
}

/* An accepted client id: 1 to 128 bytes of UTF-8 without controls, space, DEL or comma. */
inline void check_acceptable_client_id(std::string_view id)
{
    check(!id.empty() && id.size() <= sse::kMaxClientIdBytes && utf8_ok(id));
    for (unsigned char c : id)
        check(c > 0x20 && c != 0x7F && c != ',');
}

/* An accepted channel name: 1 to 255 bytes of A-Z a-z 0-9 _ - . ~ : @ / */
inline void check_acceptable_channel(std::string_view name)
{
    check(!name.empty() && name.size() <= sse::kMaxChannelNameBytes);
    for (char c : name)
        check(std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~:@/")
                  .find(c) != std::string_view::npos);
}

/* A whole stream read by sse::EventStreamParser (src/event_stream.c++, written from the WHATWG
 * "Interpreting an event stream" algorithm and sharing no code with src/wire.c++), as an
 * EventSource whose last event id was `last_event_id` reads it: the events and the retry. */
struct ReadStream {
    std::vector<sse::StreamEvent> events;
    std::int64_t retry = -1;
};

inline ReadStream read_stream(std::string_view bytes, std::string last_event_id = {})
{
    sse::EventStreamParser parser(std::move(last_event_id));
    ReadStream s;
    check(parser.feed(bytes, s.events));
    s.retry = parser.retry_ms();
    return s;
}

/* Data as the reader hands it back: every CRLF, CR and LF of the original is an LF. */
inline std::string normalise_line_ends(std::string_view data)
{
    std::string out;
    for (std::size_t i = 0; i < data.size(); ++i) {
        if (data[i] == '\r') {
            out += '\n';
            if (i + 1 < data.size() && data[i + 1] == '\n')
                ++i;
        } else {
            out += data[i];
        }
    }
    return out;
}

/* encode_event() read back by the spec's reader, as a fresh EventSource would: exactly the
 * event that was accepted (type, data with line ends as LF, id), one event and no more, and
 * its retry. An event without data dispatches nothing and only sets the retry. */
inline void check_wire_round_trip(const sse::EventFields &ev)
{
    std::string wire;
    sse::encode_event(ev, wire);
    ReadStream s = read_stream(wire);
    check(s.retry == ev.retry);
    if (!ev.has_data) {
        check(s.events.empty());
        return;
    }
    check(s.events.size() == 1);
    check(s.events[0].type == (ev.event.empty() ? "message" : ev.event));
    check(s.events[0].data == normalise_line_ends(ev.data));
    check(s.events[0].last_event_id == ev.id);
}

/* encode_frame() (what sse-publish writes to the socket) parsed again: one frame, no error,
 * the same channels, fields and audience (data with CR and CRLF read back as LF). */
inline void check_socket_round_trip(const std::vector<std::string> &channels,
                                    const sse::EventFields &ev, const sse::Audience &audience)
{
    std::string again;
    sse::encode_frame(channels, ev, again, audience);
    sse::FrameParser reparse(again.size() + 1);
    std::vector<sse::ClientBlock> c;
    reparse.feed(again, c);
    check(c.size() == 1 && c[0].error.empty() && !reparse.mid_event());
    check(c[0].channels == channels);
    check(c[0].fields.data == normalise_line_ends(ev.data));
    check(c[0].fields.has_data == ev.has_data && c[0].fields.retry == ev.retry);
    check(c[0].fields.event == ev.event && c[0].fields.id == ev.id);
    check(c[0].audience.only == audience.only && c[0].audience.except == audience.except);
}

} // namespace fuzz

#endif
