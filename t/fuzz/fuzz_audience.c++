/* libFuzzer target for client ids and only/except lists: validate_client_id(),
 * Audience::append_list() and collector(), Audience::validate(), AudienceMatcher (make fuzz).
 *
 * Input: lines; "o<list>" adds to only, "x<list>" to except, anything else is a client id.
 * Checks:
 * - one collector across lines (as a request with many only= parameters) and append_list()
 *   per line give the same lists: no empty item, no repeat, no comma, no space around an id,
 *   at most 1001 each (collecting stops over the cap);
 * - validate() accepts only lists of at most 1000 valid ids; validate_client_id() accepts
 *   exactly the documented ids (1 to 128 bytes of UTF-8, no control, space, DEL or comma);
 * - admits() follows the documented rule and AudienceMatcher (hashed) agrees with it;
 * - an accepted audience survives the socket protocol (encode_frame, parse) unchanged. */
#include "fuzz_checks.h"

#include <cstdint>
#include <string>
#include <unordered_set>

using namespace sse;
using fuzz::check;

namespace {

bool documented_id(std::string_view id)
{
    if (id.empty() || id.size() > 128 || !fuzz::utf8_ok(id))
        return false;
    for (unsigned char c : id)
        if (c <= 0x20 || c == 0x7F || c == ',')
            return false;
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    std::string_view in(reinterpret_cast<const char *>(data), size);
    Audience whole, per_line;
    NameCollector only = Audience::collector(whole.only), except = Audience::collector(whole.except);
    std::vector<std::string_view> ids;
    while (!in.empty()) {
        std::size_t lf = in.find('\n');
        std::string_view line = in.substr(0, lf);
        in.remove_prefix(lf == std::string_view::npos ? in.size() : lf + 1);
        if (!line.empty() && (line[0] == 'o' || line[0] == 'x')) {
            (line[0] == 'o' ? only : except).add(line.substr(1));
            Audience::append_list(line.substr(1), line[0] == 'o' ? per_line.only : per_line.except);
        } else {
            ids.push_back(line);
            check(validate_client_id(line).empty() == documented_id(line));
        }
    }
    check(whole.only == per_line.only && whole.except == per_line.except);
    for (const auto *list : {&whole.only, &whole.except}) {
        fuzz::check_list_shape(*list, kMaxTargetsPerEvent);
        for (const auto &id : *list)
            check(id.find(',') == std::string::npos && id.front() != ' ' && id.back() != ' ');
    }

    const std::unordered_set<std::string_view> in_only(whole.only.begin(), whole.only.end()),
        in_except(whole.except.begin(), whole.except.end());
    AudienceMatcher matcher(whole);
    /* admits() scans the lists: probe a few of their ids (the first and last 8 of each), not
     * all, or a list of 1000 costs a million compares per input. */
    ids.push_back("");
    for (const auto *list : {&whole.only, &whole.except})
        for (std::size_t i = 0; i < list->size(); i = i + 1 == 8 && list->size() > 16 ? list->size() - 8 : i + 1)
            ids.push_back((*list)[i]);
    for (std::string_view id : ids) {
        const bool rule = (whole.only.empty() || (!id.empty() && in_only.count(id))) &&
                          (id.empty() || !in_except.count(id));
        check(whole.admits(id) == rule && matcher.admits(id) == rule);
    }

    if (!whole.validate().empty())
        return 0;
    check(whole.only.size() + whole.except.size() <= kMaxTargetsPerEvent);
    for (const auto *list : {&whole.only, &whole.except})
        for (const auto &id : *list)
            fuzz::check_acceptable_client_id(id);
    EventFields ev;
    ev.has_data = true;
    ev.data = "x";
    fuzz::check_socket_round_trip({"c"}, ev, whole);
    return 0;
}
