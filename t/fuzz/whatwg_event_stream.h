/* An event-stream reader written from the WHATWG HTML standard, section 9.2.6 "Interpreting
 * an event stream" (https://html.spec.whatwg.org/multipage/server-sent-events.html), for the
 * fuzz targets' round trips. It shares no code with src/wire.c++ on purpose: a round trip
 * through encode_event() and this reader checks the encoder against the spec, not against
 * itself. It is what a browser's EventSource does with the bytes, minus the network.
 *
 * Header-only, test code: no limits, no error handling beyond what the spec says.
 */
#ifndef SSE_FUZZ_WHATWG_EVENT_STREAM_H
#define SSE_FUZZ_WHATWG_EVENT_STREAM_H

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace whatwg {

/* The spec decodes the stream with "UTF-8 decode": a BOM at the start is dropped and every
 * malformed sequence becomes U+FFFD (the Encoding standard's maximal-subpart rule). Returns
 * the text re-encoded as UTF-8; `malformed` counts the replacements. */
inline std::string utf8_decode(std::string_view in, std::size_t *malformed = nullptr)
{
    std::string out;
    std::size_t bad = 0;
    auto put = [&out](std::uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    };
    /* The Encoding standard's UTF-8 decoder, byte by byte. */
    std::uint32_t cp = 0;
    int needed = 0, seen = 0;
    unsigned lower = 0x80, upper = 0xBF;
    for (std::size_t i = 0; i < in.size(); ++i) {
        const unsigned b = static_cast<unsigned char>(in[i]);
        if (needed == 0) {
            if (b <= 0x7F) {
                put(b);
            } else if (b >= 0xC2 && b <= 0xDF) {
                needed = 1;
                cp = b & 0x1F;
            } else if (b >= 0xE0 && b <= 0xEF) {
                if (b == 0xE0)
                    lower = 0xA0;
                if (b == 0xED)
                    upper = 0x9F;
                needed = 2;
                cp = b & 0xF;
            } else if (b >= 0xF0 && b <= 0xF4) {
                if (b == 0xF0)
                    lower = 0x90;
                if (b == 0xF4)
                    upper = 0x8F;
                needed = 3;
                cp = b & 0x7;
            } else {
                put(0xFFFD);
                ++bad;
            }
            continue;
        }
        if (b < lower || b > upper) {
            cp = 0;
            needed = seen = 0;
            lower = 0x80;
            upper = 0xBF;
            put(0xFFFD);
            ++bad;
            --i; /* the spec "prepends" the byte: read it again as a start */
            continue;
        }
        lower = 0x80;
        upper = 0xBF;
        cp = (cp << 6) | (b & 0x3F);
        if (++seen == needed) {
            put(cp);
            cp = 0;
            needed = seen = 0;
        }
    }
    if (needed) {
        put(0xFFFD);
        ++bad;
    }
    if (malformed)
        *malformed = bad;
    if (out.compare(0, 3, "\xEF\xBB\xBF") == 0)
        out.erase(0, 3);
    return out;
}

/* One dispatched event as EventSource hands it to a page. */
struct Event {
    std::string type;          /* "message" when the stream gave none */
    std::string data;
    std::string last_event_id; /* the MessageEvent's lastEventId */
};

/* The result of reading a whole stream. */
struct Stream {
    std::vector<Event> events;
    long long retry = -1; /* the last reconnection time set, -1 when none */
};

/* Interprets `bytes` as the spec's event stream parser does, dispatching at each blank line.
 * `last_event_id` is the EventSource's last event ID string before these bytes. The end of
 * the bytes is the end of the stream: an event without its blank line is not dispatched. */
inline Stream interpret(std::string_view bytes, std::string last_event_id = {})
{
    const std::string text = utf8_decode(bytes);
    Stream s;
    std::string data, type, id_buffer = last_event_id;
    auto dispatch = [&]() {
        /* Step 1: the last event ID string becomes the buffer, even when nothing is sent. */
        last_event_id = id_buffer;
        if (data.empty()) {
            type.clear();
            return;
        }
        if (data.back() == '\n')
            data.pop_back();
        s.events.push_back({type.empty() ? "message" : type, data, last_event_id});
        data.clear();
        type.clear();
    };
    auto process = [&](std::string_view field, std::string_view value) {
        if (field == "event") {
            type.assign(value);
        } else if (field == "data") {
            data.append(value);
            data += '\n';
        } else if (field == "id") {
            if (value.find('\0') == std::string_view::npos)
                id_buffer.assign(value);
        } else if (field == "retry") {
            bool digits = !value.empty();
            for (char c : value)
                digits = digits && c >= '0' && c <= '9';
            if (digits) {
                long long v = 0;
                for (char c : value)
                    v = v > 100000000000LL ? v : v * 10 + (c - '0'); /* saturates, as huge */
                s.retry = v;
            }
        }
    };
    std::size_t pos = 0;
    while (pos < text.size()) {
        /* A line ends at CRLF, LF or CR; a line without its end (at the end of the stream) is
         * not a line. */
        std::size_t end = text.find_first_of("\r\n", pos);
        if (end == std::string::npos)
            break;
        std::string_view line(text.data() + pos, end - pos);
        pos = end + 1;
        if (text[end] == '\r' && pos < text.size() && text[pos] == '\n')
            ++pos;
        if (line.empty()) {
            dispatch();
        } else if (line.front() == ':') {
            /* a comment */
        } else if (std::size_t colon = line.find(':'); colon != std::string_view::npos) {
            std::string_view value = line.substr(colon + 1);
            if (!value.empty() && value.front() == ' ')
                value.remove_prefix(1);
            process(line.substr(0, colon), value);
        } else {
            process(line, {});
        }
    }
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

} // namespace whatwg

#endif
