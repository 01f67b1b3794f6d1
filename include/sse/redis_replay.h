/* sse/redis_replay.h — turning entries of the Redis stream into bus records: the one routine
 * the reader runs for every entry it appends to the server's bus, and the replay that a
 * resume takes from Redis when this server's bus does not hold the client's id.
 *
 * apply_stream_entry()
 * - Appends one decoded entry (sse/redis_link.h) to a bus as the reader always did: an event
 *   with its id (the publisher's, else the entry id) checked as any publish is
 *   (check_publish), a Mercure update checked as its hub checked it (publish_update), a close
 *   (DELETE) as close_channels(); nothing for a presence entry (the reader's own business).
 *   Returns why an entry was skipped (the caller logs it), or empty.
 *
 * StreamReplay (replay_from_entries())
 * - Why: a client that read events on another server resumes here with Last-Event-ID, and
 *   this server's bus does not hold that id (it started after the events, or its reader lost
 *   entries to a gap). Redis still does. The resume reads the entries after the id from
 *   Redis, up to the boundary where this server's bus takes over (src/httpd/redis_bus.c++
 *   finds it: the last entry the reader appended when the stream's bus position was taken).
 * - How: the entries (oldest first, the client's own entry among them) are published, in
 *   order and at their Redis times, on a private bus in heap memory; a BusReader of the
 *   subscriber's channels and client id then runs start_after() on it. So channels,
 *   only/except, retry-only records, SSEHistory's count and age, closes (a channel's events
 *   before its close are not replayed) and Mercure updates (their topics travel with them;
 *   the stream's Delivery filters them) follow the bus's own code: there is no second copy
 *   of those rules. The private bus is sized for the entries: nothing is evicted.
 * - found: an entry with the client's id was among the entries and appended. Then `reader`
 *   yields the replay and the live bus follows from the boundary; `complete` is start_after's
 *   answer (false: SSEHistory does not reach back to the id, the missed notice goes first),
 *   and false too when an entry after the id was skipped (one no publish could have made:
 *   it may have been the client's; the server's bus is not marked, a replay is private).
 *   Not found: the id is unknown to Redis too (or older than what was read): the caller falls
 *   back to what its bus holds, with the missed notice, as without Redis.
 * - Presence entries (another server's presence records) are skipped: apply_stream_entry()
 *   appends nothing for them. The Redis reader hands them to RemotePresence itself; they are
 *   no client's events, and a presence record is not resumable across servers.
 * - Memory: the private bus holds about twice the entries' record bytes; it lives as long as
 *   the StreamReplay (the reader points into it). One thread (the stream's) at a time.
 *
 * Pure code: no I/O, no httpd.
 */
#ifndef SSE_REDIS_REPLAY_H
#define SSE_REDIS_REPLAY_H

#include "sse/bus.h"
#include "sse/redis_link.h"
#include "sse/registry.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sse {

/* One entry onto `bus` at `time_us` (see above). `registry` (may be null: a private bus) is
 * told of publishes and closes as publish_event() and close_channels() tell it; without it a
 * close is appended for every channel it names. */
std::string apply_stream_entry(Bus &bus, Registry *registry, const StreamEntry &e,
                               std::int64_t time_us);

struct StreamReplay {
    bool found = false;
    bool complete = false;
    std::size_t entries = 0; /* entries applied to the private bus */
    std::unique_ptr<unsigned char[]> memory;
    std::optional<BusReader> reader; /* set when found */
};

/* The replay for a subscriber of `channels` with `client_id` resuming after `resume_id`, from
 * `entries` oldest first; `now_us`: this server's clock. An entry's time is Redis's, from
 * its id, however old (SSEHistory's age counts from it), or now_us for one more than
 * kEntryClockSlackMs after now_us (an id given by hand). */
StreamReplay replay_from_entries(const std::vector<StreamEntry> &entries,
                                 const std::vector<std::string> &channels,
                                 const std::string &client_id, const std::string &resume_id,
                                 const HistoryLimits &limits, std::int64_t now_us);

} // namespace sse

#endif
