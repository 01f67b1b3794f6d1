#include "sse/redis_link.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <poll.h>
#include <unistd.h>

namespace sse {

namespace {

struct ReplyFree {
    void operator()(redisReply *r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct timeval ms_to_tv(int ms) { return {ms / 1000, (ms % 1000) * 1000}; }

/* What is left of `deadline`, in whole ms; 0 when it has passed (hiredis reads a zero
 * timeout as "none", so 0 must never reach it). */
int ms_left(Deadline deadline)
{
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

Deadline deadline_in(int ms) { return std::chrono::steady_clock::now() + std::chrono::milliseconds(ms); }

/* Redis sends nothing unasked on a connection between commands: an idle connection that is
 * readable was closed by the server (a Redis restarted, or its timeout), and a command on it
 * would fail. */
bool closed_while_idle(const redisContext *c)
{
    struct pollfd p = {c->fd, POLLIN, 0};
    return poll(&p, 1, 0) != 0;
}

/* Sends `args` (binary-safe) without waiting for the answer. */
bool append_command(redisContext *c, const std::vector<std::string> &args)
{
    std::vector<const char *> argv;
    std::vector<std::size_t> lens;
    for (const auto &a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    return redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()) ==
           REDIS_OK;
}

/* redisGetReply() for a blocking context, bounded in all by `deadline`: hiredis's timeout
 * bounds each read, so a large reply that keeps coming (thousands of entries on a slow link)
 * would go on past the deadline, read after read. Past it the context is marked failed
 * (REDIS_ERR_IO, "timed out"): a reply half read leaves it unusable, the caller drops it. */
int get_reply_by(redisContext *c, void **reply, Deadline deadline)
{
    int done = 0;
    do {
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return REDIS_ERR;
    } while (!done);
    for (;;) {
        if (redisGetReplyFromReader(c, reply) != REDIS_OK)
            return REDIS_ERR;
        if (*reply)
            return REDIS_OK;
        const int left = ms_left(deadline);
        if (left == 0) {
            c->err = REDIS_ERR_IO;
            std::snprintf(c->errstr, sizeof c->errstr, "%s", "timed out");
            return REDIS_ERR;
        }
        redisSetTimeout(c, ms_to_tv(left));
        if (redisBufferRead(c) != REDIS_OK)
            return REDIS_ERR;
    }
}

/* Runs one command, its socket bounded by what is left of `deadline`; nullptr and *err when
 * the deadline passed or the connection failed (it must then be dropped), or Redis answered
 * an error (the connection stays usable, *err says so). */
Reply command(redisContext *c, const std::vector<std::string> &args, Deadline deadline,
              std::string *err)
{
    const int left = ms_left(deadline);
    if (left == 0) {
        *err = "no time left for " + args[0]; /* nothing sent: the connection stays usable */
        return nullptr;
    }
    redisSetTimeout(c, ms_to_tv(left));
    void *reply = nullptr;
    if (append_command(c, args))
        get_reply_by(c, &reply, deadline);
    Reply r(static_cast<redisReply *>(reply));
    if (!r) {
        *err = c->errstr[0] ? c->errstr : "the connection failed";
        return nullptr;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *err = std::string("Redis answered: ") + std::string(r->str, r->len);
        return nullptr;
    }
    return r;
}

std::string_view reply_text(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
               ? std::string_view(r->str, r->len)
               : std::string_view();
}

/* The id of one entry of a reply: [id, [field, value, ...]]. */
bool parse_entry_id(const redisReply *e, StreamId *id)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           parse_stream_id(reply_text(e->element[0]), id);
}

/* One entry of an XREAD or XREVRANGE reply. */
StreamEntry parse_entry(const redisReply *e)
{
    StreamEntry out;
    if (!parse_entry_id(e, &out.id)) {
        out.error = "an entry that is not [id, fields]";
        return out;
    }
    const redisReply *f = e->element[1];
    std::vector<std::pair<std::string_view, std::string_view>> fields;
    if (f->type == REDIS_REPLY_ARRAY)
        for (std::size_t i = 0; i + 1 < f->elements; i += 2)
            fields.emplace_back(reply_text(f->element[i]), reply_text(f->element[i + 1]));
    out.error = decode_stream_record(fields, &out.record);
    return out;
}

/* Runs `commands` in one pipeline (one write; Redis runs them back to back), the socket
 * bounded by what is left of `deadline`. Every answer, errors included; empty and *err when
 * the connection failed (it must then be dropped). */
std::vector<Reply> pipeline(redisContext *c, const std::vector<std::vector<std::string>> &commands,
                            Deadline deadline, std::string *err)
{
    std::vector<Reply> out;
    const int left = ms_left(deadline);
    if (left == 0) {
        *err = "no time left for " + commands[0][0];
        return out;
    }
    redisSetTimeout(c, ms_to_tv(left));
    for (const auto &args : commands)
        if (!append_command(c, args)) {
            *err = "cannot queue " + args[0];
            return out;
        }
    for (std::size_t i = 0; i < commands.size(); ++i) {
        void *reply = nullptr;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply) {
            *err = c->errstr[0] ? c->errstr : "the connection failed";
            out.clear();
            return out;
        }
        out.emplace_back(static_cast<redisReply *>(reply));
    }
    return out;
}

/* XINFO STREAM's answer (a flat array of name, value): where the stream's entries start and
 * end, and the newest one XDELed. */
void read_stream_info(const redisReply *r, StreamHistory *h)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return; /* an error: no such stream */
    h->inspected = true;
    for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
        const std::string_view name = reply_text(r->element[i]);
        const redisReply *value = r->element[i + 1];
        if (name == "max-deleted-entry-id")
            parse_stream_id(reply_text(value), &h->max_deleted);
        else if (name == "last-generated-id")
            parse_stream_id(reply_text(value), &h->last_generated);
        else if (name == "first-entry" && value->type == REDIS_REPLY_ARRAY)
            h->has_first = parse_entry_id(value, &h->first);
    }
    /* Both counts, or neither (Redis 6 has no entries-added). */
    bool has_added = false, has_length = false;
    for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
        const std::string_view name = reply_text(r->element[i]);
        const redisReply *value = r->element[i + 1];
        if (value->type != REDIS_REPLY_INTEGER || value->integer < 0)
            continue;
        if (name == "entries-added") {
            h->entries_added = static_cast<std::uint64_t>(value->integer);
            has_added = true;
        } else if (name == "length") {
            h->length = static_cast<std::uint64_t>(value->integer);
            has_length = true;
        }
    }
    h->has_counts = has_added && has_length;
}

} // namespace

HistoryGap find_history_gap(const std::string &known_epoch, const StreamHistory &h,
                            const StreamId &cursor, const StreamId &reported_deleted)
{
    if (!known_epoch.empty() && (!h.has_epoch || h.epoch != known_epoch))
        return HistoryGap::Lost;
    if (!h.inspected || (h.has_counts && h.entries_added == h.length))
        return HistoryGap::None; /* not asked, or nothing was ever removed */
    const bool deleted_unread = cursor < h.max_deleted && reported_deleted < h.max_deleted;
    if (deleted_unread || (h.has_first ? cursor < h.first : cursor < h.last_generated))
        return HistoryGap::Trimmed;
    return HistoryGap::None;
}

bool is_stream_epoch(std::string_view value)
{
    return value.size() == 32 && value.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string new_stream_epoch()
{
    std::random_device rd;
    std::string out;
    char hex[9];
    for (int i = 0; i < 4; ++i) {
        std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(rd()));
        out += hex;
    }
    return out;
}

redisContext *redis_connect(const RedisUrl &url, Deadline deadline, std::string *err)
{
    const int connect_ms = std::min(ms_left(deadline), kConnectTimeoutMs);
    if (connect_ms == 0) {
        *err = "no time left to connect";
        return nullptr;
    }
    redisContext *c = url.socket_path.empty()
                          ? redisConnectWithTimeout(url.host.c_str(), url.port, ms_to_tv(connect_ms))
                          : redisConnectUnixWithTimeout(url.socket_path.c_str(), ms_to_tv(connect_ms));
    if (!c) {
        *err = "cannot allocate a connection";
        return nullptr;
    }
    if (c->err) {
        *err = std::string("cannot connect: ") + c->errstr;
        redisFree(c);
        return nullptr;
    }
    if (url.socket_path.empty())
        redisEnableKeepAlive(c);
    bool ok = true;
    if (url.has_password) {
        std::vector<std::string> auth{"AUTH"};
        if (!url.user.empty())
            auth.push_back(url.user);
        auth.push_back(url.password);
        ok = command(c, auth, deadline, err) != nullptr;
    }
    if (ok && url.db != 0)
        ok = command(c, {"SELECT", std::to_string(url.db)}, deadline, err) != nullptr;
    if (!ok) {
        redisFree(c);
        return nullptr;
    }
    return c;
}

redisReply *redis_command(redisContext *c, const std::vector<std::string> &args,
                          Deadline deadline, std::string *err)
{
    return command(c, args, deadline, err).release();
}

/* ---- RedisWriter ---- */

RedisWriter::~RedisWriter()
{
    for (redisContext *c : idle_)
        redisFree(c);
}

redisContext *RedisWriter::take(Deadline deadline, std::string *err)
{
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const int pid = static_cast<int>(getpid());
        if (pid_ != pid) {
            /* Inherited through fork(): not ours to use (nor to close: the parent's). */
            idle_.clear();
            pid_ = pid;
        }
        while (!idle_.empty()) {
            redisContext *c = idle_.back();
            idle_.pop_back();
            if (!closed_while_idle(c))
                return c;
            redisFree(c);
        }
    }
    return redis_connect(url_, deadline, err);
}

void RedisWriter::give_back(redisContext *c)
{
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(c);
}

RedisWriter::Added RedisWriter::add(const StreamRecord &r)
{
    Added a;
    const Deadline deadline = deadline_in(kPublishBoundMs);
    redisContext *c = take(deadline, &a.error);
    if (!c)
        return a;
    std::vector<std::string> args{"XADD", key_, "MAXLEN", "~", std::to_string(kStreamMaxLen), "*"};
    for (auto &[name, value] : encode_stream_record(r)) {
        args.push_back(std::move(name));
        args.push_back(std::move(value));
    }
    Reply reply = command(c, args, deadline, &a.error);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        a.ok = true;
        a.entry_id = std::string(reply_text(reply.get()));
    } else if (reply) {
        a.error = "XADD did not answer an entry id";
    }
    if (c->err) /* an I/O error or a timeout: the connection is unusable */
        redisFree(c);
    else
        give_back(c);
    return a;
}

bool RedisWriter::entries_back(const StreamId &newest, const std::string &oldest,
                               std::size_t count, int bound_ms, std::vector<StreamEntry> &out,
                               std::string *err)
{
    out.clear();
    const Deadline deadline = deadline_in(bound_ms);
    redisContext *c = take(deadline, err);
    if (!c)
        return false;
    Reply reply = command(c, {"XREVRANGE", key_, newest.text(), oldest, "COUNT",
                              std::to_string(count)}, deadline, err);
    if (c->err) /* an I/O error or a timeout: the connection is unusable */
        redisFree(c);
    else
        give_back(c);
    if (!reply)
        return false;
    if (reply->type != REDIS_REPLY_ARRAY) {
        *err = "XREVRANGE answered something that is not a stream's entries";
        return false;
    }
    for (std::size_t i = 0; i < reply->elements; ++i)
        out.push_back(parse_entry(reply->element[i]));
    return true;
}

/* ---- RedisReader ---- */

bool RedisReader::connect(std::string *err)
{
    disconnect();
    c_ = redis_connect(url_, deadline_in(kConnectTimeoutMs + 2 * kCommandTimeoutMs), err);
    return c_ != nullptr;
}

void RedisReader::disconnect()
{
    if (c_)
        redisFree(c_);
    c_ = nullptr;
}

bool RedisReader::newest_id(StreamId *out, std::string *err)
{
    Reply r = command(c_, {"XREVRANGE", key_, "+", "-", "COUNT", "1"},
                      deadline_in(kCommandTimeoutMs), err);
    if (!r)
        return false;
    *out = StreamId{};
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        StreamEntry e = parse_entry(r->element[0]);
        *out = e.id;
    }
    return true;
}

bool RedisReader::holds_entry(const StreamId &id, bool *held, std::string *err)
{
    Reply r = command(c_, {"XRANGE", key_, id.text(), id.text()}, deadline_in(kCommandTimeoutMs),
                      err);
    if (!r)
        return false;
    *held = r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    return true;
}

bool RedisReader::read_after(const StreamId &after, int block_ms, std::size_t count, bool inspect,
                             StreamHistory *history, std::vector<StreamEntry> &out,
                             std::string *err)
{
    out.clear();
    *history = StreamHistory{};
    std::vector<std::vector<std::string>> commands{{"GET", epoch_key_}};
    if (inspect)
        commands.push_back({"XINFO", "STREAM", key_});
    commands.push_back({"XREAD", "COUNT", std::to_string(count), "BLOCK", std::to_string(block_ms),
                        "STREAMS", key_, after.text()});
    /* The socket's bound must outlast the BLOCK, or every quiet round would be a failure. */
    std::vector<Reply> replies = pipeline(c_, commands, deadline_in(block_ms + kCommandTimeoutMs), err);
    if (replies.empty())
        return false;
    const redisReply *epoch = replies.front().get();
    history->has_epoch = epoch->type == REDIS_REPLY_STRING;
    history->epoch = std::string(reply_text(epoch));
    if (inspect)
        read_stream_info(replies[1].get(), history);
    const redisReply *r = replies.back().get();
    if (r->type == REDIS_REPLY_NIL)
        return true;
    /* [[key, [entry, ...]]] */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2 ||
        r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        *err = r->type == REDIS_REPLY_ERROR ? "Redis answered: " + std::string(r->str, r->len)
                                            : "XREAD answered something that is not a stream's entries";
        return false;
    }
    const redisReply *entries = r->element[0]->element[1];
    for (std::size_t i = 0; i < entries->elements; ++i)
        out.push_back(parse_entry(entries->element[i]));
    return true;
}

bool RedisReader::settle_epoch(const std::string &candidate, std::string *epoch, std::string *err)
{
    std::vector<Reply> replies = pipeline(c_, {{"SET", epoch_key_, candidate, "NX"}, {"GET", epoch_key_}},
                                          deadline_in(kCommandTimeoutMs), err);
    if (replies.empty())
        return false;
    if (replies[1]->type != REDIS_REPLY_STRING) {
        *err = "the epoch key " + epoch_key_ + " could not be set";
        return false;
    }
    *epoch = std::string(reply_text(replies[1].get()));
    return true;
}

} // namespace sse
