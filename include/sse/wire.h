/* sse/wire.h — the text/event-stream wire format and the checks on what goes into it.
 *
 * Contract
 * - Everything here is pure: no httpd, no APR, no I/O, no global state. Any thread may call it.
 *   (nlohmann::json, header-only, writes the JSON of the sse-missed notice.)
 * - encode_event() produces bytes that a parser following the WHATWG HTML "server-sent events"
 *   rules (section 9.2.6, "Interpreting an event stream") turns back into exactly the given
 *   id, event type, retry and data, with every CR, LF or CRLF in the data read back as LF.
 * - The validate_* functions return an empty string when the value is acceptable, or a short
 *   English sentence saying what is wrong (it goes into an HTTP error body and the error log).
 */
#ifndef SSE_WIRE_H
#define SSE_WIRE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace sse {

/* Limits that the publish paths enforce and that the bus record layout relies on. */
constexpr std::size_t kMaxChannelNameBytes = 255;
constexpr std::size_t kMaxEventIdBytes = 1024;
constexpr std::size_t kMaxEventTypeBytes = 1024;
constexpr std::size_t kMaxChannelsPerEvent = 64;
constexpr std::size_t kMaxEventTypesPerStream = 64; /* a subscriber's event-type filter */
constexpr std::int64_t kMaxRetryMs = 86400000; /* one day: anything longer is a typo */

/* What a publisher asks for. `has_data` distinguishes "no data" from "empty data". */
struct EventFields {
    std::string id;            /* empty: the bus assigns one */
    std::string event;         /* empty: an untyped "message" event */
    std::int64_t retry = -1;   /* -1: no retry field */
    bool has_data = false;
    std::string data;
};

/* Appends the wire form of one event to `out`:
 *   id: <id>\n            when id is not empty
 *   event: <event>\n      when event is not empty
 *   retry: <retry>\n      when retry >= 0
 *   data: <line>\n        once per line of data, when has_data (an empty data gives one "data: ")
 *   \n
 * Preconditions (checked by validate_event()): id and event hold no CR, LF or NUL. */
void encode_event(const EventFields &ev, std::string &out);

/* Appends `s` to `out` as a JSON string, quotes included, byte for byte as nlohmann::json's
 * dump() writes it (ensure_ascii off): \" \\ \b \t \n \f \r, the other bytes below 0x20 as
 * \u00xx, every other byte as is. Bytes that are not UTF-8 become U+FFFD (as dump() with
 * error_handler_t::replace): callers validate first, this keeps the answer JSON if one did not.
 * For small answers written on every request, where building a json DOM costs more than the
 * answer (the publish handler's 201). */
void append_json_string(std::string_view s, std::string &out);

/* A comment line and its blank line: ": <text>\n\n". Used for the stream's first bytes and for
 * keep-alives; EventSource clients ignore it, proxies see traffic. */
void encode_comment(std::string_view text, std::string &out);

/* The in-band notice that events may be missing: an event of type "sse-missed" without an id
 * (so the client's lastEventId stays where it was) whose data is JSON:
 * {"reason": <reason>, "lastEventId": <id>} (lastEventId only when not empty; bytes of it that
 * are not UTF-8 are replaced). */
void encode_missed_notice(std::string_view reason, std::string_view last_event_id,
                          std::string &out);

/* The notice a stream gets just before the server ends it for good: an event of type
 * "sse-close" without an id whose data is JSON {"reason": <reason>, "channels": [...]}
 * (channels only when not empty). Pages should call EventSource.close() on it; a reconnect
 * to a closed channel is answered 204, which stops EventSource too. */
void encode_close_notice(std::string_view reason, const std::vector<std::string> &channels,
                         std::string &out);

/* "retry: <ms>\n\n": changes the client's reconnection delay without dispatching an event. */
void encode_retry(std::int64_t retry_ms, std::string &out);

/* Splits data at CR, LF and CRLF, as the WHATWG parser does. "a\n" gives {"a", ""}. */
std::vector<std::string_view> split_lines(std::string_view data);

/* The lines split_lines() gives, passed to `fn` one by one without a vector (encode_event
 * runs on every publish). */
template <typename Fn> void for_each_line(std::string_view data, Fn &&fn)
{
    std::size_t start = 0;
    for (std::size_t i = 0; i < data.size(); ++i) {
        if (data[i] == '\r' || data[i] == '\n') {
            fn(data.substr(start, i - start));
            if (data[i] == '\r' && i + 1 < data.size() && data[i + 1] == '\n')
                ++i;
            start = i + 1;
        }
    }
    fn(data.substr(start));
}

/* Each byte of `s` read as ISO-8859-1 (Latin-1), written as UTF-8. */
std::string utf8_from_latin1(std::string_view s);

/* True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
bool is_valid_utf8(std::string_view s);

/* A channel name: 1 to 255 bytes of A-Z a-z 0-9 _ - . ~ : @ / */
std::string validate_channel_name(std::string_view name);

/* Checks the channels one request names: at most kMaxChannelsPerEvent, each a valid name.
 * Returns an error sentence (naming the bad channel) or empty. */
std::string validate_channel_list(const std::vector<std::string> &channels);

/* An event id (given by a publisher, or sent back by a resuming client): at most
 * kMaxEventIdBytes of UTF-8 without CR, LF or NUL. Returns an error sentence or empty. */
std::string validate_event_id(std::string_view id);

/* An event type (a publisher's, a subscriber's ?event= filter, an SSEEventTypes name): at most
 * kMaxEventTypeBytes of UTF-8 without CR, LF or NUL; empty is the untyped "message" event.
 * Returns an error sentence or empty. */
std::string validate_event_type(std::string_view type);

/* Checks a subscriber's event-type filter, collected by a NameCollector with the cap
 * kMaxEventTypesPerStream (`over_cap`: its over_cap()): the count and each name. `what`
 * names where it came from in the error ("the event parameter", "event-types"). */
std::string validate_event_type_filter(const std::vector<std::string> &types, bool over_cap,
                                       std::string_view what);

/* Checks every field of an event before it is accepted: id and event without CR, LF or NUL
 * and within their length limits, valid UTF-8 everywhere, retry within 0..kMaxRetryMs, and
 * that there is something to send (data or retry). */
std::string validate_event(const EventFields &ev);

/* Parses a retry given as text: only ASCII digits, at most kMaxRetryMs. Returns -1 when bad. */
std::int64_t parse_retry(std::string_view text);

/* Collects the names of comma-separated lists (one or many pieces of a request) into `out`,
 * keeping first-seen order and dropping empty items and repeats. Names are not validated here.
 * Once `out` holds more than `cap` names, the rest is not even split: the list is refused by
 * its check anyway (validate_channel_list(), Audience::validate()), and a hostile list of
 * 65,000 names then costs neither quadratic time nor memory beyond cap + 1 names. Repeats are
 * found by a look through `out` while it holds few names, then with a hash set, so many
 * repeated names cost linear time too.
 * Borrows `out` (it must outlive the collector); names already in it count as seen. */
class NameCollector {
public:
    NameCollector(std::vector<std::string> &out, std::size_t cap, bool trim_spaces = false);
    /* Adds the names of one comma-separated list; with trim_spaces, spaces around each item
     * are dropped ("a, b"). */
    void add(std::string_view list);
    /* True once more than `cap` names were collected (what follows was not looked at). */
    bool over_cap() const { return out_.size() > cap_; }
    /* Empties `out` and forgets what was seen: the collector starts a new list. */
    void restart()
    {
        out_.clear();
        seen_.clear();
    }

private:
    /* True when `item` is not collected yet (then noted as seen). */
    bool take(std::string_view item);

    std::vector<std::string> &out_;
    std::size_t cap_;
    bool trim_;
    std::unordered_set<std::string> seen_; /* empty until out_ holds many names */
};

/* Splits a comma-separated list of channel names into `channels`, dropping empty items
 * ("a,,b" gives a, b) and duplicates, keeping first-seen order; a NameCollector with the cap
 * kMaxChannelsPerEvent. Names are not validated here. For many pieces of one request, keep
 * one NameCollector instead (this one hashes what `channels` already holds on every call). */
void append_channel_list(std::string_view list, std::vector<std::string> &channels);

} // namespace sse

#endif
