/* sse/redis_link.h — the connections to Redis (hiredis 0.14, its synchronous API) that join
 * several servers into one bus: the writer every publish goes through, and the reader that
 * brings every server's publishes to this server's bus.
 *
 * One Redis stream per SSERedisPrefix (sse/redis_record.h) holds every accepted publish of
 * every server, in one order. A publish is accepted when XADD returned its entry id; each
 * server's single reader XREADs the stream after the last id it appended and appends the
 * entries, in order, to the local shared-memory bus. So every server delivers the same
 * events in the same order, with the same ids (the publisher's, else the entry id).
 *
 * RedisWriter
 * - Who: every process that answers publishes (httpd's children, the socket daemon). Made
 *   once in the parent before the fork; it connects lazily, in the process that publishes
 *   (a hiredis context must not cross fork(): connections whose pid is not ours are dropped).
 * - Threads: any. Connections are pooled (a mutex guards the pool); each add() takes one,
 *   so one context is used by one thread at a time, and a process holds at most as many
 *   connections as it has threads publishing at once.
 * - Time: add() has one deadline, kPublishBoundMs, for all its steps (connect, AUTH,
 *   SELECT, XADD: each gets what is left of it): under a second even when Redis is stopped
 *   (SIGSTOP) or unreachable, except for a host name's lookup (getaddrinfo, at each new
 *   connection), which the resolver bounds. A failed connection is dropped, never reused; an idle one the
 *   server closed meanwhile (Redis restarted) is dropped before use (one poll() with no wait).
 * - Failure: add() returns the reason; the caller refuses the publish (503). An XADD that
 *   timed out may still have been applied by Redis (a stopped Redis that resumes runs the
 *   commands waiting in its socket): a refused publish is "not known to be accepted", and
 *   may yet be delivered. The stream is trimmed to about kStreamMaxLen entries (MAXLEN ~).
 *
 * - Resumes: entries_back() reads a range of the stream for a resume that this server's bus
 *   cannot serve, on the same pooled connections, within its own bound.
 *
 * RedisReader
 * - Who: one per server, in the socket daemon (sse-publishd), on a thread of its own with
 *   its own connection (a connection blocked in XREAD can do nothing else).
 * - Threads: one at a time. read_after() blocks up to `block_ms` plus kCommandTimeoutMs; on
 *   any failure the caller drops the connection (disconnect()), waits and connect()s again.
 *
 * Nothing here knows httpd or the bus; errors are returned as sentences, never thrown
 * (except std::bad_alloc).
 */
#ifndef SSE_REDIS_LINK_H
#define SSE_REDIS_LINK_H

#include "sse/redis_record.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

struct redisContext; /* hiredis */
struct redisReply;

namespace sse {

constexpr int kConnectTimeoutMs = 400;
constexpr int kCommandTimeoutMs = 500;
constexpr int kPublishBoundMs = 900; /* one add(), all steps together */
using Deadline = std::chrono::steady_clock::time_point;
constexpr std::size_t kStreamMaxLen = 100000;

/* One entry read from the stream: its id and its record, or why it could not be decoded. */
struct StreamEntry {
    StreamId id;
    StreamRecord record;
    std::string error; /* not empty: the entry is skipped (record is empty) */
};

class RedisWriter {
public:
    RedisWriter(RedisUrl url, std::string stream_key)
        : url_(std::move(url)), key_(std::move(stream_key)) {}
    ~RedisWriter();
    RedisWriter(const RedisWriter &) = delete;
    RedisWriter &operator=(const RedisWriter &) = delete;

    struct Added {
        bool ok = false;
        std::string entry_id; /* when ok: the id Redis gave the entry */
        std::string error;    /* when not ok: why (for the answer and the log) */
    };
    /* XADDs `r` to the stream (see the contract above). */
    Added add(const StreamRecord &r);

    /* A resume's look back (sse/redis_replay.h), on a connection of the same pool: the
     * entries from `newest` back to `oldest` (both included; "-": the stream's start), at
     * most `count`, newest first (XREVRANGE). All of it, a connect included, within
     * `bound_ms`. False and *err when Redis did not answer in time, or answered an error. */
    bool entries_back(const StreamId &newest, const std::string &oldest, std::size_t count,
                      int bound_ms, std::vector<StreamEntry> &out, std::string *err);

    const RedisUrl &url() const { return url_; }

private:
    redisContext *take(Deadline deadline, std::string *err);
    void give_back(redisContext *c);

    RedisUrl url_;
    std::string key_;
    std::mutex mutex_;
    std::vector<redisContext *> idle_; /* connected, made by process pid_ */
    int pid_ = 0;
};

/* What one read's pipeline said about the stream's history (RedisReader::read_after). */
struct StreamHistory {
    bool has_epoch = false;  /* the epoch key exists */
    std::string epoch;       /* its value */
    bool inspected = false;  /* XINFO STREAM was asked, and the stream exists; then: */
    bool has_first = false;  /* the stream holds an entry */
    StreamId first;          /* its oldest entry (first-entry) */
    StreamId last_generated; /* last-generated-id: the newest entry ever added */
    StreamId max_deleted;    /* max-deleted-entry-id (Redis 7): the newest entry removed by
                              * XDEL (trimming does not count); 0-0 when none */
    bool has_counts = false; /* entries-added (Redis 7) and length were in the answer: */
    std::uint64_t entries_added = 0; /* entries ever added */
    std::uint64_t length = 0;        /* entries held */
};

/* What a reader missed, from `h` and what it knew before: `known_epoch` (empty: none seen
 * yet, so nothing to compare), its cursor, and `reported_deleted`: the max-deleted-entry-id
 * it already reported (an XDEL is reported once, not on every read until the cursor passes
 * it). Lost: the epoch is gone or another (the
 * stream's entries after the cursor may be gone with it). Trimmed: entries after the cursor
 * were removed before the reader read them: the oldest entry left is newer than the cursor
 * (the cursor's own entry was trimmed: Redis trims oldest first, in whole nodes, so the ones
 * after it went too; when only it went, the report is one too many, never one too few), or
 * none is left though entries after the cursor were added, or one after it was XDELed.
 * Never Trimmed when the stream holds every entry ever added (entries-added == length): a
 * cursor older than the stream itself (0-0, or a start cursor guessed from the clock) missed
 * nothing. Pure. */
enum class HistoryGap { None, Trimmed, Lost };
HistoryGap find_history_gap(const std::string &known_epoch, const StreamHistory &h,
                            const StreamId &cursor, const StreamId &reported_deleted);

/* A new epoch value: 32 hex digits from std::random_device. */
std::string new_stream_epoch();

/* Whether `value` is one new_stream_epoch() could have made (32 lowercase hex digits): the
 * epoch key's value is only trusted when it is, since another application may have set the
 * key. */
bool is_stream_epoch(std::string_view value);

class RedisReader {
public:
    RedisReader(RedisUrl url, std::string stream_key, std::string epoch_key)
        : url_(std::move(url)), key_(std::move(stream_key)), epoch_key_(std::move(epoch_key)) {}
    ~RedisReader() { disconnect(); }
    RedisReader(const RedisReader &) = delete;
    RedisReader &operator=(const RedisReader &) = delete;

    /* Connects (and AUTH, SELECT); false and *err on failure. */
    bool connect(std::string *err);
    void disconnect();
    bool connected() const { return c_ != nullptr; }

    /* The id of the stream's newest entry, or 0-0 when the stream is empty or absent: where a
     * server that never read the stream starts (it delivers what is published from then on). */
    bool newest_id(StreamId *out, std::string *err);

    /* Entries after `after`, at most `count`, waiting up to `block_ms` for the first. Returns
     * false and *err when the connection failed (the caller disconnects); true with `out`
     * empty when nothing came within block_ms. *history: the epoch, and with `inspect` what
     * XINFO STREAM says, as they were when the XREAD started (see History above). */
    bool read_after(const StreamId &after, int block_ms, std::size_t count, bool inspect,
                    StreamHistory *history, std::vector<StreamEntry> &out, std::string *err);

    /* *held: whether the stream still holds the entry `id` (XRANGE id id; never 0-0). False
     * and *err when the connection failed. */
    bool holds_entry(const StreamId &id, bool *held, std::string *err);

    /* Sets the epoch key to `candidate` unless it exists (SET NX), then reads it: the value
     * every reader of the stream adopts. False and *err on failure. */
    bool settle_epoch(const std::string &candidate, std::string *epoch, std::string *err);

private:
    RedisUrl url_;
    std::string key_, epoch_key_;
    redisContext *c_ = nullptr;
};

/* Connects to `url` (within kConnectTimeoutMs at most), TCP keep-alive, then AUTH and SELECT
 * as the URL asks, all of it before `deadline` (a host name's lookup, getaddrinfo, is not
 * bounded by it). nullptr and *err on failure. (Shared by the writer and the reader; public
 * for them only.) */
redisContext *redis_connect(const RedisUrl &url, Deadline deadline, std::string *err);

/* Runs one command on `c` within what is left of `deadline`: its reply (the caller frees it,
 * freeReplyObject), or nullptr and *err (the connection failed or timed out: drop it; or
 * Redis answered an error). (Shared with sse/redis_cluster.h.) */
redisReply *redis_command(redisContext *c, const std::vector<std::string> &args,
                          Deadline deadline, std::string *err);

} // namespace sse

#endif
