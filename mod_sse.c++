/* mod_sse — Server-Sent Events for Apache httpd 2.4.
 *
 * This file is the module record: directives, configuration merging, the shared-memory bus's
 * life cycle, and the hooks. The handlers are in src/httpd/, the components (wire format, bus,
 * request parsing) in src/ with their contracts in include/sse/.
 */
#include "src/httpd/module.h"
#include "src/httpd/async_hub.h"
#include "src/httpd/channel_access.h"
#include "src/httpd/publish_socket.h"
#include "src/httpd/shared_segment.h"
#include "src/httpd/subscription.h"
#include "src/httpd/token_check.h"
#include "sse/config_values.h"

#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mpm_common.h"
#include "ap_mpm.h"

#include "http_main.h"
#include "mod_status.h"

#include "apr_lib.h"
#include "apr_shm.h"
#include "apr_strings.h"

#include <new>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

/* The presence budget's state, shared by this generation's children (a new generation starts
 * a full budget). */
apr_status_t open_presence_budget(apr_pool_t *pconf, server_rec *s, ModuleState *state)
{
    apr_shm_t *shm = nullptr;
    apr_status_t rv = apr_shm_create(&shm, sizeof(PresenceShared), nullptr, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "SSE0157: cannot create shared memory for the presence budget");
        return rv;
    }
    auto *shared = new (apr_shm_baseaddr_get(shm)) PresenceShared();
    state->presence_budget =
        PresenceBudget::for_bus(shared, static_cast<std::size_t>(state->bus.stats().ring_size));
    return APR_SUCCESS;
}

apr_status_t destroy_state(void *data)
{
    static_cast<ModuleState *>(data)->~ModuleState();
    return APR_SUCCESS;
}

int post_config(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *s)
{
    /* The first of httpd's two configuration passes only checks; the bus comes in the second. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    return guarded([&] {
        const ServerConfig *conf = server_config(s);
        void *mem = apr_palloc(pconf, sizeof(ModuleState));
        auto *state = new (mem) ModuleState();
        apr_pool_cleanup_register(pconf, state, destroy_state, apr_pool_cleanup_null);
        state->history.count = conf->history_count;
        state->history.max_age_s = conf->history_seconds;
        if (open_bus(s, conf, &state->bus) != APR_SUCCESS ||
            open_registry(s, conf, &state->registry) != APR_SUCCESS)
            return HTTP_INTERNAL_SERVER_ERROR;
        /* Set at every load (a restart keeps the registry): the default is half the table
         * the registry has, which a restart may not have resized. */
        state->registry.set_max_unpublished(
            conf->max_unpublished ? static_cast<std::uint32_t>(conf->max_unpublished)
                                  : std::max<std::uint32_t>(1, state->registry.max_channels() / 2));
        if (conf->presence_channel) {
            state->presence_channel = conf->presence_channel;
            if (open_presence_budget(pconf, s, state) != APR_SUCCESS)
                return HTTP_INTERNAL_SERVER_ERROR;
        }
        for (server_rec *vs = s; vs; vs = vs->next)
            server_config(vs)->state = state;
        if (conf->publish_socket.path) {
            auto *d = static_cast<DirConfig *>(
                ap_get_module_config(s->lookup_defaults, &sse_module));
            if (start_publish_socket(pconf, s, &conf->publish_socket, state,
                                     static_cast<apr_size_t>(d->max_message_size)) !=
                APR_SUCCESS)
                return HTTP_INTERNAL_SERVER_ERROR;
        } else {
            retire_publish_socket(s);
        }
        return OK;
    }, [&](const char *why) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0207: post_config failed: %s", why);
        return HTTP_INTERNAL_SERVER_ERROR;
    });
}

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

/* %{query_param:name} in ap_expr strings (SSEClientId, SSEChannel): the last value of a
 * query string parameter, decoded; empty when absent or when the query string is malformed
 * (the handler then refuses the request for it). A failure fails the expression (the handler
 * answers 500 for it, like any expression error). */
const char *query_param_func(ap_expr_eval_ctx_t *ctx, const void *, const char *arg)
{
    return guarded([&]() -> const char * {
        if (!ctx->r || !ctx->r->args)
            return "";
        Params params;
        if (!parse_form(ctx->r->args, params).empty())
            return "";
        const std::string *v = param_last(params, arg);
        return v ? apr_pstrmemdup(ctx->p, v->data(), v->size()) : "";
    }, [&](const char *why) -> const char * {
        *ctx->err = apr_psprintf(ctx->p, "query_param: internal error: %s", why);
        return "";
    });
}

int expr_lookup(ap_expr_lookup_parms *parms)
{
    if (parms->type != AP_EXPR_FUNC_STRING || strcasecmp(parms->name, "query_param") != 0)
        return DECLINED;
    *parms->func = reinterpret_cast<const void *>(query_param_func);
    *parms->data = parms->name;
    return OK;
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

/* ---- no file system for mod_sse's locations ---- */

/* What translate_name leaves in r->request_config for map_to_storage (its address). */
constexpr char kSseLocation[] = "sse-location";

/* True when this request's location sections (<Location>, <LocationMatch>, <If>) set one of
 * mod_sse's handlers with SetHandler. Valid from pre_translate_name on: httpd has walked those
 * sections by then, while SetHandler itself applies only in fixups. */
bool sse_location(request_rec *r)
{
    const char *h = configured_handler(r);
    return h && (strcasecmp(h, "sse-subscribe") == 0 || strcasecmp(h, "sse-publish") == 0 ||
                 strcasecmp(h, "sse-status") == 0);
}

/* pre_translate_name: core answers a path with %00 in it 404 (HTML) when it decodes the path,
 * before any handler. On mod_sse's locations the path names channels, so such a path is left
 * undecoded (DONE) and reaches the handler, which refuses the channel name "a%00b" with its
 * 400 (JSON, SSE0100): '%' is not a channel character. Nothing else is skipped for it. */
int pre_translate_name(request_rec *r)
{
    return r->uri && strstr(r->uri, "%00") && sse_location(r) ? DONE : DECLINED;
}

/* translate_name: a request for one of mod_sse's locations is not mapped to a file, as
 * mod_proxy does for its requests: core's translation would turn the path into a file name
 * under DocumentRoot, refusing a long one with an HTML 403 (AH00127, ENAMETOOLONG: a subscribe
 * naming many channels) before mod_sse sees it, and would then walk the directories of a file
 * that never exists. Runs after mod_rewrite, mod_alias and mod_proxy (a location they
 * translate keeps its usual mapping). SetHandler in a <Directory> or .htaccess is not seen
 * here: such locations are mapped as before. */
/* The URI httpd walked the location sections for, noted before any translate_name hook runs
 * (mod_rewrite's [PT] changes r->uri and leaves the walk of the old one in r->per_dir_config). */
constexpr char kWalkedUriNote[] = "sse-walked-uri";

int note_walked_uri(request_rec *r)
{
    apr_table_setn(r->notes, kWalkedUriNote, r->uri);
    return DECLINED;
}

int translate_name(request_rec *r)
{
    /* A URI rewritten on its way here ([PT]) is no longer the one whose location sections
     * said "mod_sse": it keeps its usual mapping (httpd walks its own sections later). */
    const char *walked = apr_table_get(r->notes, kWalkedUriNote);
    if (!walked || !r->uri || strcmp(walked, r->uri) != 0 || !sse_location(r))
        return DECLINED;
    r->filename = apr_pstrcat(r->pool, "sse:", r->uri, nullptr);
    ap_set_module_config(r->request_config, &sse_module, const_cast<char *>(kSseLocation));
    return OK;
}

/* map_to_storage: no directory walk for what translate_name marked, so <Directory> sections
 * and .htaccess files do not apply to mod_sse's locations; <Location> sections (Require,
 * SSE* directives) do, as httpd walks them again after this hook. */
int map_to_storage(request_rec *r)
{
    return ap_get_module_config(r->request_config, &sse_module) == kSseLocation
               ? OK
               : DECLINED;
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
