/* sse/token.h — signed tokens (JWT) that say which channels their holder may read and write.
 *
 * A location with a token key (SSETokenKey) serves only requests carrying a token signed with
 * that key. This component does what needs no httpd: loading and checking the key, verifying a
 * compact JWT against it, reading its claims, and matching channels against the claims'
 * selectors. Signatures are checked by libjwt (and through it OpenSSL); a public key is loaded
 * and checked with OpenSSL when configured. Nothing here is hand-written cryptography.
 *
 * The claims are Mercure's, so that one token serves both:
 *   {"sub": "alice", "exp": 1767225600, "nbf": ...,
 *    "mercure": {"subscribe": ["news", "user/alice", "room/{id}"], "publish": ["*"]}}
 * - `mercure.subscribe`, `mercure.publish`: arrays of selectors (strings); absent means none;
 *   `mercure.payload`: any JSON value, kept as JSON text (Mercure's subscription events and
 *   subscriptions API show it); any other member of `mercure` is ignored;
 * - `sub` (string): the holder's name; `exp`, `nbf` (numbers, seconds since the epoch):
 *   honoured when present, neither is required;
 * - every other claim (iat, iss, aud, jti, ...) is ignored.
 * A claim of the wrong type (a `mercure` that is not an object, a selector that is not a
 * string, an `exp` that is not a number) makes the token invalid.
 *
 * Only the configured algorithm is accepted: libjwt 1.x verifies with whatever algorithm the
 * token's header names, so a token whose header names another one (`none`, or HS256 over an
 * RS256 key's PEM text as the secret) is refused before libjwt sees it, and the algorithm
 * libjwt reports after verifying is checked again.
 *
 * Thread-safety: a TokenKey is immutable once made; verify_token() may run on many threads at
 * once with the same key.
 */
#ifndef SSE_TOKEN_H
#define SSE_TOKEN_H

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

enum class TokenAlg { HS256, RS256, ES256 };

/* "HS256", "RS256", "ES256" (exactly, as in a JWT header); false for anything else. */
bool parse_token_alg(std::string_view name, TokenAlg &out);
const char *token_alg_name(TokenAlg alg);

/* The shortest HS256 secret accepted: 32 bytes, the hash's output size (RFC 7518 3.2). */
constexpr std::size_t kMinSecretBytes = 32;
/* The smallest RSA key accepted for RS256 (RFC 7518 3.3). */
constexpr int kMinRsaBits = 2048;

class TokenKey {
public:
    /* Makes a key from a key file's bytes: for HS256 the shared secret (one trailing LF or
     * CRLF is dropped, as an editor or `echo` adds one; at least kMinSecretBytes remain), for
     * RS256 a PEM public key of RSA with at least kMinRsaBits bits, for ES256 a PEM public key
     * on P-256 ("-----BEGIN PUBLIC KEY-----", as `openssl pkey -pubout` writes). Returns ""
     * and sets `out`, or a sentence saying what is wrong with the bytes. */
    static std::string make(TokenAlg alg, std::string bytes, TokenKey &out);

    TokenAlg alg() const { return alg_; }
    const std::string &bytes() const { return bytes_; }

private:
    TokenAlg alg_ = TokenAlg::HS256;
    std::string bytes_;
};

/* What a valid token grants. */
struct TokenClaims {
    std::string subject;                 /* `sub`; "" when absent */
    std::optional<std::int64_t> expires; /* `exp` in seconds (a fraction is dropped) */
    std::vector<std::string> subscribe;  /* mercure.subscribe */
    std::vector<std::string> publish;    /* mercure.publish */
    std::string payload;                 /* mercure.payload as JSON text; "" when absent */
};

struct TokenCheck {
    enum class Outcome {
        Valid,
        Malformed,    /* not a compact JWT, a part not base64url, a header or payload that is
                         not a JSON object, a claim of the wrong type */
        WrongAlg,     /* the header names another algorithm than the key's (`none` included) */
        BadSignature, /* the signature does not verify with the key */
        Expired,      /* now >= exp */
        NotYetValid,  /* now < nbf */
    };
    Outcome outcome = Outcome::Malformed;
    std::string reason; /* for the answer and the log; never quotes the token */
    TokenClaims claims; /* when Valid */
};

/* Tokens longer than this are malformed without being decoded. */
constexpr std::size_t kMaxTokenBytes = 16 * 1024;

/* Verifies `token` (compact serialisation: header.payload.signature) against `key` and reads
 * its claims; `now_s` is the current time in seconds since the epoch. */
TokenCheck verify_token(const TokenKey &key, std::string_view token, std::int64_t now_s);

/* Whether `selector` names `channel`:
 * - "*" names every channel;
 * - a selector with no '{' names the channel spelled exactly like it;
 * - otherwise it is a URI template, a simple subset of RFC 6570 matching: `{name}` stands for
 *   one or more characters other than '/', `{+name}` for one or more of any character, where
 *   a name is 1 or more of A-Z a-z 0-9 _ . (one variable per expression); everything else
 *   matches itself. A template that is not of this form (an unclosed '{', "{}", "{a,b}",
 *   another operator such as "{/a}") names no channel. */
bool selector_matches(std::string_view selector, std::string_view channel);

/* The first of `channels` that no selector names; nullptr when all are named. */
const std::string *first_uncovered(const std::vector<std::string> &selectors,
                                   const std::vector<std::string> &channels);

/* The in-band notice that ends a stream whose token expired: an `sse-close` event with
 * {"reason":"token-expired"} (see encode_close_notice). */
std::string token_expired_notice();

} // namespace sse

#endif
