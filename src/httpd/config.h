/* src/httpd/config.h — mod_sse's directives and the configuration records they fill.
 *
 * - ServerConfig: the global directives (GLOBAL_ONLY, main server). Virtual hosts read the
 *   main server's: the module record has no server merge.
 * - DirConfig: the per-location directives. Each value `x` has an `x_set` marker, so a nested
 *   <Location> inherits what its parent set instead of a default (the `field`/`field_set`
 *   merge of httpd's mod_proxy_wstunnel).
 * Both live in the configuration pool of one generation and are read-only once the
 * configuration is read. The directives' handlers, the records' create and merge functions
 * and the command table are in config.c++ (SSETokenKey's and SSETokenCookie's handlers in
 * token_check.c++, SSEPublishSocket's parsing in publish_socket.c++).
 *
 * Adding a per-location directive:
 *   1. its value and marker in DirConfig below;
 *   2. one line in config.c++'s kLocationSettings: its default, from which create_dir_config
 *      and merge_dir_config are derived (the build fails when a DirConfig member is in no line);
 *   3. its handler, which parses the argument into the value and sets the marker, and its
 *      line in the command table (config.c++ `directives`).
 * A global directive: its field in ServerConfig, its default in create_server_config, its
 * handler (which starts with ap_check_cmd_context(cmd, GLOBAL_ONLY)) and its command line.
 *
 * Why the command table is not derived from kLocationSettings too: the handlers differ in
 * arity (TAKE1, TAKE12, FLAG) and most do more than store a parsed value (an ap_expr parsed
 * against cmd, SSEClientId's check of what the client chooses, a key file read); deriving
 * command_rec entries from the list would take templates over handler signatures that hide
 * which function httpd calls for which directive. So the table stays httpd's plain form, one
 * AP_INIT_* line per directive, and the list derives only what is the same for every setting
 * and was written field by field before: the defaults and the merge.
 */
#ifndef SSE_HTTPD_CONFIG_H
#define SSE_HTTPD_CONFIG_H

#include "sse/token.h"

#include "httpd.h"
#include "http_config.h"
#include "ap_expr.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace sse {
struct RedisUrl;
}

namespace sse::httpd {

struct ModuleState;

/* SSEPublishSocket and SSEPublishSocketClients (see publish_socket.h). */
struct PublishSocketConfig {
    const char *path;        /* nullptr: no socket; absolute after check_config */
    apr_fileperms_t mode;    /* default 0660 */
    const char *group_name;  /* nullptr: httpd's Group */
    gid_t group_id;
    int max_clients;         /* concurrent connections served */
};

constexpr int kDefaultSocketClients = 64;

/* Global settings (main server only; GLOBAL_ONLY directives). */
struct ServerConfig {
    apr_uint64_t bus_size;     int bus_size_set;
    apr_uint64_t history_count; int history_set;
    apr_uint64_t history_seconds;
    PublishSocketConfig publish_socket;
    apr_uint64_t max_subscribers; int max_subscribers_set;   /* SSEMaxSubscribers */
    apr_uint64_t max_channels;    int max_channels_set;      /* SSEMaxChannels */
    apr_uint64_t max_unpublished; /* SSEMaxUnpublishedChannels; 0: half of the table */
    const char *presence_channel;                            /* SSEPresenceChannel */
    const RedisUrl *redis_url;   /* SSERedis (redis_bus.h); nullptr: one server alone */
    const char *redis_prefix;    /* SSERedisPrefix; nullptr: "sse:" */
    ModuleState *state;        /* set in post_config, the same for every server_rec */
    /* `SSEHoldMode socket` is in force somewhere in this server's configuration (any section
     * read at start-up: <Location>, <Directory>, <If>); set by the directive's handler, read by
     * the start-up sizing check (mpm_sizing.h). */
    int hold_socket_configured;
};

/* Per-location settings; each `x` has an `x_set` marker so a nested <Location> inherits
 * what its parent set instead of a default. Every member is in config.c++'s kLocationSettings. */
struct DirConfig {
    ap_expr_info_t *channel_expr;      int channel_expr_set;
    apr_interval_time_t keepalive;     int keepalive_set;
    apr_int64_t retry_ms;              int retry_set;      /* -1: no retry field */
    apr_off_t max_message_size;        int max_message_size_set;
    int async;                         int async_set;        /* SSEAsync */
    apr_size_t max_pending;            int max_pending_set;  /* SSEMaxPending */
    int hold_socket;                   int hold_socket_set;  /* SSEHoldMode socket (1) or
                                                                request (0, the default) */
    ap_expr_info_t *client_id_expr;    int client_id_expr_set;       /* SSEClientId */
    int duplicate_policy;              int duplicate_policy_set;     /* SSEDuplicateClient */
    int presence_subscribe;            int presence_subscribe_set;   /* SSEPresenceSubscribe */
    const TokenKey *token_key;         int token_key_set;    /* SSETokenKey; nullptr: off */
    const char *token_cookie;          int token_cookie_set; /* SSETokenCookie; nullptr: default */
    /* SSETokenCookieOrigins: the origins (lower case, or "*") a state-changing publish with
     * its token in the cookie may come from; nullptr: the request's own. Configuration pool. */
    const std::vector<std::string> *token_cookie_origins; int token_cookie_origins_set;
    const char *channel_base;          int channel_base_set; /* SSEChannelBase, no trailing '/'
                                                                ("" for "/"); nullptr: none */
    /* SSEEventTypes: the event types publish and ?event= may name here ("message": the
     * untyped event); nullptr: every type. Owned by the configuration pool. */
    const std::vector<std::string> *event_types; int event_types_set;
    int mercure_anonymous;             int mercure_anonymous_set;    /* SSEMercureAnonymous */
    int mercure_subscriptions; int mercure_subscriptions_set; /* SSEMercureSubscriptions */
    const char *mercure_hub;           int mercure_hub_set; /* SSEMercureHub; nullptr: derived */
    /* The path of the innermost <Location>/<Directory> (or regex) section that configured
     * this one (not <If>): a hub's default name. nullptr: none (server level). */
    const char *section_path;          int section_path_set;
};

constexpr apr_uint64_t kDefaultBusSize = 16u << 20;
constexpr apr_interval_time_t kDefaultKeepalive = apr_time_from_sec(15);
constexpr apr_off_t kDefaultMaxMessageSize = 256 * 1024;
constexpr apr_size_t kDefaultMaxPending = 256 * 1024;
constexpr apr_uint64_t kDefaultMaxSubscribers = 50000;
constexpr apr_uint64_t kDefaultMaxChannels = 10000;

/* The module record's configuration entries. */
void *create_server_config(apr_pool_t *p, server_rec *s);
void *create_dir_config(apr_pool_t *p, char *dir);
void *merge_dir_config(apr_pool_t *p, void *base, void *add);
extern const command_rec directives[];

/* The main server's (or a virtual host's) ServerConfig. */
ServerConfig *server_config(server_rec *s);

} // namespace sse::httpd

#endif
