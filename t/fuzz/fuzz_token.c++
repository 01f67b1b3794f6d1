/* libFuzzer target for signed tokens (sse/token.h): verify_token() on what a client sends, and
 * selector_matches() on the selectors a token carries (make fuzz).
 *
 * Input: the first byte picks the mode, the rest is its text.
 * - 0: the text is a token, checked against a fixed HS256 key. Nothing the fuzzer makes is
 *   signed with it, so it is never Valid; a refusal always says why.
 * - 1: the text is a payload, signed here with the key (libjwt) into a token that is checked:
 *   never WrongAlg or BadSignature; Valid exactly when the claims have the documented types,
 *   and then they are the payload's (sub, exp, mercure.subscribe, mercure.publish).
 * - 2: the text is a selector, a NUL, a channel: selector_matches() agrees with a reference
 *   written from the documented rules ("*" everything; no '{': equality; {name} one or more
 *   bytes but '/', {+name} one or more of any, other text itself; another template: nothing). */
#include "fuzz_checks.h"

#include "sse/token.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <jwt.h>
#include <nlohmann/json.hpp>
#include <cctype>
#include <string>

using namespace sse;
using fuzz::check;

namespace {

const std::string kSecret = "fuzz-secret-fuzz-secret-fuzz-secret!";

const TokenKey &key()
{
    static TokenKey *k = [] {
        auto *made = new TokenKey();
        if (!TokenKey::make(TokenAlg::HS256, kSecret, *made).empty())
            __builtin_trap();
        return made;
    }();
    return *k;
}

/* The documented selector rules, by backtracking over the selector's text (the code under
 * test works on pieces, position sets and no recursion). */
bool reference_from(const std::string &sel, std::size_t si, const std::string &ch, std::size_t ci)
{
    if (si == sel.size())
        return ci == ch.size();
    if (sel[si] == '{') {
        const std::size_t close = sel.find('}', si);
        const bool any = sel[si + 1] == '+';
        for (std::size_t end = ci + 1; end <= ch.size(); ++end) {
            if (!any && ch[end - 1] == '/')
                break;
            if (reference_from(sel, close + 1, ch, end))
                return true;
        }
        return false;
    }
    return ci < ch.size() && ch[ci] == sel[si] && reference_from(sel, si + 1, ch, ci + 1);
}

/* A template of the documented form: literal text without braces, and {name} or {+name}. */
bool reference_form(const std::string &sel)
{
    for (std::size_t i = 0; i < sel.size(); ++i) {
        if (sel[i] == '}')
            return false;
        if (sel[i] != '{')
            continue;
        std::size_t j = i + 1;
        if (j < sel.size() && sel[j] == '+')
            ++j;
        const std::size_t name = j;
        while (j < sel.size() && (std::isalnum(static_cast<unsigned char>(sel[j])) ||
                                  sel[j] == '_' || sel[j] == '.'))
            ++j;
        if (j == name || j == sel.size() || sel[j] != '}')
            return false;
        i = j;
    }
    return true;
}

bool reference_match(const std::string &sel, const std::string &ch)
{
    if (sel == "*")
        return true;
    if (sel.find('{') == std::string::npos)
        return sel == ch;
    return reference_form(sel) && reference_from(sel, 0, ch, 0);
}

void check_selector(std::string_view in)
{
    const std::size_t nul = in.find('\0');
    if (nul == std::string_view::npos)
        return;
    const std::string sel(in.substr(0, nul)), ch(in.substr(nul + 1));
    /* The reference backtracks: few variables, short channels. */
    if (sel.size() > 64 || ch.size() > 64 || std::count(sel.begin(), sel.end(), '{') > 3)
        return;
    check(selector_matches(sel, ch) == reference_match(sel, ch));
}

void check_signed(std::string_view in)
{
    const std::string payload(in);
    nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return;
    jwt_t *raw = nullptr;
    if (jwt_new(&raw) != 0)
        return;
    std::string token;
    if (jwt_add_grants_json(raw, payload.c_str()) == 0 &&
        jwt_set_alg(raw, JWT_ALG_HS256, reinterpret_cast<const unsigned char *>(kSecret.data()),
                    static_cast<int>(kSecret.size())) == 0) {
        if (char *s = jwt_encode_str(raw)) {
            token = s;
            free(s);
        }
    }
    /* What libjwt signed is its own serialisation of the claims: read that. */
    char *grants = jwt_get_grants_json(raw, nullptr);
    nlohmann::json signed_claims =
        grants ? nlohmann::json::parse(grants, nullptr, false) : nlohmann::json();
    free(grants);
    jwt_free(raw);
    if (token.empty() || token.size() > kMaxTokenBytes || !signed_claims.is_object())
        return;
    const std::int64_t now = 1800000000;
    TokenCheck c = verify_token(key(), token, now);
    check(c.outcome != TokenCheck::Outcome::WrongAlg &&
          c.outcome != TokenCheck::Outcome::BadSignature);
    check(c.outcome == TokenCheck::Outcome::Valid || !c.reason.empty());
    if (c.outcome != TokenCheck::Outcome::Valid)
        return;
    auto sub = signed_claims.find("sub");
    check(sub == signed_claims.end() ? c.claims.subject.empty()
                                     : sub->is_string() && sub->get<std::string>() == c.claims.subject);
    auto exp = signed_claims.find("exp");
    check(exp == signed_claims.end() ? !c.claims.expires
                                     : exp->is_number() && c.claims.expires && *c.claims.expires > now);
    auto m = signed_claims.find("mercure");
    for (const char *name : {"subscribe", "publish"}) {
        const auto &got = std::string(name) == "subscribe" ? c.claims.subscribe : c.claims.publish;
        if (m == signed_claims.end() || !m->contains(name) || (*m)[name].is_null()) {
            check(got.empty());
            continue;
        }
        check((*m)[name].is_array() && (*m)[name].size() == got.size());
        for (std::size_t i = 0; i < got.size(); ++i)
            check((*m)[name][i] == got[i]);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 1)
        return 0;
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
    switch (data[0] % 3) {
    case 0: {
        TokenCheck c = verify_token(key(), in, 1800000000);
        check(c.outcome != TokenCheck::Outcome::Valid);
        check(!c.reason.empty());
        break;
    }
    case 1:
        check_signed(in);
        break;
    case 2:
        check_selector(in);
        break;
    }
    return 0;
}
