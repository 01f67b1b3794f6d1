#include "sse/mercure_subscription.h"

#include "sse/registry.h" /* kMaxSlotNoteBytes */
#include "sse/request.h"  /* percent_decode */
#include "sse/wire.h"     /* is_valid_utf8 */

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace sse {

namespace {

using Doc = nlohmann::ordered_json; /* keys in the draft's order */

/* A note starts with this, so a note of another kind is never taken for a subscriber. */
constexpr std::string_view kNoteTag = "mercure-subscriber";
constexpr char kSep = '\0'; /* in no field: ids are ours, selectors and JSON text hold no NUL */

Doc subscription_object(const MercureSubscriber &s, const std::string &selector, bool active)
{
    Doc d;
    d["id"] = subscription_topic(selector, s.id);
    d["type"] = "Subscription";
    d["topic"] = selector;
    d["subscriber"] = s.id;
    d["active"] = active;
    if (!s.payload.empty())
        d["payload"] = nlohmann::json::parse(s.payload, nullptr, false);
    return d;
}

/* The document with "@context" first: an event's, a single subscription's answer. */
Doc standalone_object(const MercureSubscriber &s, const std::string &selector, bool active)
{
    Doc d{{"@context", "https://mercure.rocks/"}};
    d.update(subscription_object(s, selector, active));
    return d;
}

/* A path segment decoded; nullopt when empty or a '%' is not followed by two hex digits. */
std::optional<std::string> decode_segment(std::string_view seg)
{
    std::string out;
    if (seg.empty() || !percent_decode(seg, false, out).empty())
        return std::nullopt;
    /* A selector or subscriber id is UTF-8 (validate_mercure_string): other bytes name none,
     * and could not be written into the JSON answer. */
    if (!is_valid_utf8(out))
        return std::nullopt;
    return out;
}

constexpr std::string_view kHubPath = "/.well-known/mercure";

bool is_special_scheme(std::string_view scheme)
{
    for (std::string_view s : {"http", "https", "ws", "wss", "ftp", "file"})
        if (scheme.size() == s.size() &&
            std::equal(s.begin(), s.end(), scheme.begin(),
                       [](char a, char b) { return a == (b >= 'A' && b <= 'Z' ? b + 32 : b); }))
            return true;
    return false;
}

/* The scheme of `topic` ("" when it is a relative reference). */
std::string_view scheme_of(std::string_view topic)
{
    const std::size_t colon = topic.find(':');
    if (colon == 0 || colon == std::string_view::npos ||
        !std::isalpha(static_cast<unsigned char>(topic[0])))
        return {};
    for (std::size_t i = 1; i < colon; ++i)
        if (!std::isalnum(static_cast<unsigned char>(topic[i])) && !std::strchr("+-.", topic[i]))
            return {};
    return topic.substr(0, colon);
}

/* The path of `topic` resolved against the hub's URL, '\' read as '/' when `special`; not
 * normalised. "" when it has none (an opaque path: no namespace of the hub). */
std::string resolved_path(std::string_view topic)
{
    std::string_view scheme = scheme_of(topic);
    const bool special = scheme.empty() || is_special_scheme(scheme);
    std::string rest(topic.substr(scheme.empty() ? 0 : scheme.size() + 1));
    rest = rest.substr(0, rest.find_first_of("?#"));
    if (special)
        std::replace(rest.begin(), rest.end(), '\\', '/');
    const bool like_base = scheme.empty() || scheme == "https"; /* the hub's own scheme */
    if (rest.rfind("//", 0) == 0 || (special && !like_base)) {
        const std::size_t start = rest.find_first_not_of('/');   /* the authority */
        const std::size_t path = start == std::string::npos ? start : rest.find('/', start);
        return path == std::string::npos ? "/" : rest.substr(path);
    }
    if (!rest.empty() && rest[0] == '/')
        return rest;
    if (scheme.empty() || !like_base)
        return {}; /* a raw string (a relative path): matched as written, never resolved */
    return "/.well-known/" + rest; /* https:path: beside the hub's last segment */
}

/* `path` with the %XX of unreserved characters decoded and its dot segments removed. */
std::string normalised_path(const std::string &path)
{
    std::string decoded;
    for (std::size_t i = 0; i < path.size(); ++i) {
        const int hi = path[i] == '%' && i + 2 < path.size() ? hex_digit_value(path[i + 1]) : -1;
        const int lo = hi >= 0 ? hex_digit_value(path[i + 2]) : -1;
        const char c = static_cast<char>(hi * 16 + lo);
        if (lo >= 0 && c != '\0' && (std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-._~", c))) {
            decoded += c;
            i += 2;
        } else {
            decoded += path[i];
        }
    }
    std::vector<std::string> out;
    std::size_t at = 1;
    while (at <= decoded.size()) {
        std::size_t end = std::min(decoded.find('/', at), decoded.size());
        std::string seg = decoded.substr(at, end - at);
        const bool last = end == decoded.size();
        if (seg == ".." && !out.empty())
            out.pop_back();
        if (seg == "." || seg == "..") {
            if (last)
                out.emplace_back();
        } else {
            out.push_back(std::move(seg));
        }
        at = end + 1;
    }
    std::string result;
    for (const auto &seg : out)
        result += "/" + seg;
    return result.empty() ? "/" : result;
}

} // namespace

bool addresses_hub_namespace(std::string_view topic)
{
    const std::string raw = resolved_path(topic);
    if (raw.empty() || raw[0] != '/')
        return false;
    const std::string path = normalised_path(raw);
    return path == kHubPath || path.rfind(std::string(kHubPath) + "/", 0) == 0;
}

std::optional<std::string> encode_subscriber_note(const MercureSubscriber &s)
{
    std::string note(kNoteTag);
    note += kSep;
    note += s.hub;
    note += kSep;
    note += s.id;
    note += kSep;
    note += s.payload;
    for (const auto &sel : s.selectors) {
        note += kSep;
        note += sel;
    }
    if (note.size() > kMaxSlotNoteBytes)
        return std::nullopt;
    return note;
}

std::optional<MercureSubscriber> decode_subscriber_note(std::string_view note)
{
    std::vector<std::string_view> fields;
    for (std::size_t at = 0;;) {
        const std::size_t end = note.find(kSep, at);
        fields.push_back(note.substr(at, end == std::string_view::npos ? end : end - at));
        if (end == std::string_view::npos)
            break;
        at = end + 1;
    }
    if (fields.size() < 5 || fields[0] != kNoteTag)
        return std::nullopt;
    MercureSubscriber s;
    s.hub = fields[1];
    s.id = fields[2];
    s.payload = fields[3];
    s.selectors.assign(fields.begin() + 4, fields.end());
    return s;
}

std::string percent_encode(std::string_view s)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 0x0F];
        }
    }
    return out;
}

std::string subscription_topic(std::string_view selector, std::string_view subscriber)
{
    return std::string(kSubscriptionsPath) + '/' + percent_encode(selector) + '/' +
           percent_encode(subscriber);
}

std::string subscription_document(const MercureSubscriber &s, const std::string &selector,
                                  bool active, bool standalone)
{
    return (standalone ? standalone_object(s, selector, active)
                       : subscription_object(s, selector, active))
        .dump();
}

std::optional<SubscriptionsQuery> parse_subscriptions_path(std::string_view rest)
{
    SubscriptionsQuery q;
    if (rest.empty())
        return q;
    if (!is_valid_utf8(rest)) /* raw bytes httpd lets through in a request target */
        return std::nullopt;
    if (rest[0] != '/')
        return std::nullopt;
    rest.remove_prefix(1);
    const std::size_t slash = rest.find('/');
    q.topic = decode_segment(rest.substr(0, slash));
    if (!q.topic)
        return std::nullopt;
    if (slash == std::string_view::npos)
        return q;
    std::string_view sub = rest.substr(slash + 1);
    if (sub.find('/') != std::string_view::npos || !(q.subscriber = decode_segment(sub)))
        return std::nullopt;
    return q;
}

std::string subscriptions_collection(const std::vector<MercureSubscriber> &subscribers,
                                     const std::optional<std::string> &topic, std::string_view id,
                                     const std::string &last_event_id)
{
    Doc list = Doc::array();
    for (const auto &s : subscribers)
        for (const auto &sel : s.selectors)
            if (!topic || *topic == sel)
                list.push_back(subscription_object(s, sel, true));
    Doc d;
    d["@context"] = "https://mercure.rocks/";
    d["id"] = std::string(id);
    d["type"] = "Subscriptions";
    d["lastEventID"] = last_event_id;
    d["subscriptions"] = std::move(list);
    return d.dump();
}

std::optional<std::string> subscription_answer(const std::vector<MercureSubscriber> &subscribers,
                                               const std::string &topic,
                                               const std::string &subscriber,
                                               const std::string &last_event_id)
{
    for (const auto &s : subscribers) {
        if (s.id != subscriber)
            continue;
        for (const auto &sel : s.selectors) {
            if (sel != topic)
                continue;
            Doc d = standalone_object(s, sel, true);
            d["lastEventID"] = last_event_id;
            return d.dump();
        }
    }
    return std::nullopt;
}

} // namespace sse
