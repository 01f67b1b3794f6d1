/* sse/stream_open.h — how a new stream takes its place: on the bus first, then in the
 * registry. Used by the HTTP subscribe handler and by the publish socket's subscribers.
 *
 * Why this order: control records (CloseChannels for a DELETE, EndStream for a stream whose
 * client id connected again) are never replayed; a stream acts only on those published
 * after its bus position. Both are written registry first, bus second: a DELETE marks the
 * channels closed, then publishes its record; a replacing join frees the older slot, then
 * publishes the EndStream. So the position is taken before the registry is read:
 * - a DELETE either shows in the registry view (the stream is not opened: Closed) or its
 *   record comes after the position (the stream ends on it);
 * - a stream that a later join replaces was in the registry before that join, so the
 *   EndStream comes after its position.
 * Taken after the registry, the position could pass a record published in between, and the
 * stream would go on streaming (bus.md 4).
 *
 * Any thread; no httpd.
 */
#ifndef SSE_STREAM_OPEN_H
#define SSE_STREAM_OPEN_H

#include "sse/bus.h"
#include "sse/registry.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sse {

struct StreamRequest {
    std::vector<std::string> channels; /* valid names, 1 to kMaxChannelsPerEvent */
    std::string client_id;             /* "" when anonymous */
    std::string resume_id;             /* Last-Event-ID; "" for live only */
    bool earliest = false;             /* replay everything retained (resume_id is "") */
    /* A reader the caller positioned already, before the registry is read as the others are
     * (a resume looked up in Redis too: src/httpd/redis_bus.h): used instead of resume_id
     * and earliest, with `positioned_found` as resume_found. */
    std::optional<BusReader> positioned;
    bool positioned_found = true;
    /* Whether the stream takes a registry slot: false for a HEAD request (no stream) and for
     * a socket subscriber (not counted). With a slot: */
    bool join = true;
    DuplicatePolicy policy = DuplicatePolicy::Allow;
    int pid = 0;
    std::string remote;
    std::string note;                  /* kept with the slot (Registry::join) */
};

struct OpenedStream {
    explicit OpenedStream(BusReader r) : reader(std::move(r)) {}
    enum class Outcome { Open, Closed, Duplicate, Full, TooManyChannels, TooManyUnpublished };
    Outcome outcome = Outcome::Open;
    BusReader reader;           /* positioned: live, or after resume_id with the replay queued */
    bool resume_found = true;   /* false: resume_id is not held (send the missed notice) */
    std::int64_t retry_ms = -1; /* the channels' retry from a retry-only publish; -1: none */
    /* Set only when the registry was joined (req.join, and no channel closed): the slot (when
     * Open), the streams of dead processes freed on the way, and the streams replaced
     * (SSEDuplicateClient replace) whose EndStream records open_stream() has published.
     * Unset, there is no slot to announce or release. */
    std::optional<Registry::Join> join;
};

/* What a stream that a later join of its client id replaced sends before it ends (the notice
 * of the EndStream record open_stream() publishes; a stream that finds its slot taken without
 * that record sends the same). */
std::string replaced_notice();

/* Positions the reader (start_live, start_earliest or start_after; or takes req.positioned), then reads the registry (Closed: a
 * channel was closed by DELETE; nothing else is done), then joins when req.join. */
OpenedStream open_stream(Bus bus, Registry &registry, const StreamRequest &req,
                         const HistoryLimits &history, std::int64_t now_us);

} // namespace sse

#endif
