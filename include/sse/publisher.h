/* sse/publisher.h — the one path every publish takes (HTTP handler and publish socket alike):
 * validate the channels and the event, check it fits the bus, append it.
 *
 * Thread-safe (the bus serialises writers); no httpd, no I/O beyond the bus.
 */
#ifndef SSE_PUBLISHER_H
#define SSE_PUBLISHER_H

#include "sse/bus.h"
#include "sse/registry.h"

#include <string>
#include <vector>

namespace sse {

struct PublishAttempt {
    enum class Outcome { Published, BadRequest, TooLarge };
    Outcome outcome = Outcome::Published;
    std::string error;    /* what was wrong, when not Published */
    PublishResult result; /* when Published */
};

/* Publishes `ev` to `channels` (1 to kMaxChannelsPerEvent valid names) for `audience`, unless
 * a name, a field or a client id is invalid (BadRequest) or the event does not fit the bus
 * (TooLarge). Then notes it in `registry` (when valid): the channels' publish counts, their
 * reopening after a DELETE, and a retry-only event's retry for new subscribers. Never throws
 * for bad input. */
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

} // namespace sse

#endif
