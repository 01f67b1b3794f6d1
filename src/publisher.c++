#include "sse/publisher.h"

namespace sse {

namespace {

std::string too_large(const Bus &bus, std::size_t bytes)
{
    return "the event takes " + std::to_string(bytes) +
           " bytes, more than the bus holds for one event (" +
           std::to_string(bus.max_record_bytes()) + " bytes: half of SSEBusSize)";
}

} // namespace

std::string check_publish(const std::vector<std::string> &channels, const EventFields &ev,
                          const Audience &audience)
{
    if (channels.empty())
        return "no channel";
    std::string error = validate_channel_list(channels);
    if (error.empty())
        error = validate_event(ev);
    if (error.empty())
        error = audience.validate();
    return error;
}

PublishAttempt check_publish_fits(const Bus &bus, const std::vector<std::string> &channels,
                                  const EventFields &ev, const Audience &audience)
{
    PublishAttempt a;
    a.error = check_publish(channels, ev, audience);
    if (!a.error.empty()) {
        a.outcome = PublishAttempt::Outcome::BadRequest;
        return a;
    }
    const std::size_t bytes = bus.event_record_bytes(channels, ev, audience);
    if (bytes > bus.max_record_bytes()) {
        a.outcome = PublishAttempt::Outcome::TooLarge;
        a.error = too_large(bus, bytes);
    }
    return a;
}

PublishAttempt append_event(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                            const EventFields &ev, const Audience &audience, std::int64_t now_us)
{
    PublishAttempt a;
    try {
        a.result = bus.publish(channels, ev, now_us, audience);
    } catch (const EventTooLarge &e) {
        a.outcome = PublishAttempt::Outcome::TooLarge;
        a.error = too_large(bus, e.bytes);
        return a;
    }
    a.outcome = PublishAttempt::Outcome::Published;
    if (registry && registry->valid())
        registry->note_publish(channels, ev.has_data ? -1 : ev.retry, now_us);
    return a;
}

PublishAttempt publish_event(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                             const EventFields &ev, const Audience &audience, std::int64_t now_us)
{
    PublishAttempt a;
    a.error = check_publish(channels, ev, audience);
    if (!a.error.empty()) {
        a.outcome = PublishAttempt::Outcome::BadRequest;
        return a;
    }
    return append_event(bus, registry, channels, ev, audience, now_us);
}

ClosedChannels close_channels(Bus &bus, Registry &registry, const std::vector<std::string> &channels,
                              std::int64_t now_us)
{
    ClosedChannels out;
    out.existed = registry.close_channels(channels, now_us);
    if (out.existed.empty())
        return out;
    std::string notice;
    encode_close_notice("channel-closed", out.existed, notice);
    out.result = bus.publish_control(RecordKind::CloseChannels, out.existed, {}, notice, now_us);
    return out;
}

} // namespace sse
