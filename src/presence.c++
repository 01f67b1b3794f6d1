/* Presence records and their budget (see sse/presence.h). */
#include "sse/presence.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace sse {

namespace {

std::string dump(const nlohmann::json &j)
{
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json string_or_null(const std::string &s)
{
    return s.empty() ? nlohmann::json() : nlohmann::json(s);
}

} // namespace

std::string presence_data(const PresenceFacts &f)
{
    nlohmann::json body = {
        {"channel_count", f.channels.size()},
        {"channels", nlohmann::json::array()},
        {"client", string_or_null(f.client_id)},
        {"remote", string_or_null(f.remote)},
        {"time", f.time_ms},
    };
    if (f.reason)
        body["reason"] = f.reason;
    if (f.skipped)
        body["skipped"] = f.skipped;
    std::string out = dump(body);
    if (out.size() > kMaxPresenceDataBytes) { /* only an address no client can have */
        body["remote"] = nullptr;
        out = dump(body);
    }
    /* Each name costs its escaped length (none to escape: channel characters), two quotes
     * and a comma after the first. */
    std::size_t size = out.size();
    auto &list = body["channels"];
    for (const auto &c : f.channels) {
        const std::size_t cost = c.size() + 2 + (list.empty() ? 0 : 1);
        if (size + cost > kMaxPresenceDataBytes)
            break;
        list.push_back(c);
        size += cost;
    }
    return dump(body);
}

bool is_presence_event_type(std::string_view type)
{
    return type == "connect" || type == "reconnect" || type == "disconnect";
}

bool presence_too_old(std::string_view type, std::int64_t made_ms, std::int64_t now_ms)
{
    return type != "disconnect" && now_ms - made_ms > kPresenceMaxAgeMs;
}

PresenceBudget::PresenceBudget(PresenceShared *shared, std::uint64_t per_minute,
                               std::uint64_t burst)
    : shared_(shared), per_minute_(std::max<std::uint64_t>(per_minute, 1)),
      burst_(std::max<std::uint64_t>(burst, 1))
{
    interval_us_ = std::max<std::int64_t>(60'000'000 / std::int64_t(per_minute_), 1);
    tolerance_us_ = interval_us_ * std::int64_t(burst_ - 1);
}

PresenceBudget PresenceBudget::for_bus(PresenceShared *shared, std::size_t bus_bytes)
{
    const std::uint64_t n = bus_bytes / 8 / kPresenceRecordCost;
    return PresenceBudget(shared, n, n);
}

bool PresenceBudget::take(std::int64_t now_us, std::uint64_t *told)
{
    std::int64_t next = shared_->next_us.load(std::memory_order_relaxed);
    for (;;) {
        /* A steady clock never leaves `next` more than the tolerance and one interval ahead;
         * further ahead, the clock went back (a wall clock stepped back): the budget counts
         * from `now_us` as if the burst had just been spent, rather than skip every record
         * until the clock catches up. */
        const std::int64_t most = now_us + tolerance_us_ + interval_us_;
        if (next > most) {
            if (shared_->next_us.compare_exchange_weak(next, most, std::memory_order_relaxed))
                next = most;
            continue;
        }
        const std::int64_t from = std::max(next, now_us);
        if (from - now_us > tolerance_us_) {
            shared_->skipped_total.fetch_add(1, std::memory_order_relaxed);
            shared_->skipped_untold.fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        if (shared_->next_us.compare_exchange_weak(next, from + interval_us_,
                                                   std::memory_order_relaxed))
            break;
    }
    if (told)
        *told = shared_->skipped_untold.exchange(0, std::memory_order_relaxed);
    return true;
}

std::uint64_t PresenceBudget::skipped() const
{
    return shared_ ? shared_->skipped_total.load(std::memory_order_relaxed) : 0;
}

} // namespace sse
