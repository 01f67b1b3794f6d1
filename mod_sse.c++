/* mod_sse — Server-Sent Events for Apache httpd 2.4.
 *
 * This file is the module record and the registration of its hooks, with the hooks of a few
 * lines. The directives and configuration records are in src/httpd/config.{h,c++}, the longer
 * hooks in the files src/httpd/hooks.h names, the handlers in src/httpd/, and the components
 * (wire format, bus, registry, request parsing) in src/ with their contracts in include/sse/.
 */
#include "src/httpd/module.h"
#include "src/httpd/async_hub.h"
#include "src/httpd/channel_access.h"
#include "src/httpd/hooks.h"
#include "src/httpd/publish_socket.h"

#include "http_connection.h"
#include "http_core.h"
#include "http_request.h"
#include "mpm_common.h"
#include "ap_mpm.h"

#include "http_main.h"
#include "mod_status.h"

#include <cstring>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

int check_config(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *s)
{
    return guarded([&]() -> int {
        if (const char *err = check_publish_socket(pconf, &server_config(s)->publish_socket)) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, nullptr, "%s", err);
            return !OK;
        }
        return OK;
    }, [&](const char *why) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, nullptr,
                     "SSE0207: check_config failed: %s", why);
        return int(!OK);
    });
}

void child_init(apr_pool_t *pchild, server_rec *s)
{
    ModuleState *state = server_config(s)->state;
    if (!state)
        return;
    /* Worker processes have no use for the publish socket they inherited. */
    if (state->publish_socket_fd >= 0) {
        close(state->publish_socket_fd);
        state->publish_socket_fd = -1;
    }
    guarded([&] { state->hub = start_async_hub(pchild, s, state); },
            [&](const char *why) {
                ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                             "SSE0501: cannot start the async hub (%s); streams hold a worker "
                             "each", why);
            });
}

/* A stream the handler suspended: from now on the hub holds it. */
void suspend_connection(conn_rec *c, request_rec *)
{
    guarded(c->base_server, "suspend_connection",
            [&] { adopt_suspended_stream(c, server_config(c->base_server)->state); });
}

/* A stream whose socket the handler took over (SSEHoldMode socket): httpd closes the
 * connection now, the hub holds the socket from here on (src/httpd/taken_socket.h). */
int pre_close_connection(conn_rec *c)
{
    guarded(c->base_server, "pre_close_connection",
            [&] { adopt_taken_socket(c, server_config(c->base_server)->state); });
    return OK;
}

/* Graceful restart or stop: streams end so that the old child can exit and browsers come
 * back (with Last-Event-ID) to the new generation. Handlers poll the flag when woken; a
 * prefork child being stopped never returns to its handler (this runs in its signal handler,
 * then it exits), so its stream's last retry is written here, with write() alone. */
void child_stopping(apr_pool_t *, int)
{
    guarded(ap_server_conf, "child_stopping", [] {
        ModuleState *state = server_config(ap_server_conf)->state;
        if (state) {
            ModuleState::LastWords &lw = state->last_words;
            if (lw.armed) {
                std::atomic_signal_fence(std::memory_order_acquire);
                lw.armed = 0;
                ssize_t ignored = write(lw.fd, lw.bytes.data(), lw.bytes.size());
                (void)ignored; /* best effort: a client that does not read goes without */
            }
            state->child_stopping.store(true);
            stop_async_hub(state->hub);
            if (state->bus.valid())
                state->bus.wake_all();
        }
    });
}

/* Parent: a child process ended. Streams it still held (it was killed or crashed) are freed
 * and announced by the children (see reap_gone_processes()): the parent only notes the pid,
 * lock-free, since it must never wait for a lock a child can hold (a stopped child would stop
 * the MPM's main loop), and wakes the children's loops so that one of them does it now. */
void child_status(server_rec *s, pid_t pid, ap_generation_t, int, mpm_child_status status)
{
    guarded(s, "child_status", [&] {
        ModuleState *state = server_config(s)->state;
        if (status != MPM_CHILD_EXITED || !state || !state->registry.valid())
            return;
        state->registry.note_gone(pid);
        if (state->bus.valid())
            state->bus.wake_all();
    });
}

int handler(request_rec *r)
{
    if (!r->handler)
        return DECLINED;
    return guarded([&] {
        if (strcmp(r->handler, "sse-subscribe") == 0)
            return subscribe_handler(r);
        if (strcmp(r->handler, "sse-publish") == 0)
            return publish_handler(r);
        if (strcmp(r->handler, "sse-status") == 0)
            return status_handler(r);
        if (strcmp(r->handler, "mercure-hub") == 0)
            return mercure_hub_handler(r);
        return DECLINED;
    }, [&](const char *why) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "SSE0300: %s failed: %s", r->handler, why);
        return HTTP_INTERNAL_SERVER_ERROR;
    });
}

/* mod_status's hook: the section is left out when it fails. */
int status_section(request_rec *r, int flags)
{
    return guarded([&] { return status_page_section(r, flags); },
                   [&](const char *why) {
                       ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                                     "SSE0300: the server-status section failed: %s", why);
                       return OK;
                   });
}

void register_hooks(apr_pool_t *p)
{
    ap_hook_check_config(check_config, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_suspend_connection(suspend_connection, nullptr, nullptr, APR_HOOK_MIDDLE);
    /* First: before another module's pre-close hook writes to the connection. */
    ap_hook_pre_close_connection(pre_close_connection, nullptr, nullptr, APR_HOOK_REALLY_FIRST);
    ap_hook_pre_translate_name(pre_translate_name, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_translate_name(note_walked_uri, nullptr, nullptr, APR_HOOK_REALLY_FIRST);
    ap_hook_translate_name(translate_name, nullptr, nullptr, APR_HOOK_LAST);
    ap_hook_map_to_storage(map_to_storage, nullptr, nullptr, APR_HOOK_FIRST);
    ap_hook_handler(handler, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(child_stopping, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_child_status(child_status, nullptr, nullptr, APR_HOOK_MIDDLE);
    ap_hook_expr_lookup(expr_lookup, nullptr, nullptr, APR_HOOK_MIDDLE);
    register_channel_authz(p);
    APR_OPTIONAL_HOOK(ap, status_hook, status_section, nullptr, nullptr, APR_HOOK_MIDDLE);
}

} // namespace
} // namespace sse::httpd

extern "C" {
module AP_MODULE_DECLARE_DATA sse_module = {
    STANDARD20_MODULE_STUFF,
    sse::httpd::create_dir_config,
    sse::httpd::merge_dir_config,
    sse::httpd::create_server_config,
    nullptr, /* server config: the directives are global, vhosts read the main server's */
    sse::httpd::directives,
    sse::httpd::register_hooks,
    AP_MODULE_FLAG_NONE,
};
}
