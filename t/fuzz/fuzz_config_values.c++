/* libFuzzer target for the sizes and numbers directives take: parse_size(), parse_number(),
 * parse_retry() (make fuzz).
 *
 * Input: 8 bytes of limit, then the text. Checks against an independent reading in saturating
 * 128-bit arithmetic:
 * - accepted exactly when the text is digits (with one K/M/G/k/m/g for a size) and the value
 *   is within the limits, and then the value is the right one (never wrapped);
 * - an accepted size round-trips: its digits without suffix parse to the same value;
 * - parse_retry() agrees with parse_number(text, 0, kMaxRetryMs). */
#include "fuzz_checks.h"

#include "sse/config_values.h"

#include <cstdint>
#include <cstring>
#include <string>

using namespace sse;
using fuzz::check;

namespace {

using u128 = unsigned __int128;
constexpr u128 kSaturated = u128(1) << 100;

/* Digits as a number, saturating far above any 64-bit value; false when not all digits. */
bool digits_value(std::string_view s, u128 &v)
{
    v = 0;
    if (s.empty())
        return false;
    for (char c : s) {
        if (c < '0' || c > '9')
            return false;
        v = v >= kSaturated ? v : v * 10 + static_cast<unsigned>(c - '0');
    }
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 8)
        return 0;
    std::uint64_t limit;
    std::memcpy(&limit, data, 8);
    std::string_view text(reinterpret_cast<const char *>(data) + 8, size - 8);

    /* Sizes: the limit as given, and the directives' own 64M and 64G. */
    for (std::uint64_t max : {limit, std::uint64_t(64) << 20, std::uint64_t(64) << 30}) {
        u128 unit = 1, v;
        std::string_view digits = text;
        if (!digits.empty()) {
            switch (digits.back()) {
            case 'K': case 'k': unit = u128(1) << 10; break;
            case 'M': case 'm': unit = u128(1) << 20; break;
            case 'G': case 'g': unit = u128(1) << 30; break;
            default: break;
            }
            if (unit != 1)
                digits.remove_suffix(1);
        }
        const bool valid = digits_value(digits, v) && v * unit <= max;
        std::uint64_t out = 12345;
        const bool accepted = parse_size(text, max, out);
        check(accepted == valid);
        if (!accepted) {
            check(out == 12345);
            continue;
        }
        check(u128(out) == v * unit);
        std::uint64_t again = 0;
        check(parse_size(std::to_string(out), max, again) && again == out);
    }

    /* Numbers: bounds from the limit bytes (min <= max, both below 10^12). */
    const std::int64_t a = static_cast<std::int64_t>(limit % 1000000000000ULL),
                       b = static_cast<std::int64_t>((limit >> 20) % 1000000000000ULL);
    const std::int64_t lo = a < b ? a : b, hi = a < b ? b : a;
    u128 v;
    const bool valid = text.size() <= 12 && digits_value(text, v) && v >= u128(lo) && v <= u128(hi);
    std::int64_t n = -7;
    check(parse_number(text, lo, hi, n) == valid);
    check(valid ? u128(n) == v : n == -7);

    std::int64_t r;
    check(parse_retry(text) == (parse_number(text, 0, kMaxRetryMs, r) ? r : -1));
    return 0;
}
