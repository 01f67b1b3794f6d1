#include "sse/publisher.h"

#include "sse/mercure_topic.h"

namespace sse {

namespace {

/* The append of a validated event, and what follows it. */
PublishAttempt append(Bus &bus, Registry *registry, const std::vector<std::string> &channels,
                      const EventFields &ev, const Audience &audience, const UpdateTopics *topics,
                      std::int64_t now_us)
{
    PublishAttempt a;
    try {
        a.result = bus.publish(channels, ev, now_us, audience, topics);
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
    return append(bus, registry, channels, ev, audience, nullptr, now_us);
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

} // namespace sse
