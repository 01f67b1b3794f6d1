/* mod_sse's directives: their handlers, the configuration records' defaults and merge, and
 * the command table (see config.h for how to add one). */
#include "src/httpd/config.h"
#include "src/httpd/module.h"
#include "src/httpd/channel_access.h"
#include "src/httpd/publish_socket.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/token_check.h"
#include "sse/config_values.h"

#include "apr_strings.h"

#include <cstring>
#include <string>
#include <strings.h>
#include <tuple>
#include <type_traits>
#include <utility>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

/* ---- the records: defaults and merge ---- */

/* One per-location setting: where its value and its `_set` marker are, and its default. */
template <typename T> struct LocationSetting {
    T DirConfig::*value;
    int DirConfig::*set;
    T initial;
};

/* Every member of DirConfig, by pairs: create_dir_config and merge_dir_config below are
 * derived from this list. */
constexpr std::tuple kLocationSettings{
    LocationSetting<ap_expr_info_t *>{&DirConfig::channel_expr, &DirConfig::channel_expr_set,
                                      nullptr},
    LocationSetting<apr_interval_time_t>{&DirConfig::keepalive, &DirConfig::keepalive_set,
                                         kDefaultKeepalive},
    LocationSetting<apr_int64_t>{&DirConfig::retry_ms, &DirConfig::retry_set, -1},
    LocationSetting<apr_off_t>{&DirConfig::max_message_size, &DirConfig::max_message_size_set,
                               kDefaultMaxMessageSize},
    LocationSetting<int>{&DirConfig::async, &DirConfig::async_set, 1},
    LocationSetting<apr_size_t>{&DirConfig::max_pending, &DirConfig::max_pending_set,
                                kDefaultMaxPending},
    LocationSetting<int>{&DirConfig::hold_socket, &DirConfig::hold_socket_set, 0},
    LocationSetting<ap_expr_info_t *>{&DirConfig::client_id_expr,
                                      &DirConfig::client_id_expr_set, nullptr},
    LocationSetting<int>{&DirConfig::duplicate_policy, &DirConfig::duplicate_policy_set,
                         static_cast<int>(DuplicatePolicy::Allow)},
    LocationSetting<int>{&DirConfig::presence_subscribe, &DirConfig::presence_subscribe_set, 0},
    LocationSetting<const TokenKey *>{&DirConfig::token_key, &DirConfig::token_key_set, nullptr},
    LocationSetting<const char *>{&DirConfig::token_cookie, &DirConfig::token_cookie_set,
                                  nullptr},
    LocationSetting<const std::vector<std::string> *>{&DirConfig::token_cookie_origins,
                                                      &DirConfig::token_cookie_origins_set,
                                                      nullptr},
    LocationSetting<const char *>{&DirConfig::channel_base, &DirConfig::channel_base_set,
                                  nullptr},
    LocationSetting<const std::vector<std::string> *>{&DirConfig::event_types,
                                                      &DirConfig::event_types_set, nullptr},
    LocationSetting<int>{&DirConfig::mercure_anonymous, &DirConfig::mercure_anonymous_set, 0},
    LocationSetting<int>{&DirConfig::mercure_subscriptions,
                         &DirConfig::mercure_subscriptions_set, 0},
    LocationSetting<const char *>{&DirConfig::mercure_hub, &DirConfig::mercure_hub_set, nullptr},
    LocationSetting<const char *>{&DirConfig::section_path, &DirConfig::section_path_set, nullptr},
};

/* The check that the list is whole, by count (a member listed twice would hide one left
 * out): the number of members of an aggregate is the most initializers `T{...}` accepts
 * (AnyValue converts to any member type; it is only named in unevaluated expressions). */
struct AnyValue {
    template <typename T> operator T() const;
};
template <typename, typename T, typename... Init> struct BraceInitializable : std::false_type {};
template <typename T, typename... Init>
struct BraceInitializable<std::void_t<decltype(T{std::declval<Init>()...})>, T, Init...>
    : std::true_type {};
template <typename T, typename... Init> constexpr std::size_t member_count()
{
    if constexpr (BraceInitializable<void, T, Init..., AnyValue>::value)
        return member_count<T, Init..., AnyValue>();
    else
        return sizeof...(Init);
}
static_assert(member_count<DirConfig>() == 2 * std::tuple_size_v<decltype(kLocationSettings)>,
              "a DirConfig member is missing from kLocationSettings (its default and merge)");

template <typename T> void set_default(DirConfig &c, const LocationSetting<T> &f)
{
    c.*f.value = f.initial;
    c.*f.set = 0;
}

/* What `add` (the inner section) set wins; otherwise what `base` has, set or default. */
template <typename T>
void merge_setting(DirConfig &out, const DirConfig &base, const DirConfig &add,
                   const LocationSetting<T> &f)
{
    out.*f.value = add.*f.set ? add.*f.value : base.*f.value;
    out.*f.set = add.*f.set || base.*f.set;
}

} // namespace

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

void *create_dir_config(apr_pool_t *p, char *dir)
{
    auto *c = static_cast<DirConfig *>(apr_pcalloc(p, sizeof(DirConfig)));
    std::apply([&](const auto &...setting) { (set_default(*c, setting), ...); },
               kLocationSettings);
    /* <If> sections are created with the path "*If": they keep their enclosing section's. */
    if (dir && *dir != '*') {
        c->section_path = apr_pstrdup(p, dir);
        c->section_path_set = 1;
    }
    return c;
}

void *merge_dir_config(apr_pool_t *p, void *base_v, void *add_v)
{
    const auto &base = *static_cast<DirConfig *>(base_v);
    const auto &add = *static_cast<DirConfig *>(add_v);
    auto *c = static_cast<DirConfig *>(apr_pcalloc(p, sizeof(DirConfig)));
    std::apply([&](const auto &...setting) { (merge_setting(*c, base, add, setting), ...); },
               kLocationSettings);
    return c;
}

ServerConfig *server_config(server_rec *s)
{
    return static_cast<ServerConfig *>(ap_get_module_config(s->module_config, &sse_module));
}

namespace {

/* ---- the global directives ---- */

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

/* ---- the per-location directives ---- */

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

const char *cmd_async(cmd_parms *, void *dv, int on)
{
    auto *d = static_cast<DirConfig *>(dv);
    d->async = on;
    d->async_set = 1;
    return nullptr;
}

const char *cmd_hold_mode(cmd_parms *cmd, void *dv, const char *arg)
{
    auto *d = static_cast<DirConfig *>(dv);
    if (!strcasecmp(arg, "request"))
        d->hold_socket = 0;
    else if (!strcasecmp(arg, "socket")) {
        d->hold_socket = 1;
        server_config(cmd->server)->hold_socket_configured = 1;
    } else
        return apr_psprintf(cmd->pool, "SSEHoldMode: \"%s\" must be request or socket", arg);
    d->hold_socket_set = 1;
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

/* An On|Off location setting and its "set here" mark. */
template <int DirConfig::*Value, int DirConfig::*Set>
const char *cmd_location_flag(cmd_parms *, void *dv, int on)
{
    auto *d = static_cast<DirConfig *>(dv);
    d->*Value = on;
    d->*Set = 1;
    return nullptr;
}
constexpr auto cmd_mercure_anonymous =
    cmd_location_flag<&DirConfig::mercure_anonymous, &DirConfig::mercure_anonymous_set>;
constexpr auto cmd_mercure_subscriptions =
    cmd_location_flag<&DirConfig::mercure_subscriptions, &DirConfig::mercure_subscriptions_set>;

const char *cmd_mercure_hub(cmd_parms *cmd, void *dv, const char *name)
{
    auto *d = static_cast<DirConfig *>(dv);
    if (!*name)
        return apr_psprintf(cmd->pool, "SSEMercureHub: the hub's name may not be empty");
    d->mercure_hub = name;
    d->mercure_hub_set = 1;
    return nullptr;
}

apr_status_t destroy_type_list(void *list)
{
    delete static_cast<std::vector<std::string> *>(list);
    return APR_SUCCESS;
}

/* SSEEventTypes name...: the list replaces the enclosing section's; `*` alone allows every
 * type again. Each name is checked as a publish checks an event type. */
const char *cmd_event_types(cmd_parms *cmd, void *dv, int argc, char *const argv[])
{
    auto *d = static_cast<DirConfig *>(dv);
    if (argc == 0)
        return "SSEEventTypes: name at least one event type (or * for every type)";
    d->event_types_set = 1;
    if (argc == 1 && !std::strcmp(argv[0], "*")) {
        d->event_types = nullptr;
        return nullptr;
    }
    auto *list = new std::vector<std::string>();
    apr_pool_cleanup_register(cmd->pool, list, destroy_type_list, apr_pool_cleanup_null);
    for (int i = 0; i < argc; ++i) {
        if (std::string bad = validate_event_type(argv[i]); !bad.empty())
            return apr_psprintf(cmd->pool, "SSEEventTypes: \"%s\": %s", argv[i], bad.c_str());
        list->emplace_back(argv[i]);
    }
    d->event_types = list;
    return nullptr;
}

/* ---- the command table ---- */

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

} // namespace

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
    AP_INIT_TAKE1("SSEHoldMode", as_cmd_func<cmd_hold_mode>(), nullptr, RSRC_CONF | ACCESS_CONF,
                  "request|socket: what the async hub keeps of a held stream: the request and "
                  "its connection, or (plain HTTP) only the socket (default request)"),
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
    AP_INIT_FLAG("SSEMercureAnonymous", as_cmd_func<cmd_mercure_anonymous>(), nullptr,
                 RSRC_CONF | ACCESS_CONF,
                 "On|Off: whether a Mercure hub here serves subscribers without a token "
                 "(default Off)"),
    AP_INIT_FLAG("SSEMercureSubscriptions", as_cmd_func<cmd_mercure_subscriptions>(), nullptr,
                 RSRC_CONF | ACCESS_CONF,
                 "On|Off: whether a Mercure hub here publishes subscription events and serves "
                 "the subscriptions API (default Off)"),
    AP_INIT_TAKE1("SSEMercureHub", as_cmd_func<cmd_mercure_hub>(), nullptr,
                  RSRC_CONF | ACCESS_CONF,
                  "<name>: the hub a mercure-hub location serves; locations with the same name "
                  "share their updates (default: the server's name and the location's path)"),
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
    AP_INIT_TAKE_ARGV("SSETokenCookieOrigins", as_cmd_func<cmd_token_cookie_origins>(), nullptr,
                      RSRC_CONF | ACCESS_CONF,
                      "<origin> ... | *: where a publish (POST, DELETE) with its token in the "
                      "cookie may come from, by Origin or Referer (default: the request's own)"),
    AP_INIT_TAKE_ARGV("SSEEventTypes", as_cmd_func<cmd_event_types>(), nullptr,
                      RSRC_CONF | ACCESS_CONF,
                      "<type> ... | *: the only event types publish and ?event= may name here "
                      "(message: the untyped event; default *, every type)"),
    AP_INIT_TAKE1("SSERedis", as_cmd_func<cmd_redis>(), nullptr, RSRC_CONF,
                  "redis://[[user]:password@]host[:port][/db] | unix:/path: join the servers "
                  "that name the same Redis and SSERedisPrefix into one bus"),
    AP_INIT_TAKE1("SSERedisPrefix", as_cmd_func<cmd_redis_prefix>(), nullptr, RSRC_CONF,
                  "<prefix>: the start of mod_sse's Redis keys (default sse:)"),
    {nullptr, {nullptr}, nullptr, 0, RAW_ARGS, nullptr},
};

} // namespace sse::httpd
