/* sse/registry.h — who is subscribed, across every process: the subscriber slots and the
 * channel table behind exact counts, SSEDuplicateClient, presence, stats and channel closing.
 *
 * Layout: one shared segment (offsets only), created before the children fork:
 *   RegistryHeader | free-slot stack (uint32 x max_subscribers, freed slots below the high
 *   water mark only) | Slot x max_subscribers | free-entry stack (uint32 x max_channels) |
 *   ChannelEntry x max_channels | hash index: (entry, hash) cells x index_size (open
 *   addressing with linear probing, index_size = 2 x max_channels rounded up to a power of
 *   two, so at most half full) | notes: kMaxSlotNoteBytes x max_subscribers
 *
 * Exact counts: each open stream holds one slot, which names its process and its channels
 * (by entry index); a channel's subscriber count is kept with the slots, under the
 * same lock. A stream that ends releases its slot (leave). A process that dies without
 * releasing (kill -9, crash) is reaped: the parent notes it when the MPM reports the child
 * gone (note_gone, lock-free: the parent never waits for a lock a child can hold, even a
 * stopped one), and the next process that takes the lock for a join, reap_noted or
 * reap_dead frees its slots. Readers of counts reap slots whose process no longer exists
 * first. Reaping returns what was freed, so the caller can announce the disconnects.
 *
 * Channels: an entry is created by the first subscribe or publish and holds the publish
 * count, the retry set by a retry-only publish, and whether the channel was closed (DELETE)
 * and not published to since. Finding, creating and dropping an entry cost O(1) on average,
 * whatever the table's size: a name is looked up in the hash index (deleted without
 * tombstones, so lookups do not lengthen with churn), and the entries that may be dropped
 * are on two least-recently-used lists.
 * - Dropping: when the table is full, an entry with no subscribers that is not closed, the
 *   one used least recently, is dropped (it counts as never having existed again). A closed
 *   entry is never dropped: it stays closed until a publish reopens it, however many other
 *   channels come and go. A table holding only closed channels and channels with
 *   subscribers has no room: a subscribe that needs a new entry is refused
 *   (TooManyChannels), a publish to a new channel goes out but is not counted. Closing is
 *   a publisher's act, so their number is bounded by trusted input.
 * - Unpublished share: an entry no publisher has written to (no publish, no DELETE), that
 *   exists only because subscribers named it, is "unpublished". At most
 *   set_max_unpublished() of them exist at once; a subscribe that needs one more drops an
 *   idle unpublished entry, never a publisher's, and is refused (TooManyUnpublished) when
 *   there is none. So streams naming made-up channels cannot take the room of the channels
 *   publishers use. format() sets no share (max_channels).
 *
 * Concurrency: one robust, process-shared mutex. A holder that dies leaves the next locker
 * EOWNERDEAD; it then rebuilds from the slots' and entries' states the free stacks, the
 * counts, the hash index and the idle lists (in last-use order), so nothing drifts; this is
 * linear in the tables, once per holder killed. A slot or a channel entry is written first
 * and then made to count by one release store of its state, so a holder killed anywhere
 * leaves each either as it was or complete; the index and the lists, which take several
 * stores to change, are derived data.
 * Pure memory + POSIX (kill(pid, 0)); no httpd.
 */
#ifndef SSE_REGISTRY_H
#define SSE_REGISTRY_H

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

struct RegistryHeader; /* private to registry.c++ */

constexpr std::size_t kMaxRemoteBytes = 63;

/* What a stream may attach to its slot, opaque to the registry (a Mercure subscription's
 * subscriber id and selectors, sse/mercure_subscription.h), at most this many bytes. Every
 * slot has room for one, in pages touched only by streams that have a note. */
constexpr std::size_t kMaxSlotNoteBytes = 1024;

enum class DuplicatePolicy { Allow, Reject, Replace };

/* One open stream, as a slot records it. */
struct SubscriberInfo {
    std::uint64_t serial = 0;   /* unique per stream for the life of the registry */
    int pid = 0;
    std::string client_id;      /* empty: anonymous */
    std::string remote;
    std::vector<std::string> channels;
    std::string note;           /* what join() attached; empty: none */
};

struct ChannelInfo {
    std::string name;
    std::uint64_t subscribers = 0;
    std::uint64_t published = 0;
    std::int64_t retry_ms = -1;    /* set by a retry-only publish; -1: none */
    bool closed = false;
};

struct ProcessCount {
    int pid;
    std::uint64_t subscribers;
};

struct RegistryTotals {
    std::uint64_t subscribers = 0;
    std::uint64_t channels = 0;
    std::uint64_t max_subscribers = 0;
    std::uint64_t max_channels = 0;
    std::uint64_t socket_clients = 0;
    std::uint64_t dropped_channels = 0;   /* entries dropped because the table was full */
    std::uint64_t unpublished_channels = 0;     /* entries only subscribers named */
    std::uint64_t max_unpublished_channels = 0; /* their share (set_max_unpublished) */
    std::uint64_t refused_unpublished = 0;      /* joins refused for want of that share */
    std::vector<ProcessCount> processes;  /* every process holding streams, by pid */
};

class Registry {
public:
    Registry() = default;

    static std::size_t bytes_needed(std::uint32_t max_subscribers, std::uint32_t max_channels);
    /* Writes an empty registry into [mem, mem + size) (size from bytes_needed()), which must
     * be zero-filled (fresh anonymous shared memory is): only the header is written, so the
     * tables' pages are touched only when used. Error sentence, or empty. */
    static std::string format(void *mem, std::size_t size, std::uint32_t max_subscribers,
                              std::uint32_t max_channels);
    static Registry attach(void *mem, std::size_t size, std::string *err);
    bool valid() const { return h_ != nullptr; }

    struct Join {
        enum class Outcome { Joined, Duplicate, Full, TooManyChannels, TooManyUnpublished };
        Outcome outcome = Outcome::Joined;
        std::uint32_t slot = 0;
        std::uint64_t serial = 0;
        std::vector<SubscriberInfo> replaced; /* Replace: older streams with the same id, freed */
        std::vector<SubscriberInfo> reaped;   /* streams of dead processes freed on the way */
    };
    /* Takes a slot for a new stream of process `pid`. With a client id and policy Reject, a
     * live stream with the same id makes it Duplicate; with Replace, those streams' slots are
     * freed and returned in `replaced` (the caller must tell their holders to end them).
     * Full: no free slot. TooManyChannels: a channel needs an entry and the table has no room
     * (entries of the channels of this join are never dropped to make it).
     * TooManyUnpublished: the table has room, but the new entries would pass the unpublished
     * share and no idle unpublished entry can be dropped for them.
     * All or nothing: when the outcome is not Joined, `replaced` is empty and no live
     * stream's slot was freed; only streams of dead processes may have been (`reaped`, in
     * every outcome). Cost: O(channels) plus the slots' scan for a client id (policy other
     * than Allow), whatever the table's size.
     * `note` (at most kMaxSlotNoteBytes, else std::invalid_argument: check first) is kept
     * with the slot and given back with it by leave(), the reaps, `replaced` and noted(). */
    Join join(int pid, std::string_view client_id, std::string_view remote,
              const std::vector<std::string> &channels, DuplicatePolicy policy,
              std::int64_t now_us, std::string_view note = {});

    /* Frees the slot of an ending stream. False when it was already freed (reaped or
     * replaced); *out then is left alone, else it gets what the slot held. */
    bool leave(std::uint32_t slot, std::uint64_t serial, SubscriberInfo *out = nullptr);

    /* Whether the slot still belongs to the stream that joined with `serial`. Lock-free: a
     * stream calls it on its periodic tick. A live stream loses its slot only to a replacing
     * join, which then publishes an EndStream record for it; if the replacing process dies
     * between its join and that publish, this is how the older stream learns it was replaced
     * (it ends as if the record had come). */
    bool holds(std::uint32_t slot, std::uint64_t serial) const;
    /* A count that moves (after the fact: holds() then says false) whenever a live slot was
     * freed by someone other than its stream: a replacing join, or the repair after a lock
     * holder died (it may have been one). Lock-free. A process that read it before asking
     * holds() for each of its streams need not ask again until it moves. */
    std::uint64_t slots_taken() const;

    /* Parent, one thread, after waitpid(): `pid` is gone. Lock-free and bounded: never waits
     * for a process that holds the lock. The slots `pid` holds now are freed by the next
     * join(), reap_noted() or reap_dead() in any process (a later process that gets the same
     * pid keeps its own). */
    void note_gone(int pid);
    /* Frees the slots of the processes note_gone() named; returns what they held. Never
     * waits: without notes it does not touch the lock, and when another process holds the
     * lock it returns nothing and leaves the notes for the next call. */
    std::vector<SubscriberInfo> reap_noted();
    /* Frees the slots of the noted processes and of every process that no longer exists. */
    std::vector<SubscriberInfo> reap_dead();

    /* A publish on `channels`: counts it, reopens closed channels, and when `retry_only_ms`
     * >= 0 remembers it as the channels' retry for new subscribers. */
    void note_publish(const std::vector<std::string> &channels, std::int64_t retry_only_ms,
                      std::int64_t now_us);
    /* DELETE: marks the channels closed (until the next publish) and forgets their retry.
     * Returns the names that existed. */
    std::vector<std::string> close_channels(const std::vector<std::string> &channels,
                                            std::int64_t now_us);

    /* For a new subscriber of `channels`: whether any is closed, and the retry of the one
     * whose retry-only publish is the newest (-1: none). */
    void subscribe_view(const std::vector<std::string> &channels, bool *any_closed,
                        std::int64_t *retry_ms) const;

    /* One channel's entry; false when it has none (never used, or dropped). */
    bool channel(std::string_view name, ChannelInfo *out) const;
    std::vector<ChannelInfo> channels() const;
    RegistryTotals totals() const;
    /* Every live stream that has a note, in slot order (streams of dead processes included
     * until reaped: call reap_dead() first for an exact list). O(slots ever used). */
    std::vector<SubscriberInfo> noted() const;

    /* How many unpublished entries may exist at once (at least 1; above max_channels it
     * is max_channels). Lock-free; any time (each configuration load sets it). Lowered
     * below the entries that exist, none is dropped: new ones then replace idle ones. */
    void set_max_unpublished(std::uint32_t n);
    /* The share set_max_unpublished() set (clamped to max_channels). Lock-free. */
    std::uint32_t max_unpublished() const;
    /* SSEMaxChannels as format() got it (fixed for the registry's life). Lock-free. */
    std::uint32_t max_channels() const;

    /* The publish socket daemon reports its connected clients here. */
    void set_socket_clients(std::uint64_t n);

private:
    explicit Registry(RegistryHeader *h) : h_(h) {}
    RegistryHeader *h_ = nullptr;
};

/* At most one log line per period for a refusal a client can repeat at will (a flood of
 * requests must not flood the error log). Thread-safe, per process (each process logs at
 * most once per period). */
class LogThrottle {
public:
    explicit LogThrottle(std::int64_t period_us) : period_us_(period_us) {}
    /* Whether to log this one now. When true, *skipped gets how many were not logged since
     * the last line (and the count starts again). `now_us` should be a steady clock; one
     * that goes back silences the log for one period at most, not for the step. */
    bool allow(std::int64_t now_us, std::uint64_t *skipped);

private:
    const std::int64_t period_us_;
    std::atomic<std::int64_t> next_us_{0};
    std::atomic<std::uint64_t> skipped_{0};
};

/* Unit tests only: named points inside the registry's critical sections (the lock is held),
 * where a test stops or kills the process to check what the next locker finds. Process-wide;
 * unset by default, when a point costs one relaxed load. */
enum class RegistryPoint {
    JoinLocked,    /* join() holds the lock, nothing changed yet */
    ViewRead,      /* subscribe_view() has read what it returns, still holds the lock */
    EntryWritten,  /* a new channel entry is written, its state not yet committed */
    EntryDropped,  /* an entry is committed free, the hash index still names it */
    IndexShifted,  /* the index's removal of a cell moved one cell back, more may follow */
    SlotCommitted, /* join()'s slot is committed (live), join() not yet returned */
};
using RegistryTestHook = void (*)(RegistryPoint);
void set_registry_test_hook(RegistryTestHook hook);

} // namespace sse

#endif
