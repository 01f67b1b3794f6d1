#include "sse/publisher.h"

namespace sse {

PublishAttempt publish_event(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                             const EventFields &ev, const Audience &audience, std::int64_t now_us)
{
    PublishAttempt a;
    a.outcome = PublishAttempt::Outcome::BadRequest;
    if (channels.empty()) {
        a.error = "no channel";
        return a;
    }
    a.error = validate_channel_list(channels);
    if (a.error.empty())
        a.error = validate_event(ev);
    if (a.error.empty())
        a.error = audience.validate();
    if (!a.error.empty())
        return a;
    try {
        a.result = bus.publish(channels, ev, now_us, audience);
    } catch (const EventTooLarge &e) {
        a.outcome = PublishAttempt::Outcome::TooLarge;
        a.error = "the event takes " + std::to_string(e.bytes) +
                  " bytes, more than the bus holds for one event (" +
                  std::to_string(bus.max_record_bytes()) + " bytes: half of SSEBusSize)";
        return a;
    }
    a.outcome = PublishAttempt::Outcome::Published;
    if (registry && registry->valid())
        registry->note_publish(channels, ev.has_data ? -1 : ev.retry, now_us);
    return a;
}

} // namespace sse
