/* src/httpd/module.h — what the httpd glue files share: the configuration records (config.h),
 * the per-process module state, and small helpers for answering requests.
 *
 * This is the only layer that includes httpd headers; the components under include/sse/ know
 * nothing of httpd.
 *
 * Ownership
 * - ServerConfig and DirConfig live in the configuration pool (pconf) of one generation.
 * - ModuleState is created in post_config in pconf, so each generation has its own; the bus
 *   memory it points into lives in the process pool and outlives generations (graceful
 *   restarts keep every event). Children inherit it by fork; `child_stopping` is then private
 *   to each child.
 */
#ifndef SSE_HTTPD_MODULE_H
#define SSE_HTTPD_MODULE_H

#include "sse/bus.h"
#include "sse/guard.h"
#include "sse/presence.h"
#include "sse/registry.h"
#include "sse/request.h"
#include "sse/token.h"
#include "src/httpd/config.h"

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_expr.h"

#include <atomic>
#include <csignal>
#include <string>
#include <utility>
#include <vector>

extern "C" {
extern module AP_MODULE_DECLARE_DATA sse_module;
}

namespace sse::httpd {

class AsyncHub;
class RedisBus;

struct ModuleState {
    Bus bus;
    Registry registry;            /* subscribers and channels of every process */
    std::string presence_channel; /* SSEPresenceChannel; empty: no presence events */
    PresenceBudget presence_budget; /* presence records the bus takes (shared by all children) */
    std::atomic<std::int64_t> presence_notice_us{0}; /* monotonic_us() of this process's last SSE0156 */
    AsyncHub *hub = nullptr;      /* this child's hub of suspended streams (event MPM) */
    RedisBus *redis = nullptr;    /* SSERedis (redis_bus.h); nullptr: this server alone */
    HistoryLimits history;
    int publish_socket_fd = -1;   /* the parent's listening socket; children close it */
    std::atomic<bool> child_stopping{false};
    /* prefork only: the last `retry:` of this process's blocking stream, for child_stopping.
     * At a stop, prefork ends a child from its SIGTERM handler (clean_child_exit: the
     * child_stopping hooks, then exit) while the handler sleeps: the handler never runs again,
     * so the hook writes these bytes straight to `fd` itself. `armed` only while nothing is
     * half written and the socket takes plain bytes (see arm_last_words in subscribe.c++). */
    struct LastWords {
        int fd = -1;
        std::string bytes;
        volatile sig_atomic_t armed = 0;
    } last_words;
};

const DirConfig &dir_config(request_rec *r);
ModuleState *module_state(request_rec *r);

/* Who refuses a request, for the log line: "subscribe" or "publish", and the level its
 * refusals are logged at (a refused publish loses data the application meant to send, so it
 * is an error; a refused subscribe is a client's mistake, a warning). */
struct Endpoint {
    const char *name;
    int log_level;
};
constexpr Endpoint kSubscribe{"subscribe", APLOG_WARNING};
constexpr Endpoint kPublish{"publish", APLOG_ERR};
/* A question about a channel that does not exist loses nothing: logged at info. */
constexpr Endpoint kPublishQuiet{"publish", APLOG_INFO};

/* Decodes r->args; on error answers 400 itself and returns false. */
bool query_params(request_rec *r, Params &out, const Endpoint &who);

/* The channels for this request (SSEChannel, ?channel=, or the path), each authorized as if
 * requested alone at its own path (see channel_access.h); on error answers itself (400, or
 * 401/403/500 for a channel the access rules refuse) and returns false. `body_channels`
 * (publish only) replace the query and the path. */
bool request_channels(request_rec *r, const std::vector<std::string> *body_channels,
                      const Params &query, std::vector<std::string> &out, const Endpoint &who);

/* Sends a JSON error body {"error": message, "status": status} (plus "channel" when
 * `channel` is given: the channel refused), logs a line tagged `tag` (like "SSE0110") at the
 * endpoint's level, and returns OK (the status goes out with the body). */
int answer_error(request_rec *r, int status, const char *tag, const Endpoint &who,
                 const std::string &message, const std::string *channel = nullptr);

/* Whether every type of `types` ("" is the untyped "message") is one the location's
 * SSEEventTypes lists (always, when it has none). Otherwise answers 400 itself with a body
 * {"error", "status", "event": the first type refused, "allowed": the list}, logs a line
 * tagged SSE0120, and returns false. */
bool event_types_allowed(request_rec *r, const std::vector<std::string> &types,
                         const Endpoint &who);

/* The handler SetHandler gives this request's location sections (nullptr: none, or its
 * expression failed). Valid from pre_translate_name on (httpd walked the sections), while
 * r->handler is set only in fixups. */
const char *configured_handler(request_rec *r);

/* Sends `json` with `status`, Content-Type application/json, and returns OK. The answer is
 * written at once and ends the response (FLUSH, EOS): nothing may be written after it. */
int answer_json(request_rec *r, int status, const std::string &json);

enum class BodyResult { Ok, TooLarge, ReadError };

/* Reads the whole request body (Content-Length or chunked) into `out`, at most `limit`
 * bytes. */
BodyResult read_body(request_rec *r, apr_off_t limit, std::string &out);

/* The request's media type, lower case, without parameters: "Application/JSON;
 * charset=utf-8" gives "application/json". */
std::string media_type(request_rec *r);

/* The handlers, called from the module's handler hook. */
int subscribe_handler(request_rec *r);
int publish_handler(request_rec *r);
int status_handler(request_rec *r);
int mercure_hub_handler(request_rec *r); /* mercure_hub.c++ */

/* mod_status's hook: a mod_sse section on the server-status page. */
int status_page_section(request_rec *r, int flags);

/* The wall clock: what events and presence records say (their `time`). */
apr_int64_t now_us();
/* CLOCK_MONOTONIC, for rates and throttles (the presence budget, log throttles): it never
 * steps back and every process of the machine reads the same one (a shared segment lives no
 * longer than the boot), where a wall clock stepped back by D would stall them for D. */
apr_int64_t monotonic_us();

/* Every boundary where httpd or APR calls in runs under sse::guarded() (sse/guard.h). */
using sse::guarded;

/* Logs "SSE0301: <what> failed: <why>" at crit on `s` (nullptr: the main server). */
void log_boundary_failure(const server_rec *s, const char *what, const char *why) noexcept;

/* guarded() for a boundary that can only log (SSE0301), nothing returned. */
template <typename Body> void guarded(const server_rec *s, const char *what, Body &&body) noexcept
{
    guarded(std::forward<Body>(body), [&](const char *why) { log_boundary_failure(s, what, why); });
}

} // namespace sse::httpd

#endif
