/* Helpers shared by the handlers: configuration access, query and channel parsing with their
 * error answers, JSON answers. */
#include "src/httpd/module.h"

#include "http_core.h"
#include "http_protocol.h"

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

int answer_json(request_rec *r, int status, const std::string &json)
{
    r->status = status;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (!r->header_only) {
        ap_rwrite(json.data(), static_cast<int>(json.size()), r);
        ap_rputc('\n', r);
    }
    return OK;
}

int answer_error(request_rec *r, int status, const char *tag, const Endpoint &who,
                 const std::string &message)
{
    ap_log_rerror(APLOG_MARK, who.log_level, 0, r, "%s: %s refused (%d): %s", tag, who.name,
                  status, message.c_str());
    nlohmann::json body = {{"error", message}, {"status", status}};
    /* Error text may quote client bytes that are not UTF-8: replace them, never throw. */
    return answer_json(r, status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
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
    const DirConfig &d = dir_config(r);
    std::string configured;
    const std::string *configured_p = nullptr;
    std::string err;
    if (d.channel_expr) {
        if (body_channels && !body_channels->empty()) {
            err = "this location takes its channels from SSEChannel; the body must not name a "
                  "channel";
        } else {
            const char *expr_err = nullptr;
            const char *value = ap_expr_str_exec(r, d.channel_expr, &expr_err);
            if (expr_err) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                              "SSE0102: SSEChannel expression failed: %s", expr_err);
                answer_error(r, HTTP_INTERNAL_SERVER_ERROR, "SSE0102", who,
                             "the channel expression of this location failed");
                return false;
            }
            configured = value ? value : "";
            configured_p = &configured;
        }
    } else if (body_channels && !body_channels->empty()) {
        for (const auto &c : *body_channels)
            configured += (configured.empty() ? "" : ",") + c;
        configured_p = &configured;
    }

    /* Channels from the path: the part of the URI after the <Location> that applies. Core
     * keeps the path of the innermost section merged into this request (the one holding
     * SetHandler, or a deeper one); a <LocationMatch> regex gives no prefix. */
    std::string_view rest;
    auto *core = static_cast<core_dir_config *>(ap_get_core_module_config(r->per_dir_config));
    if (core && core->d && !core->r && !core->d_is_fnmatch &&
        strncmp(r->uri, core->d, strlen(core->d)) == 0)
        rest = r->uri + strlen(core->d);
    if (err.empty())
        err = select_channels(configured_p, query, rest, out);
    if (err.empty())
        return true;
    answer_error(r, HTTP_BAD_REQUEST, "SSE0100", who, err);
    return false;
}

void log_boundary_failure(const server_rec *s, const char *what, const char *why) noexcept
{
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0301: %s failed: %s", what, why);
}

} // namespace sse::httpd
