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

/* ---- configuration ---- */

void *create_server_config(apr_pool_t *p, server_rec *)
{
    auto *c = static_cast<ServerConfig *>(apr_pcalloc(p, sizeof(ServerConfig)));
    c->bus_size = kDefaultBusSize;
    c->history_count = HistoryLimits().count;
    c->history_seconds = HistoryLimits().max_age_s;
    c->publish_socket.max_clients = kDefaultSocketClients;
    c->max_subscribers = kDefaultMaxSubscribers;
    c->max_channels = kDefaultMaxChannels;
    return c;
}

void *create_dir_config(apr_pool_t *p, char *)
{
    auto *c = static_cast<DirConfig *>(apr_pcalloc(p, sizeof(DirConfig)));
    c->keepalive = kDefaultKeepalive;
    c->retry_ms = -1;
    c->max_message_size = kDefaultMaxMessageSize;
    c->async = 1;
    c->max_pending = kDefaultMaxPending;
    c->duplicate_policy = static_cast<int>(DuplicatePolicy::Allow);
    return c;
}

template <typename T> void merge_field(T &out, int &out_set, const T &base, int base_set,
                                       const T &add, int add_set)
{
    out = add_set ? add : base;
    out_set = add_set || base_set;
}

void *merge_dir_config(apr_pool_t *p, void *base_v, void *add_v)
{
    auto *base = static_cast<DirConfig *>(base_v);
    auto *add = static_cast<DirConfig *>(add_v);
    auto *c = static_cast<DirConfig *>(apr_pcalloc(p, sizeof(DirConfig)));
    merge_field(c->channel_expr, c->channel_expr_set, base->channel_expr, base->channel_expr_set,
                add->channel_expr, add->channel_expr_set);
    merge_field(c->keepalive, c->keepalive_set, base->keepalive, base->keepalive_set,
                add->keepalive, add->keepalive_set);
    merge_field(c->retry_ms, c->retry_set, base->retry_ms, base->retry_set, add->retry_ms,
                add->retry_set);
    merge_field(c->max_message_size, c->max_message_size_set, base->max_message_size,
                base->max_message_size_set, add->max_message_size, add->max_message_size_set);
    merge_field(c->async, c->async_set, base->async, base->async_set, add->async, add->async_set);
    merge_field(c->max_pending, c->max_pending_set, base->max_pending, base->max_pending_set,
                add->max_pending, add->max_pending_set);
    merge_field(c->client_id_expr, c->client_id_expr_set, base->client_id_expr,
                base->client_id_expr_set, add->client_id_expr, add->client_id_expr_set);
    merge_field(c->duplicate_policy, c->duplicate_policy_set, base->duplicate_policy,
                base->duplicate_policy_set, add->duplicate_policy, add->duplicate_policy_set);
    merge_field(c->presence_subscribe, c->presence_subscribe_set, base->presence_subscribe,
                base->presence_subscribe_set, add->presence_subscribe, add->presence_subscribe_set);
    merge_field(c->token_key, c->token_key_set, base->token_key, base->token_key_set,
                add->token_key, add->token_key_set);
    merge_field(c->token_cookie, c->token_cookie_set, base->token_cookie, base->token_cookie_set,
                add->token_cookie, add->token_cookie_set);
    merge_field(c->channel_base, c->channel_base_set, base->channel_base, base->channel_base_set,
                add->channel_base, add->channel_base_set);
    return c;
}

ServerConfig *server_config(server_rec *s)
{
    return static_cast<ServerConfig *>(ap_get_module_config(s->module_config, &sse_module));
}

constexpr apr_uint64_t kMaxBusSize = apr_uint64_t(64) << 30;

const char *cmd_bus_size(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    ServerConfig *c = server_config(cmd->server);
    std::uint64_t v;
    if (!parse_size(arg, kMaxBusSize, v) || v < Bus::min_size())
        return apr_psprintf(cmd->pool,
                            "SSEBusSize: \"%s\" is not a size from 64K to 64G "
                            "(a number with an optional K, M or G suffix, e.g. 16M)",
                            arg);
    c->bus_size = v;
    c->bus_size_set = 1;
    return nullptr;
}

const char *cmd_history(cmd_parms *cmd, void *, const char *count, const char *seconds)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    ServerConfig *c = server_config(cmd->server);
    std::int64_t n, s = std::int64_t(HistoryLimits().max_age_s);
    if (!parse_number(count, 0, 1000000, n))
        return apr_psprintf(cmd->pool,
                            "SSEHistory: count \"%s\" must be a whole number from 0 to 1000000",
                            count);
    if (seconds && !parse_number(seconds, 0, 31536000, s))
        return apr_psprintf(cmd->pool,
                            "SSEHistory: seconds \"%s\" must be a whole number from 0 (no age "
                            "limit) to 31536000",
                            seconds);
    c->history_count = apr_uint64_t(n);
    c->history_seconds = apr_uint64_t(s);
    c->history_set = 1;
    return nullptr;
}

const char *cmd_channel(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    const char *err = nullptr;
    d->channel_expr = ap_expr_parse_cmd(cmd, arg, AP_EXPR_FLAG_STRING_RESULT, &err, nullptr);
    if (err)
        return apr_psprintf(cmd->pool, "SSEChannel: cannot parse expression \"%s\": %s", arg,
                            err);
    d->channel_expr_set = 1;
    return nullptr;
}

/* SSEChannelBase: a URL path as <Location> takes it (decoded), one httpd would look up as it
 * is (the channels' paths are built on it), kept without its trailing '/'. */
const char *cmd_channel_base(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    std::string base = arg;
    while (base.size() > 1 && base.back() == '/')
        base.pop_back();
    if (base.empty() || base[0] != '/' || base.find_first_of("?#") != std::string::npos ||
        !is_own_path(base))
        return apr_psprintf(cmd->pool,
                            "SSEChannelBase: \"%s\" is not a URL path: it must start with '/' "
                            "and have no '?', '#', empty, '.' or '..' segment",
                            arg);
    if (base == "/")
        base.clear();
    d->channel_base = apr_pstrdup(cmd->pool, base.c_str());
    d->channel_base_set = 1;
    return nullptr;
}

const char *cmd_keepalive(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    std::int64_t v;
    if (!parse_number(arg, 1, 3600, v))
        return apr_psprintf(cmd->pool,
                            "SSEKeepalive: \"%s\" must be a whole number of seconds from 1 to "
                            "3600",
                            arg);
    d->keepalive = apr_time_from_sec(v);
    d->keepalive_set = 1;
    return nullptr;
}

const char *cmd_retry(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    std::int64_t v;
    if (!parse_number(arg, 0, kMaxRetryMs, v))
        return apr_psprintf(cmd->pool,
                            "SSERetry: \"%s\" must be a whole number of milliseconds from 0 to "
                            "%" APR_INT64_T_FMT,
                            arg, apr_int64_t(kMaxRetryMs));
    d->retry_ms = v;
    d->retry_set = 1;
    return nullptr;
}

const char *cmd_max_message_size(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    std::uint64_t v;
    if (!parse_size(arg, apr_uint64_t(64) << 20, v) || v == 0)
        return apr_psprintf(cmd->pool,
                            "SSEMaxMessageSize: \"%s\" is not a size from 1 to 64M (a number "
                            "with an optional K or M suffix, e.g. 256K)",
                            arg);
    d->max_message_size = apr_off_t(v);
    d->max_message_size_set = 1;
    return nullptr;
}

/* What an SSEClientId expression reads that the client itself chooses: request headers,
 * the query string and the URI (cookies are headers), the request line, the Host header
 * (SERVER_NAME and SERVER_PORT are the Host header's under UseCanonicalName Off, and the port
 * is the client's under On when ServerName names none), its own port, how it connected (the
 * scheme, HTTP/2, IPv6, the TLS version, ciphers and hello, SNI). Such an id is a claim, not
 * an identity: anyone could send another client's id. (ap_expr's variables: httpd's
 * server/util_expr_eval.c, request_var_names and conn_var_names; mod_ssl's SSL_*.) */
bool client_chosen_var(const char *name)
{
    static const char *const vars[] = {
        "REQUEST_URI", "QUERY_STRING", "THE_REQUEST", "PATH_INFO", "DOCUMENT_URI",
        "REQUEST_FILENAME", "SCRIPT_FILENAME", "CONTENT_TYPE", "REMOTE_IDENT", "REMOTE_HOST",
        "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_SCHEME", "SERVER_NAME", "SERVER_PORT",
        "SERVER_PROTOCOL", "HTTPS", "HTTP2", "IPV6", "SSL_TLS_SNI", "SSL_PROTOCOL",
        "SSL_COMPRESS_METHOD", "SSL_SECURE_RENEG"};
    /* HTTP_COOKIE, HTTP_USER_AGENT, ...; SERVER_PROTOCOL_VERSION*; SSL_CIPHER*; the
     * ClientHello's fields. */
    static const char *const prefixes[] = {"HTTP_", "SERVER_PROTOCOL_", "SSL_CIPHER",
                                           "SSL_CLIENTHELLO_"};
    for (const char *prefix : prefixes)
        if (strncasecmp(name, prefix, strlen(prefix)) == 0)
            return true;
    for (const char *v : vars)
        if (strcasecmp(name, v) == 0)
            return true;
    return false;
}

bool client_chosen(const ap_expr_lookup_parms *p)
{
    static const char *const funcs[] = {"req", "http", "req_novary", "query_param", "cookie"};
    if (p->type == AP_EXPR_FUNC_VAR)
        return client_chosen_var(p->name);
    if (p->type == AP_EXPR_FUNC_STRING && strcasecmp(p->name, "SSL") == 0) /* %{SSL:TLS_SNI} */
        return !p->arg || client_chosen_var(apr_pstrcat(p->ptemp, "SSL_", p->arg, nullptr));
    if (p->type == AP_EXPR_FUNC_STRING || p->type == AP_EXPR_FUNC_LIST) {
        for (const char *f : funcs)
            if (strcasecmp(p->name, f) == 0)
                return true;
    }
    return false;
}

/* Where client_id_lookup notes what it found: ap_expr gives a lookup function no context of
 * its own, but parses a directive's expression with ptemp = cmd->temp_pool. */
constexpr char kClientChosenKey[] = "mod_sse:client-chosen";

int client_id_lookup(ap_expr_lookup_parms *parms)
{
    if (client_chosen(parms)) {
        void *seen = nullptr;
        apr_pool_userdata_get(&seen, kClientChosenKey, parms->ptemp);
        const char *what = parms->type == AP_EXPR_FUNC_VAR
                               ? apr_psprintf(parms->ptemp, "%%{%s}", parms->name)
                               : apr_psprintf(parms->ptemp, "%%{%s:%s}", parms->name,
                                              parms->arg ? parms->arg : "...");
        if (seen)
            what = apr_pstrcat(parms->ptemp, static_cast<const char *>(seen), ", ", what, nullptr);
        apr_pool_userdata_setn(what, kClientChosenKey, nullptr, parms->ptemp);
    }
    return ap_expr_lookup_default(parms);
}

/* SSEClientId <expr> [unauthenticated]: an id the client chooses is refused unless the admin
 * says it is meant (a header a trusted proxy sets after authenticating the client). */
const char *cmd_client_id(cmd_parms *cmd, void *dv, const char *arg, const char *opt_in)
{
    auto *d = static_cast<DirConfig *>(dv);
    if (opt_in && strcasecmp(opt_in, "unauthenticated") != 0)
        return apr_psprintf(cmd->pool,
                            "SSEClientId: \"%s\" after the expression must be the word "
                            "unauthenticated",
                            opt_in);
    apr_pool_userdata_setn(nullptr, kClientChosenKey, nullptr, cmd->temp_pool);
    const char *err = nullptr;
    d->client_id_expr = ap_expr_parse_cmd(cmd, arg, AP_EXPR_FLAG_STRING_RESULT, &err,
                                          client_id_lookup);
    if (err)
        return apr_psprintf(cmd->pool, "SSEClientId: cannot parse expression \"%s\": %s", arg,
                            err);
    void *chosen = nullptr;
    apr_pool_userdata_get(&chosen, kClientChosenKey, cmd->temp_pool);
    if (chosen && !opt_in)
        return apr_psprintf(
            cmd->pool,
            "SSEClientId: \"%s\" reads %s, which the client chooses: anyone could claim "
            "another client's id, receive the events published for it (only=) and replace its "
            "stream (SSEDuplicateClient replace). Use an authenticated identity, "
            "%%{REMOTE_USER} (set by httpd's authentication or a verified token); for a header "
            "that a trusted proxy sets after authenticating the client, write "
            "SSEClientId \"%s\" unauthenticated",
            arg, static_cast<const char *>(chosen), arg);
    d->client_id_expr_set = 1;
    return nullptr;
}

const char *cmd_duplicate_client(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    if (!strcasecmp(arg, "allow"))
        d->duplicate_policy = static_cast<int>(DuplicatePolicy::Allow);
    else if (!strcasecmp(arg, "reject"))
        d->duplicate_policy = static_cast<int>(DuplicatePolicy::Reject);
    else if (!strcasecmp(arg, "replace"))
        d->duplicate_policy = static_cast<int>(DuplicatePolicy::Replace);
    else
        return apr_psprintf(cmd->pool,
                            "SSEDuplicateClient: \"%s\" must be allow, reject or replace", arg);
    d->duplicate_policy_set = 1;
    return nullptr;
}

const char *cmd_presence_subscribe(cmd_parms *, void *dv, int on)
{
    auto *d = static_cast<DirConfig *>(dv);
    d->presence_subscribe = on;
    d->presence_subscribe_set = 1;
    return nullptr;
}

const char *cmd_presence_channel(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    std::string err = validate_channel_name(arg);
    if (!err.empty())
        return apr_psprintf(cmd->pool, "SSEPresenceChannel: %s", err.c_str());
    server_config(cmd->server)->presence_channel = arg;
    return nullptr;
}

/* SSEMaxSubscribers and SSEMaxChannels: a count from 1 to 10,000,000. */
const char *cmd_registry_limit(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    ServerConfig *c = server_config(cmd->server);
    const bool subs = cmd->info != nullptr;
    std::int64_t v;
    if (!parse_number(arg, 1, 10000000, v))
        return apr_psprintf(cmd->pool, "%s: \"%s\" must be a whole number from 1 to 10000000",
                            cmd->directive->directive, arg);
    (subs ? c->max_subscribers : c->max_channels) = apr_uint64_t(v);
    (subs ? c->max_subscribers_set : c->max_channels_set) = 1;
    return nullptr;
}

/* SSEMaxUnpublishedChannels: a count from 1 to 10,000,000 (0 in the config: the default). */
const char *cmd_max_unpublished(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    std::int64_t v;
    if (!parse_number(arg, 1, 10000000, v))
        return apr_psprintf(cmd->pool, "SSEMaxUnpublishedChannels: \"%s\" must be a whole number "
                            "from 1 to 10000000", arg);
    server_config(cmd->server)->max_unpublished = apr_uint64_t(v);
    return nullptr;
}

/* Every directive handler runs under guarded(): a failure becomes the directive's error
 * (httpd reports it with the file and line and does not start). */
template <auto Fn> struct Directive;
template <typename Dir, typename... Args, const char *(*Fn)(cmd_parms *, Dir, Args...)>
struct Directive<Fn> {
    static const char *call(cmd_parms *cmd, Dir d, Args... args) noexcept
    {
        return guarded([&] { return Fn(cmd, d, args...); },
                       [&](const char *why) -> const char * {
                           return apr_psprintf(cmd->pool, "%s: internal error: %s",
                                               cmd->directive->directive, why);
                       });
    }
};

/* httpd declares cmd_func as `const char *(*)()` for C++; going through void(*)() keeps
 * -Wcast-function-type quiet about a cast that every C module does implicitly. */
template <auto Fn> cmd_func as_cmd_func()
{
    return reinterpret_cast<cmd_func>(reinterpret_cast<void (*)()>(&Directive<Fn>::call));
}

const char *cmd_async(cmd_parms *, void *dv, int on)
{
    auto *d = static_cast<DirConfig *>(dv);
    d->async = on;
    d->async_set = 1;
    return nullptr;
}

const char *cmd_max_pending(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    std::uint64_t v;
    if (!parse_size(arg, apr_uint64_t(64) << 20, v) || v < 1024)
        return apr_psprintf(cmd->pool,
                            "SSEMaxPending: \"%s\" is not a size from 1K to 64M (a number with "
                            "an optional K or M suffix, e.g. 256K)",
                            arg);
    d->max_pending = static_cast<apr_size_t>(v);
    d->max_pending_set = 1;
    return nullptr;
}

const char *cmd_publish_socket(cmd_parms *cmd, void *, const char *path, const char *mode,
                               const char *group)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    return parse_publish_socket(cmd->pool, path, mode, group,
                                &server_config(cmd->server)->publish_socket);
}

const char *cmd_publish_socket_clients(cmd_parms *cmd, void *, const char *arg)
{
    if (const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY))
        return err;
    std::int64_t v;
    if (!parse_number(arg, 1, 10000, v))
        return apr_psprintf(cmd->pool,
                            "SSEPublishSocketClients: \"%s\" must be a whole number from 1 to "
                            "10000",
                            arg);
    server_config(cmd->server)->publish_socket.max_clients = static_cast<int>(v);
    return nullptr;
}

const command_rec directives[] = {
    AP_INIT_TAKE1("SSEBusSize", as_cmd_func<cmd_bus_size>(), nullptr, RSRC_CONF,
                  "<size>: shared memory for the whole event bus, e.g. 16M (default 16M)"),
    AP_INIT_TAKE12("SSEHistory", as_cmd_func<cmd_history>(), nullptr, RSRC_CONF,
                   "<count> [<seconds>]: events kept per channel for replay, and their "
                   "maximum age (default 100 3600)"),
    AP_INIT_TAKE1("SSEChannel", as_cmd_func<cmd_channel>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<expr>: an ap_expr string giving the channel(s), comma-separated"),
    AP_INIT_TAKE1("SSEKeepalive", as_cmd_func<cmd_keepalive>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<seconds> of silence after which a comment line is sent (default 15)"),
    AP_INIT_TAKE1("SSERetry", as_cmd_func<cmd_retry>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<ms>: reconnection delay sent at the start of each stream"),
    AP_INIT_TAKE1("SSEMaxMessageSize", as_cmd_func<cmd_max_message_size>(),
                  nullptr, RSRC_CONF | ACCESS_CONF,
                  "<size>: largest publish request body accepted (default 256K)"),
    AP_INIT_FLAG("SSEAsync", as_cmd_func<cmd_async>(), nullptr, RSRC_CONF | ACCESS_CONF,
                 "On|Off: hold streams without a worker thread each where the MPM allows "
                 "(default On)"),
    AP_INIT_TAKE1("SSEMaxPending", as_cmd_func<cmd_max_pending>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<size>: bytes queued for one slow stream before it is dropped (default 256K)"),
    AP_INIT_TAKE123("SSEPublishSocket", as_cmd_func<cmd_publish_socket>(), nullptr, RSRC_CONF,
                    "<path> [<mode>] [<group>]: a local Unix socket for publishing "
                    "(path relative to DefaultRuntimeDir; mode default 0660; group default "
                    "httpd's Group)"),
    AP_INIT_TAKE1("SSEPublishSocketClients", as_cmd_func<cmd_publish_socket_clients>(), nullptr,
                  RSRC_CONF, "<n>: most concurrent clients on the publish socket (default 64)"),
    AP_INIT_TAKE12("SSEClientId", as_cmd_func<cmd_client_id>(), nullptr, RSRC_CONF | ACCESS_CONF,
                   "<expr> [unauthenticated]: an ap_expr string giving each subscriber's client "
                   "id (empty: anonymous), e.g. %{REMOTE_USER}; `unauthenticated` allows one "
                   "the client chooses (a header, the query)"),
    AP_INIT_TAKE1("SSEDuplicateClient", as_cmd_func<cmd_duplicate_client>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "allow|reject|replace: a second stream with a client id already connected "
                  "(default allow)"),
    AP_INIT_TAKE1("SSEChannelBase", as_cmd_func<cmd_channel_base>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<url-path>: the path a channel's access rules are checked under "
                  "(<url-path>/<channel>) and its path channels are taken after"),
    AP_INIT_TAKE1("SSEPresenceChannel", as_cmd_func<cmd_presence_channel>(), nullptr, RSRC_CONF,
                  "<channel>: where connect, disconnect and reconnect events are published"),
    AP_INIT_FLAG("SSEPresenceSubscribe", as_cmd_func<cmd_presence_subscribe>(), nullptr,
                 RSRC_CONF | ACCESS_CONF,
                 "On|Off: whether a subscribe here may name the presence channel (default Off)"),
    AP_INIT_TAKE1("SSEMaxSubscribers", as_cmd_func<cmd_registry_limit>(),
                  reinterpret_cast<void *>(1), RSRC_CONF,
                  "<n>: open streams the server holds at most, all processes together "
                  "(default 50000)"),
    AP_INIT_TAKE1("SSEMaxChannels", as_cmd_func<cmd_registry_limit>(), nullptr, RSRC_CONF,
                  "<n>: channels whose counts and state are kept (default 10000)"),
    AP_INIT_TAKE1("SSEMaxUnpublishedChannels", as_cmd_func<cmd_max_unpublished>(), nullptr,
                  RSRC_CONF,
                  "<n>: channels no publisher wrote to, named only by subscribers, that the "
                  "table holds at most (default: half of SSEMaxChannels)"),
    AP_INIT_TAKE12("SSETokenKey", as_cmd_func<cmd_token_key>(), nullptr, RSRC_CONF | ACCESS_CONF,
                   "HS256|RS256|ES256 <file> | off: requests here need a token signed with this "
                   "key (HS256: a shared secret; RS256, ES256: a PEM public key)"),
    AP_INIT_TAKE1("SSETokenCookie", as_cmd_func<cmd_token_cookie>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<name>: the cookie a token may come in (default mercureAuthorization)"),
    {nullptr, {nullptr}, nullptr, 0, RAW_ARGS, nullptr},
};

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
