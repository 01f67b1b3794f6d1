/* src/httpd/token_check.h — signed tokens on subscribe and publish locations (docs/tokens.md).
 *
 * A location with SSETokenKey serves only requests that carry a valid token (sse/token.h)
 * whose selectors name every channel of the request. The handlers call token_verified() before
 * reading anything of the request but its query (so an anonymous client's body is never read),
 * and token_covers() once the request's channels are known (request_channels), before anything
 * is opened, counted or published; each answers its refusals itself:
 * - 401 when there is no token (SSE0140), or it is malformed, signed with another algorithm or
 *   key, or has a claim of the wrong type (SSE0141), or is expired or not valid yet (SSE0142);
 *   each with `WWW-Authenticate: Bearer realm="mod_sse"` (plus error="invalid_token" for a
 *   token that is there) and the reason in the JSON body and the log line (never the token);
 * - 403 when the token is valid but a channel is not named by its selectors: subscribe (GET,
 *   HEAD) looks at mercure.subscribe, publish locations (POST, GET figures, DELETE) at
 *   mercure.publish (SSE0143, the body names the channel).
 * The token is the first found of: `Authorization: Bearer <token>`, the `authorization` query
 * parameter, the cookie named by SSETokenCookie (default mercureAuthorization). The two a
 * client chooses for this request come before the cookie the browser adds to every request
 * (which may be stale, or another application's): Mercure's draft says the query parameter
 * MUST win over the cookie, and the same order holds at every location.
 * A browser sends the cookie with any site's request (cross-site request forgery): a publish
 * that changes something (any method but GET and HEAD) with its token in the cookie is
 * served only when its Origin header (else its Referer's origin) is one of
 * SSETokenCookieOrigins (default: the request's own scheme://Host); otherwise 403 SSE0144.
 * A valid token's `sub` becomes the request's user (r->user, AUTH_TYPE Bearer), so that
 * %{REMOTE_USER} in SSEClientId and %u in the access log name it.
 *
 * Runs on the request's worker; the key is the configuration's, read-only.
 */
#ifndef SSE_HTTPD_TOKEN_CHECK_H
#define SSE_HTTPD_TOKEN_CHECK_H

#include "src/httpd/module.h"

#include <string>
#include <vector>

namespace sse::httpd {

enum class TokenUse { Subscribe, Publish };

constexpr const char *kDefaultTokenCookie = "mercureAuthorization";

/* The request's token, verified: `required` is false when the location has no key. */
struct RequestToken {
    bool required = false;
    bool anonymous = false; /* required, none sent, and token_verified() let it through */
    TokenClaims claims;     /* when required and not anonymous */
};

/* Step one, authentication, before anything of the request is read or parsed (a publish's
 * body included): true when the location has no key or the request carries a valid token
 * (its claims in `out`), or carries none and `anonymous_ok` (out.anonymous is set: a Mercure
 * hub's anonymous subscriber); otherwise the 401 is sent and it returns false. */
bool token_verified(request_rec *r, const Params &query, TokenUse use, RequestToken &out,
                    bool anonymous_ok = false);

/* Step two, once the request's channels are known: true when `token` names every one of
 * `channels` for `use` (always, without a key); then a `sub` becomes r->user, and `expires`
 * (may be null) gets the token's exp as an apr_time_t, 0 when it has none or there is no key.
 * Otherwise the 403 is sent and it returns false. */
bool token_covers(request_rec *r, const RequestToken &token,
                  const std::vector<std::string> &channels, TokenUse use,
                  apr_time_t *expires = nullptr);

/* The directives' handlers (mod_sse.c++'s table): SSETokenKey HS256|RS256|ES256 <file> | off,
 * SSETokenCookie <name>, SSETokenCookieOrigins <origin>... | *. The key file is read here, at configuration time (as root, before
 * httpd gives up its privileges; again at each restart); any problem with it is the
 * directive's error, so httpd does not start. */
const char *cmd_token_key(cmd_parms *cmd, void *dv, const char *alg, const char *file);
const char *cmd_token_cookie(cmd_parms *cmd, void *dv, const char *name);
const char *cmd_token_cookie_origins(cmd_parms *cmd, void *dv, int argc, char *const argv[]);

} // namespace sse::httpd

#endif
