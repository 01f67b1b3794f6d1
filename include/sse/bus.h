/* sse/bus.h — the event bus: one ring of event records in memory shared by every process.
 *
 * Layout of the segment (offsets only, never pointers, so every process may map it anywhere):
 *
 *   +-------------------+  0
 *   | BusHeader         |  magic, layout version, sizes, the robust writer lock, the two
 *   |                   |  committed-state slots, the wake-up word and its sleepers' count,
 *   |                   |  counters, the asleep mask and 16 interest slots (InterestSlot:
 *   |                   |  owner pid, futex word, reader position, channel filter)
 *   +-------------------+  index_offset (8-aligned)
 *   | seq index         |  per block of 64 records: where it starts and a filter of its
 *   |                   |  channels and ids (one 80-byte slot per 2 KB of ring), so a resume
 *   |                   |  walks back from the head, skipping blocks, instead of scanning
 *   +-------------------+  ring_offset (8-aligned)
 *   | ring of records   |  ring_size bytes; a record never wraps: when the space left before
 *   | ...               |  the end is too small, the writer pads to the end and starts at 0
 *   +-------------------+  total_size
 *
 * Every record has a 64-bit sequence number; sequence numbers are consecutive. The first one
 * is the bus's creation time in microseconds, so an event id from an earlier bus (a server that
 * was stopped and started again) is older than anything this bus holds and is recognised as
 * "no longer held" instead of being mistaken for a recent event.
 *
 * Concurrency contract
 * - Writers (publish) serialise on a robust, process-shared pthread mutex. A writer killed at
 *   any point leaves the bus consistent: the state that readers and the next writer use is
 *   committed by a single atomic store after the bytes it covers are written, and space is
 *   released (the tail advanced and committed) before it is overwritten. The next locker gets
 *   EOWNERDEAD, marks the mutex consistent and carries on; PublishResult says so.
 * - Readers never take the lock and never block writers. A reader copies a record, then checks
 *   that the tail has not moved past it; if it has, the copy is discarded (overrun).
 * - Bus is a small handle (a pointer to the mapping); copy it freely. BusReader belongs to one
 *   thread at a time.
 * - Nothing here knows httpd; the memory comes from the caller (apr_shm in the module, mmap in
 *   the unit tests).
 */
#ifndef SSE_BUS_H
#define SSE_BUS_H

#include "sse/audience.h"
#include "sse/wire.h"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

struct BusHeader; /* private to bus.c++ */

/* What a record is. Control records travel the bus like events so that every process sees
 * them in order with the events, at the same wake-up; they are never replayed.
 * - CloseChannels: the channels were closed (DELETE): streams subscribed to any of them send
 *   `wire` (the notice) and end; replay drops the channels' earlier events.
 * - EndStream: audience.only holds the serials (decimal) of streams to end (a client id that
 *   connected again under SSEDuplicateClient replace); they send `wire` and end.
 * - Gap: events meant for this bus were lost before it got them (the Redis reader found
 *   entries lost, trimmed unread, or that it could not append). It has no channel: every
 *   reader gets it, whatever its channels and client id, and every stream sends `wire` (the
 *   sse-missed notice) and goes on. A resume from an event older than it is told that events
 *   may be missing instead (BusReader::start_after), and its reader starts after it. */
enum class RecordKind : std::uint16_t { Event = 0, CloseChannels = 1, EndStream = 2, Gap = 3 };

/* A copy of one retained event, as a subscriber gets it. */
struct BusEvent {
    RecordKind kind = RecordKind::Event;
    Audience audience;
    std::uint64_t seq = 0;
    std::int64_t time_us = 0;      /* publish time, microseconds since the Unix epoch; never
                                    * less than the previous record's (see publish) */
    std::string id;                /* the id on the wire: the publisher's, or the decimal seq */
    bool id_from_bus = false;      /* the bus gave the id (the publisher gave none): a
                                    * publisher's id may read as the seq, this flag tells */
    std::string event;             /* event type, empty for "message" */
    std::vector<std::string> channels;
    std::string wire;              /* the complete encoded event, ready to send */
    /* A Mercure update's topics and private mark (UpdateTopics); empty for every other
     * record. */
    std::vector<std::string> topics;
    bool private_update = false;
};

/* What a Mercure update carries besides its event (sse/mercure_topic.h): its topics, each at
 * most 65535 bytes (validated before: validate_mercure_string), and whether it is private.
 * Stored in the record (before the encoded event), flagged in its kind field, so records
 * without it are laid out and read exactly as before. */
struct UpdateTopics {
    std::vector<std::string> topics;
    bool is_private = false;
};

/* EndStream records name the streams to end by their registry serial. The record format has
 * no field of its own for them: they travel in audience.only, in decimal (everywhere else
 * `only` holds client ids). These three are the only code that knows it: the entry of `only`
 * that names `serial`; whether a record is an EndStream naming `serial`; the serials an
 * EndStream record names (none for other kinds). */
std::string stream_target(std::uint64_t serial);
bool names_stream(const BusEvent &e, std::uint64_t serial);
std::vector<std::uint64_t> ended_streams(const BusEvent &e);

/* Bus::publish() refused an event that does not fit: `bytes` is what its record would take. */
struct EventTooLarge : std::length_error {
    std::size_t bytes;
    explicit EventTooLarge(std::size_t n) : std::length_error("event larger than the bus can hold"), bytes(n) {}
};

struct PublishResult {
    std::uint64_t seq = 0;
    std::string id;
    std::uint64_t evicted = 0;       /* events dropped to make room for this one */
    bool recovered_lock = false;     /* a previous writer died holding the lock */
};

struct BusStats {
    std::uint64_t total_size = 0;    /* the whole segment */
    std::uint64_t ring_size = 0;
    std::uint64_t bytes_used = 0;    /* ring bytes held by retained events */
    std::uint64_t oldest_seq = 0;    /* first retained; == next_seq when empty */
    std::uint64_t next_seq = 0;
    std::uint64_t published = 0;     /* since the bus was created */
    std::uint64_t evicted = 0;
    std::uint64_t lock_recoveries = 0;
    std::uint64_t after_gap = 0;     /* seq after the newest Gap record; 0: none yet */
    std::uint32_t waiters = 0;       /* readers in wait() or wait_or() now */
    std::uint32_t interest_asleep = 0;   /* hubs asleep in InterestSlot::wait_or() now */
    std::uint64_t interest_woken = 0;    /* times a publish woke one of them */
    std::uint64_t interest_spared = 0;   /* times a publish let one sleep (no channel of its) */
};

/* Replay limits per channel (SSEHistory): the newest `count` events, none older than
 * `max_age_s` seconds (0: no age limit). */
struct HistoryLimits {
    std::uint64_t count = 100;
    std::uint64_t max_age_s = 3600;
};

/* A wake-up word of one process (private futex; not in shared memory), for a thread that
 * other threads of its process wake: read word(), look for work, and if there is none call
 * wait(seen, ...) or Bus::wait_or(); it returns at once when wake() ran after that word().
 * Any thread may call wake(). Not copyable: waiters hold its address. */
class LocalWake {
public:
    LocalWake() = default;
    LocalWake(const LocalWake &) = delete;
    LocalWake &operator=(const LocalWake &) = delete;

    std::uint32_t word() const { return word_.load(std::memory_order_acquire); }
    void wake();
    void wait(std::uint32_t seen, int timeout_ms) const;

private:
    friend class Bus;
    friend class InterestSlot;
    std::atomic<std::uint32_t> word_{0};
};

/* Which channels a hub holds, as its wake-up filter: 512 bits, two per channel (from
 * ChannelSet::hash), each bit counted so that a channel can be taken out again. A channel that
 * was added and not removed always matches; one that was not may match too (a collision: it
 * only costs a spare wake-up). Owned by one thread (the hub's I/O thread, through FanOut). */
class WakeInterest {
public:
    static constexpr unsigned kBits = 512, kWords = kBits / 64;
    using Words = std::array<std::uint64_t, kWords>;

    void add(std::string_view channel);
    /* Only after an add() of the same channel. */
    void remove(std::string_view channel);
    bool may_hold(std::string_view channel) const;
    const Words &words() const { return words_; }

private:
    Words words_{};
    std::array<std::uint32_t, kBits> counts_{};
};

class Bus {
public:
    Bus() = default;

    /* Smallest segment format() accepts. */
    static std::size_t min_size();

    /* Writes a fresh, empty bus into [mem, mem + size). The memory must be shared between the
     * processes that will use it before they use it (mapped before fork). Returns an error
     * sentence, or empty on success. `now_us` becomes the first sequence number. */
    static std::string format(void *mem, std::size_t size, std::int64_t now_us);

    /* A handle on a bus that format() wrote. Returns an invalid Bus and sets *err when the
     * memory does not hold a bus of this layout version and size. */
    static Bus attach(void *mem, std::size_t size, std::string *err);

    bool valid() const { return h_ != nullptr; }

    /* The largest record (channels, id, type and encoded event together) the ring accepts. */
    std::size_t max_record_bytes() const;

    /* Appends an event, evicting the oldest ones as needed, and wakes the waiting readers:
     * every one in wait()/wait_or(), and the hubs asleep in InterestSlot::wait_or() whose
     * interest may hold one of `channels` (see InterestSlot).
     * Preconditions: validate_event(ev) and validate_channel_name() passed for every channel,
     * 1 <= channels.size() <= kMaxChannelsPerEvent.
     * `audience` (validated) limits who gets it, live and in replay.
     * The record's time is max(now_us, the previous record's time), decided under the lock:
     * times never decrease along seq even when the clock steps back or a writer that read the
     * clock earlier gets the lock later, so SSEHistory's age cut is a cut in seq order.
     * `topics` (a Mercure update, may be null) travel with the event (BusEvent::topics).
     * Throws EventTooLarge (nothing written) when the record would exceed max_record_bytes(),
     * std::system_error only if the lock cannot be taken at all. */
    PublishResult publish(const std::vector<std::string> &channels, const EventFields &ev,
                          std::int64_t now_us, const Audience &audience = {},
                          const UpdateTopics *topics = nullptr);

    /* The bytes publish() would take for this event (its id, when the bus gives it, counted
     * at 20 digits; a Mercure update's `topics` too): above max_record_bytes(), publish()
     * throws EventTooLarge. Takes no lock. */
    std::size_t event_record_bytes(const std::vector<std::string> &channels, const EventFields &ev,
                                   const Audience &audience = {},
                                   const UpdateTopics *topics = nullptr) const;

    /* Appends a control record (see RecordKind); `notice` is what the affected streams send
     * before they end. Same locking and limits as publish(). */
    PublishResult publish_control(RecordKind kind, const std::vector<std::string> &channels,
                                  const Audience &audience, const std::string &notice,
                                  std::int64_t now_us);

    /* Appends a Gap record (see RecordKind) whose notice is `notice`. Its seq is committed with
     * the head, in the same atomic state a resume reads its position from (start_after). Even
     * right after another Gap record it is a record of its own: a stream placed at the head
     * between the two may have lost events at the second (nothing else would tell it). Same
     * locking as publish(). */
    PublishResult publish_gap(const std::string &notice, std::int64_t now_us);

    /* What the ring holds for one channel (since its last CloseChannels record, if any). */
    struct ChannelHistory {
        std::uint64_t retained = 0;
        std::string last_id;       /* the newest retained event's id, empty when none */
    };
    ChannelHistory channel_history(std::string_view channel) const;

    BusStats stats() const;

    /* Waking readers: read wake_word(), look for events, and if there are none call
     * wait(seen, ...). It returns at once when a publish or a wake_all() happened after the
     * wake_word() that returned `seen` (each changes the word before waking, and the kernel
     * compares it atomically with the sleep), else after timeout_ms or a signal (or, rarely,
     * spuriously: callers look again and wait again). Works across processes (a futex in the
     * segment). A writer killed between its commit and its wake-up is made up for by the next
     * writer, which wakes everyone when it recovers the lock.
     * A publish makes the FUTEX_WAKE system call only while some reader is inside wait() or
     * wait_or() (a count in the header, raised before the kernel compares the word): a
     * process with nothing to deliver should wait on its own word instead (LocalWake), so
     * that publishes cost it nothing. wake_all() returns whether it made that call; it also
     * wakes every hub asleep in InterestSlot::wait_or(), whatever its interest (a writer that
     * recovers the lock does not know the dead writer's channels). */
    std::uint32_t wake_word() const;
    void wait(std::uint32_t seen, int timeout_ms) const;
    bool wake_all() const;

    /* The same wait, which also returns when `local` was woken (LocalWake::wake()) after the
     * local.word() that returned `local_seen`: one thread sleeps until a publish or its own
     * process has work for it (a hub's I/O thread: a new stream, a socket event). Returns false
     * at once, without waiting, when the kernel cannot wait on two words (futex_waitv, Linux
     * 5.16, or a seccomp filter refuses it; can_wait_or() tries it once): the caller then
     * waits on `local` alone and has another thread turn publishes into local.wake(). */
    bool wait_or(std::uint32_t seen, const LocalWake &local, std::uint32_t local_seen,
                 int timeout_ms) const;
    static bool can_wait_or();

private:
    friend class BusReader;
    friend class InterestSlot;
    explicit Bus(BusHeader *h) : h_(h) {}
    bool wake_word_sleepers() const;
    /* The hubs asleep in InterestSlot::wait_or(): those whose interest may hold one of
     * `channels` or whose reader is half a ring behind `head_pos`; all of them when `channels`
     * is null. */
    void wake_interested(const std::vector<std::string> *channels, std::uint64_t head_pos) const;
    PublishResult append(RecordKind kind, const std::vector<std::string> &channels,
                         const EventFields *fields, const std::string *notice,
                         const Audience &audience, std::int64_t now_us,
                         const UpdateTopics *topics = nullptr);
    BusHeader *h_ = nullptr;
};

/* The set of channels one subscriber listens to. */
class ChannelSet {
public:
    explicit ChannelSet(const std::vector<std::string> &names);
    /* Every channel: what a process's hub reads to fan events out to its subscribers. */
    static ChannelSet all();
    /* Index of `name` in the set (0 for every name in all()), or -1. */
    int find(std::uint32_t hash, std::string_view name) const;
    std::size_t size() const { return names_.size(); }
    const std::vector<std::uint32_t> &hashes() const { return hashes_; }
    bool is_all() const { return all_; }
    static std::uint32_t hash(std::string_view name);

private:
    std::vector<std::string> names_;
    std::vector<std::uint32_t> hashes_;
    bool all_ = false;
};

/* One subscriber's position in the bus. Owned by one thread at a time.
 * Events whose audience does not admit `client_id` are skipped, live and in replay; control
 * records on the subscribed channels, and every Gap record, are always returned live (the
 * caller acts on them). A reader
 * of ChannelSet::all() (a process's hub) gets every record whatever its audience, and checks
 * each of its streams itself. */
class BusReader {
public:
    BusReader(Bus bus, ChannelSet channels, std::string client_id = {})
        : bus_(bus), channels_(std::move(channels)), client_id_(std::move(client_id)) {}

    /* Live only: the next event delivered is the next one published. */
    void start_live();

    /* Resume after the event whose wire id is `last_event_id`: queues every retained event of
     * the subscribed channels published after it (within `limits`), then continues live.
     * Returns false when the bus holds no such event (it was evicted, or never existed, or was
     * evicted while this call looked for it): then everything retained (within `limits`) is
     * queued, and the caller should tell the client that events may be missing. Also false
     * when the event is held but `limits` do not reach back to it and an event this
     * subscriber would get lies between (left out): what `limits` allow after it is queued.
     * Also false when a Gap record lies between the event and the position taken (the Redis
     * reader lost events there): what the bus holds after the event is queued, and the Gap
     * record is not returned live (the caller's notice covers it). The position and the
     * newest gap come from one snapshot of the committed state, so a gap marked during the
     * call is either before the position (told here) or after it (returned live): never
     * neither, never both. The newest
     * match on a subscribed channel wins, then the newest match on any channel (a
     * bus-assigned id is a position whatever its channel). A channel's events from before its
     * last CloseChannels record are not replayed.
     * Whatever writers do meanwhile, next() then gives exactly the queued events and then
     * every later event for this subscriber, each once and in publish order, except where it
     * returns Overrun (events it should have given were evicted first).
     * Cost: it walks back from the head, block by block (64 records), reading only blocks
     * whose filter may hold a subscribed channel (until SSEHistory is met, and past it until
     * one event it leaves out is seen) or the id, and
     * stops at the id: so about what it replays when the id is a bus id or the newest match
     * is on a subscribed channel; when the bus holds publisher-given ids and this one is not
     * within the replay, every block's filter (to tell an old id from an unknown one). */
    bool start_after(std::string_view last_event_id, const HistoryLimits &limits,
                     std::int64_t now_us);

    /* Queues every retained event of the subscribed channels (within `limits`), then
     * continues live: start_after() with an id no event has (ids hold no LF). Mercure's
     * `lastEventID=earliest`. */
    void start_earliest(const HistoryLimits &limits, std::int64_t now_us);

    enum class Next { Event, None, Overrun };
    /* The next event for this subscriber, in publish order, each at most once.
     * Event: *out is filled. None: nothing new yet (wait on the bus, then call again).
     * Overrun: events this subscriber should have had were evicted before it read them (it
     * fell more than a ring behind); reading goes on with the oldest retained event. */
    Next next(BusEvent *out);

    std::uint64_t position() const { return seq_; }
    /* Where in the ring (a byte counter that only grows) the next record is looked for. */
    std::uint64_t ring_position() const { return pos_; }

private:
    struct Queued {
        std::uint64_t pos, seq;
    };
    Bus bus_;
    ChannelSet channels_;
    std::string client_id_;
    std::uint64_t pos_ = 0, seq_ = 0;   /* live cursor: the next record to look at */
    std::vector<Queued> replay_;        /* replay queue, oldest first, all before seq_ */
    std::size_t replay_next_ = 0;
    std::vector<unsigned char> scratch_; /* the copy of the record being parsed */
};

/* A hub's place among the bus's interest sleepers, so that a publish wakes it only for the
 * channels it holds (the bus header has kSlots of them, next to the wake word).
 *
 * Contract
 * - One per process that holds streams on one thread (a hub's I/O thread); claim() takes a
 *   free slot, or one whose owner process no longer exists (a killed child), for this process;
 *   the destructor frees it. When all are taken the handle is invalid and the caller sleeps
 *   on the wake word as before (Bus::wait_or: woken by every publish).
 * - wait_or() sleeps on the slot's own futex word and `local` at once (futex_waitv). Before
 *   it sleeps it writes `interest` and the reader's ring position into the slot, marks the slot
 *   asleep (a bit in the header), a full fence, then re-checks the bus: when anything was
 *   committed after `caught_up`'s position it returns at once without sleeping. A publisher
 *   commits, a full fence, then reads the asleep bits. Of the two orders, either the publisher
 *   sees the bit (with the interest and position written before it) or the re-check sees the
 *   record: no wake-up is lost. A publisher that wakes a slot clears its bit first and then
 *   changes its word, so the word differs from the one the sleeper read before it set the bit.
 * - A publish wakes an asleep slot when the interest may hold one of the record's channels (a
 *   collision only costs a spare wake-up), or when the ring moved half its size past where the
 *   sleeper's reader stands (so a hub that holds none of the busy channels still reads before
 *   its position is evicted: no overrun, no `sse-missed`, from sleeping), or when the record
 *   is on no channel (a Gap: it is for every stream), or when it is Bus::wake_all(). Every
 *   other record a hub's stream gets comes to it through one of the stream's channels: events, presence records (on the presence channel), Mercure updates (on the
 *   hub's channel), retry-only publishes, CloseChannels (the closed channels) and EndStream
 *   (the replaced stream's channels, from its registry slot), with or without an audience; a
 *   hub holding no stream sleeps on its own word only. So `interest` must hold every channel
 *   of every stream the caller has indexed; a channel added to it takes effect at the next
 *   wait_or(), and the re-check covers what was published before.
 * - A hub that sleeps through a record it wanted anyway (it cannot, by the above; but a
 *   process killed mid-publish between commit and wake-up is one case, made up by the next
 *   writer's wake_all()) reads it at its next wake-up: the caller's timeout (the hub's 1 s
 *   tick) bounds any delay.
 * - Readers sleeping on the wake word (streams held by workers under prefork or without the
 *   hub, the socket daemon, a hub's relay thread where futex_waitv is missing) are woken by
 *   every publish, as before.
 * Threads: one owner thread calls wait_or(); claim and the destructor anywhere in that
 * process. */
class InterestSlot {
public:
    /* Enough for the children of two generations under the default ServerLimit (16); each
     * takes 128 bytes of the ring's segment. */
    static constexpr unsigned kSlots = 16;

    InterestSlot() = default;
    static InterestSlot claim(Bus bus);
    ~InterestSlot() { release(); }
    InterestSlot(InterestSlot &&o) noexcept { *this = std::move(o); }
    InterestSlot &operator=(InterestSlot &&o) noexcept;
    InterestSlot(const InterestSlot &) = delete;
    InterestSlot &operator=(const InterestSlot &) = delete;

    bool valid() const { return h_ != nullptr; }
    unsigned index() const { return index_; }

    /* Sleeps until a publish on a channel of `interest` (or see above), a `local` wake-up after
     * `local_seen`, or timeout_ms; returns at once when the bus holds records after
     * `caught_up`'s position. False, without waiting, when the kernel cannot wait on two words
     * (as Bus::wait_or). */
    bool wait_or(const BusReader &caught_up, const WakeInterest &interest, const LocalWake &local,
                 std::uint32_t local_seen, int timeout_ms);

private:
    void release();
    BusHeader *h_ = nullptr;
    unsigned index_ = 0;
    WakeInterest::Words written_{}; /* what the slot holds now */
};

} // namespace sse

#endif
