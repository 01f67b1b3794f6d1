/* libFuzzer target for sse::EventStreamParser, the WHATWG event-stream reader (make fuzz).
 *
 * Input: the bytes a server sends. Checks, beyond the sanitizers' own: the events, last event
 * id and retry do not depend on how the stream is split into reads (whole, in pieces whose
 * sizes the input picks, byte by byte); every event is UTF-8 (is_valid_utf8, independent of
 * the reader's decoder), its type is never empty, its type and id hold no CR or LF, its id no
 * NUL, its data no CR; a limit on pending bytes either changes nothing or stops the parser
 * with the events before it a prefix of the unlimited ones; an event whose id and type
 * encode_event() accepts comes back from encode_event() and a second read unchanged. */
#include "fuzz_checks.h"

#include "sse/event_stream.h"
#include "sse/wire.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace sse;
using fuzz::check;

namespace {

bool same(const StreamEvent &a, const StreamEvent &b)
{
    return a.type == b.type && a.data == b.data && a.last_event_id == b.last_event_id;
}

bool same(const std::vector<StreamEvent> &a, const std::vector<StreamEvent> &b)
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (!same(a[i], b[i]))
            return false;
    return true;
}

void check_event_shape(const StreamEvent &e)
{
    check(!e.type.empty());
    for (const std::string *s : {&e.type, &e.last_event_id, &e.data}) {
        check(is_valid_utf8(*s));
        check(s->find('\r') == std::string::npos);
    }
    check(e.type.find('\n') == std::string::npos);
    check(e.last_event_id.find_first_of(std::string_view("\n\0", 2)) == std::string::npos);
}

/* The event written by the encoder, read again by a parser that already had its id. */
void check_reencodes(const StreamEvent &e)
{
    EventFields f;
    f.id = e.last_event_id;
    f.event = e.type == "message" ? std::string() : e.type;
    f.has_data = true;
    f.data = e.data;
    if (!validate_event(f).empty())
        return; /* e.g. an id or type beyond the publish limits */
    std::string wire;
    encode_event(f, wire);
    fuzz::ReadStream again = fuzz::read_stream(wire, e.last_event_id);
    check(again.events.size() == 1 && same(again.events[0], e));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    std::string_view in(reinterpret_cast<const char *>(data), size);

    EventStreamParser whole("start");
    std::vector<StreamEvent> a;
    check(whole.feed(in, a));

    EventStreamParser split("start"), bytes("start");
    std::vector<StreamEvent> b, c;
    for (std::size_t i = 0; i < in.size();) {
        const std::size_t n = 1 + static_cast<unsigned char>(in[i]) % 13;
        check(split.feed(in.substr(i, n), b));
        i += n;
    }
    for (char ch : in)
        check(bytes.feed(std::string_view(&ch, 1), c));
    check(same(a, b) && same(a, c));
    for (const EventStreamParser *p : {&split, &bytes})
        check(p->last_event_id() == whole.last_event_id() && p->retry_ms() == whole.retry_ms());
    check(whole.retry_ms() >= -1);

    const std::size_t limit = 1 + size / 3;
    EventStreamParser limited("start", limit);
    std::vector<StreamEvent> d;
    if (limited.feed(in, d)) {
        check(same(a, d));
    } else {
        check(d.size() <= a.size());
        check(same(d, std::vector<StreamEvent>(a.begin(), a.begin() + d.size())));
    }

    for (const StreamEvent &e : a) {
        check_event_shape(e);
        check_reencodes(e);
    }
    return 0;
}
