/* libFuzzer target for query strings, channel lists and channel names: parse_form(),
 * select_channels(), validate_channel_name() (make fuzz).
 *
 * Input: the first byte says whether an SSEChannel value is configured, then the query string
 * up to the first LF, then the path after the Location (or the SSEChannel value). Checks:
 * - parse_form() round-trips: each decoded pair %-encoded again parses to the same pairs;
 * - select_channels() accepts only 1 to 64 valid names without repeats, each taken from the
 *   request, and accepting its own output (joined by commas) gives the same list;
 * - whatever it refuses, the list it built holds at most 65 names (collecting stops);
 * - validate_channel_name() accepts exactly the names of the documented alphabet and length. */
#include "fuzz_checks.h"

#include "sse/request.h"

#include <cstdint>
#include <cstdio>
#include <string>

using namespace sse;
using fuzz::check;

namespace {

std::string percent_encode(std::string_view s)
{
    std::string out;
    for (unsigned char c : s) {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        out += buf;
    }
    return out;
}

bool documented_name(std::string_view name)
{
    if (name.empty() || name.size() > 255)
        return false;
    for (char c : name)
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              std::string_view("_-.~:@/").find(c) != std::string_view::npos))
            return false;
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 1)
        return 0;
    const bool configured = data[0] & 1;
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
    std::size_t lf = in.find('\n');
    std::string_view query_text = in.substr(0, lf);
    std::string_view rest = lf == std::string_view::npos ? std::string_view() : in.substr(lf + 1);

    check(validate_channel_name(rest).empty() == documented_name(rest));

    Params query;
    if (!parse_form(query_text, query).empty())
        return 0;
    std::string again;
    for (const auto &[k, v] : query)
        again += (again.empty() ? "" : "&") + percent_encode(k) + "=" + percent_encode(v);
    Params reparsed;
    check(parse_form(again, reparsed).empty() && reparsed == query);

    const std::string conf(rest);
    std::vector<std::string> channels;
    std::string err = select_channels(configured ? &conf : nullptr, query, rest, channels);
    fuzz::check_list_shape(channels, kMaxChannelsPerEvent);
    const bool both = param_last(query, "channel") && param_last(query, "stream");
    check(configured || !both || !err.empty());
    if (!err.empty())
        return 0;
    check(!channels.empty() && channels.size() <= kMaxChannelsPerEvent);
    std::string joined;
    for (const auto &c : channels) {
        fuzz::check_acceptable_channel(c);
        const bool from_query = param_last(query, "channel") || param_last(query, "stream");
        bool named = configured || !from_query ? rest.find(c) != std::string_view::npos : false;
        for (const auto &[k, v] : query)
            named = named || ((k == "channel" || k == "stream") && v.find(c) != std::string::npos);
        check(named);
        joined += (joined.empty() ? "" : ",") + c;
    }
    std::vector<std::string> same;
    check(select_channels(&joined, Params(), "", same).empty() && same == channels);
    return 0;
}
