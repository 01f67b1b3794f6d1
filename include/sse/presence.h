/* sse/presence.h — what a presence record (SSEPresenceChannel) says, and how many the bus
 * takes.
 *
 * Presence records are written for anonymous clients too, on every connect and disconnect,
 * on a bus whose ring every channel shares: unbounded, they let anyone evict every other
 * channel's history by connecting and leaving (security review, finding 3: ~8.7 KB per record
 * with 31 long channel names and a 1 KB Last-Event-ID, twice per connection; 150 connections
 * wiped a 1 MB bus). So:
 * - a record's data is at most kMaxPresenceDataBytes: the client id (<= 128 bytes), the first
 *   channel names that fit and the number of channels, the remote address, the time; never
 *   the requester's Last-Event-ID (what a client last read is nobody else's business);
 * - the records written on the bus, all processes together, are limited by a token bucket
 *   sized from the bus (PresenceBudget): at most 1/8 of the bus per minute, in bursts of at
 *   most 1/8 of the bus, so presence alone takes at least 7 minutes to turn the ring over,
 *   however many clients connect. A record over the budget is skipped and counted; the next
 *   record written says how many were skipped before it (`"skipped": n`), and sse-status
 *   shows the total. Events a publisher sent are never skipped: only presence records are.
 *
 * Pure code, no I/O. PresenceBudget works on memory shared by every process (lock-free).
 */
#ifndef SSE_PRESENCE_H
#define SSE_PRESENCE_H

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

constexpr std::size_t kMaxPresenceDataBytes = 512;

/* What the bus spends on one presence record at most: its data, the event type, the id, the
 * presence channel's name (<= 255 bytes), the field names and the record header. The budget
 * counts every record at this size. */
constexpr std::size_t kPresenceRecordCost = 1024;

struct PresenceFacts {
    std::string client_id;             /* "" when anonymous: null in the record */
    std::vector<std::string> channels; /* every channel of the stream */
    std::string remote;                /* the client's address; "" when unknown: null */
    std::int64_t time_ms = 0;
    const char *reason = nullptr;      /* disconnect only */
    std::uint64_t skipped = 0;         /* records skipped since the last one written; 0: no field */
};

/* The record's data, JSON: {"channel_count":n,"channels":[...],"client":...,"remote":...,
 * "time":...} plus "reason" and "skipped" when set. Channel names are listed in order while
 * the data stays within kMaxPresenceDataBytes (the fixed fields take at most ~440 bytes with a
 * 128-byte client id of quotes and backslashes, so at least one short name fits; a long one
 * may not); `channel_count` counts them all. A client id must have passed
 * validate_client_id() (no control characters). */
std::string presence_data(const PresenceFacts &f);

/* Whether `type` is a presence record's event type: "connect", "reconnect", "disconnect". */
bool is_presence_event_type(std::string_view type);

/* With SSERedis, a server's presence records reach the other servers through Redis
 * (docs/redis.md, "Presence from every server"), possibly late: after an outage of Redis, or
 * of a server's reader. A "connect" or "reconnect" made more than kPresenceMaxAgeMs before
 * `now_ms` (both ms since the epoch, the servers' clocks kept in step) is dropped rather than
 * delivered late, so that a reader back from an outage does not flood its subscribers with
 * stale arrivals of clients that may have left long ago. A "disconnect" is never too old: it
 * is what closes a client that a subscriber saw arrive (a disconnect of a client it never saw
 * arrive is harmless). */
constexpr std::int64_t kPresenceMaxAgeMs = 30000;
bool presence_too_old(std::string_view type, std::int64_t made_ms, std::int64_t now_ms);

/* The budget's state, in memory every process shares (zeroed when created). */
struct PresenceShared {
    std::atomic<std::int64_t> next_us{0};        /* GCRA's theoretical arrival time */
    std::atomic<std::uint64_t> skipped_total{0}; /* since the state was created */
    std::atomic<std::uint64_t> skipped_untold{0};/* skipped since the last record written */
};

/* A token bucket as a generic cell rate algorithm: one 64-bit time, updated by compare and
 * swap, so a process killed at any point leaves it consistent and no process ever waits. */
class PresenceBudget {
public:
    PresenceBudget() = default;
    /* `per_minute` records a minute in bursts of at most `burst` (both >= 1). */
    PresenceBudget(PresenceShared *shared, std::uint64_t per_minute, std::uint64_t burst);
    /* The budget for a bus of `bus_bytes`: bus_bytes / 8 / kPresenceRecordCost records a
     * minute and per burst (at least 1). */
    static PresenceBudget for_bus(PresenceShared *shared, std::size_t bus_bytes);

    bool valid() const { return shared_ != nullptr; }

    /* Takes one record's worth at `now_us`: true when it may be written, then returns the
     * count of records skipped since the last one taken (0 if none) in *told. False: over
     * the budget, counted as skipped. `now_us` should be a steady clock (CLOCK_MONOTONIC,
     * the same in every process); one that goes back by D costs at most one interval (the
     * budget then counts from the new time as if the burst were spent), not D. */
    bool take(std::int64_t now_us, std::uint64_t *told);

    std::uint64_t skipped() const;
    std::uint64_t per_minute() const { return per_minute_; }
    std::uint64_t burst() const { return burst_; }

private:
    PresenceShared *shared_ = nullptr;
    std::uint64_t per_minute_ = 0;
    std::uint64_t burst_ = 0;
    std::int64_t interval_us_ = 0;  /* one record's worth of time */
    std::int64_t tolerance_us_ = 0; /* (burst - 1) intervals */
};

} // namespace sse

#endif
