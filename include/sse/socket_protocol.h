/* sse/socket_protocol.h — the framed text protocol of the local socket (SSEPublishSocket,
 * served by the sse-publishd daemon), which serves publishers and subscribers alike.
 *
 * A client writes events as UTF-8 text, one connection carrying any number of them:
 *
 *   channel: news            one or more lines, each may be comma-separated
 *   event: update            optional
 *   id: 42                   optional
 *   retry: 3000              optional
 *   only: alice,bob          optional, repeatable: deliver to these client ids alone
 *   except: carol            optional, repeatable: deliver to everyone but these
 *   data: first line         repeatable, joined with LF
 *   data: second line
 *   <blank line>             ends the event
 *
 * Lines end in LF or CRLF. After the colon one space is optional ("data:x" is "x", "data:  x"
 * is " x"). Lines starting with ':' are comments. Blank lines outside an event are ignored.
 * Each event gets one answer line, in order: "ok <event id>\n" or "error <reason>\n". A bad
 * event is answered and skipped; the connection stays usable.
 *
 * Reading instead of publishing: a block of
 *
 *   subscribe: presence      one or more lines, each may be comma-separated
 *   last-event-id: 42        optional: resume after this event, as an HTTP reconnect does
 *   event-types: a,message   optional, repeatable: only events of these types (HTTP's
 *                            ?event=; "message": the untyped event); none: every type
 *   <blank line>
 *
 * and no other field turns the connection into a subscriber: the daemon answers with an
 * event stream (text/event-stream, starting with the comment ": ok") and reads nothing more
 * from it. A bad block is answered "error <reason>" and the connection stays a publisher.
 *
 * Pure code: no I/O. One FrameParser belongs to one connection (one thread at a time).
 */
#ifndef SSE_SOCKET_PROTOCOL_H
#define SSE_SOCKET_PROTOCOL_H

#include "sse/audience.h"
#include "sse/wire.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

/* One block a client sent, up to its blank line: an event to publish or (`subscribe`) a
 * subscribe block, or the reason it cannot be served. Channel names and fields are not
 * validated here beyond the framing (publish_event() does that). */
struct ClientBlock {
    std::vector<std::string> channels;
    EventFields fields;
    Audience audience;
    std::string error; /* non-empty: answer "error <error>" and publish nothing */
    /* A subscribe block (then channels, fields and audience are empty): the channels to
     * read, and where to resume (empty: live only). */
    bool subscribe = false;
    std::vector<std::string> subscribe_channels;
    std::string last_event_id;
    std::vector<std::string> event_types; /* the types it gets (validated); empty: every type */
};

class FrameParser {
public:
    /* `max_event_bytes`: the most bytes one event's lines may take, line ends included. A
     * longer event is answered with an error and its remaining lines are skipped. */
    explicit FrameParser(std::size_t max_event_bytes);
    /* The collectors borrow current_'s lists: a parser stays where it was made. */
    FrameParser(const FrameParser &) = delete;
    FrameParser &operator=(const FrameParser &) = delete;

    /* Consumes `bytes` and appends every block (event or subscribe block) completed by them
     * to `out`. */
    void feed(std::string_view bytes, std::vector<ClientBlock> &out);

    /* True while an event has started and its blank line has not arrived (a client that
     * disconnects now leaves an incomplete event, which is dropped). */
    bool mid_event() const { return started_ || !line_.empty(); }

private:
    void line(std::string_view text, std::vector<ClientBlock> &out);
    void finish(std::vector<ClientBlock> &out);

    std::size_t max_event_bytes_;
    std::string line_;         /* the incomplete line so far */
    ClientBlock current_;
    /* current_'s lists, each collected across its lines (a list over its cap stops). */
    NameCollector channels_, subscribe_channels_, only_, except_, event_types_;
    bool started_ = false;
    std::size_t event_bytes_ = 0;
    bool too_large_ = false;
    std::size_t data_lines_ = 0;
    bool publish_fields_ = false; /* a field of an event was seen (not allowed with subscribe) */
};

/* Appends the protocol text of one event (what sse-publish writes). Data is split at CR, LF
 * and CRLF into data lines; the receiver joins them with LF. */
void encode_frame(const std::vector<std::string> &channels, const EventFields &ev,
                  std::string &out, const Audience &audience = {});

/* Appends a subscribe block (what `sse-publish -f` writes); `event_types` empty: no
 * event-types line. */
void encode_subscribe_block(const std::vector<std::string> &channels,
                            std::string_view last_event_id, std::string &out,
                            const std::vector<std::string> &event_types = {});

/* The answer lines. A reason's CR and LF become spaces. */
std::string ok_line(std::string_view id);
std::string error_line(std::string_view reason);

/* Reasons a client acts on: an "error <reason>" answer whose reason starts with one of these
 * kinds and ": " (the rest is a sentence for people) means
 * - busy: the daemon has as many clients as SSEPublishSocketClients allows, or no descriptor
 *   left; it closes the connection. Come back later (sse-publish retries within -w).
 * - closed: a channel of the subscribe block is closed (DELETE) until its next publish; the
 *   connection stays a publisher. `sse-publish -f` ends, successfully.
 * - unavailable: SSERedis is set and Redis did not accept the event within a second; the
 *   connection stays a publisher. Send it again later (it may also have gone through).
 * Any other reason is final for that event or block. */
inline constexpr std::string_view kBusyReason = "busy";
inline constexpr std::string_view kClosedReason = "closed";
inline constexpr std::string_view kUnavailableReason = "unavailable";

/* The reason "<kind>: <detail>", for error_line(). */
std::string refusal(std::string_view kind, std::string_view detail);
/* Whether `reason` (an answer's text after "error ") is of `kind`. */
bool is_refusal(std::string_view reason, std::string_view kind);

} // namespace sse

#endif
