/* libFuzzer target for the publish socket's FrameParser (make fuzz).
 *
 * Input: first byte picks the event size limit, the rest is the byte stream a client sends.
 * Checks, beyond the sanitizers' own: the frames do not depend on how the stream is split into
 * reads; lists never hold more than cap + 1 names; every frame that would be published
 * survives encode_frame() and a second parse with the same channels, event type, id, retry,
 * data and audience, and reaches a browser as exactly that event (encode_event() read by the
 * independent WHATWG reader); every subscribe block that would be accepted survives
 * encode_subscribe_block() and a second parse, its event-types included. */
#include "fuzz_checks.h"

#include "sse/socket_protocol.h"

#include <cstdint>
#include <string>
#include <vector>

using namespace sse;
using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 1)
        return 0;
    const std::size_t max = 16 + data[0] * 8u;
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);

    FrameParser whole(max), split(max);
    std::vector<ClientBlock> a, b;
    whole.feed(in, a);
    for (std::size_t i = 0; i < in.size();) {
        std::size_t n = 1 + static_cast<unsigned char>(in[i]) % 7;
        split.feed(in.substr(i, n), b);
        i += n;
    }
    check(a.size() == b.size());
    check(whole.mid_event() == split.mid_event());
    for (std::size_t i = 0; i < a.size(); ++i) {
        check(a[i].error == b[i].error);
        check(a[i].channels == b[i].channels);
        check(a[i].fields.data == b[i].fields.data);
        check(a[i].fields.event == b[i].fields.event && a[i].fields.id == b[i].fields.id);
        check(a[i].fields.retry == b[i].fields.retry && a[i].fields.has_data == b[i].fields.has_data);
        check(a[i].audience.only == b[i].audience.only &&
              a[i].audience.except == b[i].audience.except);
        check(a[i].subscribe == b[i].subscribe &&
              a[i].subscribe_channels == b[i].subscribe_channels &&
              a[i].last_event_id == b[i].last_event_id);
        fuzz::check_list_shape(a[i].subscribe_channels, kMaxChannelsPerEvent);
        if (a[i].subscribe) {
            /* A subscribe block carries nothing to publish, and one that was accepted
             * survives encode_subscribe_block() and a second parse. */
            check(a[i].channels.empty() || !a[i].error.empty());
            if (!a[i].error.empty() || !validate_channel_list(a[i].subscribe_channels).empty())
                continue;
            std::string again;
            encode_subscribe_block(a[i].subscribe_channels, a[i].last_event_id, again,
                                   a[i].event_types);
            FrameParser reparse(again.size() + 1);
            std::vector<ClientBlock> c;
            reparse.feed(again, c);
            check(c.size() == 1 && c[0].error.empty() && c[0].subscribe);
            check(c[0].subscribe_channels == a[i].subscribe_channels);
            check(c[0].last_event_id == a[i].last_event_id);
            check(c[0].event_types == a[i].event_types);
            continue;
        }
        fuzz::check_list_shape(a[i].channels, kMaxChannelsPerEvent);
        fuzz::check_list_shape(a[i].audience.only, kMaxTargetsPerEvent);
        fuzz::check_list_shape(a[i].audience.except, kMaxTargetsPerEvent);
        /* Round trip what publish_event() would accept: valid channels, fields and ids. */
        if (!a[i].error.empty() || !validate_event(a[i].fields).empty() ||
            !a[i].audience.validate().empty() || !validate_channel_list(a[i].channels).empty())
            continue;
        fuzz::check_acceptable_event(a[i].fields);
        fuzz::check_socket_round_trip(a[i].channels, a[i].fields, a[i].audience);
        fuzz::check_wire_round_trip(a[i].fields);
    }
    return 0;
}
