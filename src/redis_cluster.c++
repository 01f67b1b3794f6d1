#include "sse/redis_cluster.h"

#include <hiredis/hiredis.h>

#include <memory>

namespace sse {

namespace {

struct ReplyFree {
    void operator()(redisReply *r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct ContextFree {
    void operator()(redisContext *c) const { redisFree(c); }
};

Deadline in_ms(int ms) { return std::chrono::steady_clock::now() + std::chrono::milliseconds(ms); }

} // namespace

ClusterReporter::~ClusterReporter()
{
    if (c_)
        redisFree(c_);
}

bool ClusterReporter::run(const std::vector<std::string> &args, Deadline deadline,
                          std::string *err, std::string *reply)
{
    if (!c_ && !(c_ = redis_connect(url_, deadline, err)))
        return false;
    Reply r(redis_command(c_, args, deadline, err));
    if (!r) {
        redisFree(c_);
        c_ = nullptr;
        return false;
    }
    if (reply)
        *reply = r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : std::string();
    return true;
}

bool ClusterReporter::report(const ServerFigures &f, std::string *clash, std::string *err)
{
    const Deadline deadline = in_ms(kPublishBoundMs);
    const std::string index = cluster_index_key(prefix_);
    std::string before;
    if (!run({"GET", cluster_server_key(prefix_, server_)}, deadline, err, &before))
        return false;
    ServerFigures there;
    clash->clear();
    if (!first_report_ms_)
        first_report_ms_ = f.time_ms;
    /* A report from before this reporter's first (this server's own, before a stop and start)
     * is no clash; another server's keeps coming. */
    if (!before.empty() && decode_figures(before, &there).empty() && there.token != f.token &&
        there.time_ms >= first_report_ms_)
        *clash = there.token;
    return run({"SET", cluster_server_key(prefix_, server_), encode_figures(f), "PX",
                std::to_string(kClusterReportTtlMs)}, deadline, err) &&
           run({"ZADD", index, std::to_string(f.time_ms), server_}, deadline, err);
}

bool read_cluster_reports(const RedisUrl &url, const std::string &prefix,
                          std::vector<ServerFigures> *out, std::string *err)
{
    const Deadline deadline = in_ms(kClusterReadBoundMs);
    std::unique_ptr<redisContext, ContextFree> c(redis_connect(url, deadline, err));
    if (!c)
        return false;
    Reply names(redis_command(c.get(), {"ZRANGE", cluster_index_key(prefix), "0", "-1"},
                              deadline, err));
    if (!names)
        return false;
    std::vector<std::string> ids; /* ids[i] is the server of mget[i + 1] */
    std::vector<std::string> mget{"MGET"};
    for (std::size_t i = 0; names->type == REDIS_REPLY_ARRAY && i < names->elements; ++i)
        if (names->element[i]->type == REDIS_REPLY_STRING) {
            ids.emplace_back(names->element[i]->str, names->element[i]->len);
            mget.push_back(cluster_server_key(prefix, ids.back()));
        }
    out->clear();
    if (mget.size() == 1)
        return true;
    Reply reports(redis_command(c.get(), mget, deadline, err));
    if (!reports)
        return false;
    /* A server whose report expired is dead (or cut from Redis: its next report adds it
     * back): it leaves the index here, by Redis's expiry, whatever the servers' clocks. */
    std::vector<std::string> zrem{"ZREM", cluster_index_key(prefix)};
    for (std::size_t i = 0; reports->type == REDIS_REPLY_ARRAY && i < reports->elements; ++i) {
        const redisReply *r = reports->element[i];
        ServerFigures f;
        if (r->type == REDIS_REPLY_NIL && i < ids.size())
            zrem.push_back(ids[i]);
        else if (r->type == REDIS_REPLY_STRING &&
                 decode_figures(std::string_view(r->str, r->len), &f).empty())
            out->push_back(std::move(f));
    }
    std::string ignored; /* the figures are read: a failed clean-up is retried next read */
    if (zrem.size() > 2)
        Reply removed(redis_command(c.get(), zrem, deadline, &ignored));
    return true;
}

} // namespace sse
