/* Cluster-wide figures with SSERedis (see the header). */
#include "src/httpd/redis_cluster_state.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/subscription.h"

#include "sse/redis_cluster.h"

#include "ap_listen.h"

#include "apr_strings.h"

#include <chrono>
#include <mutex>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

std::string redis_prefix(const server_rec *s)
{
    const ServerConfig *conf = server_config(const_cast<server_rec *>(s));
    return conf->redis_prefix ? conf->redis_prefix : "sse:";
}

const RedisUrl &redis_url(const server_rec *s)
{
    return *server_config(const_cast<server_rec *>(s))->redis_url;
}

/* This server's figures, now; its channels only when `with_channels`. */
ServerFigures local_figures(ModuleState *state, const server_rec *s, bool with_channels)
{
    ServerFigures f;
    f.server = cluster_server_id(s);
    f.token = cluster_start_token(const_cast<server_rec *>(s));
    f.time_ms = now_us() / 1000;
    RegistryTotals t = state->registry.totals();
    f.subscribers = t.subscribers;
    f.socket_clients = t.socket_clients;
    if (!with_channels)
        return f;
    for (const ChannelInfo &c : state->registry.channels())
        if (c.subscribers)
            f.channels[c.name] = c.subscribers;
    return f;
}

class Reporter {
public:
    Reporter(server_rec *s, ModuleState *state, const volatile sig_atomic_t *stop)
        : s_(s), state_(state), stop_(stop),
          reporter_(redis_url(s), redis_prefix(s), cluster_server_id(s)) {}

    void run()
    {
        for (;;) {
            /* The streams of dead children are freed first, as sse-status does, so that
             * the report counts open streams only. */
            announce_gone(state_, state_->registry.reap_dead(), "process-died");
            std::string err, clash;
            if (reporter_.report(local_figures(state_, s_, true), &clash, &err)) {
                note_up();
                note_clash(clash);
            } else {
                note_down(err);
            }
            for (int waited = 0; waited < kClusterReportEveryMs; waited += kStepMs) {
                if (*stop_)
                    return;
                usleep(kStepMs * 1000);
            }
        }
    }

private:
    static constexpr int kStepMs = 100;

    void note_down(const std::string &why)
    {
        if (!down_)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s_,
                         "SSE0720: cannot report this server's figures to Redis at %s (%s); "
                         "the other servers leave it out of their counts %d s after its last "
                         "report",
                         redis_url(s_).display().c_str(), why.c_str(),
                         kClusterReportTtlMs / 1000);
        down_ = true;
    }

    void note_up()
    {
        if (down_)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s_,
                         "SSE0721: reporting this server's figures to Redis at %s again",
                         redis_url(s_).display().c_str());
        down_ = false;
    }

    /* Once while it lasts: two servers of one id overwrite each other at every report. */
    void note_clash(const std::string &other_token)
    {
        if (!other_token.empty() && !clashing_)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                         "SSE0724: another server reports to Redis at %s under this server's "
                         "id \"%s\" (its start token %s, this one's %s): each overwrites the "
                         "other's figures; give them different host names or lowest Listen "
                         "ports",
                         redis_url(s_).display().c_str(), cluster_server_id(s_).c_str(),
                         other_token.c_str(), cluster_start_token(s_).c_str());
        clashing_ = !other_token.empty();
    }

    server_rec *s_;
    ModuleState *state_;
    const volatile sig_atomic_t *stop_;
    ClusterReporter reporter_;
    bool down_ = false;
    bool clashing_ = false;
};

struct ClusterRead {
    bool available = false;
    std::string error;
    std::vector<ServerFigures> servers; /* this server (live) and the others' reports */
};

/* The other servers' reports as this child last read them: at most one read of Redis per
 * kClusterCacheMs per child, whatever the rate of GETs (each read is a new connection, and
 * up to kClusterReadBoundMs of a worker when Redis is stalled). A failed read is kept as
 * long, so that an outage is answered at once, without trying Redis, for that time. */
class ReportCache {
public:
    struct Result {
        bool available = false;
        std::string error;
        std::vector<ServerFigures> reports;
    };

    Result get(const server_rec *s)
    {
        {
            std::lock_guard<std::mutex> hold(m_);
            const std::int64_t now = monotonic_us();
            if (have_ && (now - read_at_us_ < kClusterCacheMs * 1000 || refreshing_))
                return last_; /* fresh, or stale while another request reads */
            if (refreshing_)
                return {false, "being read by another request of this process", {}};
            refreshing_ = true;
        }
        Result r;
        try {
            r.available = read_cluster_reports(redis_url(s), redis_prefix(s), &r.reports,
                                               &r.error);
        } catch (...) {
            std::lock_guard<std::mutex> hold(m_);
            refreshing_ = false;
            throw;
        }
        if (!r.available)
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                         "SSE0722: the other servers' figures cannot be read from Redis at %s "
                         "(%s); answering with this server's for %d ms",
                         redis_url(s).display().c_str(), r.error.c_str(), kClusterCacheMs);
        std::lock_guard<std::mutex> hold(m_);
        last_ = r;
        have_ = true;
        read_at_us_ = monotonic_us();
        refreshing_ = false;
        return r;
    }

private:
    std::mutex m_;
    bool refreshing_ = false; /* one request of this child is reading Redis */
    bool have_ = false;
    std::int64_t read_at_us_ = 0;
    Result last_;
};

ReportCache g_reports; /* per child: each child has its own copy after fork() */

ClusterRead read_cluster(const server_rec *s, ServerFigures own)
{
    ReportCache::Result got = g_reports.get(s);
    ClusterRead out;
    out.available = got.available;
    out.error = std::move(got.error);
    if (out.available)
        out.servers = merge_cluster(std::move(own), std::move(got.reports));
    else
        out.servers = merge_cluster(std::move(own), {});
    return out;
}

nlohmann::json unavailable_json(const ClusterRead &c, const std::string &self)
{
    return {{"available", false},
            {"this_server", self},
            {"error", "the other servers' figures cannot be read from Redis (" + c.error + ")"}};
}

} // namespace

/* The lowest port, since ap_listeners lists them in reverse and their order says nothing
 * anyway. */
std::string cluster_server_id(const server_rec *s)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    int port = 0;
    for (const ap_listen_rec *l = ap_listeners; l; l = l->next)
        if (l->bind_addr && l->bind_addr->port && (!port || l->bind_addr->port < port))
            port = l->bind_addr->port;
    return std::string(host[0] ? host : "localhost") + ":" + std::to_string(port ? port : s->port);
}

std::string cluster_start_token(server_rec *s)
{
    static const char *const kKey = "sse-cluster-start-token";
    void *data = nullptr;
    apr_pool_userdata_get(&data, kKey, s->process->pool);
    if (!data) {
        data = apr_pstrdup(s->process->pool, new_stream_epoch().c_str());
        apr_pool_userdata_set(data, kKey, apr_pool_cleanup_null, s->process->pool);
    }
    return static_cast<const char *>(data);
}

void start_cluster_reporter(server_rec *s, ModuleState *state,
                            const volatile sig_atomic_t *stop)
{
    /* Without it this server drops out of the others' counts: on a failure the daemon exits
     * and the parent starts a new one (SSE0402). */
    start_daemon_thread(s, "SSE0723: the cluster figures' reporter failed",
                        [s, state, stop] { Reporter(s, state, stop).run(); });
}

nlohmann::json cluster_status_json(request_rec *r, ModuleState *state)
{
    ServerFigures own = local_figures(state, r->server, true);
    const std::string self = own.server;
    ClusterRead c = read_cluster(r->server, std::move(own));
    if (!c.available)
        return unavailable_json(c, self);
    ClusterTotals t = cluster_totals(c.servers);
    nlohmann::json servers = nlohmann::json::array();
    for (const ServerFigures &f : c.servers)
        servers.push_back({{"server", f.server},
                           {"subscribers", f.subscribers},
                           {"socket_clients", f.socket_clients},
                           {"channels", f.channels},
                           {"truncated", f.truncated}});
    return {{"available", true},
            {"this_server", self},
            {"subscribers", t.subscribers},
            {"socket_clients", t.socket_clients},
            {"channels", t.channels},
            {"truncated", t.truncated},
            {"servers", servers}};
}

nlohmann::json cluster_channel_json(request_rec *r, ModuleState *state,
                                    const std::string &channel, std::uint64_t here)
{
    ServerFigures own = local_figures(state, r->server, false);
    own.channels[channel] = here; /* the count the answer's "subscribers" gave */
    const std::string self = own.server;
    ClusterRead c = read_cluster(r->server, std::move(own));
    if (!c.available)
        return unavailable_json(c, self);
    std::uint64_t total = 0;
    bool any_truncated = false;
    nlohmann::json servers = nlohmann::json::array();
    for (const ServerFigures &f : c.servers) {
        const std::uint64_t n = channel_subscribers(f, channel);
        /* A report cut at its cap may have left this channel out: its 0 is unknown. */
        const bool truncated = f.truncated && !f.channels.count(channel);
        total += n;
        any_truncated = any_truncated || truncated;
        servers.push_back({{"server", f.server}, {"subscribers", n}, {"truncated", truncated}});
    }
    return {{"available", true}, {"this_server", self}, {"subscribers", total},
            {"truncated", any_truncated}, {"servers", servers}};
}

} // namespace sse::httpd
