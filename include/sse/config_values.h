/* sse/config_values.h — the numbers and sizes that directives take, parsed without httpd so
 * the unit tests and the fuzz target (t/fuzz/fuzz_config_values.c++) check the same code that
 * mod_sse.c++'s directive handlers call.
 *
 * Contract: pure functions, any thread. Each either accepts the whole text and writes a value
 * within the given bounds, or returns false and leaves `out` alone; no text overflows (a value
 * too large for 64 bits is refused, never wrapped).
 */
#ifndef SSE_CONFIG_VALUES_H
#define SSE_CONFIG_VALUES_H

#include <cstdint>
#include <string_view>

namespace sse {

/* "<digits>" within [min, max] (0 <= min <= max). No sign, space or other character; at most
 * 12 digits (every limit a directive has is below 10^12). */
bool parse_number(std::string_view text, std::int64_t min, std::int64_t max, std::int64_t &out);

/* "<digits>[K|M|G]" (suffix in either case, 1024-based) in bytes, at most `max`. No sign,
 * space or other character; "0" is accepted (the caller checks its own minimum). */
bool parse_size(std::string_view text, std::uint64_t max, std::uint64_t &out);

} // namespace sse

#endif
