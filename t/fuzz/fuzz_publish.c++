/* libFuzzer target for publish requests: parse_publish() on a query string and a body (make
 * fuzz).
 *
 * Input: the first byte picks the media type (JSON, form, text, other), then the query string
 * up to the first LF, then the body. Checks, beyond the sanitizers' own:
 * - an accepted event is acceptable (fuzz_checks.h: no CR/LF/NUL in id and type, limits,
 *   UTF-8, retry range), its channels and only/except ids are valid, without repeats, within
 *   their caps;
 * - it reaches a browser unchanged: encode_event() read by the independent WHATWG reader
 *   gives exactly one event with the same type, data (line ends as LF) and id;
 * - it survives the socket protocol: encode_frame() parsed again gives the same event;
 * - lists never hold more than cap + 1 items, accepted or not (collecting stops at the cap);
 * - a JSON body deeper than kMaxJsonDepth is refused, never dumped. */
#include "fuzz_checks.h"

#include "sse/request.h"

#include <cstdint>
#include <string>

using namespace sse;
using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 1)
        return 0;
    static const char *const types[] = {"application/json", "application/x-www-form-urlencoded",
                                        "text/plain", ""};
    const char *type = types[data[0] % 4];
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
    std::size_t lf = in.find('\n');
    std::string_view query_text = lf == std::string_view::npos ? std::string_view() : in.substr(0, lf);
    std::string_view body = lf == std::string_view::npos ? in : in.substr(lf + 1);

    Params query;
    if (!parse_form(query_text, query).empty())
        return 0; /* answered 400 before the body is looked at */
    PublishBody pub;
    std::string err = parse_publish(type, body, query, pub);
    fuzz::check_list_shape(pub.channels, kMaxChannelsPerEvent);
    fuzz::check_list_shape(pub.audience.only, kMaxTargetsPerEvent);
    fuzz::check_list_shape(pub.audience.except, kMaxTargetsPerEvent);
    check(!pub.json_too_deep || !err.empty());
    if (!err.empty())
        return 0;

    fuzz::check_acceptable_event(pub.fields);
    check(pub.audience.only.size() + pub.audience.except.size() <= kMaxTargetsPerEvent);
    for (const auto *list : {&pub.audience.only, &pub.audience.except})
        for (const auto &id : *list)
            fuzz::check_acceptable_client_id(id);
    /* Raw bodies are the data byte for byte. */
    if (type != types[0] && !pub.fields.has_data)
        check(body.empty() || std::string_view(type) == types[1]);
    fuzz::check_wire_round_trip(pub.fields);

    /* The body's channels are checked by the glue (validate_channel_list); when they pass,
     * the event goes through the socket protocol unchanged too. */
    std::vector<std::string> channels = pub.channels;
    if (channels.empty())
        channels.push_back("fuzz");
    if (validate_channel_list(channels).empty()) {
        for (const auto &c : channels)
            fuzz::check_acceptable_channel(c);
        fuzz::check_socket_round_trip(channels, pub.fields, pub.audience);
    }
    return 0;
}
