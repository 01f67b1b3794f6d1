/* src/httpd/token_check.h — signed tokens on subscribe and publish locations (docs/tokens.md).
 *
 * A location with SSETokenKey serves only requests that carry a valid token (sse/token.h)
 * whose selectors name every channel of the request. The handlers call token_allows() once,
 * after the request's channels are known (request_channels) and before anything is opened,
 * counted or published; it answers a refusal itself:
 * - 401 when there is no token (SSE0140), or it is malformed, signed with another algorithm or
 *   key, or has a claim of the wrong type (SSE0141), or is expired or not valid yet (SSE0142);
 *   each with `WWW-Authenticate: Bearer realm="mod_sse"` (plus error="invalid_token" for a
 *   token that is there) and the reason in the JSON body and the log line (never the token);
 * - 403 when the token is valid but a channel is not named by its selectors: subscribe (GET,
 *   HEAD) looks at mercure.subscribe, publish locations (POST, GET figures, DELETE) at
 *   mercure.publish (SSE0143, the body names the channel).
 * The token is the first found of: `Authorization: Bearer <token>`, the cookie named by
 * SSETokenCookie (default mercureAuthorization), the `authorization` query parameter.
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

/* True when the request may go on: its location has no key, or its token is valid and covers
 * every one of `channels` for `use`. Otherwise the answer is sent and it returns false.
 * `expires` (may be null) gets the token's exp as an apr_time_t, 0 when it has none or the
 * location has no key. */
bool token_allows(request_rec *r, const Params &query, const std::vector<std::string> &channels,
                  TokenUse use, apr_time_t *expires = nullptr);

/* The directives' handlers (mod_sse.c++'s table): SSETokenKey HS256|RS256|ES256 <file> | off,
 * SSETokenCookie <name>. The key file is read here, at configuration time (as root, before
 * httpd gives up its privileges; again at each restart); any problem with it is the
 * directive's error, so httpd does not start. */
const char *cmd_token_key(cmd_parms *cmd, void *dv, const char *alg, const char *file);
const char *cmd_token_cookie(cmd_parms *cmd, void *dv, const char *name);

} // namespace sse::httpd

#endif
