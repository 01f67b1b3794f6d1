/* sse/redis_record.h — what mod_sse writes into Redis and reads back: the SSERedis URL, the
 * stream's key, a published record as the fields of one stream entry, and stream entry ids.
 *
 * Several httpd servers share one bus through one Redis stream per SSERedisPrefix (see
 * sse/redis_link.h for the connections and docs/redis.md for the guarantees). Every accepted
 * publish is one entry of that stream; each server's reader appends the entries, in stream
 * order, to its own shared-memory bus. This header is the format of an entry, so that the
 * writer (any server) and the readers (every server) agree on it.
 *
 * Entry layout (field names are ASCII; every value is binary-safe bytes):
 *   kind      "event", "close" (a DELETE: the channels are closed on every server) or
 *             "update" (a Mercure update, below)
 *   channels  channel names joined by "," (names never hold a comma: validate_channel_name)
 *   only      client ids joined by "," (ids never hold a comma: validate_client_id); absent
 *             when the event is for everyone
 *   except    the same, for the excluded ids
 *   id        the publisher's event id; absent when it gave none (the entry id is then the id)
 *   event     the event type; absent for an untyped "message"
 *   data      the data, verbatim; absent when the event has none (a retry-only publish)
 *   retry     decimal milliseconds; absent when the event has none
 * A Mercure update (kind "update") has no channels, only nor except, and always an id (the
 * hub gives one to every update: the same on every server); instead:
 *   hub       its hub's bus channel, "#mercure:<name>" (mercure_hub_channel()), verbatim (a hub's
 *             name may hold a comma)
 *   topics    each topic followed by "\n" (a topic holds no control character:
 *             validate_mercure_string), so that one empty topic is told from none
 *   private   "1" for a private update; absent for a public one
 * A presence record (kind "presence") is one server's own presence record (SSEPresenceChannel),
 * sent on by its sse-publishd so that the other servers' presence subscribers get it
 * (docs/redis.md, "Presence from every server"). Its fields are the local record's, verbatim:
 *   channels  the presence channel's name (exactly one)
 *   event     "connect", "reconnect" or "disconnect"
 *   data      the record's JSON (presence_data()), verbatim
 * and where it comes from, so that its own server skips it (it already has it):
 *   server    the server's id, "host:lowest Listen port" (as in the cluster figures)
 *   token     the per-start token of that server (two servers of one id stay apart)
 *   time      decimal ms since the epoch: the record's time on its own bus (what the age
 *             rule, presence_too_old(), counts from)
 *   seq       decimal: the record's seq on its own bus, increasing along the entries of one
 *             server and token; a reader skips one not above the last it took from them (an
 *             XADD whose answer timed out is sent again, and Redis may have run both)
 * No id, retry, only or except: the reader gives it the entry id, as to an event without one.
 *
 * Versions. A reader ignores the fields it does not know, and refuses (SSE0705, the entry is
 * skipped) an entry whose kind it does not know. So a field an older reader may safely miss
 * can join an existing kind, and a change an older reader would misread takes a new kind:
 * "update" came that way, after "event" and "close", so a server of the version before it
 * skips Mercure updates (logging each) rather than deliver them as events of no channel;
 * "presence" came after "update", for the same reason (an older reader would deliver another
 * server's records as events, and its own back to itself a second time). An
 * entry of an older version reads as it did.
 *
 * Pure code: no I/O, no global state, no hiredis; any thread.
 */
#ifndef SSE_REDIS_RECORD_H
#define SSE_REDIS_RECORD_H

#include "sse/audience.h"
#include "sse/bus.h"
#include "sse/wire.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sse {

/* Where Redis is: "redis://[[user]:password@]host[:port][/db]" or
 * "unix:/path[?[user=U&]password=P[&db=N]]" (no escapes in either). */
struct RedisUrl {
    std::string host;     /* empty for a Unix socket */
    int port = 6379;
    std::string socket_path; /* set for "unix:" */
    std::string user;     /* empty: the default user (AUTH with the password alone) */
    std::string password; /* empty: no AUTH */
    bool has_password = false;
    int db = 0;           /* SELECT when not 0 */

    /* "redis://host:port/db" or "unix:/path[?db=N]", without the credentials: for log lines. */
    std::string display() const;
};

/* Parses an SSERedis URL. Returns an error sentence (what is wrong and the expected form), or
 * empty and fills *out. */
std::string parse_redis_url(std::string_view text, RedisUrl *out);

/* An SSERedis value as written, for a message about it, with what may carry a password hidden
 * (what is before '@' in redis://, the parameters after '?' in unix:). */
std::string redis_url_for_log(std::string_view text);

/* The stream every server of one SSERedisPrefix writes and reads: "<prefix>stream". */
std::string redis_stream_key(std::string_view prefix);

/* The key beside it that names the stream's epoch: "<prefix>epoch" (sse/redis_link.h). */
std::string redis_epoch_key(std::string_view prefix);

/* A stream entry id "<ms>-<seq>", as numbers; ordered as Redis orders them. */
struct StreamId {
    std::uint64_t ms = 0, seq = 0;
    bool operator<(const StreamId &o) const { return ms != o.ms ? ms < o.ms : seq < o.seq; }
    bool operator==(const StreamId &o) const { return ms == o.ms && seq == o.seq; }
    std::string text() const;
};

/* The time (µs) an entry is appended at: Redis's, the entry id's ms, when it is within
 * kEntryClockSlackMs of `now_us` (this server's clock); else `now_us`: an id given by hand
 * (`XADD k 18446744073709551-0`) or a clock far off must not overflow nor skew the bus. */
constexpr std::int64_t kEntryClockSlackMs = 10000;
std::int64_t entry_time_us(const StreamId &id, std::int64_t now_us);

/* Parses "<ms>-<seq>" (both decimal, no sign, no spaces); false when it is not one. */
bool parse_stream_id(std::string_view text, StreamId *out);

/* One record of the shared bus, as it travels through Redis. */
struct StreamRecord {
    enum class Kind { Event, Close, Update, Presence };
    Kind kind = Kind::Event;
    std::vector<std::string> channels; /* events and closes */
    Audience audience;  /* events only */
    EventFields fields; /* events and updates; fields.id empty: the entry id becomes the id */
    std::string hub;    /* updates only: the hub's bus channel */
    UpdateTopics update; /* updates only */
    /* presence records only (fields.event and fields.data are the record's): */
    std::string server;  /* the id of the server that made it */
    std::string token;   /* that server's start token */
    std::int64_t time_ms = 0; /* its time on that server's bus */
    std::uint64_t seq = 0;    /* its seq on that server's bus */
};

/* The entry's field-value pairs, in the order of the layout above. */
std::vector<std::pair<std::string, std::string>> encode_stream_record(const StreamRecord &r);

/* Reads the fields of an entry back. Returns an error sentence for an entry this version
 * cannot take (unknown kind, no channels, a retry that is not a number; an update without
 * hub, topics or id, with a hub that is no hub's channel, with channels or clients; a
 * presence record without one channel, a presence event type, data, server, token, time or seq,
 * or with an id, a retry or clients); the
 * values are not validated here (the reader checks them as any publish is checked:
 * check_publish(), publish_update()). */
std::string decode_stream_record(const std::vector<std::pair<std::string_view, std::string_view>> &fields,
                                 StreamRecord *out);

} // namespace sse

#endif
