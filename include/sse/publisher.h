/* sse/publisher.h — the one path every publish takes (HTTP handler and publish socket alike):
 * validate the channels and the event, check it fits the bus, append it.
 *
 * With SSERedis the path is cut in two: the publishing process runs check_publish_fits() (a
 * Mercure update: check_update_fits()) and hands the event to Redis (sse/redis_link.h); each
 * server's Redis reader then runs append_event() (publish_update(), close_channels()) for
 * every entry, in stream order. Without it publish_event() does both
 * at once, and DELETE calls close_channels().
 *
 * Thread-safe (the bus and the registry serialise writers); no httpd, no I/O beyond the bus.
 */
#ifndef SSE_PUBLISHER_H
#define SSE_PUBLISHER_H

#include "sse/bus.h"
#include "sse/registry.h"

#include <string>
#include <vector>

namespace sse {

struct PublishAttempt {
    /* Unavailable: the event could not be handed to Redis (SSERedis); nothing is known of it. */
    enum class Outcome { Published, BadRequest, TooLarge, Unavailable };
    Outcome outcome = Outcome::Published;
    std::string error;    /* what was wrong, when not Published */
    PublishResult result; /* when Published (with SSERedis: only result.id, the wire id) */
};

/* The checks of every publish: 1 to kMaxChannelsPerEvent valid channel names, a valid event
 * (validate_event) and audience. Returns an error sentence, or empty. */
std::string check_publish(const std::vector<std::string> &channels, const EventFields &ev,
                          const Audience &audience);

/* check_publish(), and whether the bus takes an event this large (TooLarge otherwise): what a
 * publish through Redis checks before it hands the event on, so that an event no server's
 * bus could take is refused to its publisher. Outcome Published: it passed. */
PublishAttempt check_publish_fits(const Bus &bus, const std::vector<std::string> &channels,
                                  const EventFields &ev, const Audience &audience);

/* Appends an event that passed check_publish() to the bus (TooLarge when it does not fit),
 * then notes it in `registry` (when valid): the channels' publish counts, their reopening
 * after a DELETE, and a retry-only event's retry for new subscribers. */
PublishAttempt append_event(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                            const EventFields &ev, const Audience &audience, std::int64_t now_us);

/* check_publish(), then append_event(). Never throws for bad input. */
PublishAttempt publish_event(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                             const EventFields &ev, const Audience &audience, std::int64_t now_us);

/* Publishes a Mercure update on `channel` (its hub's: mercure_hub_channel()), its topics travelling
 * with it (UpdateTopics), unless a topic or a field breaks the draft's rules (BadRequest, the
 * error names it: 1 to kMaxTopicsPerRequest topics, none `*`, each and the id and type
 * validate_mercure_string(); an id neither starting with '#' nor `earliest`; a type other
 * than `mercure`) or the bus's (validate_event()), or the update does not fit the bus
 * (TooLarge). Notes it in `registry` as publish_event() does. Never throws for bad input. */
PublishAttempt publish_update(Bus &bus, Registry *registry, const std::string &channel,
                              const UpdateTopics &topics, const EventFields &ev,
                              std::int64_t now_us);

/* publish_update()'s checks, and whether the bus takes an update this large (TooLarge
 * otherwise): what a Mercure publish through Redis checks before it hands the update on, as
 * check_publish_fits() for an event. Outcome Published: it passed. */
PublishAttempt check_update_fits(const Bus &bus, const std::string &channel,
                                 const UpdateTopics &topics, const EventFields &ev);

/* DELETE: marks the channels that exist closed in `registry` and appends the CloseChannels
 * record with its sse-close notice, so every stream of them ends (sse/bus.h). Returns the
 * channels that existed; nothing is appended when none did. */
struct ClosedChannels {
    std::vector<std::string> existed;
    PublishResult result;
};
ClosedChannels close_channels(Bus &bus, Registry &registry, const std::vector<std::string> &channels,
                              std::int64_t now_us);

/* Events meant for this bus were lost before it got them (the Redis reader: entries lost,
 * trimmed unread, or that it could not append): appends a Gap record with the sse-missed
 * notice (Delivery::gap_notice()), so that every open stream is told, and a resume from an
 * event before it too (sse/bus.h). */
PublishResult mark_gap(Bus &bus, std::int64_t now_us);

} // namespace sse

#endif
