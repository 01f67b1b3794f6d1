/* sse/cluster_state.h — the figures each server of an SSERedis group reports to Redis, and
 * how a server adds them up (docs/redis.md, "Cluster-wide figures").
 *
 * Each server's socket daemon (sse-publishd) writes its figures every kClusterReportEveryMs
 * into its own key, which Redis expires kClusterReportTtlMs after the last write: a server
 * that dies (kill -9 of the whole httpd) drops out of every count within that bound. A
 * server reading the group's figures replaces its own report (up to one period old) with its
 * live figures, so its own part is exact.
 *
 * The report is JSON: {"server":"host:port","token":"hex","time_ms":N,"subscribers":N,
 * "socket_clients":N,"channels":{"name":subscribers,...},"truncated":bool} (channels with
 * at least one subscriber only, the most-read first, as many as fit in
 * kClusterReportMaxBytes: "truncated" says some were left out, so that server's count of a
 * channel not listed is unknown, not 0).
 *
 * Pure: no Redis, no httpd; any thread.
 */
#ifndef SSE_CLUSTER_STATE_H
#define SSE_CLUSTER_STATE_H

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

constexpr int kClusterReportEveryMs = 2000;
constexpr int kClusterReportTtlMs = 6000;   /* three periods: a late report is not a death */
constexpr int kClusterReadBoundMs = 300;    /* one read of the group's figures, all steps */
constexpr int kClusterCacheMs = 1000;       /* a child reuses its last read (or failure) */
constexpr std::size_t kClusterReportMaxBytes = 64 * 1024; /* one server's report, as JSON */

/* One server's figures. */
struct ServerFigures {
    std::string server;                /* its id: "host:port" (cluster_server_id) */
    std::string token;                 /* random, per start of its httpd: tells two servers
                                        * that took the same id apart ("" when absent) */
    std::int64_t time_ms = 0;          /* when taken, the reporter's wall clock */
    std::uint64_t subscribers = 0;
    std::uint64_t socket_clients = 0;
    std::map<std::string, std::uint64_t> channels; /* name -> subscribers (> 0) */
    bool truncated = false;            /* channels were left out of its report */
};

std::string encode_figures(const ServerFigures &f);
/* Empty, or why `text` is no report (then *out is unspecified). */
std::string decode_figures(std::string_view text, ServerFigures *out);

/* The group: `own` (live) and the others' reports (a report of own's id is dropped), sorted
 * by server id. */
std::vector<ServerFigures> merge_cluster(ServerFigures own, std::vector<ServerFigures> reported);

struct ClusterTotals {
    std::uint64_t subscribers = 0;
    std::uint64_t socket_clients = 0;
    std::map<std::string, std::uint64_t> channels;
    bool truncated = false; /* a server's report left channels out */
};
ClusterTotals cluster_totals(const std::vector<ServerFigures> &servers);

/* A server's subscribers of `channel` (0 when it reports none). */
std::uint64_t channel_subscribers(const ServerFigures &f, const std::string &channel);

/* The keys: each server's report, and the sorted set of the servers that ever reported
 * (score: the last report's time; members whose key expired are dead servers). */
std::string cluster_server_key(const std::string &prefix, const std::string &server);
std::string cluster_index_key(const std::string &prefix);

} // namespace sse

#endif
