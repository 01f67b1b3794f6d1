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
 * otherwise announce itself).
 */
#ifndef SSE_HTTPD_SUBSCRIPTION_H
#define SSE_HTTPD_SUBSCRIPTION_H

#include "src/httpd/module.h"

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

    enum class Outcome { Joined, Duplicate, Full, TooManyChannels };
    /* Takes a registry slot for the stream of `r`. When joined: ends older streams with the
     * same client id under SSEDuplicateClient replace (an EndStream record tells their
     * holders), and announces connect/reconnect. */
    Outcome begin(request_rec *r, ModuleState *state, DuplicatePolicy policy,
                  const std::string &client_id, const std::vector<std::string> &channels,
                  const std::string &resume_id);

    /* Releases the slot and announces the disconnect with `reason`; once. */
    void end(const char *reason);

    std::uint64_t serial() const { return serial_; }

private:
    ModuleState *state_ = nullptr;
    std::uint32_t slot_ = 0;
    std::uint64_t serial_ = 0;
    bool announced_ = false;
};

/* Announces `disconnect` for streams released without their holder (a dead process, a
 * replaced stream). */
void announce_gone(ModuleState *state, const std::vector<SubscriberInfo> &gone,
                   const char *reason);

} // namespace sse::httpd

#endif
