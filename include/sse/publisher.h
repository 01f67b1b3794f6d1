/* sse/publisher.h — the one path every publish takes (HTTP handler and publish socket alike):
 * validate the channels and the event, check it fits the bus, append it.
 *
 * Thread-safe (the bus serialises writers); no httpd, no I/O beyond the bus.
 */
#ifndef SSE_PUBLISHER_H
#define SSE_PUBLISHER_H

#include "sse/bus.h"

#include <string>
#include <vector>

namespace sse {

struct PublishAttempt {
    enum class Outcome { Published, BadRequest, TooLarge };
    Outcome outcome = Outcome::Published;
    std::string error;    /* what was wrong, when not Published */
    PublishResult result; /* when Published */
};

/* Publishes `ev` to `channels` (1 to kMaxChannelsPerEvent valid names), unless a name or a
 * field is invalid (BadRequest) or the event does not fit the bus (TooLarge). Never throws
 * for bad input. */
PublishAttempt publish_event(Bus &bus, const std::vector<std::string> &channels,
                             const EventFields &ev, std::int64_t now_us);

} // namespace sse

#endif
