/* Signed tokens: key loading, verification with libjwt, claims, selectors (see sse/token.h). */
#include "sse/token.h"

#include "sse/wire.h"

#include <jwt.h>
#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include <cmath>
#include <limits>
#include <memory>

namespace sse {

namespace {

using nlohmann::json;

/* -1 for a byte outside the base64url alphabet (RFC 4648 section 5). */
int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* A JWS part: base64url without padding (RFC 7515 section 2). False when it is not. Only the
 * header and the payload are decoded here, to read them; the signature is libjwt's. */
bool b64url_decode(std::string_view in, std::string &out)
{
    if (in.size() % 4 == 1)
        return false;
    out.clear();
    unsigned bits = 0, nbits = 0;
    for (unsigned char c : in) {
        int v = b64url_value(c);
        if (v < 0)
            return false;
        bits = (bits << 6) | static_cast<unsigned>(v);
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            out += static_cast<char>((bits >> nbits) & 0xff);
        }
    }
    return true;
}

/* A JSON object from a base64url part; nullopt when it is not one. */
std::optional<json> json_object_part(std::string_view part)
{
    std::string text;
    if (!b64url_decode(part, text))
        return std::nullopt;
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return std::nullopt;
    return j;
}

/* A NumericDate claim (RFC 7519 section 2): seconds, possibly with a fraction (dropped). */
bool numeric_date(const json &v, std::int64_t &out)
{
    if (v.is_number_integer()) {
        out = v.get<std::int64_t>();
        return true;
    }
    if (v.is_number_unsigned()) {
        auto u = v.get<std::uint64_t>();
        out = u > std::uint64_t(std::numeric_limits<std::int64_t>::max())
                  ? std::numeric_limits<std::int64_t>::max()
                  : std::int64_t(u);
        return true;
    }
    if (v.is_number_float()) {
        double d = v.get<double>();
        if (!std::isfinite(d))
            return false;
        out = d >= 9.2e18 ? std::numeric_limits<std::int64_t>::max()
              : d <= -9.2e18 ? std::numeric_limits<std::int64_t>::min()
                             : static_cast<std::int64_t>(std::floor(d));
        return true;
    }
    return false;
}

/* mercure.subscribe or mercure.publish into `out`; "" or what is wrong. */
std::string selector_list(const json &mercure, const char *name, std::vector<std::string> &out)
{
    auto it = mercure.find(name);
    if (it == mercure.end() || it->is_null())
        return {};
    if (!it->is_array())
        return std::string("claim mercure.") + name + " must be an array of strings";
    for (const auto &s : *it) {
        if (!s.is_string())
            return std::string("claim mercure.") + name + " must be an array of strings";
        out.push_back(s.get<std::string>());
    }
    return {};
}

/* Reads the claims of a verified payload; "" or what is wrong. */
std::string read_claims(const json &payload, TokenClaims &out)
{
    if (auto it = payload.find("sub"); it != payload.end()) {
        if (!it->is_string())
            return "claim sub must be a string";
        out.subject = it->get<std::string>();
        /* It becomes r->user (a C string, and a log field): "alice\u0000x" must not be alice. */
        for (unsigned char ch : out.subject)
            if (ch < 0x20 || ch == 0x7f)
                return "claim sub must not hold control characters";
    }
    if (auto it = payload.find("exp"); it != payload.end()) {
        std::int64_t exp;
        if (!numeric_date(*it, exp))
            return "claim exp must be a number of seconds since the epoch";
        out.expires = exp;
    }
    if (auto it = payload.find("nbf"); it != payload.end()) {
        std::int64_t nbf;
        if (!numeric_date(*it, nbf))
            return "claim nbf must be a number of seconds since the epoch";
    }
    auto it = payload.find("mercure");
    if (it == payload.end())
        return {};
    if (!it->is_object())
        return "claim mercure must be an object";
    std::string err = selector_list(*it, "subscribe", out.subscribe);
    if (err.empty())
        err = selector_list(*it, "publish", out.publish);
    if (auto pl = it->find("payload"); err.empty() && pl != it->end() && !pl->is_null())
        out.payload = pl->dump();
    return err;
}

struct PkeyFree {
    void operator()(EVP_PKEY *k) const { EVP_PKEY_free(k); }
};
struct BioFree {
    void operator()(BIO *b) const { BIO_free(b); }
};
struct JwtFree {
    void operator()(jwt_t *j) const { jwt_free(j); }
};

/* Checks a PEM public key for RS256 (RSA, kMinRsaBits or more) or ES256 (EC on P-256). */
std::string check_public_key(TokenAlg alg, const std::string &pem)
{
    std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio)
        return "out of memory";
    std::unique_ptr<EVP_PKEY, PkeyFree> key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr,
                                                                nullptr));
    if (!key)
        return "not a PEM public key (\"-----BEGIN PUBLIC KEY-----\", as `openssl pkey -pubout` "
               "writes it)";
    const int type = EVP_PKEY_get_base_id(key.get());
    if (alg == TokenAlg::RS256) {
        if (type != EVP_PKEY_RSA)
            return "not an RSA public key (RS256 needs one)";
        if (EVP_PKEY_get_bits(key.get()) < kMinRsaBits)
            return "an RSA key of " + std::to_string(EVP_PKEY_get_bits(key.get())) +
                   " bits; RS256 needs " + std::to_string(kMinRsaBits) + " or more";
        return {};
    }
    if (type != EVP_PKEY_EC)
        return "not an EC public key (ES256 needs one on P-256)";
    char group[64] = "";
    std::size_t len = 0;
    if (EVP_PKEY_get_group_name(key.get(), group, sizeof group, &len) != 1 ||
        std::string_view(group, len) != SN_X9_62_prime256v1)
        return std::string("an EC key on curve ") + (len ? group : "(unknown)") +
               "; ES256 needs P-256 (prime256v1)";
    return {};
}

jwt_alg_t libjwt_alg(TokenAlg alg)
{
    switch (alg) {
    case TokenAlg::HS256: return JWT_ALG_HS256;
    case TokenAlg::RS256: return JWT_ALG_RS256;
    case TokenAlg::ES256: return JWT_ALG_ES256;
    }
    return JWT_ALG_INVAL;
}

TokenCheck refused(TokenCheck::Outcome outcome, std::string reason)
{
    TokenCheck c;
    c.outcome = outcome;
    c.reason = std::move(reason);
    return c;
}

/* One piece of a selector: literal text, `{name}` or `{+name}`. */
struct Piece {
    enum class Kind { Literal, Segment, Any } kind;
    std::string_view text;
};

/* Splits a template into pieces; false when it is not of the accepted form. */
bool template_pieces(std::string_view sel, std::vector<Piece> &out)
{
    std::size_t i = 0;
    while (i < sel.size()) {
        std::size_t open = sel.find('{', i);
        if (open != i) {
            std::size_t end = open == std::string_view::npos ? sel.size() : open;
            std::string_view lit = sel.substr(i, end - i);
            if (lit.find('}') != std::string_view::npos)
                return false;
            out.push_back({Piece::Kind::Literal, lit});
            i = end;
            continue;
        }
        std::size_t close = sel.find('}', open);
        if (close == std::string_view::npos)
            return false;
        std::string_view expr = sel.substr(open + 1, close - open - 1);
        Piece::Kind kind = Piece::Kind::Segment;
        if (!expr.empty() && expr[0] == '+') {
            kind = Piece::Kind::Any;
            expr.remove_prefix(1);
        }
        if (expr.empty())
            return false;
        for (char c : expr)
            if (!(c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                  (c >= 'A' && c <= 'Z')))
                return false;
        out.push_back({kind, expr});
        i = close + 1;
    }
    return true;
}

} // namespace

bool parse_token_alg(std::string_view name, TokenAlg &out)
{
    for (TokenAlg a : {TokenAlg::HS256, TokenAlg::RS256, TokenAlg::ES256})
        if (name == token_alg_name(a)) {
            out = a;
            return true;
        }
    return false;
}

const char *token_alg_name(TokenAlg alg)
{
    switch (alg) {
    case TokenAlg::HS256: return "HS256";
    case TokenAlg::RS256: return "RS256";
    case TokenAlg::ES256: return "ES256";
    }
    return "?";
}

std::string TokenKey::make(TokenAlg alg, std::string bytes, TokenKey &out)
{
    if (alg == TokenAlg::HS256) {
        if (!bytes.empty() && bytes.back() == '\n')
            bytes.pop_back();
        if (!bytes.empty() && bytes.back() == '\r')
            bytes.pop_back();
        if (bytes.size() < kMinSecretBytes)
            return "an HS256 secret of " + std::to_string(bytes.size()) + " bytes; at least " +
                   std::to_string(kMinSecretBytes) + " are needed (e.g. `openssl rand -hex 32`)";
    } else if (std::string err = check_public_key(alg, bytes); !err.empty()) {
        return err;
    }
    out.alg_ = alg;
    out.bytes_ = std::move(bytes);
    return {};
}

TokenCheck verify_token(const TokenKey &key, std::string_view token, std::int64_t now_s)
{
    using Outcome = TokenCheck::Outcome;
    if (token.size() > kMaxTokenBytes)
        return refused(Outcome::Malformed,
                       "the token is longer than " + std::to_string(kMaxTokenBytes) + " bytes");
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
        return refused(Outcome::Malformed,
                       "the token is not a JWT (three base64url parts separated by dots)");
    /* The header is read first, to refuse another algorithm by name before libjwt, which
     * would verify with it. */
    std::optional<json> header = json_object_part(token.substr(0, dot1));
    if (!header)
        return refused(Outcome::Malformed, "the token's header is not base64url JSON object");
    auto alg = header->find("alg");
    if (alg == header->end() || !alg->is_string())
        return refused(Outcome::Malformed, "the token's header names no algorithm (alg)");
    const std::string alg_name = alg->get<std::string>();
    if (alg_name != token_alg_name(key.alg()))
        return refused(Outcome::WrongAlg,
                       "the token is signed with \"" + alg_name.substr(0, 16) +
                           "\"; this location accepts " + token_alg_name(key.alg()) + " only");
    if (auto typ = header->find("typ");
        typ != header->end() && !(typ->is_string() && typ->get<std::string>() == "JWT"))
        return refused(Outcome::Malformed, "the token's header has a typ other than \"JWT\"");
    std::optional<json> payload = json_object_part(token.substr(dot1 + 1, dot2 - dot1 - 1));
    if (!payload)
        return refused(Outcome::Malformed, "the token's payload is not a base64url JSON object");
    if (dot2 + 1 == token.size())
        return refused(Outcome::BadSignature, "the token has no signature");

    jwt_t *raw = nullptr;
    const std::string text(token);
    const int rv = jwt_decode(&raw, text.c_str(),
                              reinterpret_cast<const unsigned char *>(key.bytes().data()),
                              static_cast<int>(key.bytes().size()));
    std::unique_ptr<jwt_t, JwtFree> jwt(raw);
    if (rv != 0 || !jwt)
        return refused(Outcome::BadSignature, std::string("the token's signature does not verify "
                                                          "with this location's ") +
                                                  token_alg_name(key.alg()) + " key");
    /* What libjwt verified with must be the configured algorithm (checked again here: libjwt
     * 1.x takes it from the header). */
    if (jwt_get_alg(jwt.get()) != libjwt_alg(key.alg()))
        return refused(Outcome::WrongAlg, std::string("the token was not verified with ") +
                                              token_alg_name(key.alg()));

    TokenCheck c;
    if (std::string err = read_claims(*payload, c.claims); !err.empty())
        return refused(Outcome::Malformed, err);
    if (c.claims.expires && now_s >= *c.claims.expires)
        return refused(Outcome::Expired, "the token expired (exp " +
                                             std::to_string(*c.claims.expires) + ", now " +
                                             std::to_string(now_s) + ")");
    std::int64_t nbf;
    if (auto it = payload->find("nbf"); it != payload->end() && numeric_date(*it, nbf) &&
                                        now_s < nbf)
        return refused(Outcome::NotYetValid, "the token is not valid yet (nbf " +
                                                 std::to_string(nbf) + ", now " +
                                                 std::to_string(now_s) + ")");
    c.outcome = Outcome::Valid;
    return c;
}

bool selector_matches(std::string_view selector, std::string_view channel)
{
    if (selector == "*")
        return true;
    if (selector.find('{') == std::string_view::npos)
        return selector == channel;
    std::vector<Piece> pieces;
    if (!template_pieces(selector, pieces))
        return false;
    /* reach[p]: the channel's first p bytes are matched by the pieces so far. Quadratic in
     * the channel's length at worst (255 bytes), whatever the template. */
    const std::size_t n = channel.size();
    std::vector<char> reach(n + 1, 0), next(n + 1, 0);
    reach[0] = 1;
    for (const Piece &piece : pieces) {
        std::fill(next.begin(), next.end(), 0);
        bool any = false;
        for (std::size_t p = 0; p <= n; ++p) {
            if (!reach[p])
                continue;
            if (piece.kind == Piece::Kind::Literal) {
                if (channel.substr(p, piece.text.size()) == piece.text) {
                    next[p + piece.text.size()] = 1;
                    any = true;
                }
                continue;
            }
            for (std::size_t q = p + 1; q <= n; ++q) {
                if (piece.kind == Piece::Kind::Segment && channel[q - 1] == '/')
                    break;
                next[q] = 1;
                any = true;
            }
        }
        if (!any)
            return false;
        reach.swap(next);
    }
    return reach[n] != 0;
}

const std::string *first_uncovered(const std::vector<std::string> &selectors,
                                   const std::vector<std::string> &channels)
{
    for (const auto &ch : channels) {
        bool named = false;
        for (const auto &sel : selectors)
            if ((named = selector_matches(sel, ch)))
                break;
        if (!named)
            return &ch;
    }
    return nullptr;
}

std::string token_expired_notice()
{
    std::string notice;
    encode_close_notice("token-expired", {}, notice);
    return notice;
}

} // namespace sse
