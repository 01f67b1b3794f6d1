/* sse/event_stream.h — reading a text/event-stream as a browser's EventSource does.
 *
 * Contract
 * - EventStreamParser follows the WHATWG HTML standard, section 9.2.6 "Interpreting an event
 *   stream" (https://html.spec.whatwg.org/multipage/server-sent-events.html): the bytes are
 *   UTF-8 decoded (every malformed sequence becomes U+FFFD, as the Encoding standard's decoder
 *   does; one BOM at the very start of the stream is dropped); lines end at CRLF, LF or CR;
 *   a line starting with ':' is a comment; "name:value" drops one space after the colon, a
 *   line without a colon is a field with an empty value; `data` appends its value and an LF,
 *   `event` sets the type, `id` sets the last-event-id buffer unless the value holds NUL,
 *   `retry` sets the reconnection time when the value is ASCII digits only; other fields are
 *   ignored. A blank line dispatches: the last event id becomes the buffer's (kept across
 *   events), and when the data buffer is not empty an event goes out with one trailing LF
 *   removed and the type "message" when none was given.
 * - Incremental: bytes may arrive in pieces of any size (a UTF-8 sequence, a CRLF or a BOM split
 *   between two feeds gives what it gives in one); the events do not depend on the split.
 * - The end of a connection is the end of its stream: start_connection() drops a partial line
 *   and an undispatched event (the spec discards them) and expects a BOM again; the last event
 *   id and the reconnection time stay, as they do for an EventSource that reconnects.
 * - Memory: at most `max_pending_bytes` of undispatched line and event text (0: no limit, as
 *   browsers); feed() refuses more, and the caller ends the connection.
 * - Pure: no I/O, no global state. One parser is used by one thread at a time.
 *
 * It shares no code with src/wire.c++ on purpose: the fuzz targets read encode_event()'s bytes
 * back with it, checking the encoder against the spec rather than against itself.
 */
#ifndef SSE_EVENT_STREAM_H
#define SSE_EVENT_STREAM_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

/* One dispatched event, as EventSource hands it to a page as a MessageEvent. */
struct StreamEvent {
    std::string type;          /* the event type buffer, "message" when empty */
    std::string data;
    std::string last_event_id; /* the MessageEvent's lastEventId */
};

/* The Encoding standard's UTF-8 decoder, fed in pieces. Appends UTF-8 (malformed input as
 * U+FFFD) to `out`; `replacements` counts the U+FFFD it made. Does not strip a BOM. */
class Utf8Decoder {
public:
    void decode(std::string_view bytes, std::string &out);
    /* The end of the input: an unfinished sequence becomes one U+FFFD. */
    void finish(std::string &out);
    std::size_t replacements = 0;

private:
    bool step(unsigned byte, std::string &out); /* false: read the byte again */
    std::uint32_t code_point_ = 0;
    int needed_ = 0, seen_ = 0;
    unsigned lower_ = 0x80, upper_ = 0xBF;
};

/* A whole input UTF-8 decoded with the BOM stripped, as "UTF-8 decode" does; `replacements`,
 * when given, gets the number of U+FFFD made for malformed sequences. */
std::string utf8_decode(std::string_view bytes, std::size_t *replacements = nullptr);

class EventStreamParser {
public:
    /* `last_event_id`: the id a resumed EventSource starts from (sent as Last-Event-ID). */
    explicit EventStreamParser(std::string last_event_id = {}, std::size_t max_pending_bytes = 0);

    /* Reads `bytes` of the current connection's stream and appends every event they dispatch
     * to `events`. Returns false when the undispatched text would pass max_pending_bytes (the
     * events before that point are appended; the parser must then start a new connection). */
    bool feed(std::string_view bytes, std::vector<StreamEvent> &events);

    /* A new connection's stream begins (see the contract). */
    void start_connection();

    /* The last event ID string: what a reconnect sends as Last-Event-ID (empty: send none). */
    const std::string &last_event_id() const { return last_event_id_; }
    /* The reconnection time in milliseconds the stream set with `retry`, -1 when it set none.
     * Digits beyond INT64_MAX read as INT64_MAX. */
    std::int64_t retry_ms() const { return retry_ms_; }

private:
    void line_ended(std::vector<StreamEvent> &events);
    void field(std::string_view name, std::string_view value);
    void dispatch(std::vector<StreamEvent> &events);

    Utf8Decoder decoder_;
    std::string decoded_;      /* scratch: one feed's decoded text */
    std::string line_;         /* the line read so far */
    std::string data_, type_, id_buffer_;
    std::string last_event_id_;
    std::int64_t retry_ms_ = -1;
    std::size_t max_pending_;
    bool at_start_ = true;     /* no code point decoded yet on this connection */
    bool after_cr_ = false;    /* the last code point ended a line with CR */
};

} // namespace sse

#endif
