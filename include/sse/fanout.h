/* sse/fanout.h — one process's fan-out: every record read once from the bus, its bytes shared
 * by every stream of this process that gets it, queued per stream, written by a transport.
 *
 * What it does
 * - One BusReader of every channel (ChannelSet::all()) for the process; each record's bytes
 *   are copied once into a SharedBytes that every receiving stream's queue points to.
 * - A channel index (channel -> streams) and a serial index (registry serial -> stream, for
 *   EndStream records); an event on two channels of one stream reaches it once (by seq).
 * - Audiences (only/except) are matched once per event (AudienceMatcher), then per stream by
 *   its client id.
 * - Each stream's rules are its Delivery's (sse/delivery.h): events of the types it asked
 *   for, and for a Mercure subscriber of the topics it selects, are queued
 *   (Delivery::wants_filtered(), per stream after the audience; streams with a filter are
 *   in a channel index of their own, so the streams without one cost per event exactly what
 *   they cost before filters existed), a
 *   CloseChannels or EndStream record queues its notice and ends the stream once the notice
 *   was handed to the transport, an overrun of the shared reader queues the `sse-missed`
 *   notice for every stream, and so does a Gap record (its own notice) for every stream that
 *   reads from its seq on (one whose own catch-up read it got it there).
 * - A stream joins with its own BusReader, positioned where its first bytes left it (the
 *   handler's replay); start() reads it up to the head, then the shared reader delivers
 *   every record from that position on (nothing twice, nothing lost).
 * - The slow-consumer rule (SSEMaxPending): a stream whose queue, not counting the piece being
 *   written, holds more than max_pending bytes ends (fell-behind). One piece larger than the
 *   limit still goes through whole.
 * - Keep-alives and token expiry on the caller's tick; streams whose registry slot was taken
 *   end (replaced) as if their EndStream record had come.
 *
 * What it relies on: a FanOutSink that writes a stream's queue to its transport without
 * blocking and ends streams (their last bytes, the release of their connection).
 *
 * Ownership and threads: one thread owns a FanOut and every Subscriber added to it, and
 * calls everything here, the sink's callbacks included (they run inside FanOut's calls).
 * Subscribers are owned by the caller (the transport derives its stream record from
 * Subscriber); a Subscriber must stay alive until it was ended (end(), end_all()) and the
 * FanOut call that ended it has returned (the sink's ended() must not free
 * it: the hub hands it to another thread at the end of its loop round); FanOut does not touch
 * it after that. No I/O, no locks, no httpd; time is
 * passed in.
 *
 * Memory: Subscriber is aligned to a cache line (64 bytes, its layout below): make one with
 * new (C++17 aligns it), as a member or on the stack, not by placement in memory of lesser
 * alignment (an APR pool's).
 */
#ifndef SSE_FANOUT_H
#define SSE_FANOUT_H

#include "sse/bus.h"
#include "sse/delivery.h"
#include "sse/front_queue.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace sse {

/* Bytes shared by every queue that holds them (an event goes out to many streams). */
using SharedBytes = std::shared_ptr<const std::string>;

/* One stream as the fan-out sees it. The transport reads `queue` from the front and tells
 * what went out with consumed() and wrote(); everything else is FanOut's. */
class Subscriber {
public:
    /* `reader` is positioned after what the stream already got; `now_us` counts as its last
     * write (keep-alives). The caller sets events_sent and bytes_sent to what it got before
     * (the handler's replay): SSE_EVENTS and SSE_BYTES count from there. */
    Subscriber(BusReader reader, std::vector<std::string> channels, std::string client_id,
               const DeliverySettings &settings, std::size_t max_pending, std::int64_t now_us);
    virtual ~Subscriber() = default;
    Subscriber(const Subscriber &) = delete;
    Subscriber &operator=(const Subscriber &) = delete;

    /* What waits to be written, oldest first; the front's first front_offset() bytes are out.
     * Events and notices alike (consumed() tells them apart for SSE_EVENTS). */
    const FrontQueueOne<SharedBytes> &queue() const { return queue_; }
    std::size_t front_offset() const { return front_offset_; }
    bool queue_empty() const { return queue_.empty(); }

    /* The transport handed `n` more bytes from the front of the queue to its connection:
     * whole pieces leave the queue (events are counted). */
    void consumed(std::size_t n);
    /* `n` bytes reached the connection at `now_us` (SSE_BYTES; the keep-alive clock). */
    void wrote(std::size_t n, std::int64_t now_us);

    /* SSEMaxPending exceeded by what waits behind the front piece. */
    bool fell_behind() const
    {
        const std::size_t front = queue_.empty() ? 0 : queue_.front()->size();
        return queued_ - front > max_pending_;
    }

    Delivery &delivery() { return delivery_; }
    const Delivery &delivery() const { return delivery_; }
    const std::vector<std::string> &channels() const { return channels_; }
    const std::string &client_id() const { return client_id_; }
    bool ended() const { return ended_; }
    /* Once ended: why. */
    EndReason end_reason() const { return why_; }

private:
    friend class FanOut;
    /* Defined here: once per stream per event, it is the fan-out's inner loop. */
    void enqueue(const SharedBytes &bytes, bool event)
    {
        if (ended_ || closing_)
            return;
        if (!event) { /* its number in the order queued */
            if (!not_events_)
                not_events_ = std::make_unique<FrontQueue<std::uint64_t>>();
            not_events_->push_back(pieces_done_ + queue_.size());
        }
        queue_.push_back(bytes);
        queued_ += bytes->size();
    }
    /* Queues `notice`; nothing is queued after it and the stream ends once it was handed
     * over (at the end of the FanOut call). */
    void close_after(const SharedBytes &notice, EndReason why);

    BusReader reader_;
    std::vector<std::string> channels_;
    /* Where the stream sits in the fan-out's channel index, one slot per distinct channel of
     * channels_ (FanOut::start() to unindex()): its list and its position in it, so that
     * leaving a list is a swap with its last entry (fanout.c++). */
    struct IndexSlot {
        std::vector<Subscriber *> *list;
        std::size_t pos;
        const std::string *channel; /* in channels_: the list's key */
    };
    std::vector<IndexSlot> slots_;
    /* Where it is in FanOut::streams_ (add() to unindex()); kNowhere outside. */
    static constexpr std::size_t kNowhere = SIZE_MAX;
    std::size_t stream_pos_ = kNowhere;
    /* Where it is in the tick's wheel (FanOut::wheel_): its bucket and its position in it;
     * wheel_pos_ is kNowhere outside (not started, no next check, or being visited). Here,
     * before the lines a delivery touches: a delivery never reads them. */
    std::size_t wheel_pos_ = kNowhere;
    std::uint32_t wheel_bucket_ = 0;

    /* From here on the layout is chosen (fanout.c++ checks the offsets). Between two events
     * of a channel a stream falls out of the cache, so each cache line one delivery touches
     * is a miss (docs/benchmarks.md, what a delivery costs): these fields are placed so that
     * a delivery touches three lines. client_id_ starts a line, and the fields up to
     * delivery_ fill 48 bytes of it, so that delivery_'s last write's time (its last field)
     * opens the next line, B. In B, after it: the counters, the limit and the seq (the skip
     * test); in C the queue (its usual one piece held in it), the non-events' and the flags;
     * in D the transport's own fields (the hub's: whether it waits for EPOLLOUT, the
     * connection). */
    alignas(64) std::string client_id_;
    /* The last record on several channels queued: such a record reaches the stream once. A
     * record on one channel needs no mark (the stream is in each channel's list once). */
    std::uint64_t last_seq_ = 0;
    EndReason ending_ = EndReason::ClientClosed; /* with closing_ */
    EndReason why_ = EndReason::ClientClosed;    /* with ended_ */
    bool started_ = false;                       /* in the indexes (start() ran) */
    Delivery delivery_;

public:
    std::uint64_t events_sent = 0, bytes_sent = 0;

private:
    std::size_t front_offset_ = 0;
    std::uint64_t pieces_done_ = 0; /* pieces that left the queue */
    std::size_t queued_ = 0;        /* bytes in queue_, the front's included whole */
    std::size_t max_pending_;
    std::uint64_t next_seq_ = 0; /* the shared reader delivers records from this seq on */
    /* One piece (the usual between two writes) in the object itself: no heap line touched
     * per delivery (sse/front_queue.h). */
    FrontQueueOne<SharedBytes> queue_;
    /* Which pieces are not events (notices, keep-alives: not counted in SSE_EVENTS), by their
     * number in the order they were queued: rare, so the queue stays one pointer a piece
     * (a flag in every piece cost a tenth of the fan-out's time, bench/fanout_bench.c++),
     * and they are kept apart, made when one is queued and dropped once all went out. */
    std::unique_ptr<FrontQueue<std::uint64_t>> not_events_;
    bool closing_ = false;
    bool ended_ = false;
    bool dirty_ = false; /* queued to in this round, not yet written */

    friend struct SubscriberLayout; /* fanout.c++ */
};

/* The transport under a FanOut. Called only from inside FanOut's calls, on its thread. */
class FanOutSink {
public:
    virtual ~FanOutSink() = default;
    /* Write what `s`'s queue holds, as much as the connection takes now, without blocking;
     * report it with s.consumed() / s.wrote(). A failure ends the stream: call
     * FanOut::end(s, EndReason::WriteFailed). */
    virtual void write_queued(Subscriber &s) = 0;
    /* `s` has ended for `why` and is out of every index: send its last bytes if any
     * (restart_bytes() when comes_back(why)) and hand it on for release. It must not free `s`
     * here: the caller's loop may still read its `ended` mark in this round; it may be freed
     * once the round is over (the hub's ender does it after flush_finishing()). */
    virtual void ended(Subscriber &s, EndReason why) = 0;
};

class FanOut {
public:
    /* Reads `bus` from its head on (live). */
    FanOut(Bus bus, FanOutSink &sink);
    FanOut(const FanOut &) = delete;
    FanOut &operator=(const FanOut &) = delete;

    /* Takes `s` on: end_all() reaches it from now on. Nothing is read for it before start().
     * The first stream after none moves the shared reader to the bus head: a process may
     * leave its fan-out unread while it holds no stream (see run()). */
    void add(Subscriber &s);
    /* Reads `s`'s own reader up to the bus head (the records the shared reader had passed
     * when `s` came), indexes it by channel and serial, and writes. Ends it (after its
     * notice) when one of those records ends it. */
    void start(Subscriber &s);

    /* Reads up to `max_records` records from the shared reader and queues them; each stream
     * that got something is written once. True when it stopped at `max_records` with more
     * to read (the caller comes back after serving its sockets). With no stream taken on,
     * reads nothing: moves the shared reader to the bus head (what was published meanwhile
     * has nobody here to go to). */
    bool run(std::size_t max_records);

    /* The slow-consumer rule, then the sink's write_queued() (the transport can write). */
    void push(Subscriber &s);

    /* Ends `s` for `why`: out of every index, then the sink's ended(). No-op once ended. */
    void end(Subscriber &s, EndReason why);
    /* Every stream ends for `why`. A stream is out of every index before the sink's ended()
     * runs: when that throws, the caller catches and calls end_all() again for the rest. */
    void end_all(EndReason why);

    /* The caller's tick: keep-alives for the streams silent for their interval; streams
     * whose token expired end (token-expired, after token_expired_notice()), and so do those
     * `lost_slot` says lost their registry slot (replaced, after replaced_notice()).
     * Cost: the streams whose keep-alive or exp came (a timing wheel of whole seconds, each
     * started stream in the bucket of its next check, looked at lazily: a write moves its
     * keep-alive later without touching the wheel, the tick moves it when it finds it not
     * due), not all streams. `lost_slot` is asked for the streams the tick visits, each
     * stream started since the last tick among them, and, when `slots_moved`, for every
     * stream (the caller says whether slots may have been taken since its last tick:
     * Registry::slots_taken()). Any interval between ticks works; a clock that went back,
     * or ticks more than kWheelSlots seconds apart, cost one walk of every stream. When it
     * throws (`lost_slot`, the sink, an allocation), what it did stays done, the wheel is
     * forgotten, and the next tick walks every stream. */
    void tick(std::int64_t now_us, const std::function<bool(const Subscriber &)> &lost_slot,
              bool slots_moved = true);

    /* Streams taken on (add()) and not ended: at 0 nothing published concerns this fan-out,
     * and its owner need not wake for publishes (the hub sleeps on its own word then). */
    std::size_t size() const { return streams_.size(); }

    /* The channels of the streams in the indexes (start() to end()): what the owner's
     * InterestSlot advertises, so publishes on other channels do not wake it. */
    const WakeInterest &interest() const { return interest_; }
    /* The shared reader: its position is how far run() has read. */
    const BusReader &reader() const { return reader_; }

private:
    /* channel -> its streams, each once, in an array: an event's walk over them reads
     * contiguous pointers, not a hash set's nodes (one cache line each, cold between two
     * events of the channel; docs/benchmarks.md, the third cut). A stream leaves a list by
     * taking its last entry's place (unindex()); each Subscriber's slots_ says where it is.
     * The lists are only changed by start() and unindex(), never while queue_on() walks one
     * (nothing it calls ends or starts a stream: the sink is only called after the walk). */
    using ChannelIndex = std::unordered_map<std::string, std::vector<Subscriber *>>;
    struct RecordFan; /* one event or CloseChannels record on its way (fanout.c++) */
    void queue_record(BusEvent &e, std::vector<Subscriber *> &dirty);
    /* The record to the streams of `channel` in `index`; Typed: the type-filtered index;
     * Several: the record is on several channels (a stream gets it once: last_seq_). */
    template <bool Typed, bool Several>
    void queue_on(const ChannelIndex &index, const std::string &channel, const RecordFan &fan,
                  std::vector<Subscriber *> &dirty);
    ChannelIndex &index_of(const Subscriber &s)
    {
        return s.delivery_.filters() ? filtered_by_channel_ : by_channel_;
    }
    /* `notice` to every started stream but those whose own reader started after `seq` (the
     * record's; UINT64_MAX for an overrun: every one). */
    void queue_to_all(const SharedBytes &notice, std::uint64_t seq,
                      std::vector<Subscriber *> &dirty);
    void queue_end_stream(BusEvent &e, std::vector<Subscriber *> &dirty);
    void catch_up(Subscriber &s);
    void write_dirty(std::vector<Subscriber *> &dirty);
    void close_now(const std::vector<Subscriber *> &streams, EndReason why,
                   std::string notice);
    void unindex(Subscriber &s);
    /* The tick's wheel: bucket `key` (whole seconds of the caller's clock) holds the streams
     * whose next check (keep-alive or exp) is in that second or later (lazy: a write only
     * moves it later), kept in [wheel_now_, wheel_now_ + kWheelSlots); a check further away
     * waits in the last bucket and is moved on when visited. */
    static constexpr std::size_t kWheelSlots = 64;
    static constexpr std::int64_t kWheelSlotUs = 1000000;
    void wheel_file(Subscriber &s, std::int64_t key);
    void wheel_file_next(Subscriber &s, std::int64_t now_us); /* by its next check, if any */
    void wheel_leave(Subscriber &s);
    /* tick()'s work; tick() forgets the wheel when it throws. */
    void tick_wheel(std::int64_t now_us, const std::function<bool(const Subscriber &)> &lost_slot,
                    bool slots_moved);
    /* Every stream out of the wheel, and the next tick looks at them all (after a throw). */
    void forget_wheel() noexcept;
    /* Each stream is written once per round, however many records it got in it. */
    static void mark_dirty(Subscriber &s, std::vector<Subscriber *> &dirty)
    {
        if (!s.dirty_) {
            s.dirty_ = true;
            dirty.push_back(&s);
        }
    }

    FanOutSink &sink_;
    BusReader reader_;
    /* Every stream taken on (add() to end()), in an array as the channel lists (an overrun
     * walks it, and the tick when slots moved or the wheel cannot say); a stream leaves by
     * taking the last one's place (stream_pos_). */
    std::vector<Subscriber *> streams_;
    std::unordered_map<std::uint64_t, Subscriber *> by_serial_;
    ChannelIndex by_channel_;          /* streams without a filter */
    ChannelIndex filtered_by_channel_; /* streams with one: types or topics (Delivery::filters()) */
    WakeInterest interest_;
    SharedBytes keepalive_;
    std::vector<Subscriber *> dirty_; /* run()'s scratch, kept for its capacity */
    std::vector<Subscriber *> wheel_[kWheelSlots];
    std::int64_t wheel_now_ = 0; /* the key of the last tick's second */
    bool wheel_ready_ = false;   /* a tick ran: streams started before it are not filed */
    std::vector<Subscriber *> visit_, wheel_scratch_; /* tick()'s scratch */
};

} // namespace sse

#endif
