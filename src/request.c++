#include "sse/request.h"

#include <nlohmann/json.hpp>

namespace sse {

const std::string *param_first(const Params &params, std::string_view key)
{
    for (const auto &kv : params)
        if (kv.first == key)
            return &kv.second;
    return nullptr;
}

int hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

std::string percent_decode(std::string_view s, bool plus_is_space, std::string &out)
{
    out.clear();
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '+' && plus_is_space) {
            out += ' ';
        } else if (c == '%') {
            int hi = i + 2 < s.size() ? hex_digit_value(s[i + 1]) : -1;
            int lo = i + 2 < s.size() ? hex_digit_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return "bad %-escape near \"" + std::string(s.substr(i, 3)) + "\"";
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += c;
        }
    }
    return {};
}

namespace {

const char *const kBodyFields[] = {"data", "event", "id", "retry", "channel", "only", "except"};

/* The lists of one publish request, each collected across the query string and the body. */
struct Lists {
    explicit Lists(PublishBody &out)
        : channels(out.channels, kMaxChannelsPerEvent), only(Audience::collector(out.audience.only)),
          except(Audience::collector(out.audience.except))
    {
    }
    NameCollector channels, only, except;
};

/* A JSON member that is a list: a comma-separated string or an array of strings. */
std::string json_list(const nlohmann::json &v, const char *what, NameCollector &out)
{
    if (v.is_string()) {
        out.add(v.get_ref<const std::string &>());
        return {};
    }
    if (!v.is_array())
        return std::string("\"") + what + "\" must be a string or an array of strings";
    for (const auto &c : v) {
        if (!c.is_string())
            return std::string("\"") + what + "\" must be a string or an array of strings";
        out.add(c.get_ref<const std::string &>());
    }
    return {};
}

bool is_body_field(std::string_view key)
{
    for (const char *f : kBodyFields)
        if (key == f)
            return true;
    return false;
}

/* True when every '&'-separated piece of `body` is "<field>=..." with one of our field names:
 * then it is a form meant for us. Anything else (what `curl -d 'hello'` sends) is text. */
bool is_field_form(std::string_view body)
{
    bool any = false;
    std::size_t start = 0;
    while (start < body.size()) {
        std::size_t amp = body.find('&', start);
        if (amp == std::string_view::npos)
            amp = body.size();
        std::string_view pair = body.substr(start, amp - start);
        start = amp + 1;
        if (pair.empty())
            continue;
        std::size_t eq = pair.find('=');
        if (eq == std::string_view::npos || !is_body_field(pair.substr(0, eq)))
            return false;
        any = true;
    }
    return any;
}

std::string set_retry(std::string_view text, EventFields &ev)
{
    ev.retry = parse_retry(text);
    if (ev.retry < 0)
        return "retry must be a number of milliseconds (digits only, at most " +
               std::to_string(kMaxRetryMs) + "), got \"" + std::string(text.substr(0, 32)) + "\"";
    return {};
}

/* Thrown by the parser callback at an array or object deeper than kMaxJsonDepth. */
struct TooDeep {};

std::string parse_json_body(std::string_view body, PublishBody &out, Lists &lists)
{
    using nlohmann::json;
    json doc;
    /* The limit is applied while parsing: nlohmann parses iteratively, but dump() (of "data")
     * recurses, and 70,000 levels overflowed a worker's stack. `depth` counts the arrays and
     * objects that enclose the one starting (the body object starts at 0). */
    const json::parser_callback_t limit_depth = [](int depth, json::parse_event_t event,
                                                   json &) {
        if ((event == json::parse_event_t::object_start ||
             event == json::parse_event_t::array_start) &&
            depth >= static_cast<int>(kMaxJsonDepth))
            throw TooDeep();
        return true;
    };
    try {
        doc = json::parse(body.begin(), body.end(), limit_depth);
    } catch (const json::exception &e) {
        /* parse_error, and out_of_range for a number too large for a double (1e400). */
        return std::string("malformed JSON: ") + e.what();
    } catch (const TooDeep &) {
        out.json_too_deep = true;
        return "the JSON body nests arrays and objects more than " +
               std::to_string(kMaxJsonDepth) + " deep";
    }
    if (!doc.is_object())
        return "the JSON body must be an object such as {\"data\": \"hello\"}";
    EventFields &ev = out.fields;
    for (auto it = doc.begin(); it != doc.end(); ++it) {
        const std::string &key = it.key();
        const json &v = it.value();
        if (key == "data") {
            ev.has_data = true;
            ev.data = v.is_string() ? v.get<std::string>() : v.dump();
        } else if (key == "event") {
            if (!v.is_string())
                return "\"event\" must be a string";
            ev.event = v.get<std::string>();
        } else if (key == "id") {
            if (v.is_string())
                ev.id = v.get<std::string>();
            else if (v.is_number_integer())
                ev.id = v.dump();
            else
                return "\"id\" must be a string or an integer";
        } else if (key == "retry") {
            if (v.is_number_unsigned() && v.get<std::uint64_t>() <= kMaxRetryMs)
                ev.retry = static_cast<std::int64_t>(v.get<std::uint64_t>());
            else if (v.is_string()) {
                std::string err = set_retry(v.get<std::string>(), ev);
                if (!err.empty())
                    return err;
            } else
                return "\"retry\" must be a whole number of milliseconds from 0 to " +
                       std::to_string(kMaxRetryMs);
        } else if (key == "channel") {
            std::string err = json_list(v, "channel", lists.channels);
            if (!err.empty())
                return err;
            if (out.channels.empty())
                return "\"channel\" names no channel";
        } else if (key == "only" || key == "except") {
            std::string err =
                json_list(v, key.c_str(), key == "only" ? lists.only : lists.except);
            if (!err.empty())
                return err;
        } else {
            return "unknown member \"" + key.substr(0, 64) +
                   "\" in the JSON body; known are data, event, id, retry, channel, only, except";
        }
    }
    return {};
}

} // namespace

std::string parse_form(std::string_view text, Params &out)
{
    std::size_t start = 0;
    std::string key, value;
    while (start <= text.size()) {
        std::size_t amp = text.find('&', start);
        if (amp == std::string_view::npos)
            amp = text.size();
        std::string_view pair = text.substr(start, amp - start);
        start = amp + 1;
        if (pair.empty())
            continue;
        std::size_t eq = pair.find('=');
        std::string err = percent_decode(pair.substr(0, eq), true, key);
        if (err.empty() && eq != std::string_view::npos)
            err = percent_decode(pair.substr(eq + 1), true, value);
        else
            value.clear();
        if (!err.empty())
            return err;
        out.emplace_back(key, value);
    }
    return {};
}

std::vector<std::string> param_values(const Params &params, std::string_view key)
{
    std::vector<std::string> v;
    for (const auto &kv : params)
        if (kv.first == key)
            v.push_back(kv.second);
    return v;
}

const std::string *param_last(const Params &params, std::string_view key)
{
    const std::string *last = nullptr;
    for (const auto &kv : params)
        if (kv.first == key)
            last = &kv.second;
    return last;
}

namespace {

/* The query parameter that names channels: `channel`, or `stream` (the r3labs/sse client's
 * `?stream=NAME`); nullptr when the query has neither. */
const char *channel_param(const Params &query)
{
    if (param_last(query, "channel"))
        return "channel";
    if (param_last(query, "stream"))
        return "stream";
    return nullptr;
}

} // namespace

std::string select_channels(const std::string *configured, const Params &query,
                            std::string_view path_rest, std::vector<std::string> &out)
{
    out.clear();
    const char *source;
    NameCollector names(out, kMaxChannelsPerEvent);
    if (configured) {
        names.add(*configured);
        source = "SSEChannel gave no channel";
    } else if (const char *param = channel_param(query)) {
        if (param_last(query, "channel") && param_last(query, "stream"))
            return "both channel and stream parameters: name the channels with one of them";
        for (const auto &v : param_values(query, param))
            names.add(v);
        source = *param == 'c' ? "the channel parameter names no channel"
                               : "the stream parameter names no channel";
    } else {
        while (!path_rest.empty() && path_rest.front() == '/')
            path_rest.remove_prefix(1);
        while (!path_rest.empty() && path_rest.back() == '/')
            path_rest.remove_suffix(1);
        names.add(path_rest);
        source = "no channel: name one in the path (/events/news) or with ?channel=news";
    }
    if (out.empty())
        return source;
    return validate_channel_list(out);
}

std::string select_event_types(const Params &query, std::vector<std::string> &out)
{
    out.clear();
    NameCollector names(out, kMaxEventTypesPerStream);
    for (const auto &kv : query)
        if (kv.first == "event")
            names.add(kv.second);
    return validate_event_type_filter(out, names.over_cap(), "the event parameter");
}

std::string resume_id(const char *header, const Params &query)
{
    if (header) {
        /* Browsers send the header in UTF-8; fetch()-based clients (Node's eventsource,
         * undici) send a header value as Latin-1 bytes. */
        return is_valid_utf8(header) ? std::string(header) : utf8_from_latin1(header);
    }
    if (const std::string *v = param_last(query, "lastEventId"))
        return *v;
    if (const std::string *v = param_last(query, "last_event_id"))
        return *v;
    return {};
}

std::string parse_publish(std::string_view media_type, std::string_view body,
                          const Params &query, PublishBody &out)
{
    EventFields &ev = out.fields;
    if (const std::string *v = param_last(query, "event"))
        ev.event = *v;
    if (const std::string *v = param_last(query, "id"))
        ev.id = *v;
    if (const std::string *v = param_last(query, "retry")) {
        std::string err = set_retry(*v, ev);
        if (!err.empty())
            return err;
    }
    Lists lists(out);
    for (const auto &v : param_values(query, "only"))
        lists.only.add(v);
    for (const auto &v : param_values(query, "except"))
        lists.except.add(v);

    std::string err;
    bool raw = true;
    if (media_type == "application/json") {
        raw = false;
        err = parse_json_body(body, out, lists);
    } else if (media_type == "application/x-www-form-urlencoded" && is_field_form(body)) {
        raw = false;
        Params form;
        err = parse_form(body, form);
        if (!err.empty())
            err = "malformed form data: " + err;
        for (const auto &kv : form) {
            if (!err.empty())
                break;
            if (kv.first == "data") {
                ev.has_data = true;
                ev.data = kv.second;
            } else if (kv.first == "event") {
                ev.event = kv.second;
            } else if (kv.first == "id") {
                ev.id = kv.second;
            } else if (kv.first == "retry") {
                err = set_retry(kv.second, ev);
            } else if (kv.first == "channel") {
                lists.channels.add(kv.second);
            } else if (kv.first == "only") {
                lists.only.add(kv.second);
            } else if (kv.first == "except") {
                lists.except.add(kv.second);
            }
        }
    }
    if (raw && !body.empty()) {
        ev.has_data = true;
        ev.data.assign(body.data(), body.size());
    }
    if (!err.empty())
        return err;
    err = validate_event(ev);
    return err.empty() ? out.audience.validate() : err;
}

} // namespace sse
