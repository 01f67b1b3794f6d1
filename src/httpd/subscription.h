/* src/httpd/subscription.h — one stream's membership: its slot in the registry (exact counts
 * across processes, SSEDuplicateClient) and the presence events around it.
 *
 * A Subscription is begun by the subscribe handler once the request is accepted, and ended
 * exactly once by whoever holds the stream when it ends: the handler's blocking loop, or the
 * hub (it is moved into the suspended stream). Ending releases the slot and announces
 * `disconnect`; a slot that was already released (the stream was replaced, or its process
 * was reaped) is not announced twice. The destructor ends it if nobody did.
 *
 * Presence (SSEPresenceChannel): `connect`, `reconnect` (the client sent a Last-Event-ID)
 * and `disconnect` events, JSON data, published like any event. Streams that listen to the
 * presence channel alone are counted but not announced (a dashboard watching presence would
 * otherwise announce itself). Records are bounded and budgeted (sse/presence.h): anonymous
 * clients connecting in a loop must not turn the bus over; over the budget a record is
 * skipped, counted, and the next one written says how many were skipped.
 *
 * Mercure subscription events (SSEMercureSubscriptions): a stream whose slot has a note (a
 * Mercure subscriber, sse/mercure_subscription.h) publishes its subscriptions' events at the
 * same points: connect/reconnect (active) and every disconnect (not active), whoever frees
 * the slot (its end, a replacing join, the reap of its dead process).
 */
#ifndef SSE_HTTPD_SUBSCRIPTION_H
#define SSE_HTTPD_SUBSCRIPTION_H

#include "src/httpd/module.h"

#include "sse/delivery.h"

#include <string>
#include <vector>

namespace sse::httpd {

class Subscription {
public:
    Subscription() = default;
    Subscription(Subscription &&other) noexcept { *this = std::move(other); }
    Subscription &operator=(Subscription &&other) noexcept;
    Subscription(const Subscription &) = delete;
    Subscription &operator=(const Subscription &) = delete;
    ~Subscription() { end("ended"); }

    /* After open_stream() took a registry slot (or tried): announces the streams of dead
     * processes it freed on the way; when it joined, takes over the slot `j`, logs the streams
     * it replaced (open_stream() published their EndStream records) and announces them gone,
     * and announces this one's connect/reconnect. `note` is the slot's (Registry::join). */
    void begin(request_rec *r, ModuleState *state, const Registry::Join &j,
               const std::string &client_id, const std::vector<std::string> &channels,
               const std::string &resume_id, const std::string &note);

    /* Releases the slot and announces the disconnect with `reason`; once. */
    void end(const char *reason);

    std::uint64_t serial() const { return serial_; }

    /* Whether this stream held a slot and a replacing join has taken it (Registry::holds).
     * Normally the EndStream record says so first; this covers a replacer that died before
     * publishing it. Lock-free: for a stream's periodic tick. */
    bool lost_slot() const { return state_ && !state_->registry.holds(slot_, serial_); }

private:
    ModuleState *state_ = nullptr;
    std::uint32_t slot_ = 0;
    std::uint64_t serial_ = 0;
    bool announced_ = false;
};

/* How a stream ended, for the access log (docs/endpoints.md): SSE_EVENTS, SSE_BYTES and
 * SSE_END in r->subprocess_env. Whoever ends the stream (the blocking loop, the hub) sets
 * them here, before the request is logged. */
void note_stream_end(request_rec *r, std::uint64_t events_sent, std::uint64_t bytes_sent,
                     EndReason why);
/* The same with SSE_END `end` (a static string): "socket-held" when the hub took the socket
 * over and the request is logged while the stream goes on (SSEHoldMode socket). */
void note_stream_end(request_rec *r, std::uint64_t events_sent, std::uint64_t bytes_sent,
                     const char *end);

/* Takes one presence record's worth of the bus's presence budget (sse/presence.h); over it,
 * false, and SSE0156 at most once a minute per process. `told`: as PresenceBudget::take()
 * (null for another server's record, SSERedis). Any thread. */
bool take_presence_budget(ModuleState *state, std::uint64_t *told);

/* Announces `disconnect` for streams released without their holder (a dead process, a
 * replaced stream). */
void announce_gone(ModuleState *state, const std::vector<SubscriberInfo> &gone,
                   const char *reason);

/* Frees the streams of the child processes the parent noted gone (Registry::note_gone) and
 * announces them. Freeing never waits for the registry's lock (Registry::reap_noted: a
 * try-lock; the notes stay for the next tick), and costs two atomic loads when nothing is
 * noted: called from loops that tick at least once a second in every child that holds
 * streams, so the parent never has to lock. Announcing what was freed (with a presence
 * channel) publishes, which does wait for the bus's and the registry's locks: never call it
 * from the hub's I/O thread. Logs, never throws. */
void reap_gone_processes(ModuleState *state);

} // namespace sse::httpd

#endif
