/* src/httpd/redis_cluster_state.h — cluster-wide figures with SSERedis: each server reports
 * its figures to Redis from its socket daemon, and GET channel figures and sse-status add up
 * every server's (sse/cluster_state.h, sse/redis_cluster.h, docs/redis.md).
 *
 * Who does what
 * - sse-publishd (one per server, started whenever SSERedis is set): start_cluster_reporter()
 *   runs one thread that reports this server's figures every kClusterReportEveryMs (2 s) with
 *   a TTL of kClusterReportTtlMs (6 s). Never a worker: publishing and subscribing do not
 *   wait for it. Its failures are logged once per outage (SSE0720) and the end of the
 *   outage once (SSE0721).
 * - A worker answering GET figures or sse-status (only with SSERedis): read_cluster() takes
 *   the other servers' reports from this child's cache, read at most once per
 *   kClusterCacheMs (1 s) by one request at a time (within kClusterReadBoundMs, 300 ms, one
 *   new connection; the others meanwhile get the last read, or "unavailable" when there is
 *   none; a failed read is kept as long), adds this server's live figures, and says so when
 *   Redis cannot be read (the answer keeps this server's figures; never an error status).
 *
 * A server's id is "<gethostname()>:<lowest port among its Listen directives>": unique for
 * servers on different machines, and for several httpd on one machine. Its report also
 * carries a random token made once per start of httpd (kept across graceful restarts, in
 * the process pool): the reporter logs SSE0724 (warning, once while it lasts) when the key
 * of its id holds a report with another token, i.e. two servers took the same id.
 */
#ifndef SSE_HTTPD_REDIS_CLUSTER_STATE_H
#define SSE_HTTPD_REDIS_CLUSTER_STATE_H

#include "src/httpd/module.h"

#include "sse/cluster_state.h"

#include <nlohmann/json.hpp>

#include <csignal>

namespace sse::httpd {

/* This server's id in the group: "<gethostname()>:<lowest port among its Listen directives>". */
std::string cluster_server_id(const server_rec *s);

/* This start's token: made at the first call, in the parent (start_daemon() calls it before
 * forking the daemon, so the daemon and the children share it), kept across restarts. */
std::string cluster_start_token(server_rec *s);

/* In the socket daemon, after it dropped privileges, when SSERedis is set. */
void start_cluster_reporter(server_rec *s, ModuleState *state,
                            const volatile sig_atomic_t *stop);

/* sse-status's "cluster" member (docs/endpoints.md); only with SSERedis. */
nlohmann::json cluster_status_json(request_rec *r, ModuleState *state);

/* A GET of one channel's figures: its "cluster" member; `here` is this server's count. */
nlohmann::json cluster_channel_json(request_rec *r, ModuleState *state,
                                    const std::string &channel, std::uint64_t here);

} // namespace sse::httpd

#endif
