/* src/httpd/redis_bus.h — SSERedis in httpd: several servers joined into one bus through one
 * Redis stream (sse/redis_link.h, docs/redis.md).
 *
 * Who does what
 * - post_config (parent): open_redis() makes the generation's RedisBus (in pconf: the URL,
 *   the stream key, the writer, which connects lazily in the processes that publish) and the
 *   small shared segment "redis state" (process pool, kept across restarts like the bus): the
 *   reader's cursor (the id of the last entry appended to this server's bus) and the outage
 *   flags that keep the outage log lines to one per outage across every process.
 * - Publishing (any child thread, the socket daemon): submit_event() is the one call of the
 *   HTTP handler and the socket; without SSERedis it is publish_event() on the local bus, as
 *   before (one pointer test more). With it, the event is checked, XADDed, and answered only
 *   after Redis accepted it (Published with the wire id), else Unavailable within a second.
 *   The local bus gets it from the reader, like every other server's.
 * - Reading (the socket daemon, which the parent starts when SSERedis is set even without
 *   SSEPublishSocket): start_redis_reader() runs one thread with its own connection that
 *   appends every entry after the cursor to the bus, in order, advancing the cursor after
 *   each; on any failure (connect, AUTH, a read that timed out or was refused) it waits a
 *   back-off of 100 ms doubling to 2 s, reconnects and resumes from the cursor. The outage is
 *   logged once, when it starts (SSE0703), and once when a read works again (SSE0704). At most one daemon (so one reader) runs at a time: the parent's pool
 *   cleanup ends the old one before a new generation forks the next.
 * - Gaps: each read also checks the stream's epoch, and after a (re)connect, a full batch
 *   or a read that was held up, whether entries after the cursor were trimmed
 *   (sse/redis_link.h). A gap (SSE0710 lost, SSE0711 trimmed, or an entry it skips, SSE0705)
 *   is marked on the bus with a Gap record (mark_gap(), sse/publisher.h): every open stream
 *   gets sse-missed there, and so does a resume from before it; a lost stream is read again
 *   from its start.
 * - A daemon killed between an append and the cursor's advance appends that entry again
 *   when it restarts (at most one repeat, never a loss).
 */
#ifndef SSE_HTTPD_REDIS_BUS_H
#define SSE_HTTPD_REDIS_BUS_H

#include "src/httpd/module.h"

#include "sse/publisher.h"
#include "sse/redis_link.h"
#include "sse/redis_record.h"
#include "sse/redis_replay.h"
#include "sse/stream_open.h"

#include <csignal>
#include <functional>
#include <memory>

namespace sse::httpd {

class RedisBus;

/* The directives' handlers (config.c++'s command table). */
const char *cmd_redis(cmd_parms *cmd, void *, const char *url);
const char *cmd_redis_prefix(cmd_parms *cmd, void *, const char *prefix);

/* post_config, when SSERedis is set: sets state->redis. Logs its failures (SSE0707). */
apr_status_t open_redis(apr_pool_t *pconf, server_rec *s, const ServerConfig *conf,
                        ModuleState *state);

/* Publishes an event: on the local bus, or through Redis when SSERedis is set (see above).
 * Logs the outage line itself (SSE0701, once per outage; SSE0702 when Redis is back). */
PublishAttempt submit_event(ModuleState *state, const server_rec *s,
                            const std::vector<std::string> &channels, const EventFields &ev,
                            const Audience &audience);

/* A Mercure update on the bus channel of its hub: on the local bus (publish_update()), or
 * through Redis as submit_event() does, to every server (the update's id, set by the hub,
 * travels with it). */
PublishAttempt submit_update(ModuleState *state, const server_rec *s, const std::string &channel,
                             const UpdateTopics &topics, const EventFields &ev);

/* The answer to a publish Redis did not take (Unavailable): 503 with Retry-After and the JSON
 * error body, logged at info under `endpoint` (the outage itself is SSE0701, once).
 * publish.c++. */
int answer_unavailable(request_rec *r, const char *endpoint, const std::string &why);

/* DELETE through Redis: sends the close of `channels` to every server. Published (with
 * result.id, the entry id) or Unavailable. */
PublishAttempt submit_close(ModuleState *state, const server_rec *s,
                            const std::vector<std::string> &channels);

/* In the socket daemon: runs `body` on a thread of its own (every signal blocked: SIGTERM is
 * the daemon's main loop's), detached. A failure escaping it (an exception) is logged at crit
 * as "<failed>: <why>" (failed: a tagged sentence, a literal) and ends the daemon (_exit): the
 * parent starts a new one (SSE0402). Used for the Redis reader, the cluster figures' reporter
 * and the presence forwarder. */
void start_daemon_thread(server_rec *s, const char *failed, std::function<void()> body);

/* In the socket daemon, after it dropped privileges: starts the reader thread (every signal
 * blocked). It stops appending once *stop is set (the daemon is ending). */
void start_redis_reader(server_rec *s, ModuleState *state, const volatile sig_atomic_t *stop);

/* What sse-status shows of SSERedis (this server's view). */
struct RedisStatus {
    std::string url;        /* without the password */
    std::string stream;     /* the stream's key */
    bool publishes_refused; /* from a refused publish to the next accepted one */
    bool reader_lost;       /* from the reader's failure to its next working read */
    std::string last_entry; /* the id of the last entry appended to this bus; empty: none */
    std::int64_t last_read_ms; /* wall clock (ms since the epoch) of the reader's last read
                                * that worked (one comes at least every second while it
                                * reads); 0: none yet */
};
/* False when SSERedis is not set. Any process, any thread. */
bool redis_status(const ModuleState *state, RedisStatus *out);

/* For the presence forwarder (src/httpd/redis_presence.h), in sse-publishd, with SSERedis:
 * XADDs a "presence" entry (RedisWriter::add: bounded by kPublishBoundMs; the outage lines of
 * publishes are not touched); the bus seq from which this server's records are still to be
 * sent on (kept across restarts of the daemon), and its advance. */
RedisWriter::Added add_presence_record(ModuleState *state, const StreamRecord &rec);
std::uint64_t presence_next_seq(const ModuleState *state);
void note_presence_next_seq(ModuleState *state, std::uint64_t seq);

/* A resume this server's bus cannot serve, served from Redis (docs/redis.md, "Resume on
 * another server"). The subscribe handler calls it on its worker, before open_stream() (so
 * before the registry is read, and before the hub holds the stream), for req.resume_id
 * with SSERedis. `reader` is a fresh reader of req's channels and client id; it is
 * left positioned (StreamRequest::positioned), and *found says whether the id was found:
 * - start_after() finds the id on the bus with nothing missing after it (SSEHistory reaches
 *   back to it, no Gap record after it: sse/bus.h): served as without Redis; no Redis command.
 *   Else (the bus does not hold it, or a gap lies after it, or SSEHistory stops short of it)
 *   Redis is asked. After a gap that is right both ways: the stream in Redis is what the bus
 *   follows, so if Redis holds the id and the entries after it, they are what the client
 *   missed (a gap from an entry this server's bus could not take: SSE0705); if the gap came
 *   from entries Redis itself lost (trimmed: SSE0711, its history lost: SSE0710), the id went
 *   with them (trimming takes the oldest first; a lost stream starts again with new entry
 *   ids), so it is not found in Redis and the client gets sse-missed;
 * - else the stream in Redis holds it, within the look back: `reader` is at the boundary (the
 *   bus position when the reader's cursor was the last entry read), and the returned replay
 *   yields the entries after the id up to that cursor (SSE0730); *found is whether SSEHistory
 *   reached back to the id;
 * - else (unknown to Redis too, Redis away or not answering within kResumeBoundMs: SSE0731):
 *   `reader` as start_after() left it (what the bus holds), *found false: sse-missed.
 * A Redis known to be away (the reader or a publish or a resume found it so less than a
 * second ago) is not asked. Any child thread. */
constexpr int kResumeBoundMs = 500;
std::unique_ptr<StreamReplay> resume_with_redis(ModuleState *state, const request_rec *r,
                                                const StreamRequest &req, BusReader *reader,
                                                bool *found);

/* The seconds a refused publish is told to wait (Retry-After). */
constexpr int kRedisRetryAfterSeconds = 1;

} // namespace sse::httpd

#endif
