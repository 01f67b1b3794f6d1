/* Signed tokens: key checks, verification (every way a token can be bad), claims, selectors,
 * and what one verification costs per algorithm (printed, not asserted).
 *
 * Tokens are minted with libjwt and keys generated with OpenSSL, in memory; the bad ones are
 * built from good ones by hand (another part spliced in, a byte changed). */
#include "unit.h"

#include "sse/token.h"

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace sse;

namespace {

constexpr std::int64_t kNow = 1800000000;
const std::string kSecret = "0123456789abcdef0123456789abcdef-unit";

struct Pem {
    std::string priv, pub;
};

std::string bio_text(BIO *b)
{
    char *p = nullptr;
    long n = BIO_get_mem_data(b, &p);
    return std::string(p, static_cast<std::size_t>(n));
}

Pem pem_of(EVP_PKEY *k)
{
    Pem out;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
    out.priv = bio_text(b);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    out.pub = bio_text(b);
    BIO_free(b);
    EVP_PKEY_free(k);
    return out;
}

const Pem &rsa_key()
{
    static Pem p = pem_of(EVP_RSA_gen(2048));
    return p;
}
const Pem &rsa_key2()
{
    static Pem p = pem_of(EVP_RSA_gen(2048));
    return p;
}
const Pem &ec_key()
{
    static Pem p = pem_of(EVP_EC_gen("P-256"));
    return p;
}

/* A token with `claims` (a JSON object) signed with `alg` and `key` (a secret or a private
 * key's PEM; ignored for none). */
std::string mint(jwt_alg_t alg, const std::string &key, const std::string &claims)
{
    jwt_t *j = nullptr;
    jwt_new(&j);
    ck_assert_int_eq(jwt_add_grants_json(j, claims.c_str()), 0);
    ck_assert_int_eq(jwt_set_alg(j, alg,
                                 alg == JWT_ALG_NONE
                                     ? nullptr
                                     : reinterpret_cast<const unsigned char *>(key.data()),
                                 alg == JWT_ALG_NONE ? 0 : static_cast<int>(key.size())),
                     0);
    char *s = jwt_encode_str(j);
    ck_assert_ptr_nonnull(s);
    std::string out = s;
    free(s);
    jwt_free(j);
    return out;
}

TokenKey key_of(TokenAlg alg, const std::string &bytes)
{
    TokenKey k;
    std::string err = TokenKey::make(alg, bytes, k);
    ck_assert_msg(err.empty(), "key refused: %s", err.c_str());
    return k;
}

std::vector<std::string> parts(const std::string &token)
{
    std::vector<std::string> out(1);
    for (char c : token) {
        if (c == '.')
            out.emplace_back();
        else
            out.back() += c;
    }
    return out;
}

void expect(const TokenCheck &c, TokenCheck::Outcome want, const char *reason_part)
{
    ck_assert_msg(c.outcome == want, "outcome %d, expected %d (%s)", static_cast<int>(c.outcome),
                  static_cast<int>(want), c.reason.c_str());
    ck_assert_msg(c.reason.find(reason_part) != std::string::npos, "reason \"%s\" lacks \"%s\"",
                  c.reason.c_str(), reason_part);
}

using O = TokenCheck::Outcome;

} // namespace

START_TEST(hs256_valid_token_gives_its_claims)
{
    TokenKey key = key_of(TokenAlg::HS256, kSecret);
    std::string t = mint(JWT_ALG_HS256, kSecret,
                         R"({"sub":"alice","exp":1800000100,"nbf":1799999000,"iat":1,"aud":"x",
                             "mercure":{"subscribe":["news","user/{id}"],"publish":["*"],
                                        "payload":{"any":"thing"}}})");
    TokenCheck c = verify_token(key, t, kNow);
    expect(c, O::Valid, "");
    assert_str(c.claims.subject, "alice");
    ck_assert(c.claims.expires && *c.claims.expires == 1800000100);
    ck_assert_uint_eq(c.claims.subscribe.size(), 2);
    assert_str(c.claims.subscribe[1], "user/{id}");
    ck_assert_uint_eq(c.claims.publish.size(), 1);
    /* No claim is required: an empty payload is a valid token that covers nothing. */
    c = verify_token(key, mint(JWT_ALG_HS256, kSecret, "{}"), kNow);
    expect(c, O::Valid, "");
    ck_assert(!c.claims.expires && c.claims.subject.empty() && c.claims.subscribe.empty());
}
END_TEST

START_TEST(rs256_and_es256_valid_tokens)
{
    TokenKey rs = key_of(TokenAlg::RS256, rsa_key().pub);
    TokenKey es = key_of(TokenAlg::ES256, ec_key().pub);
    const std::string claims = R"({"sub":"bob","mercure":{"subscribe":["a"]}})";
    expect(verify_token(rs, mint(JWT_ALG_RS256, rsa_key().priv, claims), kNow), O::Valid, "");
    TokenCheck c = verify_token(es, mint(JWT_ALG_ES256, ec_key().priv, claims), kNow);
    expect(c, O::Valid, "");
    assert_str(c.claims.subject, "bob");
}
END_TEST

START_TEST(keys_are_checked)
{
    TokenKey k;
    /* One trailing newline (echo, an editor) is not part of the secret. */
    std::string secret32(32, 's');
    ck_assert(TokenKey::make(TokenAlg::HS256, secret32 + "\n", k).empty());
    assert_str(k.bytes(), secret32);
    ck_assert(TokenKey::make(TokenAlg::HS256, secret32 + "\r\n", k).empty());
    assert_str(k.bytes(), secret32);
    std::string err = TokenKey::make(TokenAlg::HS256, std::string(31, 's') + "\n", k);
    ck_assert_msg(err.find("31 bytes") != std::string::npos, "%s", err.c_str());
    ck_assert(!TokenKey::make(TokenAlg::HS256, "", k).empty());

    err = TokenKey::make(TokenAlg::RS256, "not a key", k);
    ck_assert_msg(err.find("not a PEM public key") != std::string::npos, "%s", err.c_str());
    /* A private key is not what a location needs (and should not be given to httpd). */
    err = TokenKey::make(TokenAlg::RS256, rsa_key().priv, k);
    ck_assert_msg(err.find("not a PEM public key") != std::string::npos, "%s", err.c_str());
    err = TokenKey::make(TokenAlg::RS256, ec_key().pub, k);
    ck_assert_msg(err.find("not an RSA public key") != std::string::npos, "%s", err.c_str());
    err = TokenKey::make(TokenAlg::ES256, rsa_key().pub, k);
    ck_assert_msg(err.find("not an EC public key") != std::string::npos, "%s", err.c_str());
    Pem small = pem_of(EVP_RSA_gen(1024));
    err = TokenKey::make(TokenAlg::RS256, small.pub, k);
    ck_assert_msg(err.find("1024 bits") != std::string::npos, "%s", err.c_str());
    Pem p384 = pem_of(EVP_EC_gen("P-384"));
    err = TokenKey::make(TokenAlg::ES256, p384.pub, k);
    ck_assert_msg(err.find("secp384r1") != std::string::npos, "%s", err.c_str());

    TokenAlg a;
    ck_assert(parse_token_alg("RS256", a) && a == TokenAlg::RS256);
    ck_assert(!parse_token_alg("rs256", a) && !parse_token_alg("none", a) &&
              !parse_token_alg("HS512", a));
}
END_TEST

START_TEST(wrong_algorithms_are_refused)
{
    TokenKey hs = key_of(TokenAlg::HS256, kSecret);
    TokenKey rs = key_of(TokenAlg::RS256, rsa_key().pub);
    TokenKey es = key_of(TokenAlg::ES256, ec_key().pub);
    const std::string claims = R"({"mercure":{"subscribe":["*"]}})";
    /* alg none: no signature at all. */
    std::string none = mint(JWT_ALG_NONE, "", claims);
    expect(verify_token(hs, none, kNow), O::WrongAlg, "\"none\"");
    expect(verify_token(rs, none, kNow), O::WrongAlg, "RS256 only");
    /* The classic confusion: HS256 with the RS256 public key's PEM text as the secret. libjwt
     * alone would accept it (it verifies with the header's algorithm). */
    std::string confused = mint(JWT_ALG_HS256, rsa_key().pub, claims);
    expect(verify_token(rs, confused, kNow), O::WrongAlg, "\"HS256\"");
    std::string confused_ec = mint(JWT_ALG_HS256, ec_key().pub, claims);
    expect(verify_token(es, confused_ec, kNow), O::WrongAlg, "\"HS256\"");
    /* Another algorithm of the same family, or another family. */
    expect(verify_token(hs, mint(JWT_ALG_HS512, kSecret, claims), kNow), O::WrongAlg, "HS512");
    expect(verify_token(hs, mint(JWT_ALG_RS256, rsa_key().priv, claims), kNow), O::WrongAlg,
           "RS256");
    expect(verify_token(rs, mint(JWT_ALG_ES256, ec_key().priv, claims), kNow), O::WrongAlg,
           "ES256");
    expect(verify_token(es, mint(JWT_ALG_RS256, rsa_key().priv, claims), kNow), O::WrongAlg,
           "RS256");
}
END_TEST

START_TEST(bad_signatures_are_refused)
{
    TokenKey hs = key_of(TokenAlg::HS256, kSecret);
    TokenKey rs = key_of(TokenAlg::RS256, rsa_key().pub);
    TokenKey es = key_of(TokenAlg::ES256, ec_key().pub);
    const std::string claims = R"({"sub":"a","mercure":{"subscribe":["a"]}})";
    const std::string wider = R"({"sub":"a","mercure":{"subscribe":["*"]}})";
    /* Signed with another key. */
    expect(verify_token(hs, mint(JWT_ALG_HS256, kSecret + "x", claims), kNow), O::BadSignature,
           "does not verify");
    expect(verify_token(rs, mint(JWT_ALG_RS256, rsa_key2().priv, claims), kNow),
           O::BadSignature, "does not verify");
    expect(verify_token(es, mint(JWT_ALG_ES256, pem_of(EVP_EC_gen("P-256")).priv, claims), kNow),
           O::BadSignature, "does not verify");
    struct Case {
        const TokenKey &key;
        jwt_alg_t alg;
        std::string signing;
    } cases[] = {{hs, JWT_ALG_HS256, kSecret},
                 {rs, JWT_ALG_RS256, rsa_key().priv},
                 {es, JWT_ALG_ES256, ec_key().priv}};
    for (const Case &k : cases) {
        std::vector<std::string> good = parts(mint(k.alg, k.signing, claims));
        std::vector<std::string> other = parts(mint(k.alg, k.signing, wider));
        /* Tampered payload: another (valid) payload under the first token's signature. */
        expect(verify_token(k.key, good[0] + "." + other[1] + "." + good[2], kNow),
               O::BadSignature, "does not verify");
        /* Tampered signature: one character changed. */
        std::string sig = good[2];
        sig[0] = sig[0] == 'A' ? 'B' : 'A';
        expect(verify_token(k.key, good[0] + "." + good[1] + "." + sig, kNow), O::BadSignature,
               "does not verify");
        /* Cut short, or gone. */
        expect(verify_token(k.key, good[0] + "." + good[1] + "." + good[2].substr(0, 10), kNow),
               O::BadSignature, "does not verify");
        expect(verify_token(k.key, good[0] + "." + good[1] + ".", kNow), O::BadSignature,
               "no signature");
    }
}
END_TEST

START_TEST(malformed_tokens_are_refused)
{
    TokenKey hs = key_of(TokenAlg::HS256, kSecret);
    std::vector<std::string> good = parts(mint(JWT_ALG_HS256, kSecret, "{}"));
    const char *not_jwt = "not a JWT";
    expect(verify_token(hs, "", kNow), O::Malformed, not_jwt);
    expect(verify_token(hs, "abc", kNow), O::Malformed, not_jwt);
    expect(verify_token(hs, good[0] + "." + good[1], kNow), O::Malformed, not_jwt);
    expect(verify_token(hs, good[0] + "." + good[1] + "." + good[2] + ".x", kNow), O::Malformed,
           not_jwt);
    expect(verify_token(hs, "." + good[1] + "." + good[2], kNow), O::Malformed, "header");
    expect(verify_token(hs, "e$J." + good[1] + "." + good[2], kNow), O::Malformed, "header");
    /* "[1]" and "xyz" (not JSON) as headers. */
    expect(verify_token(hs, "WzFd." + good[1] + "." + good[2], kNow), O::Malformed, "header");
    expect(verify_token(hs, "eHl6." + good[1] + "." + good[2], kNow), O::Malformed, "header");
    /* {"typ":"JWT"}: no alg; {"alg":5}. */
    expect(verify_token(hs, "eyJ0eXAiOiJKV1QifQ." + good[1] + "." + good[2], kNow),
           O::Malformed, "no algorithm");
    expect(verify_token(hs, "eyJhbGciOjV9." + good[1] + "." + good[2], kNow), O::Malformed,
           "no algorithm");
    /* {"alg":"HS256","typ":"JOSE+JSON"} */
    expect(verify_token(hs, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpPU0UrSlNPTiJ9." + good[1] + "." +
                                good[2], kNow),
           O::Malformed, "typ");
    expect(verify_token(hs, good[0] + ".e$J." + good[2], kNow), O::Malformed, "payload");
    expect(verify_token(hs, good[0] + ".WzFd." + good[2], kNow), O::Malformed, "payload");
    expect(verify_token(hs, std::string(kMaxTokenBytes + 1, 'a'), kNow), O::Malformed,
           "longer than");
    /* Claims of the wrong type, in a properly signed token. */
    for (const char *claims : {R"({"sub":5})", R"({"exp":"soon"})", R"({"nbf":[1]})",
                               R"({"mercure":[]})", R"({"mercure":{"subscribe":"a"}})",
                               R"({"mercure":{"publish":["a",1]}})"}) {
        TokenCheck c = verify_token(hs, mint(JWT_ALG_HS256, kSecret, claims), kNow);
        ck_assert_msg(c.outcome == O::Malformed && c.reason.find("claim") != std::string::npos,
                      "%s: %s", claims, c.reason.c_str());
    }
}
END_TEST

START_TEST(exp_and_nbf_are_honoured)
{
    TokenKey hs = key_of(TokenAlg::HS256, kSecret);
    auto at = [&](const std::string &claims) {
        return verify_token(hs, mint(JWT_ALG_HS256, kSecret, claims), kNow);
    };
    expect(at(R"({"exp":1800000001})"), O::Valid, "");
    expect(at(R"({"exp":1800000000})"), O::Expired, "expired");
    expect(at(R"({"exp":1799999999.5})"), O::Expired, "expired");
    expect(at(R"({"exp":0})"), O::Expired, "expired");
    expect(at(R"({"nbf":1800000000})"), O::Valid, "");
    expect(at(R"({"nbf":1800000001})"), O::NotYetValid, "not valid yet");
    expect(at(R"({"exp":1e300})"), O::Valid, "");
    /* An expired token is refused even when its signature is what is wrong too: either way
     * it is refused; the signature is looked at first. */
    std::vector<std::string> p = parts(mint(JWT_ALG_HS256, kSecret, R"({"exp":1})"));
    expect(verify_token(hs, p[0] + "." + p[1] + "." + p[2].substr(1), kNow), O::BadSignature,
           "");
}
END_TEST

START_TEST(selectors_match_channels)
{
    ck_assert(selector_matches("*", "news"));
    ck_assert(selector_matches("*", "a/b/c"));
    ck_assert(selector_matches("news", "news"));
    ck_assert(!selector_matches("news", "news2"));
    ck_assert(!selector_matches("news", "new"));
    ck_assert(!selector_matches("", "news"));
    ck_assert(!selector_matches("news*", "news2")); /* only a lone * is a wildcard */
    ck_assert(selector_matches("user/{id}", "user/alice"));
    ck_assert(!selector_matches("user/{id}", "user/alice/inbox"));
    ck_assert(!selector_matches("user/{id}", "user/"));
    ck_assert(!selector_matches("user/{id}", "user"));
    ck_assert(selector_matches("user/{+rest}", "user/alice/inbox"));
    ck_assert(selector_matches("user/{+rest}", "user/a"));
    ck_assert(!selector_matches("user/{+rest}", "user/"));
    ck_assert(selector_matches("{room}-chat", "lobby-chat"));
    ck_assert(!selector_matches("{room}-chat", "a/lobby-chat"));
    ck_assert(selector_matches("{+p}/log", "a/b/log"));
    ck_assert(selector_matches("{a}.{b}", "x.y.z")); /* {a} may hold a '.' */
    ck_assert(selector_matches("room/{id}/msg/{n}", "room/7/msg/12"));
    ck_assert(!selector_matches("room/{id}/msg/{n}", "room/7/msg/"));
    ck_assert(selector_matches("{x}", "news"));
    ck_assert(!selector_matches("{x}", "a/b"));
    ck_assert(selector_matches("{+x}", "a/b"));
    ck_assert(selector_matches("{x_1.y}", "z"));
    /* Not of the accepted form: names nothing (not even itself). */
    for (const char *bad : {"user/{id", "user/{}", "user/{+}", "user/{a,b}", "user/{/a}",
                            "user/{#a}", "user/{a-b}", "{{a}}", "user/{a}}"}) {
        ck_assert_msg(!selector_matches(bad, "user/x"), "%s", bad);
        ck_assert_msg(!selector_matches(bad, bad), "%s", bad);
    }
    /* A long channel against a template with many variables stays cheap (quadratic). */
    std::string ch(255, 'a');
    ck_assert(selector_matches("{+a}{+b}{+c}{+d}{+e}{+f}{+g}{+h}", ch));
    ck_assert(!selector_matches("{+a}{+b}{+c}{+d}{+e}{+f}{+g}{+h}b", ch));

    std::vector<std::string> sel = {"news", "user/{id}"};
    ck_assert_ptr_null(first_uncovered(sel, {"news", "user/bob"}));
    const std::vector<std::string> asked = {"news", "user/bob/x", "sport"};
    const std::string *un = first_uncovered(sel, asked);
    ck_assert_ptr_nonnull(un);
    assert_str(*un, "user/bob/x");
    ck_assert_ptr_nonnull(first_uncovered({}, {"news"}));
    ck_assert_ptr_null(first_uncovered({"*"}, {"news", "a/b"}));
}
END_TEST

START_TEST(the_expiry_notice)
{
    assert_str(token_expired_notice(),
               "event: sse-close\ndata: {\"reason\":\"token-expired\"}\n\n");
}
END_TEST

/* What a subscribe pays for its token: one verify_token() per request. Printed for the
 * record (docs/tokens.md quotes it); no assertion, the machine may be loaded. */
START_TEST(verification_cost)
{
    const std::string claims =
        R"({"sub":"alice","exp":1800003600,"mercure":{"subscribe":["news","user/alice"]}})";
    struct Case {
        const char *name;
        TokenKey key;
        std::string token;
    } cases[] = {
        {"HS256", key_of(TokenAlg::HS256, kSecret), mint(JWT_ALG_HS256, kSecret, claims)},
        {"RS256", key_of(TokenAlg::RS256, rsa_key().pub), mint(JWT_ALG_RS256, rsa_key().priv,
                                                               claims)},
        {"ES256", key_of(TokenAlg::ES256, ec_key().pub), mint(JWT_ALG_ES256, ec_key().priv,
                                                              claims)},
    };
    for (const Case &c : cases) {
        const int n = 2000;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n; ++i)
            ck_assert(verify_token(c.key, c.token, kNow).outcome == O::Valid);
        double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() -
                                                              t0)
                        .count() /
                    n;
        std::fprintf(stderr, "token: verify_token %s: %.1f us per token (%d tokens)\n", c.name,
                     us, n);
    }
}
END_TEST

Suite *token_suite()
{
    Suite *s = suite_create("token");
    TCase *tc = tcase_create("token");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hs256_valid_token_gives_its_claims);
    tcase_add_test(tc, rs256_and_es256_valid_tokens);
    tcase_add_test(tc, keys_are_checked);
    tcase_add_test(tc, wrong_algorithms_are_refused);
    tcase_add_test(tc, bad_signatures_are_refused);
    tcase_add_test(tc, malformed_tokens_are_refused);
    tcase_add_test(tc, exp_and_nbf_are_honoured);
    tcase_add_test(tc, selectors_match_channels);
    tcase_add_test(tc, the_expiry_notice);
    tcase_add_test(tc, verification_cost);
    suite_add_tcase(s, tc);
    return s;
}
