/* src/httpd/channel_access.h — who may use which channel, however a request names it.
 *
 * A request names its channels in its path (/events/news,sports), in `channel` query
 * parameters, through an SSEChannel expression, or (publish) in its body. httpd's access rules
 * (<Location>, <LocationMatch>, <If>, Require, Auth*) only ever looked at the request's own path:
 * GET /events/news?channel=private reached the channel "private" past a
 * `<Location /events/private> Require all denied`. Two mechanisms close that:
 *
 * 1. authorize_channels(): every channel is authorized as if it had been requested alone at
 *    its own path, `<base>/<channel>`, by an internal lookup of that URI (ap_sub_req_method_uri
 *    with the request's method: location and <If> walk, access, authentication and
 *    authorization hooks; never a handler). The base is SSEChannelBase when the location sets
 *    it, otherwise the prefix <Location> that set the handler. A request whose handler comes
 *    from anything else (<LocationMatch>, <If>, <Directory>, RewriteRule [H=]) without
 *    SSEChannelBase has no base: its path is the client's choice, so checking the channels
 *    under it would let the client pick the rules; such a request is refused 403 (SSE0136)
 *    as soon as it names a channel. The lookup is skipped only when the channel's path is the
 *    request's own and httpd authorized exactly it. Every other lookup runs the full
 *    authorization, even when it merges the same configuration as the request (httpd would
 *    skip that: ap_process_request_internal compares r->main->per_dir_config with
 *    r->per_dir_config; the parent's is briefly replaced by an equal copy), so a rule that
 *    reads the URI in the request's own section (`Require expr "%{REQUEST_URI} ..."`,
 *    RequireAny, `Require not`) is judged for the channel's path.
 *    Outcome: 200 allowed; 401 answered 401 with the lookup's WWW-Authenticate (the browser
 *    prompts); 5xx answered 500; anything else answered 403. Refusals are JSON naming the
 *    channel, logged with a tag; nothing is delivered or published: the handlers call this
 *    (through request_channels) before they open a stream, publish, count or close.
 *    A channel whose path httpd would rewrite (an empty, "." or ".." segment: "a//b",
 *    "x/../private") has no path of its own to authorize and is refused (403).
 *
 * 2. `Require sse-channel <expr>`: an authorization provider whose argument is an ap_expr
 *    boolean, evaluated with %{SSE_CHANNEL} set to a channel. In a channel lookup made by (1)
 *    it is the channel being authorized (a note on the parent request says which); in any
 *    other request it is evaluated for every channel the request names (all must pass), and a
 *    request whose channels cannot be determined is denied (the handler would answer it 400).
 *    A POST to an sse-publish location whose path and query name no channel (its body does)
 *    is granted here and decided per channel by (1). When the expression uses REMOTE_USER and
 *    there is no user yet, a failure is AUTHZ_DENIED_NO_USER, so httpd asks for a login, as
 *    mod_authz_core's `Require expr` does.
 *    Because one answer for several channels cannot be exact under every Require combination
 *    (RequireAny, `Require not`), (1) re-runs the full authorization for every channel the
 *    provider did not see alone in the request itself.
 *
 * Threads: everything here runs on the thread serving the request, in its pools.
 */
#ifndef SSE_HTTPD_CHANNEL_ACCESS_H
#define SSE_HTTPD_CHANNEL_ACCESS_H

#include "src/httpd/module.h"

#include <string>
#include <vector>

namespace sse::httpd {

/* The channels a request names, computed without answering anything. */
struct ChannelSelection {
    std::vector<std::string> channels;
    std::string base;       /* a channel c's own path is base + c (base ends with '/') */
    std::string error;      /* why the channels cannot be determined ("" when they can) */
    int status = 0;         /* the answer for `error`: 400, 403 (no base: SSE0136), or 500
                               (SSEChannel failed) */
    const char *tag = "";   /* the log tag for `error` */
};

/* Fills `out` from SSEChannel, the body's channels (publish), the `channel` parameters or
 * the path after the base (see select_channels in sse/request.h); false (with out.error)
 * when it cannot, or when the channels have no base (see (1)). */
bool select_request_channels(request_rec *r, const std::vector<std::string> *body_channels,
                             const Params &query, ChannelSelection &out);

/* Authorizes every channel of `sel` as described above. True when all are allowed; otherwise
 * answers the request itself (401, 403 or 500, JSON with a "channel" member) and returns
 * false. */
bool authorize_channels(request_rec *r, const ChannelSelection &sel, const Endpoint &who);

/* True when `path` is what httpd would look up for it: no empty, "." or ".." segment that
 * its normalization (ap_process_request_internal) would remove. */
bool is_own_path(const std::string &path);

/* Registers the `sse-channel` authorization provider (register_hooks). */
void register_channel_authz(apr_pool_t *p);

} // namespace sse::httpd

#endif
