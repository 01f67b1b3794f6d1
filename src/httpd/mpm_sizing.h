/* src/httpd/mpm_sizing.h — does the running MPM hold SSEMaxSubscribers streams? Said once per
 * (re)start, in the parent, from post_config (generation.c++): one SSE0210 warning naming the
 * lines to add when it does not, nothing when it does.
 *
 * The rule, read from httpd 2.4.71's server/mpm/event/event.c (pinned by t/mpm-sizing.t):
 * - Event MPM (asynchronous): a held stream takes no worker, but counts as a connection of its
 *   child, and a child's listener accepts only while its connections are fewer than
 *   ThreadsPerChild + idle workers x AsyncRequestWorkerFactor (connections_above_limit(); the
 *   factor is kept in sixteenths and used as a whole number, at least 1). Streams leave the
 *   workers idle, so a child holds about ThreadsPerChild x (1 + factor) streams, and the
 *   server MaxRequestWorkers / ThreadsPerChild children of them (AP_MPMQ_MAX_DAEMONS; a full
 *   child stops accepting, its idle workers stop counting as spare, and the parent starts
 *   another). The factor cannot be asked of the MPM (ap_mpm_query has no query for it): it is
 *   read from the configuration tree (ap_conftree, conditional sections already resolved), the
 *   last AsyncRequestWorkerFactor line winning as in event.c, else event.c's default of 2.
 * - Other MPMs (prefork, worker): each stream holds a worker for as long as it is open, so the
 *   server holds MaxRequestWorkers streams (children x threads per child) and nothing else then.
 * - Open files: each stream is a descriptor of the child holding it, and a child accepts up to
 *   its share above before another takes over: its open-files limit (RLIMIT_NOFILE, inherited
 *   from the parent) must hold min(SSEMaxSubscribers, streams per child) plus what a child has
 *   open beside its streams. With SSEHoldMode socket set anywhere in the configuration (the
 *   directive's handler records it in the server's ServerConfig, config.h), a
 *   taken stream is no connection of the MPM's (src/httpd/taken_socket.h): the child's
 *   listener goes on accepting, so one child may hold all SSEMaxSubscribers streams, and its
 *   limit must hold that many (pinned by t/mpm-sizing.t).
 */
#ifndef SSE_HTTPD_MPM_SIZING_H
#define SSE_HTTPD_MPM_SIZING_H

#include "httpd.h"

namespace sse::httpd {

/* Logs SSE0210 (warn) on `s` when the MPM's settings or the open-files limit cannot hold
 * `max_subscribers` streams, with the directives (or limit) to raise and to what. */
void warn_if_mpm_cannot_hold(server_rec *s, apr_uint64_t max_subscribers);

} // namespace sse::httpd

#endif
