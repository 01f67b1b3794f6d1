#include "sse/publisher.h"

#include "sse/delivery.h"
#include "sse/mercure_topic.h"

namespace sse {

namespace {

std::string too_large(const Bus &bus, std::size_t bytes)
{
    return "the event takes " + std::to_string(bytes) +
           " bytes, more than the bus holds for one event (" +
           std::to_string(bus.max_record_bytes()) + " bytes: half of SSEBusSize)";
}

/* The append of a checked event or update (topics: a Mercure update's, else null), and what
 * follows it. */
PublishAttempt append(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                      const EventFields &ev, const Audience &audience, const UpdateTopics *topics,
                      std::int64_t now_us)
{
    PublishAttempt a;
    try {
        a.result = bus.publish(channels, ev, now_us, audience, topics);
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

/* The draft's rules for an update's topics, id and type (see publisher.h). */
std::string validate_update(const UpdateTopics &topics, const EventFields &ev)
{
    if (topics.topics.empty())
        return "an update needs at least one topic";
    if (topics.topics.size() > kMaxTopicsPerRequest)
        return "an update has at most " + std::to_string(kMaxTopicsPerRequest) + " topics";
    for (const auto &t : topics.topics) {
        if (t == "*")
            return "\"*\" is no topic: it is the selector of every topic";
        if (std::string bad = validate_mercure_string(t, "a topic"); !bad.empty())
            return bad;
    }
    if (std::string bad = validate_mercure_string(ev.id, "the id"); !bad.empty())
        return bad;
    if (ev.id == "earliest" || (!ev.id.empty() && ev.id[0] == '#'))
        return "the id may be neither \"earliest\" nor start with '#' (both are the hub's)";
    if (std::string bad = validate_mercure_string(ev.event, "the type"); !bad.empty())
        return bad;
    if (ev.event == "mercure")
        return "the type \"mercure\" is reserved for the hub's own events";
    return validate_event(ev);
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

namespace {

/* An event or update that passed its checks (`error`, empty then), and whether it fits. */
PublishAttempt checked_fits(const Bus &bus, std::string error,
                            const std::vector<std::string> &channels, const EventFields &ev,
                            const Audience &audience, const UpdateTopics *topics)
{
    PublishAttempt a;
    a.error = std::move(error);
    if (!a.error.empty()) {
        a.outcome = PublishAttempt::Outcome::BadRequest;
        return a;
    }
    const std::size_t bytes = bus.event_record_bytes(channels, ev, audience, topics);
    if (bytes > bus.max_record_bytes()) {
        a.outcome = PublishAttempt::Outcome::TooLarge;
        a.error = too_large(bus, bytes);
    }
    return a;
}

} // namespace

PublishAttempt check_publish_fits(const Bus &bus, const std::vector<std::string> &channels,
                                  const EventFields &ev, const Audience &audience)
{
    return checked_fits(bus, check_publish(channels, ev, audience), channels, ev, audience,
                        nullptr);
}

PublishAttempt check_update_fits(const Bus &bus, const std::string &channel,
                                 const UpdateTopics &topics, const EventFields &ev)
{
    return checked_fits(bus, validate_update(topics, ev), {channel}, ev, {}, &topics);
}

PublishAttempt append_event(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                            const EventFields &ev, const Audience &audience, std::int64_t now_us)
{
    return append(bus, registry, channels, ev, audience, nullptr, now_us);
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

PublishAttempt publish_update(Bus &bus, Registry *registry, const std::string &channel,
                              const UpdateTopics &topics, const EventFields &ev,
                              std::int64_t now_us)
{
    PublishAttempt a;
    a.outcome = PublishAttempt::Outcome::BadRequest;
    a.error = validate_update(topics, ev);
    if (!a.error.empty())
        return a;
    return append(bus, registry, {channel}, ev, {}, &topics, now_us);
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

PublishResult mark_gap(Bus &bus, std::int64_t now_us)
{
    std::string notice;
    Delivery::gap_notice(notice);
    return bus.publish_gap(notice, now_us);
}

} // namespace sse
