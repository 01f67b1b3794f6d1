/* src/httpd/publish_socket.h — the local socket (SSEPublishSocket): a listening Unix socket
 * owned by httpd's parent process and a small daemon process (sse-publishd) that serves it,
 * forked and supervised by the parent the way mod_cgid runs its daemon.
 *
 * It serves publishers and subscribers alike: a client writes events (each answered), or
 * sends a subscribe block and reads an event stream (sse/socket_protocol.h). The names
 * "publish socket", SSEPublishSocket and sse-publishd date from when it only took events; the
 * directives keep them because users configure them.
 *
 * Who owns what
 * - The listening socket is created once by the parent (as root when httpd starts as root:
 *   umask 0077 around bind, then chmod to the configured mode and chown to User and the
 *   configured group) and kept in the process pool, so it survives graceful restarts: a
 *   client that connects while the daemon is being replaced waits in the backlog instead of
 *   being refused. It is closed and unlinked when httpd stops.
 * - The daemon is forked in post_config of every generation, inherits the socket and the bus,
 *   drops privileges like the children, and serves any number of clients with poll(). The
 *   parent restarts it within a second if it dies, and sends it SIGTERM when the generation
 *   ends; it then stops accepting, answers what it has read, closes each connection between
 *   two events, and exits.
 */
#ifndef SSE_HTTPD_PUBLISH_SOCKET_H
#define SSE_HTTPD_PUBLISH_SOCKET_H

#include "src/httpd/module.h"

namespace sse::httpd {

/* Parses "SSEPublishSocket <path> [<mode>] [<group>]"; returns an error sentence or nullptr. */
const char *parse_publish_socket(apr_pool_t *p, const char *path, const char *mode,
                                 const char *group, PublishSocketConfig *out);

/* check_config: resolves the path against DefaultRuntimeDir and checks it fits sun_path.
 * Returns nullptr, or an error sentence for the log. */
const char *check_publish_socket(apr_pool_t *p, PublishSocketConfig *conf);

/* post_config (the real pass, in the parent): opens or reuses the socket and forks the daemon.
 * `max_event_bytes` bounds one event on the socket (SSEMaxMessageSize of the main server). */
apr_status_t start_publish_socket(apr_pool_t *pconf, server_rec *s,
                                  const PublishSocketConfig *conf, ModuleState *state,
                                  apr_size_t max_event_bytes);

/* post_config when SSERedis is set without SSEPublishSocket: the daemon runs all the same,
 * without a socket, for the Redis reader (redis_bus.h). */
void start_socketless_daemon(apr_pool_t *pconf, server_rec *s, ModuleState *state);

/* post_config when SSEPublishSocket is no longer configured: closes and unlinks the socket a
 * previous generation left open. */
void retire_publish_socket(server_rec *s);

/* The daemon's main loop, in the forked process; never returns. `listen_fd` -1: no socket
 * (the daemon then only runs the Redis reader). */
[[noreturn]] void run_socket_daemon(server_rec *s, apr_pool_t *pool, int listen_fd,
                                    ModuleState *state, int max_clients,
                                    apr_size_t max_event_bytes);

} // namespace sse::httpd

#endif
