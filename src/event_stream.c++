#include "sse/event_stream.h"

#include <limits>

namespace sse {

namespace {

void put_utf8(std::uint32_t cp, std::string &out)
{
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

constexpr std::uint32_t kReplacement = 0xFFFD;
constexpr std::string_view kBom = "\xEF\xBB\xBF";

} // namespace

/* The Encoding standard's "UTF-8 decoder" handler, one byte at a time. A byte that cannot
 * continue the sequence ends it with U+FFFD and is "prepended to the stream": read again. */
bool Utf8Decoder::step(unsigned b, std::string &out)
{
    if (needed_ == 0) {
        if (b <= 0x7F) {
            out += static_cast<char>(b);
        } else if (b >= 0xC2 && b <= 0xDF) {
            needed_ = 1;
            code_point_ = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            lower_ = b == 0xE0 ? 0xA0 : 0x80;
            upper_ = b == 0xED ? 0x9F : 0xBF;
            needed_ = 2;
            code_point_ = b & 0xF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            lower_ = b == 0xF0 ? 0x90 : 0x80;
            upper_ = b == 0xF4 ? 0x8F : 0xBF;
            needed_ = 3;
            code_point_ = b & 0x7;
        } else {
            put_utf8(kReplacement, out);
            ++replacements;
        }
        return true;
    }
    if (b < lower_ || b > upper_) {
        code_point_ = 0;
        needed_ = seen_ = 0;
        lower_ = 0x80;
        upper_ = 0xBF;
        put_utf8(kReplacement, out);
        ++replacements;
        return false;
    }
    lower_ = 0x80;
    upper_ = 0xBF;
    code_point_ = (code_point_ << 6) | (b & 0x3F);
    if (++seen_ == needed_) {
        put_utf8(code_point_, out);
        code_point_ = 0;
        needed_ = seen_ = 0;
    }
    return true;
}

void Utf8Decoder::decode(std::string_view bytes, std::string &out)
{
    for (std::size_t i = 0; i < bytes.size();) {
        const unsigned b = static_cast<unsigned char>(bytes[i]);
        if (needed_ == 0 && b < 0x80) { /* the common case: a run of ASCII */
            std::size_t end = i;
            while (end < bytes.size() && static_cast<unsigned char>(bytes[end]) < 0x80)
                ++end;
            out.append(bytes.data() + i, end - i);
            i = end;
            continue;
        }
        if (step(b, out))
            ++i;
    }
}

void Utf8Decoder::finish(std::string &out)
{
    if (needed_ != 0) {
        put_utf8(kReplacement, out);
        ++replacements;
    }
    code_point_ = 0;
    needed_ = seen_ = 0;
    lower_ = 0x80;
    upper_ = 0xBF;
}

std::string utf8_decode(std::string_view bytes, std::size_t *replacements)
{
    Utf8Decoder d;
    std::string out;
    d.decode(bytes, out);
    d.finish(out);
    if (replacements)
        *replacements = d.replacements;
    if (out.compare(0, kBom.size(), kBom) == 0)
        out.erase(0, kBom.size());
    return out;
}

EventStreamParser::EventStreamParser(std::string last_event_id, std::size_t max_pending_bytes)
    : id_buffer_(last_event_id), last_event_id_(std::move(last_event_id)),
      max_pending_(max_pending_bytes)
{
}

void EventStreamParser::start_connection()
{
    decoder_ = Utf8Decoder{};
    line_.clear();
    data_.clear();
    type_.clear();
    /* The buffer may hold an id whose event never came: the spec's next dispatch would have
     * set it, a new connection goes on from the id it resumes from. */
    id_buffer_ = last_event_id_;
    at_start_ = true;
    after_cr_ = false;
}

bool EventStreamParser::feed(std::string_view bytes, std::vector<StreamEvent> &events)
{
    decoded_.clear();
    decoder_.decode(bytes, decoded_);
    std::string_view text = decoded_;
    /* The decoder hands out whole code points only, so the first one is complete here. */
    if (at_start_ && !text.empty()) {
        if (text.substr(0, kBom.size()) == kBom)
            text.remove_prefix(kBom.size());
        at_start_ = false;
    }
    while (!text.empty()) {
        if (after_cr_ && text.front() == '\n') /* the LF of a CRLF split at the CR */
            text.remove_prefix(1);
        after_cr_ = false;
        const std::size_t end = text.find_first_of("\r\n");
        line_.append(text.substr(0, end));
        if (max_pending_ && line_.size() + data_.size() + type_.size() > max_pending_)
            return false;
        if (end == std::string_view::npos)
            break;
        after_cr_ = text[end] == '\r';
        text.remove_prefix(end + 1);
        line_ended(events);
    }
    return true;
}

void EventStreamParser::line_ended(std::vector<StreamEvent> &events)
{
    std::string_view line = line_;
    if (line.empty()) {
        dispatch(events);
    } else if (line.front() != ':') { /* ':' starts a comment */
        const std::size_t colon = line.find(':');
        std::string_view value;
        if (colon != std::string_view::npos) {
            value = line.substr(colon + 1);
            if (!value.empty() && value.front() == ' ')
                value.remove_prefix(1);
        }
        field(line.substr(0, colon), value);
    }
    line_.clear();
}

void EventStreamParser::field(std::string_view name, std::string_view value)
{
    if (name == "event") {
        type_.assign(value);
    } else if (name == "data") {
        data_.append(value);
        data_ += '\n';
    } else if (name == "id") {
        if (value.find('\0') == std::string_view::npos)
            id_buffer_.assign(value);
    } else if (name == "retry") {
        if (value.empty() || value.find_first_not_of("0123456789") != std::string_view::npos)
            return;
        constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
        std::int64_t v = 0;
        for (char c : value) {
            const int digit = c - '0';
            v = v > (kMax - digit) / 10 ? kMax : v * 10 + digit;
        }
        retry_ms_ = v;
    }
}

void EventStreamParser::dispatch(std::vector<StreamEvent> &events)
{
    last_event_id_ = id_buffer_;
    if (data_.empty()) {
        type_.clear();
        return;
    }
    if (data_.back() == '\n')
        data_.pop_back();
    events.push_back({type_.empty() ? "message" : std::move(type_), std::move(data_),
                      last_event_id_});
    data_.clear();
    type_.clear();
}

} // namespace sse
