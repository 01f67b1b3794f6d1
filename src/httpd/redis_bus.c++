/* SSERedis: the directives, the shared redis state, publishing through Redis and the reader
 * (see the header). */
#include "src/httpd/redis_bus.h"
#include "src/httpd/redis_presence.h"
#include "src/httpd/shared_segment.h"

#include "sse/redis_link.h"
#include "sse/redis_replay.h"

#include "apr_strings.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <new>
#include <pthread.h>
#include <sched.h>
#include <thread>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

constexpr std::uint64_t kRedisStateMagic = 0x5353455244533035ull; /* "SSERDS05" */
constexpr std::int64_t kRefuseAtOnceMs = 1000; /* after a refusal, during an outage */
constexpr int kReadBlockMs = 1000;
constexpr std::size_t kReadCount = 256;
constexpr int kBackoffFirstMs = 100;
constexpr int kBackoffMaxMs = 2000;
/* A read that took this much longer than its BLOCK, or a pause this long between reads, was
 * the reader held up (the daemon stopped, the machine stalled): entries may have been
 * trimmed meanwhile, so the next read checks (held_up()). */
constexpr int kHeldUpMs = 250;

/* The shared segment. The cursor has two slots: the reader writes the one not in use, then
 * publishes it with one store of `current`, so a reader killed mid-write leaves the old one. */
struct RedisShared {
    std::uint64_t magic;
    std::uint64_t source_hash;               /* of the URL and the stream key */
    std::atomic<std::uint32_t> has_cursor;   /* 0: the reader starts at the stream's end */
    std::atomic<std::uint32_t> current;
    StreamId cursor[2];
    std::atomic<std::uint32_t> writers_down; /* 1 from a refused publish to an accepted one */
    std::atomic<std::uint32_t> reader_down;  /* 1 from a failed read to a working one */
    std::atomic<std::int64_t> last_refusal_ms; /* CLOCK_MONOTONIC (one clock for all processes) */
    std::atomic<std::uint32_t> probing;        /* 1 while one publish tries Redis in an outage */
    /* The reader's, across restarts of the daemon: */
    std::atomic<std::int64_t> last_read_ms;    /* wall clock of the last read that worked; 0: none */
    /* Unused since gaps are Gap records on the bus (sse/bus.h); kept so that this layout
     * (SSERDS03), and with it the cursor, survives an upgrade. */
    std::atomic<std::uint64_t> unused_gap_seq;
    std::atomic<std::uint32_t> epoch_len;      /* 0: no epoch adopted yet */
    char epoch[64];                            /* the stream's epoch (written by the reader only) */
    /* Odd while the reader appends an entry and moves the cursor past it: a resume reads the
     * cursor and takes its bus position between two equal even values (take_boundary()), so
     * the bus from that position holds exactly the entries after that cursor. */
    std::atomic<std::uint32_t> applying;
    std::atomic<std::int64_t> last_lookup_failure_ms; /* CLOCK_MONOTONIC: a resume's look in
                                                       * Redis failed; 0: never */
    /* The presence forwarder's (src/httpd/redis_presence.h), across restarts of the daemon:
     * the bus seq from which this server's presence records are still to be sent on; 0: not
     * set yet (open_redis() sets it, before any child exists). */
    std::atomic<std::uint64_t> presence_next_seq;

    bool load_cursor(StreamId *out) const
    {
        if (!has_cursor.load(std::memory_order_acquire))
            return false;
        *out = cursor[current.load(std::memory_order_acquire) & 1];
        return true;
    }
    void store_cursor(const StreamId &id)
    {
        const std::uint32_t next = (current.load(std::memory_order_relaxed) + 1) & 1;
        cursor[next] = id;
        current.store(next, std::memory_order_release);
        has_cursor.store(1, std::memory_order_release);
    }
};

} // namespace

class RedisBus {
public:
    RedisBus(const RedisUrl &url, std::string key, std::string epoch_key, RedisShared *shared)
        : key(std::move(key)), epoch_key(std::move(epoch_key)), writer(url, this->key),
          shared(shared) {}
    std::string key, epoch_key;
    RedisWriter writer;
    RedisShared *shared;
};

namespace {

apr_status_t destroy_redis_bus(void *data)
{
    static_cast<RedisBus *>(data)->~RedisBus();
    return APR_SUCCESS;
}

apr_status_t open_redis_shared(server_rec *s, std::uint64_t source_hash, RedisShared **out)
{
    SegmentSpec spec{"mod_sse_redis_segment", "redis state", "SSERedis", sizeof(RedisShared),
                     [&](void *base, std::size_t size, std::string *err) {
                         auto *r = static_cast<RedisShared *>(base);
                         if (size < sizeof(RedisShared) || r->magic != kRedisStateMagic) {
                             *err = "not this module's redis state";
                             return false;
                         }
                         *out = r;
                         return true;
                     },
                     [](void *base, std::size_t) {
                         auto *r = new (base) RedisShared();
                         r->magic = kRedisStateMagic;
                         return std::string();
                     }};
    OpenedSegment opened;
    if (apr_status_t rv = open_segment(s, spec, &opened); rv != APR_SUCCESS)
        return rv;
    if ((*out)->source_hash != source_hash) {
        /* Another Redis or prefix than the last generation's: its cursor means nothing. */
        (*out)->has_cursor.store(0);
        (*out)->epoch_len.store(0);
        (*out)->source_hash = source_hash;
    }
    return APR_SUCCESS;
}

std::int64_t monotonic_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now().time_since_epoch()).count();
}

/* During an outage, a publish less than kRefuseAtOnceMs after the last refusal is refused at
 * once, unless no other publish is trying Redis: then it tries (*probe: it must clear
 * `probing` when done). So a stopped Redis holds one worker (or sse-publishd's thread) at a
 * time, not every publish for the full bound. A probe whose process died leaves `probing`
 * set: the publishes after the window try again. */
bool refuse_at_once(RedisShared *sh, bool *probe)
{
    *probe = false;
    if (!sh->writers_down.load(std::memory_order_acquire) ||
        monotonic_ms() - sh->last_refusal_ms.load(std::memory_order_relaxed) >= kRefuseAtOnceMs)
        return false;
    *probe = sh->probing.exchange(1) == 0;
    return !*probe;
}

/* Notes a refused publish; logs the outage once (the first process to notice it). */
void note_writer_failure(RedisBus *rb, const server_rec *s, const std::string &why)
{
    rb->shared->last_refusal_ms.store(monotonic_ms(), std::memory_order_relaxed);
    if (rb->shared->writers_down.exchange(1) == 0)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "SSE0701: Redis at %s did not accept a publish (%s); publishes are "
                     "refused with 503 until it does",
                     rb->writer.url().display().c_str(), why.c_str());
}

void note_writer_success(RedisBus *rb, const server_rec *s)
{
    if (rb->shared->writers_down.load(std::memory_order_relaxed) &&
        rb->shared->writers_down.exchange(0) == 1)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "SSE0702: Redis at %s accepts publishes again",
                     rb->writer.url().display().c_str());
}

PublishAttempt add_to_stream(RedisBus *rb, const server_rec *s, const StreamRecord &rec,
                             PublishAttempt a)
{
    bool probe = false;
    if (refuse_at_once(rb->shared, &probe)) {
        a.outcome = PublishAttempt::Outcome::Unavailable;
        a.error = "Redis did not accept a publish less than a second ago; try again later";
        return a;
    }
    RedisWriter::Added added = rb->writer.add(rec);
    if (!added.ok)
        note_writer_failure(rb, s, added.error);
    else
        note_writer_success(rb, s);
    if (probe) /* after the note: the next publishes see this refusal's time */
        rb->shared->probing.store(0, std::memory_order_release);
    if (!added.ok) {
        a.outcome = PublishAttempt::Outcome::Unavailable;
        a.error = "Redis did not accept the event (" + added.error + "); try again later";
        return a;
    }
    a.outcome = PublishAttempt::Outcome::Published;
    a.result.id = rec.fields.id.empty() ? added.entry_id : rec.fields.id;
    return a;
}

/* A server that never read the stream starts at its newest entry, taken in the parent before
 * any child can publish (a child's XADD must land after it, or this server would miss its own
 * publish). Redis unreachable then: kStartBackMs before the local clock, so that the entries
 * published while it comes back are read (a few older ones may be delivered too). */
constexpr std::uint64_t kStartBackMs = 5000;

void set_start_cursor(RedisBus *rb, const server_rec *s, StreamId *out)
{
    RedisReader probe(rb->writer.url(), rb->key, rb->epoch_key);
    std::string err;
    if (!probe.connect(&err) || !probe.newest_id(out, &err)) {
        const std::uint64_t now_ms = static_cast<std::uint64_t>(now_us() / 1000);
        *out = StreamId{now_ms > kStartBackMs ? now_ms - kStartBackMs : 0, 0};
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "SSE0709: Redis at %s cannot be reached at the start (%s); reading the "
                     "stream from entry %s (%llu s before this server's clock)",
                     rb->writer.url().display().c_str(), err.c_str(), out->text().c_str(),
                     static_cast<unsigned long long>(kStartBackMs / 1000));
    }
    rb->shared->store_cursor(*out);
}

/* ---- the reader ---- */

class StreamFollower {
public:
    StreamFollower(server_rec *s, ModuleState *state, const volatile sig_atomic_t *stop)
        : s_(s), state_(state), rb_(state->redis), stop_(stop),
          reader_(rb_->writer.url(), rb_->key, rb_->epoch_key), presence_(s, state) {}

    void run()
    {
        int backoff = kBackoffFirstMs;
        std::vector<StreamEntry> entries;
        for (;;) {
            std::string err;
            StreamHistory history;
            bool lost = false;
            const auto began = std::chrono::steady_clock::now();
            inspect_ = inspect_ || held_up(last_read_end_, began);
            if (!(reader_.connected() || start(&err)) ||
                !reader_.read_after(cursor_, kReadBlockMs, kReadCount, inspect_, &history, entries,
                                    &err) ||
                !follow_history(history, &lost, &err)) {
                reader_.disconnect();
                note_down(err);
                usleep(static_cast<useconds_t>(backoff) * 1000);
                backoff = std::min(backoff * 2, kBackoffMaxMs);
                continue;
            }
            backoff = kBackoffFirstMs;
            note_up();
            rb_->shared->last_read_ms.store(now_us() / 1000, std::memory_order_relaxed);
            if (lost)
                entries.clear(); /* read again from the cursor follow_history() set */
            last_read_end_ = std::chrono::steady_clock::now();
            inspect_ = entries.size() == kReadCount || held_up(began, last_read_end_);
            for (const StreamEntry &e : entries) {
                if (*stop_)
                    return; /* the daemon is ending: the next one goes on from the cursor */
                rb_->shared->applying.fetch_add(1); /* odd: see RedisShared */
                apply(e);
                cursor_ = e.id;
                rb_->shared->store_cursor(cursor_);
                rb_->shared->applying.fetch_add(1);
            }
        }
    }

private:
    /* Connects, and takes the cursor (set in post_config before any child could publish). */
    bool start(std::string *err)
    {
        if (!reader_.connect(err))
            return false;
        /* A reader killed between its two steps left the count odd: even again. */
        if (rb_->shared->applying.load() & 1)
            rb_->shared->applying.fetch_add(1);
        if (!rb_->shared->load_cursor(&cursor_))
            set_start_cursor(rb_, s_, &cursor_);
        inspect_ = true; /* entries may have been trimmed while this reader was away */
        return true;
    }

    /* Whether this thread was held up between `from` and `to` (stopped, or the machine
     * stalled): longer than a read's BLOCK and then some. */
    static bool held_up(std::chrono::steady_clock::time_point from,
                        std::chrono::steady_clock::time_point to)
    {
        return to - from > std::chrono::milliseconds(kReadBlockMs + kHeldUpMs);
    }

    std::string known_epoch() const
    {
        const std::uint32_t n = rb_->shared->epoch_len.load(std::memory_order_acquire);
        return std::string(rb_->shared->epoch, std::min<std::size_t>(n, sizeof rb_->shared->epoch));
    }

    /* Acts on what the read said of the stream's history (sse/redis_link.h): adopts the epoch
     * (setting it when absent), and after a gap marks the bus (resumes from before get
     * sse-missed). Another epoch with the cursor's entry still in the stream: only the epoch
     * key went (deleted, or expired): the stream is intact, read on. Else the stream was lost:
     * it is read again from its start (*lost: the read's entries are dropped). False (*err)
     * when the epoch cannot be settled or the stream not asked. */
    bool follow_history(const StreamHistory &read, bool *lost, std::string *err)
    {
        const std::string known = known_epoch();
        const StreamHistory h = trusted_epoch(read, known);
        const HistoryGap gap = find_history_gap(known, h, cursor_, reported_deleted_);
        if (gap == HistoryGap::Trimmed) {
            mark_gap();
            reported_deleted_ = std::max(reported_deleted_, h.max_deleted);
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                         "SSE0711: entries of %s after %s were trimmed before this server read "
                         "them (the oldest left: %s); clients resuming from before get "
                         "sse-missed", rb_->key.c_str(), cursor_.text().c_str(),
                         h.has_first ? h.first.text().c_str() : "none");
            if (!h.has_first) { /* none left: the next entry comes after the last one added */
                cursor_ = h.last_generated;
                rb_->shared->store_cursor(cursor_);
            }
        }
        if (h.has_epoch && h.epoch == known)
            return true;
        std::string epoch = h.epoch;
        if (!h.has_epoch && !reader_.settle_epoch(new_stream_epoch(), &epoch, err))
            return false;
        if (gap != HistoryGap::Lost) {
            adopt_epoch(epoch);
            return true;
        }
        bool intact = false;
        if (!reader_.holds_entry(cursor_, &intact, err))
            return false;
        if (intact) {
            adopt_epoch(epoch);
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                         "SSE0712: the epoch key of %s in Redis at %s was replaced, but the "
                         "stream still holds entry %s: reading on from it, nothing missed",
                         rb_->key.c_str(), rb_->writer.url().display().c_str(),
                         cursor_.text().c_str());
            return true;
        }
        /* The gap and the cursor first, the epoch last: a reader killed in between finds the
         * old epoch, and marks the gap again rather than not at all. */
        mark_gap();
        const StreamId was = cursor_;
        cursor_ = StreamId{};
        rb_->shared->store_cursor(cursor_);
        adopt_epoch(epoch);
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                     "SSE0710: Redis at %s lost the history of %s (its epoch changed: restarted "
                     "without its data, or emptied); reading the new stream after %s (was %s); "
                     "clients resuming from before get sse-missed",
                     rb_->writer.url().display().c_str(), rb_->key.c_str(),
                     cursor_.text().c_str(), was.text().c_str());
        *lost = true;
        return true;
    }

    /* `read` with an epoch key no server wrote (another application's value under the same
     * key: any length, or empty) taken as the known epoch: loss detection is off while the
     * key holds it (SSE0713, once), rather than every read finding "another epoch", marking a
     * gap and dropping its entries. A well-formed value is trusted again. */
    StreamHistory trusted_epoch(const StreamHistory &read, const std::string &known)
    {
        if (!read.has_epoch || is_stream_epoch(read.epoch)) {
            foreign_epoch_logged_ = false;
            return read;
        }
        if (!foreign_epoch_logged_)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                         "SSE0713: the epoch key %s in Redis at %s holds a value no server "
                         "wrote (%" APR_SIZE_T_FMT " bytes, not 32 hex digits): loss of the stream's history "
                         "is not detected until the key is deleted (a server then sets it)",
                         rb_->epoch_key.c_str(), rb_->writer.url().display().c_str(),
                         read.epoch.size());
        foreign_epoch_logged_ = true;
        StreamHistory h = read;
        h.has_epoch = !known.empty();
        h.epoch = known;
        return h;
    }

    void adopt_epoch(const std::string &epoch)
    {
        const std::size_t n = std::min(epoch.size(), sizeof rb_->shared->epoch);
        rb_->shared->epoch_len.store(0, std::memory_order_release);
        std::memcpy(rb_->shared->epoch, epoch.data(), n);
        rb_->shared->epoch_len.store(static_cast<std::uint32_t>(n), std::memory_order_release);
    }

    /* Everything on the bus from now on comes after the gap: its record tells the open
     * streams, and resumes from before it. */
    void mark_gap() { sse::mark_gap(state_->bus, now_us()); }

    /* A read worked: the end of an outage, if there was one. */
    void note_up()
    {
        if (rb_->shared->reader_down.load(std::memory_order_relaxed) &&
            rb_->shared->reader_down.exchange(0) == 1)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s_,
                         "SSE0704: reading Redis at %s again, after entry %s",
                         rb_->writer.url().display().c_str(), cursor_.text().c_str());
    }

    void note_down(const std::string &why)
    {
        if (rb_->shared->reader_down.exchange(1) == 0)
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                         "SSE0703: lost Redis at %s (%s): events published on other servers "
                         "wait in Redis; reconnecting every %d s at most",
                         rb_->writer.url().display().c_str(), why.c_str(), kBackoffMaxMs / 1000);
    }

    /* One entry onto the bus at Redis's time: an event, a close or a Mercure update through
     * apply_stream_entry() (the replay's routine too: sse/redis_replay.h), another server's
     * presence record through RemotePresence (this reader's alone: a replay skips them). An
     * entry it cannot append (one no publish could have made, or too large for this server's
     * bus: another server's SSEBusSize is larger) is skipped, logged and marked as a gap: it
     * may have been an event for the streams here. */
    void apply(const StreamEntry &e)
    {
        const std::int64_t time_us = entry_time_us(e.id, now_us());
        std::string error;
        if (e.error.empty() && e.record.kind == StreamRecord::Kind::Presence)
            error = presence_.apply(e, time_us);
        else
            error = apply_stream_entry(state_->bus, &state_->registry, e, time_us);
        if (error.empty())
            return;
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                     "SSE0705: skipped Redis entry %s of %s: %s; open streams and resumes "
                     "from before it get sse-missed", e.id.text().c_str(), rb_->key.c_str(),
                     error.c_str());
        mark_gap();
    }

    server_rec *s_;
    ModuleState *state_;
    RedisBus *rb_;
    const volatile sig_atomic_t *stop_;
    RedisReader reader_;
    RemotePresence presence_;
    StreamId cursor_;
    bool inspect_ = true;             /* the next read asks XINFO STREAM too */
    StreamId reported_deleted_;       /* the newest XDELed entry already reported (SSE0711) */
    bool foreign_epoch_logged_ = false; /* SSE0713 said for the value the key holds now */
    std::chrono::steady_clock::time_point last_read_end_ = std::chrono::steady_clock::now();
};

} // namespace

const char *cmd_redis(cmd_parms *cmd, void *, const char *url)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    auto *parsed = static_cast<RedisUrl *>(apr_palloc(cmd->pool, sizeof(RedisUrl)));
    new (parsed) RedisUrl();
    apr_pool_cleanup_register(cmd->pool, parsed, [](void *p) -> apr_status_t {
        static_cast<RedisUrl *>(p)->~RedisUrl();
        return APR_SUCCESS;
    }, apr_pool_cleanup_null);
    std::string err = parse_redis_url(url, parsed);
    if (!err.empty())
        return apr_psprintf(cmd->pool, "SSERedis: \"%s\": %s", redis_url_for_log(url).c_str(),
                            err.c_str());
    server_config(cmd->server)->redis_url = parsed;
    return nullptr;
}

const char *cmd_redis_prefix(cmd_parms *cmd, void *, const char *prefix)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    if (!*prefix || strlen(prefix) > 200)
        return "SSERedisPrefix: the prefix must be 1 to 200 bytes";
    server_config(cmd->server)->redis_prefix = prefix;
    return nullptr;
}

apr_status_t open_redis(apr_pool_t *pconf, server_rec *s, const ServerConfig *conf,
                        ModuleState *state)
{
    const char *prefix = conf->redis_prefix ? conf->redis_prefix : "sse:";
    const std::string key = redis_stream_key(prefix);
    RedisShared *shared = nullptr;
    /* Which stream the kept cursor belongs to (std::hash: the same within one build, and a
     * build that hashes differently only makes the reader start again at the stream's end). */
    const std::uint64_t source = std::hash<std::string>()(conf->redis_url->display() + "\n" + key);
    if (apr_status_t rv = open_redis_shared(s, source, &shared); rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "SSE0707: cannot create shared memory for SSERedis's state");
        return rv;
    }
    void *mem = apr_palloc(pconf, sizeof(RedisBus));
    state->redis = new (mem) RedisBus(*conf->redis_url, key, redis_epoch_key(prefix), shared);
    apr_pool_cleanup_register(pconf, state->redis, destroy_redis_bus, apr_pool_cleanup_null);
    StreamId start;
    if (!shared->load_cursor(&start))
        set_start_cursor(state->redis, s, &start);
    std::uint64_t unset = 0; /* the presence records to send on start with the next one */
    shared->presence_next_seq.compare_exchange_strong(unset, state->bus.stats().next_seq);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "SSE0700: servers joined through Redis at %s, "
                 "stream %s", conf->redis_url->display().c_str(), key.c_str());
    return APR_SUCCESS;
}

PublishAttempt submit_event(ModuleState *state, const server_rec *s,
                            const std::vector<std::string> &channels, const EventFields &ev,
                            const Audience &audience)
{
    if (!state->redis)
        return publish_event(state->bus, &state->registry, channels, ev, audience, now_us());
    PublishAttempt a = check_publish_fits(state->bus, channels, ev, audience);
    if (a.outcome != PublishAttempt::Outcome::Published)
        return a;
    StreamRecord rec;
    rec.channels = channels;
    rec.fields = ev;
    rec.audience = audience;
    return add_to_stream(state->redis, s, rec, std::move(a));
}

PublishAttempt submit_update(ModuleState *state, const server_rec *s, const std::string &channel,
                             const UpdateTopics &topics, const EventFields &ev)
{
    if (!state->redis)
        return publish_update(state->bus, &state->registry, channel, topics, ev, now_us());
    PublishAttempt a = check_update_fits(state->bus, channel, topics, ev);
    if (a.outcome != PublishAttempt::Outcome::Published)
        return a;
    StreamRecord rec;
    rec.kind = StreamRecord::Kind::Update;
    rec.hub = channel;
    rec.update = topics;
    rec.fields = ev;
    return add_to_stream(state->redis, s, rec, std::move(a));
}

PublishAttempt submit_close(ModuleState *state, const server_rec *s,
                            const std::vector<std::string> &channels)
{
    StreamRecord rec;
    rec.kind = StreamRecord::Kind::Close;
    rec.channels = channels;
    return add_to_stream(state->redis, s, rec, PublishAttempt());
}

bool redis_status(const ModuleState *state, RedisStatus *out)
{
    const RedisBus *rb = state->redis;
    if (!rb)
        return false;
    out->url = rb->writer.url().display();
    out->stream = rb->key;
    out->publishes_refused = rb->shared->writers_down.load() != 0;
    out->reader_lost = rb->shared->reader_down.load() != 0;
    StreamId cursor;
    out->last_entry = rb->shared->load_cursor(&cursor) ? cursor.text() : std::string();
    out->last_read_ms = rb->shared->last_read_ms.load(std::memory_order_relaxed);
    return true;
}

RedisWriter::Added add_presence_record(ModuleState *state, const StreamRecord &rec)
{
    return state->redis->writer.add(rec);
}

std::uint64_t presence_next_seq(const ModuleState *state)
{
    return state->redis->shared->presence_next_seq.load(std::memory_order_acquire);
}

void note_presence_next_seq(ModuleState *state, std::uint64_t seq)
{
    state->redis->shared->presence_next_seq.store(seq, std::memory_order_release);
}


namespace {

/* Redis is known to be away: the reader lost it, or a publish or a resume's look found it
 * so less than kRefuseAtOnceMs ago. A resume then does not wait for it. */
bool redis_known_away(const RedisShared *sh)
{
    const std::int64_t now = monotonic_ms();
    return sh->reader_down.load() ||
           (sh->writers_down.load() && now - sh->last_refusal_ms.load() < kRefuseAtOnceMs) ||
           now - sh->last_lookup_failure_ms.load() < kRefuseAtOnceMs;
}

/* The reader's cursor, and `live` at the bus position that follows its entry: taken between
 * two equal even counts of RedisShared::applying, so no entry was being appended meanwhile.
 * False when the reader stays inside an append (stopped there, or it died and no new one
 * started yet). */
bool take_boundary(RedisShared *sh, BusReader *live, StreamId *cursor)
{
    /* An append takes microseconds: odd for 1,000 yields, or for 50 ms (a sched_yield on a
     * loaded machine may give the CPU away for a whole time slice), the reader is stopped
     * there. Both bounds count against the resume's kResumeBoundMs. */
    constexpr int kTries = 1000;
    constexpr std::int64_t kMaxWaitMs = 50;
    const std::int64_t until = monotonic_ms() + kMaxWaitMs;
    for (int i = 0; i < kTries && monotonic_ms() < until; ++i) {
        const std::uint32_t before = sh->applying.load();
        if (!(before & 1)) {
            if (!sh->load_cursor(cursor))
                return false;
            live->start_live();
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (sh->applying.load() == before)
                return true;
        }
        sched_yield();
    }
    return false;
}

/* How far back a resume looks: 1,000 entries, or 4 times SSEHistory's count, at most
 * 10,000. */
std::size_t look_back_count(const HistoryLimits &history)
{
    return std::clamp<std::uint64_t>(4 * history.count, 1000, 10000);
}

/* The entries from `cursor` back to the client's id (an entry id), or a look back for a
 * publisher's id, newest first. An entry id after the cursor (the client read on another
 * server what this server's reader has not read yet) finds nothing. */
bool look_back(RedisBus *rb, const std::string &resume_id, const StreamId &cursor,
               const HistoryLimits &history, int bound_ms, std::vector<StreamEntry> &out,
               std::string *err)
{
    StreamId id;
    const bool entry_id = parse_stream_id(resume_id, &id);
    if (entry_id && cursor < id) {
        out.clear();
        return true;
    }
    return rb->writer.entries_back(cursor, entry_id ? resume_id : "-",
                                   look_back_count(history), bound_ms, out, err);
}

void log_not_from_redis(const request_rec *r, const std::string &resume_id,
                        const std::string &why)
{
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "SSE0731: resume after \"%s\" not served from Redis (%s): sse-missed, then "
                  "what this server's bus holds", resume_id.c_str(), why.c_str());
}

} // namespace

std::unique_ptr<StreamReplay> resume_with_redis(ModuleState *state, const request_rec *r,
                                                const StreamRequest &req, BusReader *reader,
                                                bool *found)
{
    const std::int64_t began = now_us();
    /* False too when a gap or SSEHistory lies after the id: Redis is asked (see the header). */
    *found = reader->start_after(req.resume_id, state->history, began);
    RedisBus *rb = state->redis;
    if (*found || !rb)
        return nullptr;
    if (redis_known_away(rb->shared)) {
        log_not_from_redis(r, req.resume_id, "Redis is known to be away");
        return nullptr;
    }
    BusReader live = *reader;
    StreamId cursor;
    if (!take_boundary(rb->shared, &live, &cursor)) {
        log_not_from_redis(r, req.resume_id, "the reader is not reading");
        return nullptr;
    }
    std::vector<StreamEntry> entries;
    std::string err;
    /* What is left of kResumeBoundMs after take_boundary(). */
    const int bound_ms = std::max<int>(
        1, kResumeBoundMs - static_cast<int>((now_us() - began) / 1000));
    if (!look_back(rb, req.resume_id, cursor, state->history, bound_ms, entries, &err)) {
        rb->shared->last_lookup_failure_ms.store(monotonic_ms());
        log_not_from_redis(r, req.resume_id, err);
        return nullptr;
    }
    std::reverse(entries.begin(), entries.end());
    auto replay = std::make_unique<StreamReplay>(replay_from_entries(
        entries, req.channels, req.client_id, req.resume_id, state->history, now_us()));
    if (!replay->found) {
        log_not_from_redis(r, req.resume_id, "not in the " + std::to_string(entries.size()) +
                                                 " entries read back from " + cursor.text());
        return nullptr;
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "SSE0730: resume after \"%s\" served from Redis: %" APR_SIZE_T_FMT
                  " entries up to %s, then this server's bus (%" APR_INT64_T_FMT " us)",
                  req.resume_id.c_str(), entries.size(), cursor.text().c_str(),
                  static_cast<apr_int64_t>(now_us() - began));
    *reader = std::move(live);
    *found = replay->complete;
    return replay;
}

void start_daemon_thread(server_rec *s, const char *failed, std::function<void()> body)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    std::thread([s, failed, body = std::move(body)] {
        guarded(body, [&](const char *why) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "%s: %s", failed, why);
            _exit(1);
        });
    }).detach();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void start_redis_reader(server_rec *s, ModuleState *state, const volatile sig_atomic_t *stop)
{
    /* Without its reader the server would miss every event: on a failure the daemon exits
     * and the parent starts a new one (SSE0402), which resumes from the cursor. */
    start_daemon_thread(s, "SSE0706: the Redis reader failed",
                        [s, state, stop] { StreamFollower(s, state, stop).run(); });
}

} // namespace sse::httpd
