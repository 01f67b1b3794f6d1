/* Does the running MPM hold SSEMaxSubscribers streams? (see mpm_sizing.h) */
#include "src/httpd/mpm_sizing.h"
#include "src/httpd/config.h"

#include "ap_mpm.h"
#include "http_config.h"
#include "http_log.h"
#include "util_cfgtree.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <strings.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

/* event.c's DEFAULT_WORKER_FACTOR, and its WORKER_FACTOR_SCALE (the factor kept in sixteenths). */
constexpr apr_uint64_t kDefaultWorkerFactor = 2;
constexpr double kWorkerFactorScale = 16;

/* Descriptors a child has open beside its streams: listeners, logs, the bus and registry
 * segments, the hub's epoll and eventfd, pipes (a test server's child has 14 open while holding
 * no stream); the rest is headroom for requests in progress and other modules' files. */
constexpr apr_uint64_t kDescriptorsBesideStreams = 200;

/* AsyncRequestWorkerFactor as the event MPM uses it: the last line of the configuration tree
 * (conditional sections are resolved while reading: only the lines in force are in it; the
 * directive is GLOBAL_ONLY, so at the top level), parsed as set_worker_factor() does, in
 * sixteenths, at least 1, then used as a whole number. */
apr_uint64_t async_request_worker_factor()
{
    apr_uint64_t factor = kDefaultWorkerFactor;
    for (const ap_directive_t *d = ap_conftree; d; d = d->next) {
        if (!d->directive || strcasecmp(d->directive, "AsyncRequestWorkerFactor") != 0 ||
            !d->args)
            continue;
        /* The argument as the directive gets it: httpd's word parser takes quotes off. */
        const char *arg = d->args;
        while (*arg == ' ' || *arg == '\t')
            ++arg;
        if (*arg == '"' || *arg == '\'')
            ++arg;
        char *end = nullptr;
        double v = std::strtod(arg, &end);
        if (end == arg || v <= 0)
            continue; /* refused by the MPM: the configuration never got this far */
        double scaled = std::max(v * kWorkerFactorScale, kWorkerFactorScale);
        factor = static_cast<apr_uint64_t>(scaled) / static_cast<apr_uint64_t>(kWorkerFactorScale);
    }
    return factor;
}

/* Whether `SSEHoldMode socket` is set anywhere in the configuration in force (any server,
 * any section; recorded by the directive's handler): such streams are no connection of the
 * MPM's, so one child may take them all. */
bool socket_hold_configured(server_rec *s)
{
    for (; s; s = s->next)
        if (server_config(s)->hold_socket_configured)
            return true;
    return false;
}

int mpm_query(int what)
{
    int v = 0;
    return ap_mpm_query(what, &v) == APR_SUCCESS ? v : 0;
}

/* The soft open-files limit children inherit; 0: unlimited or unknown. */
apr_uint64_t open_files_limit()
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0;
    return static_cast<apr_uint64_t>(rl.rlim_cur);
}

std::string num(apr_uint64_t v) { return std::to_string(v); }

/* The open-files part of the advice: empty when the limit holds `per_child` streams. `why`,
 * when not empty, says why a child may hold that many. */
std::string open_files_advice(apr_uint64_t per_child, apr_uint64_t max_subscribers,
                              const std::string &why = std::string())
{
    apr_uint64_t limit = open_files_limit();
    apr_uint64_t needed = std::min(per_child, max_subscribers) + kDescriptorsBesideStreams;
    if (limit == 0 || limit >= needed)
        return std::string();
    return "the open-files limit of " + num(limit) + " holds fewer than the " +
           num(needed - kDescriptorsBesideStreams) + " streams a child may hold" + why +
           ": raise it to " +
           num(needed) + " (`ulimit -n " + num(needed) + "` before httpd starts; Debian: " +
           "APACHE_ULIMIT_MAX_FILES=\"ulimit -n " + num(needed) + "\" in /etc/apache2/envvars)";
}

/* Event MPM: streams hold connections, not workers. Empty when the settings suffice. */
std::string async_advice(server_rec *s, apr_uint64_t max_subscribers)
{
    const apr_uint64_t threads = std::max(1, mpm_query(AP_MPMQ_MAX_THREADS));
    const apr_uint64_t children = std::max(1, mpm_query(AP_MPMQ_MAX_DAEMONS));
    const apr_uint64_t factor = async_request_worker_factor();
    const apr_uint64_t workers = children * threads;
    std::string advice;
    apr_uint64_t wanted = factor;
    if (workers * (1 + factor) < max_subscribers) {
        wanted = (max_subscribers + workers - 1) / workers - 1;
        advice = "the event MPM holds about " + num(workers * (1 + factor)) + " streams (" +
                 num(children) + " children x ThreadsPerChild " + num(threads) +
                 " x (1 + AsyncRequestWorkerFactor " + num(factor) + ")), fewer than " +
                 "SSEMaxSubscribers " + num(max_subscribers) + ": add `AsyncRequestWorkerFactor " +
                 num(wanted) + "` to the server configuration (or enable conf/sse-mpm.conf: " +
                 "a2enconf sse-mpm)";
    }
    /* SSEHoldMode socket: the MPM does not count a taken stream as its child's connection, so
     * the child's listener goes on accepting and one child may hold every stream. */
    std::string files =
        socket_hold_configured(s)
            ? open_files_advice(max_subscribers, max_subscribers,
                                " (SSEHoldMode socket: the MPM does not count those streams, so "
                                "one child may take them all)")
            : open_files_advice(threads * (1 + wanted), max_subscribers);
    if (!files.empty())
        advice += (advice.empty() ? "" : "; ") + files;
    return advice;
}

/* prefork, worker: each open stream holds a worker. Empty when the settings suffice. */
std::string blocking_advice(apr_uint64_t max_subscribers)
{
    const apr_uint64_t threads = std::max(1, mpm_query(AP_MPMQ_MAX_THREADS));
    const apr_uint64_t workers = std::max(1, mpm_query(AP_MPMQ_MAX_DAEMONS)) * threads;
    std::string advice;
    if (workers < max_subscribers)
        advice = std::string("the ") + ap_show_mpm() + " MPM holds each stream on a worker of its " +
                 "own: MaxRequestWorkers " + num(workers) + " holds " + num(workers) +
                 " streams (and answers nothing else then), fewer than SSEMaxSubscribers " +
                 num(max_subscribers) + ": add `SSEMaxSubscribers " + num(workers) +
                 "` to answer the streams beyond with 503, or use the event MPM, where a " +
                 "stream holds no worker (Debian: a2dismod mpm_" + ap_show_mpm() +
                 "; a2enmod mpm_event; a2enconf sse-mpm)";
    std::string files = open_files_advice(threads, max_subscribers);
    if (!files.empty())
        advice += (advice.empty() ? "" : "; ") + files;
    return advice;
}

} // namespace

void warn_if_mpm_cannot_hold(server_rec *s, apr_uint64_t max_subscribers)
{
    const std::string advice = mpm_query(AP_MPMQ_IS_ASYNC) ? async_advice(s, max_subscribers)
                                                           : blocking_advice(max_subscribers);
    if (!advice.empty())
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "SSE0210: %s", advice.c_str());
}

} // namespace sse::httpd
