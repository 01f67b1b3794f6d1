#include "sse/config_values.h"

#include <limits>

namespace sse {

namespace {

/* The leading digits of `text` as a number; false when there are none or they overflow. */
bool leading_digits(std::string_view &text, std::uint64_t &v)
{
    const std::size_t start_size = text.size();
    v = 0;
    while (!text.empty() && text.front() >= '0' && text.front() <= '9') {
        const unsigned d = static_cast<unsigned>(text.front() - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
            return false;
        v = v * 10 + d;
        text.remove_prefix(1);
    }
    return text.size() != start_size;
}

} // namespace

bool parse_number(std::string_view text, std::int64_t min, std::int64_t max, std::int64_t &out)
{
    std::uint64_t v;
    if (text.size() > 12 || !leading_digits(text, v) || !text.empty())
        return false;
    if (v < static_cast<std::uint64_t>(min) || v > static_cast<std::uint64_t>(max))
        return false;
    out = static_cast<std::int64_t>(v);
    return true;
}

bool parse_size(std::string_view text, std::uint64_t max, std::uint64_t &out)
{
    std::uint64_t v;
    if (!leading_digits(text, v))
        return false;
    std::uint64_t unit = 1;
    if (text.size() == 1) {
        switch (text.front()) {
        case 'K': case 'k': unit = std::uint64_t(1) << 10; break;
        case 'M': case 'm': unit = std::uint64_t(1) << 20; break;
        case 'G': case 'g': unit = std::uint64_t(1) << 30; break;
        default: return false;
        }
    } else if (!text.empty()) {
        return false;
    }
    if (v > max / unit)
        return false;
    out = v * unit;
    return true;
}

} // namespace sse
