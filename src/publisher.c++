#include "sse/publisher.h"

namespace sse {

PublishAttempt publish_event(Bus &bus, const std::vector<std::string> &channels,
                             const EventFields &ev, std::int64_t now_us)
{
    PublishAttempt a;
    a.outcome = PublishAttempt::Outcome::BadRequest;
    if (channels.empty()) {
        a.error = "no channel";
        return a;
    }
    if (channels.size() > kMaxChannelsPerEvent) {
        a.error = "too many channels: " + std::to_string(channels.size()) + ", at most " +
                  std::to_string(kMaxChannelsPerEvent);
        return a;
    }
    for (const auto &c : channels) {
        a.error = validate_channel_name(c);
        if (!a.error.empty())
            return a;
    }
    a.error = validate_event(ev);
    if (!a.error.empty())
        return a;
    try {
        a.result = bus.publish(channels, ev, now_us);
    } catch (const EventTooLarge &e) {
        a.outcome = PublishAttempt::Outcome::TooLarge;
        a.error = "the event takes " + std::to_string(e.bytes) +
                  " bytes, more than the bus holds for one event (" +
                  std::to_string(bus.max_record_bytes()) + " bytes: half of SSEBusSize)";
        return a;
    }
    a.outcome = PublishAttempt::Outcome::Published;
    return a;
}

} // namespace sse
