/* libFuzzer target for where a subscribe resumes: resume_id() on a Last-Event-ID header or the
 * lastEventId / last_event_id query parameters, and the sse-missed notice that echoes an
 * unknown id back (make fuzz).
 *
 * Input: the first byte says whether a header is sent, then the header value up to the first
 * NUL (httpd hands a C string), then the query string after it. Checks:
 * - a header that is UTF-8 is the id unchanged; any other is read as Latin-1: the id is
 *   UTF-8 and decodes back (code point by code point) to the header's bytes, so two
 *   different headers never resume at the same id;
 * - without a header the query decides (lastEventId before last_event_id, last one wins);
 * - the notice for an unknown id is exactly one "sse-missed" event without an id, read by the
 *   independent WHATWG reader, whose JSON names the id (when it is UTF-8). */
#include "fuzz_checks.h"

#include "sse/request.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

using namespace sse;
using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 1)
        return 0;
    const bool has_header = data[0] & 1;
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
    std::size_t nul = in.find('\0');
    const std::string header(in.substr(0, nul));
    std::string_view query_text = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
    Params query;
    if (!parse_form(query_text, query).empty())
        return 0;

    const std::string id = resume_id(has_header ? header.c_str() : nullptr, query);
    if (has_header) {
        check(fuzz::utf8_ok(id));
        if (fuzz::utf8_ok(header)) {
            check(id == header);
        } else {
            /* Back from UTF-8 to Latin-1: every code point below 256, one byte each. */
            std::string latin1;
            const auto *p = reinterpret_cast<const unsigned char *>(id.data());
            for (std::size_t i = 0; i < id.size(); ++i) {
                if (p[i] < 0x80) {
                    latin1 += static_cast<char>(p[i]);
                } else {
                    check((p[i] == 0xC2 || p[i] == 0xC3) && i + 1 < id.size());
                    latin1 += static_cast<char>(((p[i] & 0x03) << 6) | (p[i + 1] & 0x3F));
                    ++i;
                }
            }
            check(latin1 == header);
        }
    } else {
        const std::string *want = param_last(query, "lastEventId");
        if (!want)
            want = param_last(query, "last_event_id");
        check(id == (want ? *want : std::string()));
    }

    std::string wire;
    encode_missed_notice("unknown-last-event-id", id, wire);
    fuzz::ReadStream s = fuzz::read_stream(wire, "before");
    check(s.events.size() == 1 && s.retry == -1);
    check(s.events[0].type == "sse-missed" && s.events[0].last_event_id == "before");
    nlohmann::json j = nlohmann::json::parse(s.events[0].data);
    check(j.at("reason") == "unknown-last-event-id");
    check(id.empty() ? !j.contains("lastEventId") : j.at("lastEventId").is_string());
    if (fuzz::utf8_ok(id) && !id.empty())
        check(j.at("lastEventId").get<std::string>() == id);
    return 0;
}
