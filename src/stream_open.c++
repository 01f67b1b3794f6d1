#include "sse/stream_open.h"

namespace sse {

std::string replaced_notice()
{
    std::string notice;
    encode_close_notice("replaced", {}, notice);
    return notice;
}

OpenedStream open_stream(Bus bus, Registry &registry, const StreamRequest &req,
                         const HistoryLimits &history, std::int64_t now_us)
{
    OpenedStream o(req.positioned ? *req.positioned
                                  : BusReader(bus, ChannelSet(req.channels), req.client_id));
    if (req.positioned)
        o.resume_found = req.positioned_found;
    else if (req.earliest)
        o.reader.start_earliest(history, now_us);
    else if (req.resume_id.empty())
        o.reader.start_live();
    else
        o.resume_found = o.reader.start_after(req.resume_id, history, now_us);

    bool closed = false;
    registry.subscribe_view(req.channels, &closed, &o.retry_ms);
    if (closed) {
        o.outcome = OpenedStream::Outcome::Closed;
        return o;
    }
    if (!req.join)
        return o;

    o.join = registry.join(req.pid, req.client_id, req.remote, req.channels, req.policy,
                           now_us, req.note);
    /* The replaced streams' slots are freed: their holders (in whichever process) end them
     * when this record comes by. */
    for (const auto &old : o.join->replaced) {
        Audience target;
        target.only = {stream_target(old.serial)};
        bus.publish_control(RecordKind::EndStream, old.channels, target, replaced_notice(),
                            now_us);
    }
    switch (o.join->outcome) {
    case Registry::Join::Outcome::Joined: break;
    case Registry::Join::Outcome::Duplicate: o.outcome = OpenedStream::Outcome::Duplicate; break;
    case Registry::Join::Outcome::Full: o.outcome = OpenedStream::Outcome::Full; break;
    case Registry::Join::Outcome::TooManyChannels:
        o.outcome = OpenedStream::Outcome::TooManyChannels;
        break;
    case Registry::Join::Outcome::TooManyUnpublished:
        o.outcome = OpenedStream::Outcome::TooManyUnpublished;
        break;
    }
    return o;
}

} // namespace sse
