/* sse/delivery.h — one subscriber's delivery rules, the same for every transport.
 *
 * A stream (an HTTP stream held by its worker, one held by the hub, a socket subscriber) is
 * told by these rules what to send and when to end; the transport only moves the bytes:
 * - its opening bytes: `: ok`, the retry it is told, and the `sse-missed` notice when its
 *   Last-Event-ID is not held (opening());
 * - what a bus record means for it (on_record()): an event is sent when its type passes the
 *   stream's event-type filter (wants_type(): the ?event= list; none, every type) and, for a
 *   Mercure subscriber, its topics pass the subscriber's MercureFilter, else skipped; mod_sse's own notices are never filtered; a CloseChannels record
 *   sends its notice and ends the stream (channel-closed); an EndStream record naming the
 *   stream's registry serial does the same (replaced); any other EndStream is skipped; a Gap
 *   record (events lost before this bus got them: the Redis reader's) sends its notice, the
 *   `sse-missed` notice (gap_notice()), to every stream, filters or not, and the stream goes
 *   on. An overrun (the ring passed the stream's position) sends the `sse-missed` notice
 *   (overrun_notice()) and the stream goes on;
 * - the last bytes at a restart (restart_bytes()): a `retry:` with the stream's effective
 *   retry as it was when the stream opened (a channel's retry-only value, else SSERetry),
 *   kRestartRetryMs when neither is set, so the client keeps the reconnection delay it was
 *   given at the start (a retry-only publish that reaches an open stream later is not
 *   tracked) and comes back to the new generation;
 * - keep-alives (a comment once the stream was silent for the keep-alive interval) and the
 *   end at the token's exp, with when the transport should look again (next_wake_us());
 * - why a stream ended (EndReason) and the name the access log gets (SSE_END).
 *
 * Pure code: no httpd, no APR, no I/O. Time is passed in (microseconds, the caller's clock,
 * the same one for every call on one object), never read here. A Delivery belongs to the
 * thread that serves its stream.
 */
#ifndef SSE_DELIVERY_H
#define SSE_DELIVERY_H

#include "sse/bus.h"
#include "sse/mercure_topic.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

/* The retry a stream gets when it is closed for a restart or a stop, when neither a channel's
 * retry-only publish nor SSERetry gave it one. */
constexpr std::int64_t kRestartRetryMs = 2000;

/* Why a stream ended. end_reason_name() gives its SSE_END value. */
enum class EndReason : std::uint8_t {
    ClientClosed,  /* client-closed: the peer went away */
    WriteFailed,   /* write-failed */
    FellBehind,    /* fell-behind: more than SSEMaxPending waited for it (see sse/fanout.h) */
    ServerRestart, /* server-restart: the child is stopping; the stream got restart_bytes() */
    ChannelClosed, /* channel-closed: a CloseChannels record (DELETE) */
    Replaced,      /* replaced: an EndStream record or a lost registry slot */
    HubFailed,     /* hub-failed: the hub's thread failed; the stream got restart_bytes() */
    TokenExpired,  /* token-expired: the token's exp came; the stream got the notice */
};

/* The SSE_END name ("client-closed", ...); never null. */
const char *end_reason_name(EndReason why);

/* Whether a stream ending for `why` is told to come back (it gets restart_bytes()). */
bool comes_back(EndReason why);

/* What one record means for one stream. */
struct RecordAction {
    enum class Kind : std::uint8_t {
        Skip,       /* not for this stream */
        SendEvent,  /* send the record's wire bytes; an event (counted in SSE_EVENTS) */
        SendAndEnd, /* send the record's wire bytes (a notice) and end for `reason` */
        SendNotice, /* send the record's wire bytes (a notice, not an event) and go on */
    };
    Kind kind = Kind::Skip;
    EndReason reason = EndReason::ClientClosed; /* with SendAndEnd */
};

/* What a stream needs from its configuration and its token. */
struct DeliverySettings {
    /* The two the fan-out's tick reads for every stream, first: in one cache line of a
     * Subscriber (sse/fanout.h). */
    std::int64_t keepalive_us = 0;     /* silence before a keep-alive comment; 0: none */
    std::int64_t token_expires_us = 0; /* the token's exp, on the caller's clock; 0: none */
    std::int64_t retry_ms = -1;        /* the effective retry (channel's, else SSERetry); -1:
                                        * none given (restart_bytes() uses kRestartRetryMs) */
    std::uint64_t serial = 0;          /* registry serial EndStream records name; 0: no slot
                                        * (a socket subscriber), no EndStream ends it */
    std::vector<std::string> event_types; /* the event types it gets (?event=), "message"
                                           * for the untyped event; empty: every type */
    /* A Mercure subscriber's topic selectors and claims; null for every other stream. Shared
     * by the copies of these settings, used by one thread at a time (the stream's). */
    std::shared_ptr<const MercureFilter> mercure;
};

/* Whether an event of type `type` ("" or "message": the untyped event) is one of `types`;
 * an empty list holds every type. Used for a stream's ?event= filter and for a location's
 * SSEEventTypes. */
bool event_type_listed(const std::vector<std::string> &types, std::string_view type);

class Delivery {
public:
    /* `now_us` counts as the stream's last write (the opening bytes are about to go). */
    Delivery(const DeliverySettings &settings, std::int64_t now_us);

    /* Appends the opening bytes: `: ok`, `retry:` when retry_ms >= 0, and the
     * unknown-last-event-id notice (naming `resume_id`) when !resume_found (the id is not held,
     * or it is and SSEHistory does not reach back to it: BusReader::start_after). */
    static void opening(std::int64_t retry_ms, bool resume_found, std::string_view resume_id,
                        std::string &out);

    /* What `e` means for this stream. `e` is on one of its channels and its audience admits
     * the stream (its own BusReader checks both; FanOut checks them for a shared reader). */
    RecordAction on_record(const BusEvent &e) const;
    /* Whether an event of type `type` passes the stream's type filter. */
    bool wants_type(std::string_view type) const
    {
        return !filtered_ || event_type_listed(settings_.event_types, type);
    }
    /* Whether the event record `e` passes the stream's filters: a record without a `data:`
     * line (a retry-only publish: `retry:`, maybe `id:`) dispatches no event in a browser,
     * so no type filter holds it back; a Mercure subscriber gets only the updates its
     * MercureFilter admits. Inline and one test when the stream has no filter (FanOut does
     * not even ask then: it indexes filtered streams apart). */
    bool wants(const BusEvent &e) const
    {
        return !filtered_ || wants_filtered(e, dispatches_event(e.wire));
    }
    /* The same for a stream with a filter, `dispatches` being dispatches_event(e.wire) (FanOut
     * looks at it once per record, not once per stream). */
    bool wants_filtered(const BusEvent &e, bool dispatches) const
    {
        if (settings_.mercure && !settings_.mercure->admits(e.topics, e.private_update))
            return false;
        return !dispatches || event_type_listed(settings_.event_types, e.event);
    }
    /* Whether encoded event bytes hold a `data:` line (the WHATWG parser dispatches an event
     * at the blank line only then). */
    static bool dispatches_event(std::string_view wire)
    {
        return wire.compare(0, 5, "data:") == 0 || wire.find("\ndata:") != std::string_view::npos;
    }
    /* Whether the stream has a filter at all (event types, Mercure topics). */
    bool filters() const { return filtered_; }
    /* The same for an event or a CloseChannels record, which mean the same to every stream
     * of their channels but for the filters, and for a Gap record, the same to every stream
     * (FanOut asks once per record, not once per stream, then wants_filtered() per filtered
     * stream for an event). */
    static RecordAction on_channel_record(RecordKind kind);

    /* Appends the notice for an overrun (the stream goes on). */
    static void overrun_notice(std::string &out);
    /* Appends the notice a Gap record carries (sse/bus.h; the stream goes on). */
    static void gap_notice(std::string &out);

    /* Appends the keep-alive comment. */
    static void keepalive_bytes(std::string &out);

    /* The retry sent at a restart, and its bytes appended to `out`. */
    std::int64_t restart_retry_ms() const;
    void restart_bytes(std::string &out) const;

    /* Something went out at `now_us`: the keep-alive clock starts again. */
    void wrote(std::int64_t now_us) { last_write_us_ = now_us; }
    std::int64_t last_write_us() const { return last_write_us_; }

    /* A keep-alive is due: silent for the keep-alive interval (never when it is 0). */
    bool keepalive_due(std::int64_t now_us) const;

    /* The token's exp has come: the stream sends token_expired_notice() (sse/token.h) and
     * ends (TokenExpired). */
    bool token_expired(std::int64_t now_us) const;

    /* Microseconds from `now_us` until the next keep-alive or the token's exp, whichever
     * comes first (0 when one is due); -1 when neither will ever come. */
    std::int64_t next_wake_us(std::int64_t now_us) const;

    const DeliverySettings &settings() const { return settings_; }

private:
    DeliverySettings settings_;
    bool filtered_; /* settings_.event_types is not empty, or settings_.mercure is set */
    /* Last: a Subscriber (sse/fanout.h) places it in the cache line of the other fields a
     * delivery writes. */
    std::int64_t last_write_us_;
};

/* How read_stream() stopped. */
struct ReadStop {
    bool drained = false; /* the reader has nothing more now */
    bool ended = false;   /* a record ends the stream (its notice went to `out`) */
    EndReason reason = EndReason::ClientClosed; /* with ended */
};

/* Reads a stream's own reader (which checks channels and audience) and applies `rules`:
 * every piece to send goes to out(std::string &&bytes, bool is_event), which returns whether
 * to read on (false: a batch is full). Stops when the reader has nothing more, a record ends
 * the stream, or `out` says so. Used by every path that reads one stream's reader: the
 * blocking loop, the socket daemon's subscribers, and FanOut's catch-up. */
template <typename Out> ReadStop read_stream(BusReader &reader, const Delivery &rules, Out &&out)
{
    ReadStop stop;
    BusEvent e;
    for (;;) {
        const BusReader::Next next = reader.next(&e);
        if (next == BusReader::Next::None) {
            stop.drained = true;
            return stop;
        }
        bool more = true;
        if (next == BusReader::Next::Overrun) {
            std::string notice;
            Delivery::overrun_notice(notice);
            more = out(std::move(notice), false);
        } else {
            const RecordAction a = rules.on_record(e);
            if (a.kind != RecordAction::Kind::Skip)
                more = out(std::move(e.wire), a.kind == RecordAction::Kind::SendEvent);
            if (a.kind == RecordAction::Kind::SendAndEnd) {
                stop.ended = true;
                stop.reason = a.reason;
                return stop;
            }
        }
        if (!more)
            return stop;
    }
}

} // namespace sse

#endif
