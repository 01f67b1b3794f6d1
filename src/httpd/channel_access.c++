/* Channel access: the per-channel lookup and the `sse-channel` authorization provider (see
 * channel_access.h for the contract). */
#include "src/httpd/channel_access.h"

#include "http_core.h"
#include "http_request.h"
#include "mod_auth.h"

#include "apr_fnmatch.h"
#include "apr_strings.h"

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

/* On the parent request while a channel lookup runs: the channel being authorized. */
constexpr char kChannelNote[] = "sse-channel-authorizing";
/* On a request whose own channels `Require sse-channel` evaluated: the channel when it was
 * exactly one, kSeveral otherwise (not a channel name: '\n' is no channel character). */
constexpr char kCheckedNote[] = "sse-channel-checked";
constexpr char kSeveral[] = "\n";

/* The refusal of one channel: logged with `tag`, answered as JSON naming the channel. */
bool refuse(request_rec *r, int status, const char *tag, const Endpoint &who,
            const std::string &channel, const std::string &message)
{
    answer_error(r, status, tag, who, message, &channel);
    return false;
}

/* Copies the challenge of a lookup answered 401 onto the request, so the client prompts. */
void copy_challenge(request_rec *r, const request_rec *rr)
{
    for (const char *h : {"WWW-Authenticate", "Proxy-Authenticate"}) {
        const apr_array_header_t *arr = apr_table_elts(rr->err_headers_out);
        const auto *e = reinterpret_cast<const apr_table_entry_t *>(arr->elts);
        for (int i = 0; i < arr->nelts; ++i)
            if (e[i].key && strcasecmp(e[i].key, h) == 0)
                apr_table_add(r->err_headers_out, h, e[i].val);
    }
}

/* The internal lookup of `uri` for `channel`; returns the lookup's status. httpd skips
 * authentication and authorization for a lookup that merges the request's own configuration
 * (ap_process_request_internal: r->main->per_dir_config == rr->per_dir_config), and so would
 * skip a rule of that same section that reads the URI (`Require expr "%{REQUEST_URI} ..."`,
 * RequireAny, `Require not`): the parent's configuration is replaced by an equal copy (made
 * once per request, in `copy`) while the lookup runs, so every rule is run for the channel's
 * own path. */
int lookup(request_rec *r, const std::string &channel, const char *uri, ap_conf_vector_t **copy)
{
    apr_table_setn(r->notes, kChannelNote, apr_pstrdup(r->pool, channel.c_str()));
    ap_conf_vector_t *own = r->per_dir_config;
    if (!*copy)
        *copy = ap_merge_per_dir_configs(r->pool, own, ap_create_per_dir_config(r->pool));
    r->per_dir_config = *copy;
    request_rec *rr = ap_sub_req_method_uri(r->method, uri, r, nullptr);
    r->per_dir_config = own;
    apr_table_unset(r->notes, kChannelNote);
    const int status = rr->status;
    if (status == HTTP_UNAUTHORIZED)
        copy_challenge(r, rr);
    ap_destroy_sub_req(rr);
    return status;
}

} // namespace

bool is_own_path(const std::string &path)
{
    std::string norm = path;
    return ap_normalize_path(norm.data(),
                             AP_NORMALIZE_NOT_ABOVE_ROOT | AP_NORMALIZE_MERGE_SLASHES) &&
           strcmp(norm.c_str(), path.c_str()) == 0;
}

namespace {

/* The <Location> (a path prefix) that set this request's handler (SetHandler sse-*): its path
 * is the one the channels in the request's path follow, so that a nested section
 * (`<Location /events/private> Require ...`) neither renames the channels under it nor gives
 * a channel a second path where other rules apply. Found by identity: core's merge keeps the
 * handler expression of the innermost section that set one (merge_core_dir_configs), so it
 * is the prefix section matching the request whose expression that is. nullptr when the
 * handler comes from anything else (a <LocationMatch>, a wildcard <Location>, an <If>, a
 * <Directory>, mod_rewrite's H= flag): the path of such a request is the client's choice and
 * says nothing about where the channels' rules are. */
const core_dir_config *handler_section(request_rec *r)
{
    auto *merged = static_cast<core_dir_config *>(ap_get_core_module_config(r->per_dir_config));
    if (!merged || !merged->expr_handler)
        return nullptr;
    auto *sconf = static_cast<core_server_config *>(
        ap_get_core_module_config(r->server->module_config));
    const auto *sec = reinterpret_cast<ap_conf_vector_t **>(sconf->sec_url->elts);
    for (int i = 0; i < sconf->sec_url->nelts; ++i) {
        auto *c = static_cast<const core_dir_config *>(ap_get_core_module_config(sec[i]));
        if (c->expr_handler != merged->expr_handler || !c->d || c->r || c->d_is_fnmatch)
            continue;
        /* The prefix test of httpd's location walk. */
        const std::size_t len = strlen(c->d);
        if (strncmp(c->d, r->uri, len) == 0 &&
            (len == 0 || c->d[len - 1] == '/' || r->uri[len] == '/' || r->uri[len] == '\0'))
            return c;
    }
    return nullptr;
}

} // namespace

bool select_request_channels(request_rec *r, const std::vector<std::string> *body_channels,
                             const Params &query, ChannelSelection &out)
{
    const DirConfig &d = dir_config(r);
    std::string configured;
    const std::string *configured_p = nullptr;
    if (d.channel_expr) {
        if (body_channels && !body_channels->empty()) {
            out.error = "this location takes its channels from SSEChannel; the body must not "
                        "name a channel";
            out.status = HTTP_BAD_REQUEST;
            out.tag = "SSE0100";
            return false;
        }
        const char *expr_err = nullptr;
        const char *value = ap_expr_str_exec(r, d.channel_expr, &expr_err);
        if (expr_err) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "SSE0102: SSEChannel expression failed: %s",
                          expr_err);
            out.error = "the channel expression of this location failed";
            out.status = HTTP_INTERNAL_SERVER_ERROR;
            out.tag = "SSE0102";
            return false;
        }
        configured = value ? value : "";
        configured_p = &configured;
    } else if (body_channels && !body_channels->empty()) {
        for (const auto &c : *body_channels)
            configured += (configured.empty() ? "" : ",") + c;
        configured_p = &configured;
    }

    /* The channels' base, and the channels in the path: the part of the URI after it.
     * SSEChannelBase when set (a path under it names channels; any other names none);
     * otherwise the prefix <Location> that set the handler (see handler_section). */
    std::string_view rest;
    bool has_base = true;
    if (d.channel_base) {
        out.base = d.channel_base;
        const std::size_t len = out.base.size();
        if (strncmp(r->uri, d.channel_base, len) == 0 && (r->uri[len] == '/' || !r->uri[len]))
            rest = r->uri + len;
    } else if (const core_dir_config *core = handler_section(r)) {
        rest = r->uri + strlen(core->d);
        out.base = core->d;
    } else {
        has_base = false;
    }
    if (out.base.empty() || out.base.back() != '/')
        out.base += '/';
    out.error = select_channels(configured_p, query, rest, out.channels);
    if (!out.error.empty()) {
        out.status = HTTP_BAD_REQUEST;
        out.tag = "SSE0100";
        return false;
    }
    if (!has_base) {
        /* The request's own path is the client's choice: checking the channels under it
         * would let the client pick the rules. Fail closed. */
        out.error = "the channels of this request have no path of their own to check their "
                    "access rules at: the handler here is not set by a <Location> prefix, so "
                    "this location needs SSEChannelBase (the path the channels' rules are "
                    "under)";
        out.status = HTTP_FORBIDDEN;
        out.tag = "SSE0136";
        out.channels.clear();
        return false;
    }
    return true;
}

bool authorize_channels(request_rec *r, const ChannelSelection &sel, const Endpoint &who)
{
    const char *checked = apr_table_get(r->notes, kCheckedNote);
    ap_conf_vector_t *copy = nullptr;
    for (const std::string &c : sel.channels) {
        const std::string path = sel.base + c;
        if (!is_own_path(path))
            return refuse(r, HTTP_FORBIDDEN, "SSE0132", who, c,
                          "channel \"" + c + "\" has no path of its own (" + path +
                              " has an empty, '.' or '..' segment), so the access rules for "
                              "it cannot be checked");
        /* Alone at the request's own path, and seen alone by `Require sse-channel` if it
         * ran: httpd authorized exactly this. */
        if ((!checked || c == checked) && path == r->uri)
            continue;
        const int status = lookup(r, c, ap_escape_uri(r->pool, path.c_str()), &copy);
        if (status == HTTP_OK)
            continue;
        if (status == HTTP_UNAUTHORIZED)
            return refuse(r, HTTP_UNAUTHORIZED, "SSE0131", who, c,
                          "channel \"" + c + "\" needs authentication: the access rules for " +
                              path + " ask for it (401)");
        if (ap_is_HTTP_SERVER_ERROR(status))
            return refuse(r, HTTP_INTERNAL_SERVER_ERROR, "SSE0133",
                          Endpoint{who.name, APLOG_ERR}, c,
                          "checking the access rules for channel \"" + c + "\" (" + path +
                              ") failed (" + std::to_string(status) + ")");
        return refuse(r, HTTP_FORBIDDEN, "SSE0130", who, c,
                      "channel \"" + c + "\" is not allowed here: the access rules for " + path +
                          " refuse it (" + std::to_string(status) + ")");
    }
    return true;
}

/* ---- Require sse-channel <expr> ---- */

namespace {

struct RequireChannel {
    ap_expr_info_t *expr;
    bool want_user; /* the expression reads REMOTE_USER */
};

/* Where the lookup function finds the RequireChannel being parsed (as mod_authz_core). */
constexpr char kParsingNote[] = "mod_sse_require_sse_channel";

/* %{SSE_CHANNEL}: the channel the expression is being evaluated for (ctx->data). */
const char *channel_var(ap_expr_eval_ctx_t *ctx, const void *)
{
    const auto *channel = static_cast<const std::string *>(ctx->data);
    return channel ? channel->c_str() : "";
}

int require_lookup(ap_expr_lookup_parms *parms)
{
    if (parms->type == AP_EXPR_FUNC_VAR) {
        if (strcasecmp(parms->name, "SSE_CHANNEL") == 0) {
            *parms->func = reinterpret_cast<const void *>(channel_var);
            *parms->data = parms->name;
            return OK;
        }
        if (strcasecmp(parms->name, "REMOTE_USER") == 0) {
            void *info = nullptr;
            apr_pool_userdata_get(&info, kParsingNote, parms->ptemp);
            if (info)
                static_cast<RequireChannel *>(info)->want_user = true;
        }
    }
    return ap_expr_lookup_default(parms);
}

const char *parse_require(cmd_parms *cmd, const char *line, const void **parsed)
{
    return guarded([&]() -> const char * {
        std::string text = line;
        if (text.size() >= 2 && text.front() == '"' && text.back() == '"')
            text = text.substr(1, text.size() - 2);
        auto *info =
            static_cast<RequireChannel *>(apr_pcalloc(cmd->pool, sizeof(RequireChannel)));
        apr_pool_userdata_setn(info, kParsingNote, apr_pool_cleanup_null, cmd->temp_pool);
        const char *err = nullptr;
        info->expr = ap_expr_parse_cmd_mi(cmd, apr_pstrdup(cmd->pool, text.c_str()), 0, &err,
                                          require_lookup, APLOG_MODULE_INDEX);
        apr_pool_userdata_setn(nullptr, kParsingNote, apr_pool_cleanup_null, cmd->temp_pool);
        if (err)
            return apr_psprintf(cmd->temp_pool,
                                "Require sse-channel: cannot parse the expression \"%s\": %s",
                                text.c_str(), err);
        *parsed = info;
        return nullptr;
    }, [&](const char *why) -> const char * {
        return apr_pstrcat(cmd->temp_pool, "Require sse-channel: internal error: ", why, nullptr);
    });
}

/* The channels `Require sse-channel` judges in `r`. Returns AUTHZ_GRANTED when they are in
 * `out`, or with `defer` set for a POST to an sse-publish location whose body names them;
 * AUTHZ_DENIED when they cannot be determined, AUTHZ_GENERAL_ERROR when SSEChannel failed. */
authz_status channels_to_judge(request_rec *r, std::vector<std::string> &out, bool &defer)
{
    if (r->main)
        if (const char *one = apr_table_get(r->main->notes, kChannelNote)) {
            out.assign(1, one);
            return AUTHZ_GRANTED;
        }
    Params query;
    std::string err = r->args ? parse_form(r->args, query) : std::string();
    ChannelSelection sel;
    if (err.empty() && select_request_channels(r, nullptr, query, sel)) {
        out = std::move(sel.channels);
        apr_table_set(r->notes, kCheckedNote, out.size() == 1 ? out[0].c_str() : kSeveral);
        return AUTHZ_GRANTED;
    }
    if (sel.status == HTTP_INTERNAL_SERVER_ERROR)
        return AUTHZ_GENERAL_ERROR; /* SSEChannel failed: logged (SSE0102) */
    const char *handler = configured_handler(r);
    if (err.empty() && sel.status == HTTP_BAD_REQUEST && r->method_number == M_POST && handler &&
        strcasecmp(handler, "sse-publish") == 0) {
        apr_table_setn(r->notes, kCheckedNote, kSeveral);
        defer = true;
        return AUTHZ_GRANTED;
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "SSE0135: Require sse-channel: the request's channels cannot be determined "
                  "(%s): denied", err.empty() ? sel.error.c_str() : err.c_str());
    return AUTHZ_DENIED;
}

authz_status check_require(request_rec *r, const char *, const void *parsed)
{
    return guarded([&]() -> authz_status {
        const auto *info = static_cast<const RequireChannel *>(parsed);
        std::vector<std::string> channels;
        bool defer = false;
        if (authz_status st = channels_to_judge(r, channels, defer); st != AUTHZ_GRANTED)
            return st;
        if (defer)
            return AUTHZ_GRANTED; /* each channel of the body is judged by its own lookup */
        for (const std::string &channel : channels) {
            const char *err = nullptr;
            const char *source = nullptr;
            ap_regmatch_t pmatch[AP_MAX_REG_MATCH];
            const char *vary = nullptr;
            ap_expr_eval_ctx_t ctx{};
            ctx.r = r;
            ctx.c = r->connection;
            ctx.s = r->server;
            ctx.p = r->pool;
            ctx.err = &err;
            ctx.info = info->expr;
            ctx.re_nmatch = AP_MAX_REG_MATCH;
            ctx.re_pmatch = pmatch;
            ctx.re_source = &source;
            ctx.vary_this = &vary;
            ctx.data = const_cast<std::string *>(&channel);
            const int rc = ap_expr_exec_ctx(&ctx);
            if (rc < 0) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                              "SSE0134: Require sse-channel: the expression failed for channel "
                              "\"%s\": %s", channel.c_str(), err ? err : "");
                return AUTHZ_GENERAL_ERROR;
            }
            if (rc == 0)
                return info->want_user && !r->user ? AUTHZ_DENIED_NO_USER : AUTHZ_DENIED;
        }
        return AUTHZ_GRANTED;
    }, [&](const char *why) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "SSE0300: Require sse-channel failed: %s",
                      why);
        return AUTHZ_GENERAL_ERROR;
    });
}

const authz_provider kRequireChannel = {&check_require, &parse_require};

} // namespace

void register_channel_authz(apr_pool_t *p)
{
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "sse-channel", AUTHZ_PROVIDER_VERSION,
                              &kRequireChannel, AP_AUTH_INTERNAL_PER_CONF);
}

} // namespace sse::httpd
