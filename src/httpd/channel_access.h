/* src/httpd/channel_access.h — who may use which channel, however a request names it.
 *
 * A request names its channels in its path (/events/news,sports), in `channel` query
 * parameters, through an SSEChannel expression, or (publish) in its body. httpd's access rules
 * (<Location>, <LocationMatch>, <If>, Require, Auth*) only ever looked at the request's own path:
 * GET /events/news?channel=private reached the channel "private" past a
 * `<Location /events/private> Require all denied`. Two mechanisms close that:
 *
 * 1. authorize_channels(): every channel is authorized as if it had been requested alone at
 *    its own path, `<base>/<channel>` (base: the <Location> path the request matched, or the
 *    request's own path under a <LocationMatch>), by an internal lookup of that URI
 *    (ap_sub_req_method_uri with the request's method: location and <If> walk, access,
 *    authentication and authorization hooks; never a handler). The lookup is skipped when that
 *    path is the request's own (httpd authorized it already). When the lookup merges the same
 *    configuration as the request (no section of its own), httpd itself skips authentication
 *    and authorization (ap_process_request_internal: r->main->per_dir_config ==
 *    r->per_dir_config), so a location without rules pays a location walk per channel, no more.
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
 *    provider did not see alone in the request itself: the lookup is then made with the
 *    parent's per_dir_config briefly replaced by an equal copy, so httpd does not skip it.
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
    int status = 0;         /* the answer for `error`: 400, or 500 (SSEChannel failed) */
    const char *tag = "";   /* the log tag for `error` */
};

/* Fills `out` from SSEChannel, the body's channels (publish), the `channel` parameters or
 * the path (see select_channels in sse/request.h); false (with out.error) when it cannot. */
bool select_request_channels(request_rec *r, const std::vector<std::string> *body_channels,
                             const Params &query, ChannelSelection &out);

/* Authorizes every channel of `sel` as described above. True when all are allowed; otherwise
 * answers the request itself (401, 403 or 500, JSON with a "channel" member) and returns
 * false. */
bool authorize_channels(request_rec *r, const ChannelSelection &sel, const Endpoint &who);

/* Registers the `sse-channel` authorization provider (register_hooks). */
void register_channel_authz(apr_pool_t *p);

} // namespace sse::httpd

#endif
