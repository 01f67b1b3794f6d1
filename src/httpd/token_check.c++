/* Signed tokens on subscribe and publish locations: the directives and the one check both
 * handlers make (see token_check.h). */
#include "src/httpd/token_check.h"

#include "sse/token.h"

#include "http_protocol.h"
#include "util_cookies.h"

#include "apr_file_io.h"
#include "apr_strings.h"

#include <algorithm>
#include <cctype>
#include <cstring>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

/* Larger key files are refused unread: a PEM public key is a few hundred bytes. */
constexpr apr_off_t kMaxKeyFileBytes = 64 * 1024;

/* exp beyond the year 9999 is taken as no deadline (its microseconds would overflow). */
constexpr std::int64_t kMaxDeadlineSeconds = 253402300799;

apr_status_t destroy_key(void *data)
{
    delete static_cast<TokenKey *>(data);
    return APR_SUCCESS;
}

/* The key file's bytes into `out`; nullptr or the directive's error. */
const char *read_key_file(cmd_parms *cmd, const char *path, std::string &out)
{
    apr_file_t *f = nullptr;
    apr_finfo_t info;
    char why[256];
    apr_status_t rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, cmd->temp_pool);
    if (rv == APR_SUCCESS)
        rv = apr_file_info_get(&info, APR_FINFO_SIZE | APR_FINFO_TYPE, f);
    if (rv != APR_SUCCESS)
        return apr_psprintf(cmd->pool, "SSETokenKey: cannot read the key file \"%s\": %s", path,
                            apr_strerror(rv, why, sizeof why));
    if (info.filetype != APR_REG)
        return apr_psprintf(cmd->pool, "SSETokenKey: the key file \"%s\" is not a regular file",
                            path);
    if (info.size > kMaxKeyFileBytes)
        return apr_psprintf(cmd->pool,
                            "SSETokenKey: the key file \"%s\" is larger than %" APR_OFF_T_FMT
                            " bytes: not a key",
                            path, kMaxKeyFileBytes);
    out.resize(static_cast<std::size_t>(info.size));
    apr_size_t got = 0;
    rv = out.empty() ? APR_SUCCESS : apr_file_read_full(f, out.data(), out.size(), &got);
    apr_file_close(f);
    if (rv != APR_SUCCESS)
        return apr_psprintf(cmd->pool, "SSETokenKey: cannot read the key file \"%s\": %s", path,
                            apr_strerror(rv, why, sizeof why));
    return nullptr;
}

/* Where the token was found, for the log line and the answer. */
struct Found {
    std::string token;
    std::string where; /* "the Authorization header", ... */
};

/* The request's token: Bearer header, else the query parameter, else the cookie (the
 * explicit before the ambient: see token_check.h). False with `error` set when the cookie is
 * there twice with different values (which to believe?). */
bool find_token(request_rec *r, const Params &query, const char *cookie, Found &out,
                std::string &error)
{
    auto trimmed = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
            s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
            s.remove_suffix(1);
        return std::string(s);
    };
    const char *auth = apr_table_get(r->headers_in, "Authorization");
    if (auth && strncasecmp(auth, "Bearer", 6) == 0 && (auth[6] == ' ' || auth[6] == '\t')) {
        out = {trimmed(auth + 7), "the Authorization header"};
        return true;
    }
    if (const std::string *q = param_last(query, "authorization")) {
        out = {*q, "the authorization query parameter"};
        return true;
    }
    const char *value = nullptr;
    if (ap_cookie_read(r, cookie, &value, 0) != APR_SUCCESS) {
        error = std::string("the cookie ") + cookie + " is sent more than once with different "
                                                      "values";
        return false;
    }
    if (value)
        out = {trimmed(value), std::string("the cookie ") + cookie};
    return true;
}

/* scheme://authority of an absolute http(s) URL, lower case; "" when it is none. */
std::string origin_of(std::string_view url)
{
    std::string out(url.substr(0, url.find_first_of("/?#", url.find("://") + 3)));
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if ((out.rfind("http://", 0) != 0 && out.rfind("https://", 0) != 0) ||
        out.find("://") + 3 == out.size())
        return "";
    return out;
}

/* Whether a publish whose token came in the cookie comes from an allowed origin: its Origin
 * header, else its Referer's, is listed in SSETokenCookieOrigins (by default the request's
 * own scheme and Host). Neither header: not allowed (a browser sends one of them on a
 * cross-site POST unless told not to, and a program can send the Authorization header). */
bool cookie_origin_allowed(request_rec *r, const DirConfig &d, std::string &origin)
{
    const char *o = apr_table_get(r->headers_in, "Origin");
    const char *referer = apr_table_get(r->headers_in, "Referer");
    origin = o ? origin_of(o) : referer ? origin_of(referer) : "";
    if (origin.empty())
        return false;
    if (!d.token_cookie_origins) {
        const char *host = apr_table_get(r->headers_in, "Host");
        return host && origin == origin_of(std::string(ap_http_scheme(r)) + "://" + host);
    }
    const auto &list = *d.token_cookie_origins;
    return std::find_if(list.begin(), list.end(), [&](const std::string &allowed) {
               return allowed == "*" || allowed == origin;
           }) != list.end();
}

int refuse_401(request_rec *r, const char *tag, const Endpoint &who, bool invalid,
               const std::string &message)
{
    apr_table_setn(r->headers_out, "WWW-Authenticate",
                   invalid ? "Bearer realm=\"mod_sse\", error=\"invalid_token\""
                           : "Bearer realm=\"mod_sse\"");
    return answer_error(r, HTTP_UNAUTHORIZED, tag, who, message);
}

/* A valid token: refused (403 SSE0144) when it came in the cookie with a publish that changes
 * something from an origin not allowed (token_check.h). */
bool cookie_checked(request_rec *r, const DirConfig &d, TokenUse use, const Found &found,
                    const Endpoint &who)
{
    if (use != TokenUse::Publish || found.where.rfind("the cookie", 0) != 0 ||
        r->method_number == M_GET)
        return true;
    std::string origin;
    if (cookie_origin_allowed(r, d, origin))
        return true;
    answer_error(r, HTTP_FORBIDDEN, "SSE0144", who,
                 "a publish with its token in " + found.where + " must come from an origin of "
                 "SSETokenCookieOrigins (the Origin or Referer header); " +
                     (origin.empty() ? std::string("the request has neither")
                                     : "\"" + origin + "\" is not one"));
    return false;
}

} // namespace

const char *cmd_token_key(cmd_parms *cmd, void *dv, const char *alg_name, const char *file)
{
    auto *d = static_cast<DirConfig *>(dv);
    if (!strcasecmp(alg_name, "off") && !file) {
        d->token_key = nullptr;
        d->token_key_set = 1;
        return nullptr;
    }
    TokenAlg alg;
    if (!parse_token_alg(alg_name, alg))
        return apr_psprintf(cmd->pool,
                            "SSETokenKey: \"%s\" is not HS256, RS256 or ES256 (followed by a key "
                            "file), nor off",
                            alg_name);
    if (!file)
        return apr_psprintf(cmd->pool,
                            "SSETokenKey: %s needs a key file: the shared secret for HS256, a "
                            "PEM public key for RS256 and ES256",
                            alg_name);
    const char *path = ap_server_root_relative(cmd->pool, file);
    if (!path)
        return apr_psprintf(cmd->pool, "SSETokenKey: invalid key file path \"%s\"", file);
    std::string bytes;
    if (const char *err = read_key_file(cmd, path, bytes))
        return err;
    auto *key = new TokenKey();
    apr_pool_cleanup_register(cmd->pool, key, destroy_key, apr_pool_cleanup_null);
    std::string err = TokenKey::make(alg, std::move(bytes), *key);
    if (!err.empty())
        return apr_psprintf(cmd->pool, "SSETokenKey: the key file \"%s\" is not a %s key: %s",
                            path, alg_name, err.c_str());
    d->token_key = key;
    d->token_key_set = 1;
    return nullptr;
}

apr_status_t destroy_origins(void *list)
{
    delete static_cast<std::vector<std::string> *>(list);
    return APR_SUCCESS;
}

const char *cmd_token_cookie_origins(cmd_parms *cmd, void *dv, int argc, char *const argv[])
{
    auto *d = static_cast<DirConfig *>(dv);
    if (argc == 0)
        return "SSETokenCookieOrigins: name at least one origin (scheme://host[:port]) or *";
    auto *list = new std::vector<std::string>();
    apr_pool_cleanup_register(cmd->pool, list, destroy_origins, apr_pool_cleanup_null);
    for (int i = 0; i < argc; ++i) {
        std::string origin = std::strcmp(argv[i], "*") ? origin_of(argv[i]) : "*";
        if (origin.empty() || (origin != "*" && origin.size() != std::strlen(argv[i])))
            return apr_psprintf(cmd->pool,
                                "SSETokenCookieOrigins: \"%s\" is not an origin "
                                "(http:// or https://, a host, a port if any, nothing more) "
                                "nor *",
                                argv[i]);
        list->push_back(std::move(origin));
    }
    d->token_cookie_origins = list;
    d->token_cookie_origins_set = 1;
    return nullptr;
}

const char *cmd_token_cookie(cmd_parms *cmd, void *dv, const char *name)
{
    auto *d = static_cast<DirConfig *>(dv);
    if (ap_cookie_check_string(name) != APR_SUCCESS || strpbrk(name, " \t,\"\\"))
        return apr_psprintf(cmd->pool,
                            "SSETokenCookie: \"%s\" is not a cookie name (no spaces, quotes, "
                            "'=', ';', ',' or '&')",
                            name);
    d->token_cookie = name;
    d->token_cookie_set = 1;
    return nullptr;
}

bool token_verified(request_rec *r, const Params &query, TokenUse use, RequestToken &out,
                    bool anonymous_ok)
{
    out = RequestToken{};
    const DirConfig &d = dir_config(r);
    if (!d.token_key)
        return true;
    out.required = true;
    const Endpoint &who = use == TokenUse::Subscribe ? kSubscribe : kPublish;
    const char *cookie = d.token_cookie ? d.token_cookie : kDefaultTokenCookie;
    Found found;
    std::string error;
    if (!find_token(r, query, cookie, found, error)) {
        refuse_401(r, "SSE0141", who, true, "bad token: " + error);
        return false;
    }
    if (found.where.empty() && anonymous_ok) {
        out.anonymous = true;
        return true;
    }
    if (found.where.empty()) {
        refuse_401(r, "SSE0140", who, false,
                   std::string("a token is required: send it as Authorization: Bearer, in the "
                               "authorization query parameter or in the cookie ") +
                       cookie);
        return false;
    }
    TokenCheck c = verify_token(*d.token_key, found.token, apr_time_sec(apr_time_now()));
    switch (c.outcome) {
    case TokenCheck::Outcome::Valid:
        out.claims = std::move(c.claims);
        return cookie_checked(r, d, use, found, who);
    case TokenCheck::Outcome::Expired:
    case TokenCheck::Outcome::NotYetValid:
        refuse_401(r, "SSE0142", who, true, "token from " + found.where + " refused: " + c.reason);
        return false;
    case TokenCheck::Outcome::Malformed:
    case TokenCheck::Outcome::WrongAlg:
    case TokenCheck::Outcome::BadSignature:
        break;
    }
    refuse_401(r, "SSE0141", who, true, "bad token from " + found.where + ": " + c.reason);
    return false;
}

bool token_covers(request_rec *r, const RequestToken &token,
                  const std::vector<std::string> &channels, TokenUse use, apr_time_t *expires)
{
    if (expires)
        *expires = 0;
    if (!token.required)
        return true;
    const TokenClaims &claims = token.claims;
    const std::vector<std::string> &selectors =
        use == TokenUse::Subscribe ? claims.subscribe : claims.publish;
    if (const std::string *ch = first_uncovered(selectors, channels)) {
        answer_error(r, HTTP_FORBIDDEN, "SSE0143", use == TokenUse::Subscribe ? kSubscribe : kPublish,
                     std::string("the token does not allow ") +
                         (use == TokenUse::Subscribe ? "subscribing to" : "publishing to") +
                         " channel \"" + *ch + "\" (its mercure." +
                         (use == TokenUse::Subscribe ? "subscribe" : "publish") +
                         " claim names no selector for it)");
        return false;
    }
    if (!claims.subject.empty()) {
        r->user = apr_pstrmemdup(r->pool, claims.subject.data(), claims.subject.size());
        r->ap_auth_type = const_cast<char *>("Bearer");
    }
    if (expires && claims.expires && *claims.expires <= kMaxDeadlineSeconds)
        *expires = apr_time_from_sec(*claims.expires);
    return true;
}

} // namespace sse::httpd
