/* %{query_param:name}, the ap_expr function of SSEChannel and SSEClientId (see hooks.h). */
#include "src/httpd/hooks.h"

#include "apr_strings.h"

#include <cstring>
#include <strings.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

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

} // namespace

int expr_lookup(ap_expr_lookup_parms *parms)
{
    if (parms->type != AP_EXPR_FUNC_STRING || strcasecmp(parms->name, "query_param") != 0)
        return DECLINED;
    *parms->func = reinterpret_cast<const void *>(query_param_func);
    *parms->data = parms->name;
    return OK;
}

} // namespace sse::httpd
