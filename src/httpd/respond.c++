/* Helpers shared by the handlers: configuration access, query and channel parsing with their
 * error answers, JSON answers. */
#include "src/httpd/module.h"
#include "src/httpd/channel_access.h"

#include "sse/delivery.h"

#include "http_core.h"
#include "http_protocol.h"

#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

const DirConfig &dir_config(request_rec *r)
{
    return *static_cast<DirConfig *>(ap_get_module_config(r->per_dir_config, &sse_module));
}

ModuleState *module_state(request_rec *r)
{
    return static_cast<ServerConfig *>(ap_get_module_config(r->server->module_config,
                                                           &sse_module))
        ->state;
}

apr_int64_t now_us() { return apr_time_now(); }

apr_int64_t monotonic_us()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return apr_int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

int answer_json(request_rec *r, int status, const std::string &json)
{
    r->status = status;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only)
        return OK;
    /* The whole answer and the EOS in one brigade, so the content-length filter sees the EOS
     * and sets Content-Length; then a FLUSH down the connection's filters only, so the core
     * output filter writes the answer now. Without that FLUSH it would hold the few hundred
     * bytes back until httpd had logged the request and found no pipelined request waiting
     * (there cannot be one: the client waits for this answer), so the next request of a
     * keep-alive connection always went through the event MPM's listener (epoll_ctl, a
     * wake-up, a hand-over to a worker) instead of being read by this worker
     * (docs/benchmarks.md, "What a publish costs"). The FLUSH must not go through the
     * request's filters: a compressing filter (mod_deflate) would end its block at it and
     * pass the body on before the EOS, and the answer would go chunked (t/proxy.t). */
    apr_bucket_alloc_t *ba = r->connection->bucket_alloc;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, ba);
    char *body = static_cast<char *>(apr_palloc(r->pool, json.size() + 1));
    memcpy(body, json.data(), json.size());
    body[json.size()] = '\n';
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_pool_create(body, json.size() + 1, r->pool, ba));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(ba));
    if (ap_pass_brigade(r->output_filters, bb) == APR_SUCCESS) {
        apr_brigade_cleanup(bb);
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(ba));
        ap_pass_brigade(r->connection->output_filters, bb);
    }
    apr_brigade_cleanup(bb);
    return OK;
}

namespace {

/* answer_error() with `body` holding more members than error and status. */
int answer_error_body(request_rec *r, int status, const char *tag, const Endpoint &who,
                      const std::string &message, nlohmann::json body)
{
    ap_log_rerror(APLOG_MARK, who.log_level, 0, r, "%s: %s refused (%d): %s", tag, who.name,
                  status, message.c_str());
    body["error"] = message;
    body["status"] = status;
    /* Error text may quote client bytes that are not UTF-8: replace them, never throw. */
    return answer_json(r, status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

} // namespace

int answer_error(request_rec *r, int status, const char *tag, const Endpoint &who,
                 const std::string &message, const std::string *channel)
{
    nlohmann::json body = nlohmann::json::object();
    if (channel)
        body["channel"] = *channel;
    return answer_error_body(r, status, tag, who, message, std::move(body));
}

bool event_types_allowed(request_rec *r, const std::vector<std::string> &types,
                         const Endpoint &who)
{
    const std::vector<std::string> *allowed = dir_config(r).event_types;
    if (!allowed)
        return true;
    for (const std::string &type : types) {
        if (event_type_listed(*allowed, type))
            continue;
        const std::string name = type.empty() ? "message" : type;
        std::string list;
        for (const std::string &a : *allowed)
            list += (list.empty() ? "" : ", ") + a;
        answer_error_body(r, HTTP_BAD_REQUEST, "SSE0120", who,
                          "event type \"" + name + "\" is not one of this location's "
                          "SSEEventTypes: " + list,
                          {{"event", name}, {"allowed", *allowed}});
        return false;
    }
    return true;
}

bool query_params(request_rec *r, Params &out, const Endpoint &who)
{
    if (!r->args)
        return true;
    std::string err = parse_form(r->args, out);
    if (err.empty())
        return true;
    answer_error(r, HTTP_BAD_REQUEST, "SSE0101", who, "bad query string: " + err);
    return false;
}

bool request_channels(request_rec *r, const std::vector<std::string> *body_channels,
                      const Params &query, std::vector<std::string> &out, const Endpoint &who)
{
    ChannelSelection sel;
    if (!select_request_channels(r, body_channels, query, sel)) {
        answer_error(r, sel.status, sel.tag, who, sel.error);
        return false;
    }
    if (!authorize_channels(r, sel, who))
        return false;
    out = std::move(sel.channels);
    return true;
}

const char *configured_handler(request_rec *r)
{
    auto *core = static_cast<core_dir_config *>(ap_get_core_module_config(r->per_dir_config));
    if (!core || !core->expr_handler)
        return nullptr;
    const char *err = nullptr;
    const char *h = ap_expr_str_exec(r, core->expr_handler, &err);
    return err ? nullptr : h; /* core reports a failing expression in fixups */
}

void log_boundary_failure(const server_rec *s, const char *what, const char *why) noexcept
{
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0301: %s failed: %s", what, why);
}

} // namespace sse::httpd
