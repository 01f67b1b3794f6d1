/* sse/redis_cluster.h — the group's figures in Redis (sse/cluster_state.h): one server writes
 * its own, any process reads everyone's.
 *
 * ClusterReporter
 * - Who: one per server, on a thread of sse-publishd's, with a connection of its own (made
 *   there, never across fork()).
 * - report() writes the server's figures with a TTL (SET <prefix>server:<id> ... PX ttl) and
 *   its name in the index (ZADD <prefix>servers <time> <id>). Before, it reads the key
 *   (GET): a report there with another token than f.token, written since this reporter's
 *   first report, is another server using the same id, and its token is put in *clash
 *   (else *clash is emptied). Each call is bounded by kPublishBoundMs; on a failure the
 *   connection is dropped and the next call connects again. A server that stops (dies, or
 *   stops cleanly: its daemon cannot tell a stop from a restart) leaves when its key expires.
 *
 * read_cluster_reports()
 * - Who: any thread (a GET of figures, sse-status). It connects, reads the index
 *   (ZRANGE) and the reports (MGET) and disconnects, all within kClusterReadBoundMs: a
 *   stopped or absent Redis costs the request that long at most. A report that expired is
 *   absent (its server is gone) and its id is removed from the index (ZREM: by Redis's
 *   expiry, not by any server's clock; a server that reports again adds itself back); one
 *   that cannot be decoded is skipped. Callers bound how often they call it (the httpd side
 *   keeps each child's last read for kClusterCacheMs).
 */
#ifndef SSE_REDIS_CLUSTER_H
#define SSE_REDIS_CLUSTER_H

#include "sse/cluster_state.h"
#include "sse/redis_link.h"

namespace sse {

class ClusterReporter {
public:
    ClusterReporter(RedisUrl url, std::string prefix, std::string server)
        : url_(std::move(url)), prefix_(std::move(prefix)), server_(std::move(server)) {}
    ~ClusterReporter();
    ClusterReporter(const ClusterReporter &) = delete;
    ClusterReporter &operator=(const ClusterReporter &) = delete;

    bool report(const ServerFigures &f, std::string *clash, std::string *err);

private:
    bool run(const std::vector<std::string> &args, Deadline deadline, std::string *err,
             std::string *reply = nullptr);

    RedisUrl url_;
    std::string prefix_;
    std::string server_;
    std::int64_t first_report_ms_ = 0; /* f.time_ms of the first report() */
    redisContext *c_ = nullptr;
};

bool read_cluster_reports(const RedisUrl &url, const std::string &prefix,
                          std::vector<ServerFigures> *out, std::string *err);

} // namespace sse

#endif
