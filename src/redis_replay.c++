#include "sse/redis_replay.h"

#include "sse/publisher.h"

#include <algorithm>

namespace sse {

std::string apply_stream_entry(Bus &bus, Registry *registry, const StreamEntry &e,
                               std::int64_t time_us)
{
    if (!e.error.empty())
        return e.error;
    const StreamRecord &r = e.record;
    if (r.kind == StreamRecord::Kind::Presence) /* the Redis reader's (RemotePresence) */
        return {};
    if (r.kind == StreamRecord::Kind::Update) /* checked as its hub checked it; its id came with it */
        return publish_update(bus, registry, r.hub, r.update, r.fields, time_us).error;
    if (r.kind == StreamRecord::Kind::Close) {
        if (std::string error = validate_channel_list(r.channels); !error.empty())
            return error;
        if (registry) {
            close_channels(bus, *registry, r.channels, time_us);
        } else {
            std::string notice;
            encode_close_notice("channel-closed", r.channels, notice);
            bus.publish_control(RecordKind::CloseChannels, r.channels, {}, notice, time_us);
        }
        return {};
    }
    if (std::string error = check_publish(r.channels, r.fields, r.audience); !error.empty())
        return error;
    EventFields ev = r.fields;
    if (ev.id.empty())
        ev.id = e.id.text();
    return append_event(bus, registry, r.channels, ev, r.audience, time_us).error;
}

namespace {

/* What `e` takes on a bus, about (a close: its notice; every record: some slack). Reads no
 * bus state: Bus::event_record_bytes is arithmetic on the event. */
std::size_t record_bytes(const StreamEntry &e)
{
    constexpr std::size_t kSlack = 256;
    const StreamRecord &r = e.record;
    if (!e.error.empty() || r.kind == StreamRecord::Kind::Presence)
        return 0;
    if (r.kind == StreamRecord::Kind::Close) {
        std::string notice;
        encode_close_notice("channel-closed", r.channels, notice);
        std::size_t n = notice.size() * 2 + kSlack;
        for (const auto &c : r.channels)
            n += c.size() + 8;
        return n;
    }
    EventFields ev = r.fields;
    if (ev.id.empty())
        ev.id = e.id.text();
    if (r.kind == StreamRecord::Kind::Update)
        return Bus().event_record_bytes({r.hub}, ev, {}, &r.update) + kSlack;
    return Bus().event_record_bytes(r.channels, ev, r.audience) + kSlack;
}

/* An entry's time for a replay: Redis's, from the entry id, however old (an entry read now
 * may be hours old: SSEHistory's age counts from when it was published); this server's clock
 * for one beyond it by more than kEntryClockSlackMs (an id given by hand, a clock far off). */
std::int64_t replay_time_us(const StreamId &id, std::int64_t now_us)
{
    const std::uint64_t latest_ms = static_cast<std::uint64_t>(now_us / 1000 + kEntryClockSlackMs);
    return id.ms <= latest_ms ? static_cast<std::int64_t>(id.ms) * 1000 : now_us;
}

/* A private bus large enough for `bytes` of records without eviction (the ring is twice
 * that, so the largest record fits too: max_record_bytes() is half the ring). */
std::size_t private_bus_size(std::size_t bytes)
{
    const std::size_t ring = 2 * bytes + 4096;
    return Bus::min_size() + ring + ring / 16; /* the seq index: 80 bytes per 2 KB of ring */
}

/* The id `e` has on a bus (an event's or update's own, else an event's entry id); "" for a
 * close, a presence record or an entry that does not decode. */
std::string wire_id(const StreamEntry &e)
{
    const StreamRecord &r = e.record;
    if (!e.error.empty() || r.kind == StreamRecord::Kind::Close ||
        r.kind == StreamRecord::Kind::Presence)
        return {};
    if (r.fields.id.empty() && r.kind == StreamRecord::Kind::Event)
        return e.id.text();
    return r.fields.id;
}

} // namespace

StreamReplay replay_from_entries(const std::vector<StreamEntry> &entries,
                                 const std::vector<std::string> &channels,
                                 const std::string &client_id, const std::string &resume_id,
                                 const HistoryLimits &limits, std::int64_t now_us)
{
    StreamReplay out;
    /* Not found (any id a client sends, looked back over up to 10,000 entries): no private
     * bus is built for it. */
    if (std::none_of(entries.begin(), entries.end(),
                     [&](const StreamEntry &e) { return wire_id(e) == resume_id; }))
        return out;
    std::size_t bytes = 0;
    std::int64_t first_us = now_us;
    for (const StreamEntry &e : entries) {
        bytes += record_bytes(e);
        first_us = std::min(first_us, replay_time_us(e.id, now_us));
    }
    const std::size_t size = private_bus_size(bytes);
    out.memory.reset(new unsigned char[size]);
    /* The bus's first time is the oldest entry's: a record's time is never below it. */
    if (!Bus::format(out.memory.get(), size, first_us).empty())
        return out;
    std::string err;
    Bus bus = Bus::attach(out.memory.get(), size, &err);
    if (!bus.valid())
        return out;
    /* Found: an entry with the client's id was appended. An entry skipped after the oldest
     * such one (one no publish could have made) may have been the client's: not complete, so
     * it gets sse-missed (the server's bus is not marked: the live reader did that, if at all). */
    bool skipped_after_id = false;
    for (const StreamEntry &e : entries) {
        const bool applied =
            apply_stream_entry(bus, nullptr, e, replay_time_us(e.id, now_us)).empty();
        out.entries += applied && e.record.kind != StreamRecord::Kind::Presence;
        skipped_after_id = skipped_after_id || (out.found && !applied);
        out.found = out.found || (applied && wire_id(e) == resume_id);
    }
    if (bus.stats().evicted != 0) /* never, by its size; a replay with holes is no replay */
        out.found = false;
    if (!out.found)
        return out;
    BusReader reader(bus, ChannelSet(channels), client_id);
    out.complete = reader.start_after(resume_id, limits, now_us) && !skipped_after_id;
    out.reader.emplace(std::move(reader));
    return out;
}

} // namespace sse
