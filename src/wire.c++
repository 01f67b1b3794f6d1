#include "sse/wire.h"

#include "sse/config_values.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

namespace sse {

std::vector<std::string_view> split_lines(std::string_view data)
{
    std::vector<std::string_view> lines;
    for_each_line(data, [&lines](std::string_view line) { lines.push_back(line); });
    return lines;
}

void encode_event(const EventFields &ev, std::string &out)
{
    /* One allocation for the usual event (one data line), not one per doubling. */
    out.reserve(out.size() + ev.id.size() + ev.event.size() + ev.data.size() + 40);
    if (!ev.id.empty()) {
        out += "id: ";
        out += ev.id;
        out += '\n';
    }
    if (!ev.event.empty()) {
        out += "event: ";
        out += ev.event;
        out += '\n';
    }
    if (ev.retry >= 0) {
        out += "retry: ";
        out += std::to_string(ev.retry);
        out += '\n';
    }
    if (ev.has_data) {
        for_each_line(ev.data, [&out](std::string_view line) {
            /* The space after the colon is always written: the parser removes exactly one, so
             * a line that itself starts with a space keeps it. */
            out += "data: ";
            out += line;
            out += '\n';
        });
    }
    out += '\n';
}

void encode_comment(std::string_view text, std::string &out)
{
    out += ": ";
    for (char c : text)
        out += (c == '\r' || c == '\n') ? ' ' : c;
    out += "\n\n";
}

void append_json_string(std::string_view s, std::string &out)
{
    /* Callers pass validated UTF-8; should one not, the answer stays valid JSON. */
    if (!is_valid_utf8(s)) {
        out += nlohmann::json(std::string(s)).dump(-1, ' ', false,
                                                   nlohmann::json::error_handler_t::replace);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    out.reserve(out.size() + s.size() + 2);
    out += '"';
    std::size_t plain = 0; /* start of the run of bytes written as they are */
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const auto uc = static_cast<unsigned char>(c);
        if (uc >= 0x20 && c != '"' && c != '\\')
            continue;
        out.append(s.data() + plain, i - plain);
        plain = i + 1;
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\t': out += "\\t"; break;
        case '\n': out += "\\n"; break;
        case '\f': out += "\\f"; break;
        case '\r': out += "\\r"; break;
        default:
            out += "\\u00";
            out += hex[uc >> 4];
            out += hex[uc & 0xF];
        }
    }
    out.append(s.data() + plain, s.size() - plain);
    out += '"';
}

void encode_missed_notice(std::string_view reason, std::string_view last_event_id,
                          std::string &out)
{
    nlohmann::json j = {{"reason", reason}};
    if (!last_event_id.empty())
        j["lastEventId"] = last_event_id;
    EventFields ev;
    ev.event = "sse-missed";
    ev.has_data = true;
    ev.data = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    encode_event(ev, out);
}

void encode_close_notice(std::string_view reason, const std::vector<std::string> &channels,
                         std::string &out)
{
    nlohmann::json j = {{"reason", reason}};
    if (!channels.empty())
        j["channels"] = channels;
    EventFields ev;
    ev.event = "sse-close";
    ev.has_data = true;
    ev.data = j.dump();
    encode_event(ev, out);
}

void encode_retry(std::int64_t retry_ms, std::string &out)
{
    out += "retry: ";
    out += std::to_string(retry_ms);
    out += "\n\n";
}

std::string utf8_from_latin1(std::string_view s)
{
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) {
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else {
            out += static_cast<char>(0xC0 | (c >> 6));
            out += static_cast<char>(0x80 | (c & 0x3F));
        }
    }
    return out;
}

bool is_valid_utf8(std::string_view s)
{
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    const auto *end = p + s.size();
    while (p < end) {
        /* ASCII eight bytes at a time: every publish checks its data twice (the request's
         * parse, then the core's check), a byte at a time it was a tenth of mod_sse's own
         * instructions per publish (docs/benchmarks.md, "What a publish costs"). */
        std::uint64_t word;
        if (end - p >= 8 && (std::memcpy(&word, p, 8), (word & 0x8080808080808080ULL) == 0)) {
            p += 8;
            continue;
        }
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        std::size_t n;
        std::uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (static_cast<std::size_t>(end - p) <= n)
            return false;
        for (std::size_t i = 1; i <= n; ++i) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        static const std::uint32_t min_for_length[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

static bool is_channel_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.' || c == '~' || c == ':' || c == '@' || c == '/';
}

std::string validate_channel_name(std::string_view name)
{
    if (name.empty())
        return "a channel name must not be empty";
    if (name.size() > kMaxChannelNameBytes)
        return "channel name is " + std::to_string(name.size()) + " bytes long, at most " +
               std::to_string(kMaxChannelNameBytes) + " are allowed";
    for (char c : name) {
        if (!is_channel_char(c)) {
            char buf[8];
            auto uc = static_cast<unsigned char>(c);
            if (uc >= 0x21 && uc < 0x7F)
                snprintf(buf, sizeof buf, "'%c'", c);
            else
                snprintf(buf, sizeof buf, "0x%02X", uc);
            return std::string("channel name \"") + std::string(name.substr(0, 64)) +
                   "\" contains " + buf + "; allowed are A-Z a-z 0-9 _ - . ~ : @ /";
        }
    }
    return {};
}

static std::string check_field_line(const char *what, std::string_view value, std::size_t max)
{
    if (value.size() > max)
        return std::string(what) + " is " + std::to_string(value.size()) + " bytes long, at most " +
               std::to_string(max) + " are allowed";
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
        return std::string(what) + " must not contain CR, LF or NUL";
    if (!is_valid_utf8(value))
        return std::string(what) + " is not valid UTF-8";
    return {};
}

std::string validate_event_id(std::string_view id)
{
    return check_field_line("event id", id, kMaxEventIdBytes);
}

std::string validate_event_type(std::string_view type)
{
    return check_field_line("event type", type, kMaxEventTypeBytes);
}

std::string validate_event_type_filter(const std::vector<std::string> &types, bool over_cap,
                                       std::string_view what)
{
    if (over_cap)
        return std::string(what) + " names more than " +
               std::to_string(kMaxEventTypesPerStream) + " event types";
    for (const auto &type : types)
        if (std::string bad = validate_event_type(type); !bad.empty())
            return std::string(what) + ": " + bad;
    return {};
}

std::string validate_event(const EventFields &ev)
{
    std::string err = validate_event_id(ev.id);
    if (err.empty())
        err = validate_event_type(ev.event);
    if (!err.empty())
        return err;
    if (ev.retry < -1 || ev.retry > kMaxRetryMs)
        return "retry must be a number of milliseconds from 0 to " + std::to_string(kMaxRetryMs);
    if (ev.has_data && !is_valid_utf8(ev.data))
        return "data is not valid UTF-8";
    if (!ev.has_data && ev.retry < 0)
        return "nothing to publish: give data (or a retry)";
    return {};
}

std::int64_t parse_retry(std::string_view text)
{
    std::int64_t v;
    return parse_number(text, 0, kMaxRetryMs, v) ? v : -1;
}

NameCollector::NameCollector(std::vector<std::string> &out, std::size_t cap, bool trim_spaces)
    : out_(out), cap_(cap), trim_(trim_spaces)
{
}

bool NameCollector::take(std::string_view item)
{
    /* A short list is searched as it is: a hash set costs allocations per name, and nearly
     * every request names one or a few (a tenth of a publish's own instructions went here).
     * From kLinearNames on, the set (holding what `out_` holds) keeps a long list linear. */
    constexpr std::size_t kLinearNames = 16;
    if (seen_.empty() && out_.size() < kLinearNames)
        return std::find(out_.begin(), out_.end(), item) == out_.end();
    if (seen_.empty())
        seen_.insert(out_.begin(), out_.end());
    return seen_.emplace(item).second;
}

void NameCollector::add(std::string_view list)
{
    std::size_t start = 0;
    while (start <= list.size() && !over_cap()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string_view::npos)
            comma = list.size();
        std::string_view item = list.substr(start, comma - start);
        start = comma + 1;
        while (trim_ && !item.empty() && item.front() == ' ')
            item.remove_prefix(1);
        while (trim_ && !item.empty() && item.back() == ' ')
            item.remove_suffix(1);
        if (!item.empty() && take(item))
            out_.emplace_back(item);
    }
}

void append_channel_list(std::string_view list, std::vector<std::string> &channels)
{
    NameCollector(channels, kMaxChannelsPerEvent).add(list);
}

std::string validate_channel_list(const std::vector<std::string> &channels)
{
    if (channels.size() > kMaxChannelsPerEvent)
        return "too many channels: more than " + std::to_string(kMaxChannelsPerEvent);
    for (const auto &name : channels) {
        std::string err = validate_channel_name(name);
        if (!err.empty())
            return err;
    }
    return {};
}

} // namespace sse
