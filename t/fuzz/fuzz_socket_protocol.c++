/* libFuzzer target for the publish socket's FrameParser (make fuzz).
 *
 * Input: first byte picks the event size limit, the rest is the byte stream a client sends.
 * Checks, beyond the sanitizers' own: the frames do not depend on how the stream is split into
 * reads, and every frame that would be published (or subscribe block that would be accepted)
 * survives encode_frame() (encode_subscribe_block()) and a second parse unchanged. */
#include "sse/socket_protocol.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

using namespace sse;

static void check(bool ok)
{
    if (!ok)
        abort();
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 1)
        return 0;
    const std::size_t max = 16 + data[0] * 8u;
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);

    FrameParser whole(max), split(max);
    std::vector<Frame> a, b;
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
        check(a[i].audience.only == b[i].audience.only &&
              a[i].audience.except == b[i].audience.except);
        check(a[i].subscribe == b[i].subscribe &&
              a[i].subscribe_channels == b[i].subscribe_channels &&
              a[i].last_event_id == b[i].last_event_id);
        if (a[i].subscribe) {
            /* A subscribe block carries nothing to publish, and one that was accepted
             * survives encode_subscribe_block() and a second parse. */
            check(a[i].channels.empty() || !a[i].error.empty());
            if (!a[i].error.empty() || !validate_channel_list(a[i].subscribe_channels).empty())
                continue;
            std::string again;
            encode_subscribe_block(a[i].subscribe_channels, a[i].last_event_id, again);
            FrameParser reparse(again.size() + 1);
            std::vector<Frame> c;
            reparse.feed(again, c);
            check(c.size() == 1 && c[0].error.empty() && c[0].subscribe);
            check(c[0].subscribe_channels == a[i].subscribe_channels);
            check(c[0].last_event_id == a[i].last_event_id);
            continue;
        }
        /* Round trip what would be published: valid channels and fields, data without CR
         * (encode_frame turns CR into a line end, as the SSE wire format does). */
        bool publishable = a[i].error.empty() && validate_event(a[i].fields).empty() &&
                           a[i].audience.validate().empty() &&
                           a[i].fields.data.find('\r') == std::string::npos;
        for (const auto &c : a[i].channels)
            publishable = publishable && validate_channel_name(c).empty();
        if (!publishable)
            continue;
        std::string again;
        encode_frame(a[i].channels, a[i].fields, again, a[i].audience);
        FrameParser reparse(again.size() + 1);
        std::vector<Frame> c;
        reparse.feed(again, c);
        check(c.size() == 1 && c[0].error.empty());
        check(c[0].channels == a[i].channels && c[0].fields.data == a[i].fields.data);
        check(c[0].fields.has_data == a[i].fields.has_data);
        check(c[0].fields.retry == a[i].fields.retry);
        check(c[0].audience.only == a[i].audience.only &&
              c[0].audience.except == a[i].audience.except);
    }
    return 0;
}
