/* src/httpd/redis_presence.h — presence from every server with SSERedis (docs/redis.md,
 * "Presence from every server").
 *
 * A stream's connect, reconnect and disconnect records (SSEPresenceChannel) are written by
 * httpd's children on this server's bus, as without SSERedis: no child ever waits on Redis
 * for presence. The other servers get them this way:
 *
 * - PresenceForwarder (sse-publishd, a thread of its own, started with the Redis reader when
 *   SSEPresenceChannel is set): follows this server's bus on the presence channel (a
 *   BusReader, looked at every kForwardPollMs: waiting on the bus's futex would wake it at
 *   every publish of any channel) and sends each record this server made on to the stream
 *   as a "presence" entry (sse/redis_record.h), one XADD each, in bus order, with this
 *   server's id and start token. A record this server made is one whose id is its own bus
 *   seq (the bus gave it: presence records carry no id); a record the reader appended from
 *   Redis has the entry id ("ms-seq"), so it is never sent back. A connect or reconnect
 *   older than kPresenceMaxAgeMs is not sent (presence_too_old()).
 *   Redis away or slow: the record in hand is tried again with a back-off of 100 ms doubling
 *   to 2 s, each try bounded by kPublishBoundMs; the BusReader keeps the place meanwhile (the
 *   bus is the queue: no memory grows). Records the ring overwrote meanwhile are skipped, and
 *   said once per outage (SSE0742). SSE0740 (once, when sending fails) and SSE0741 (when it
 *   works again). The place survives restarts of the daemon (graceful restarts of httpd) in
 *   SSERedis's shared state (presence_next_seq(), redis_bus.h).
 * - RemotePresence (the Redis reader's thread, redis_bus.c++): for each "presence" entry,
 *   skips this server's own (same id and token: already on its bus), an entry for another
 *   channel than this server's presence channel (or when it has none), and one whose seq is
 *   not above the last taken from its server and token (the forwarder sends a record again
 *   when an XADD's answer timed out, and Redis may have run it: a stopped Redis that resumes
 *   runs what waits in its socket); drops a stale connect
 *   (presence_too_old(), counted, SSE0743 at most once a minute); else takes one record from
 *   this server's presence budget (over it: skipped, counted as this server's skips are,
 *   SSE0156) and appends the record (type and data verbatim) with the entry id as its id.
 *
 * So on every other server a server's records come in the stream's order, among the
 * publishes, the same order everywhere; on the server that made them they come at once, when
 * the stream opens or ends, ahead of where the stream puts them.
 */
#ifndef SSE_HTTPD_REDIS_PRESENCE_H
#define SSE_HTTPD_REDIS_PRESENCE_H

#include "src/httpd/module.h"

#include "sse/redis_link.h"

#include <csignal>
#include <cstdint>
#include <map>
#include <string>

namespace sse::httpd {

constexpr int kForwardPollMs = 100;

/* In the socket daemon, after it dropped privileges, when SSERedis and SSEPresenceChannel are
 * set: starts the forwarder thread (every signal blocked). It stops once *stop is set. */
void start_presence_forwarder(server_rec *s, ModuleState *state,
                              const volatile sig_atomic_t *stop);

/* The reader's side; one per reader thread. */
class RemotePresence {
public:
    RemotePresence(server_rec *s, ModuleState *state);

    /* A "presence" entry (decoded without error) onto this server's bus at `time_us`, or
     * skipped as above. Returns an error sentence for an entry the bus refuses (the reader
     * logs it, SSE0705), else empty. */
    std::string apply(const StreamEntry &e, std::int64_t time_us);

private:
    /* Whether `r` comes after the last record taken from its server and token (then it is
     * noted as the last). */
    bool first_time(const StreamRecord &r);
    /* Origins remembered at most (a server's token changes at each start of its httpd). */
    static constexpr std::size_t kMaxOrigins = 1024;

    server_rec *s_;
    ModuleState *state_;
    std::string server_, token_;  /* this server's */
    std::map<std::string, std::uint64_t> last_seq_; /* "server\ntoken" -> the last seq taken */
    std::uint64_t stale_ = 0;     /* stale connects dropped since the last SSE0743 */
    std::int64_t stale_said_us_ = 0;
};

} // namespace sse::httpd

#endif
