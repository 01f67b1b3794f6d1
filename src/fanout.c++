/* One process's fan-out (see sse/fanout.h). */
#include "sse/fanout.h"

#include "sse/stream_open.h"
#include "sse/token.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>


namespace sse {

namespace {

SharedBytes shared(std::string &&bytes)
{
    return std::make_shared<const std::string>(std::move(bytes));
}

SharedBytes overrun_bytes()
{
    std::string notice;
    Delivery::overrun_notice(notice);
    return shared(std::move(notice));
}

} // namespace

/* ---- Subscriber ---- */

/* The cache lines of one delivery (sse/fanout.h): B holds delivery_'s last field and the
 * counters up to next_seq_, C the queue, the non-events' marks and the flags. offsetof on a
 * class with virtual functions is conditionally supported; g++ computes it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
struct SubscriberLayout {
    static constexpr std::size_t line = 64;
    static constexpr std::size_t b = offsetof(Subscriber, delivery_) + sizeof(Delivery) - 8;
    static_assert(alignof(Subscriber) == line && offsetof(Subscriber, client_id_) % line == 0);
    static_assert(b % line == 0 && offsetof(Subscriber, next_seq_) + 8 == b + line);
    static_assert(offsetof(Subscriber, queue_) == b + line &&
                  offsetof(Subscriber, dirty_) < b + 2 * line);
    /* The tick's two settings in one line (DeliverySettings starts Delivery). */
    static_assert((offsetof(Subscriber, delivery_) + offsetof(DeliverySettings, token_expires_us)) /
                      line ==
                  offsetof(Subscriber, delivery_) / line);
};
#pragma GCC diagnostic pop

Subscriber::Subscriber(BusReader reader, std::vector<std::string> channels, std::string client_id,
                       const DeliverySettings &settings, std::size_t max_pending,
                       std::int64_t now_us)
    : reader_(std::move(reader)), channels_(std::move(channels)),
      client_id_(std::move(client_id)), delivery_(settings, now_us), max_pending_(max_pending)
{
}

void Subscriber::close_after(const SharedBytes &notice, EndReason why)
{
    if (closing_)
        return;
    enqueue(notice, false);
    closing_ = true;
    ending_ = why;
}

void Subscriber::consumed(std::size_t n)
{
    if (n != 0 && n == queued_ - front_offset_) {
        /* All of it (the usual case): the non-events among them are exactly not_events_. */
        events_sent += queue_.size() - (not_events_ ? not_events_->size() : 0);
        pieces_done_ += queue_.size();
        not_events_.reset();
        queue_.clear();
        queued_ = 0;
        front_offset_ = 0;
        return;
    }
    while (n > 0 && !queue_.empty()) {
        const std::size_t size = queue_.front()->size();
        if (n < size - front_offset_) {
            front_offset_ += n;
            return;
        }
        n -= size - front_offset_;
        if (not_events_ && !not_events_->empty() && not_events_->front() == pieces_done_)
            not_events_->pop_front();
        else
            ++events_sent;
        ++pieces_done_;
        queued_ -= size;
        queue_.pop_front();
        front_offset_ = 0;
    }
}

void Subscriber::wrote(std::size_t n, std::int64_t now_us)
{
    bytes_sent += n;
    delivery_.wrote(now_us);
}

/* ---- FanOut ---- */

FanOut::FanOut(Bus bus, FanOutSink &sink) : sink_(sink), reader_(bus, ChannelSet::all())
{
    reader_.start_live();
    std::string comment;
    Delivery::keepalive_bytes(comment);
    keepalive_ = shared(std::move(comment));
}

void FanOut::add(Subscriber &s)
{
    /* The first stream after none: the shared reader may be far behind (nobody read for a
     * stream-less process, see run()); from the head on it reads what the stream's own
     * catch-up in start() does not, and no overrun from before it came. */
    if (streams_.empty())
        reader_.start_live();
    if (s.stream_pos_ != Subscriber::kNowhere)
        return;
    s.stream_pos_ = streams_.size();
    streams_.push_back(&s);
}

void FanOut::start(Subscriber &s)
{
    if (s.ended_)
        return;
    catch_up(s);
    s.next_seq_ = s.reader_.position();
    ChannelIndex &index = index_of(s);
    s.slots_.clear();
    for (const auto &ch : s.channels_) {
        interest_.add(ch);
        std::vector<Subscriber *> &list = index[ch];
        bool listed = false; /* a channel named twice: the stream is in its list once */
        for (const Subscriber::IndexSlot &slot : s.slots_)
            listed = listed || slot.list == &list;
        if (listed)
            continue;
        s.slots_.push_back({&list, list.size(), &ch});
        list.push_back(&s);
    }
    if (const std::uint64_t serial = s.delivery_.settings().serial)
        by_serial_[serial] = &s;
    s.started_ = true;
    /* Visited by the next tick (its slot is looked at then), which files it by its next
     * check; before the first tick, that tick visits every stream. */
    if (wheel_ready_ && s.wheel_pos_ == Subscriber::kNowhere)
        wheel_file(s, wheel_now_);
    push(s);
    if (!s.ended_ && s.closing_)
        end(s, s.ending_);
}

/* From where the stream's first bytes left it to the bus head, with its own reader: each
 * record's bytes are its own (nobody else is at that position). */
void FanOut::catch_up(Subscriber &s)
{
    const ReadStop stop = read_stream(s.reader_, s.delivery_, [&](std::string &&bytes, bool event) {
        s.enqueue(shared(std::move(bytes)), event);
        return true;
    });
    if (stop.ended) {
        /* The notice is the last piece queued: it becomes the closing one. */
        s.closing_ = true;
        s.ending_ = stop.reason;
    }
}

bool FanOut::run(std::size_t max_records)
{
    if (streams_.empty()) {
        /* Nothing here to deliver to: skip what was published (add() jumps again anyway). */
        reader_.start_live();
        return false;
    }
    BusEvent e;
    dirty_.clear();
    bool more = false;
    for (std::size_t k = 0; k < max_records; ++k) {
        const BusReader::Next next = reader_.next(&e);
        if (next == BusReader::Next::None)
            break;
        if (next == BusReader::Next::Overrun)
            queue_to_all(overrun_bytes(), UINT64_MAX, dirty_);
        else if (e.kind == RecordKind::Gap)
            queue_to_all(shared(std::move(e.wire)), e.seq, dirty_);
        else if (e.kind == RecordKind::EndStream)
            queue_end_stream(e, dirty_);
        else
            queue_record(e, dirty_);
        more = k + 1 == max_records;
    }
    write_dirty(dirty_);
    return more;
}

void FanOut::queue_to_all(const SharedBytes &notice, std::uint64_t seq,
                          std::vector<Subscriber *> &dirty)
{
    for (Subscriber *s : streams_) {
        if (!s->started_ || seq < s->next_seq_)
            continue;
        s->enqueue(notice, false);
        mark_dirty(*s, dirty);
    }
}

/* EndStream records name the streams they end by registry serial. */
void FanOut::queue_end_stream(BusEvent &e, std::vector<Subscriber *> &dirty)
{
    SharedBytes notice;
    for (const std::uint64_t serial : ended_streams(e)) {
        auto it = by_serial_.find(serial);
        if (it == by_serial_.end() || e.seq < it->second->next_seq_)
            continue;
        Subscriber &s = *it->second;
        const RecordAction a = s.delivery_.on_record(e);
        if (a.kind != RecordAction::Kind::SendAndEnd)
            continue;
        if (!notice)
            notice = shared(std::move(e.wire));
        s.close_after(notice, a.reason);
        mark_dirty(s, dirty);
    }
}

struct FanOut::RecordFan {
    const BusEvent &e;
    SharedBytes wire;
    RecordAction action;
    bool everyone;
    AudienceMatcher audience;
    /* Whether a type filter applies to it (it dispatches an event: not a retry-only publish);
     * looked at once per record, only when some stream has a filter (type or topics). */
    bool filterable = false;
};

/* An event or a CloseChannels record: for the streams of its channels, once each. */
void FanOut::queue_record(BusEvent &e, std::vector<Subscriber *> &dirty)
{
    const bool any_filtered = !filtered_by_channel_.empty();
    const bool filterable = any_filtered && Delivery::dispatches_event(e.wire);
    const RecordFan fan{e,
                        shared(std::move(e.wire)),
                        Delivery::on_channel_record(e.kind),
                        e.audience.everyone(),
                        AudienceMatcher(e.audience),
                        filterable};
    if (e.channels.size() == 1) {
        queue_on<false, false>(by_channel_, e.channels[0], fan, dirty);
        if (any_filtered)
            queue_on<true, false>(filtered_by_channel_, e.channels[0], fan, dirty);
        return;
    }
    for (const auto &ch : e.channels) {
        queue_on<false, true>(by_channel_, ch, fan, dirty);
        if (any_filtered)
            queue_on<true, true>(filtered_by_channel_, ch, fan, dirty);
    }
}

template <bool Typed, bool Several>
void FanOut::queue_on(const ChannelIndex &index, const std::string &channel,
                      const RecordFan &fan, std::vector<Subscriber *> &dirty)
{
    auto it = index.find(channel);
    if (it == index.end())
        return;
    const BusEvent &e = fan.e;
    /* Copied: the stores to the streams below could alias `fan` for the compiler. */
    const RecordAction a = fan.action;
    const bool everyone = fan.everyone;
    for (Subscriber *s : it->second) {
        if (e.seq < s->next_seq_)
            continue;
        if (Several) {
            if (s->last_seq_ == e.seq)
                continue;
            s->last_seq_ = e.seq;
        }
        if (a.kind == RecordAction::Kind::SendAndEnd)
            s->close_after(fan.wire, a.reason);
        else if (a.kind == RecordAction::Kind::SendEvent &&
                 (everyone || fan.audience.admits(s->client_id_)) &&
                 (!Typed || s->delivery_.wants_filtered(e, fan.filterable)))
            s->enqueue(fan.wire, true);
        else
            continue;
        mark_dirty(*s, dirty);
    }
}

void FanOut::write_dirty(std::vector<Subscriber *> &dirty)
{
    for (Subscriber *s : dirty) {
        s->dirty_ = false;
        push(*s);
        if (!s->ended_ && s->closing_)
            end(*s, s->ending_);
    }
    dirty.clear();
}

void FanOut::push(Subscriber &s)
{
    if (s.ended_)
        return;
    if (s.fell_behind()) {
        end(s, EndReason::FellBehind);
        return;
    }
    sink_.write_queued(s);
}

void FanOut::unindex(Subscriber &s)
{
    wheel_leave(s);
    if (s.stream_pos_ != Subscriber::kNowhere) {
        Subscriber *last = streams_.back();
        streams_[s.stream_pos_] = last;
        last->stream_pos_ = s.stream_pos_;
        streams_.pop_back();
        s.stream_pos_ = Subscriber::kNowhere;
    }
    if (!s.started_)
        return;
    s.started_ = false;
    auto serial = by_serial_.find(s.delivery_.settings().serial);
    if (serial != by_serial_.end() && serial->second == &s)
        by_serial_.erase(serial);
    for (const auto &ch : s.channels_)
        interest_.remove(ch);
    /* Out of each list: its last stream takes the place (and is told where it now is). */
    ChannelIndex &index = index_of(s);
    for (const Subscriber::IndexSlot &slot : s.slots_) {
        std::vector<Subscriber *> &list = *slot.list;
        Subscriber *last = list.back();
        if (last != &s) {
            list[slot.pos] = last;
            for (Subscriber::IndexSlot &moved : last->slots_) {
                if (moved.list == &list) {
                    moved.pos = slot.pos;
                    break;
                }
            }
        }
        list.pop_back();
        if (list.empty())
            index.erase(*slot.channel);
    }
    s.slots_.clear();
}

void FanOut::end(Subscriber &s, EndReason why)
{
    if (s.ended_)
        return;
    s.ended_ = true;
    s.why_ = why;
    unindex(s);
    sink_.ended(s, why);
}

void FanOut::end_all(EndReason why)
{
    const std::vector<Subscriber *> all(streams_);
    for (Subscriber *s : all)
        end(*s, why);
}

namespace {

/* Whole seconds and buckets of a clock that may start anywhere (a test's at 0). */
std::int64_t floor_div(std::int64_t a, std::int64_t b)
{
    return a / b - (a % b < 0 ? 1 : 0);
}

template <std::size_t N> std::size_t bucket_of(std::int64_t key)
{
    return static_cast<std::size_t>(key - floor_div(key, std::int64_t(N)) * std::int64_t(N));
}

} // namespace

void FanOut::wheel_file(Subscriber &s, std::int64_t key)
{
    key = std::max(key, wheel_now_);
    key = std::min<std::int64_t>(key, wheel_now_ + std::int64_t(kWheelSlots) - 1);
    const auto bucket = static_cast<std::uint32_t>(bucket_of<kWheelSlots>(key));
    s.wheel_bucket_ = bucket;
    s.wheel_pos_ = wheel_[bucket].size();
    wheel_[bucket].push_back(&s);
}

void FanOut::wheel_leave(Subscriber &s)
{
    if (s.wheel_pos_ == Subscriber::kNowhere)
        return;
    std::vector<Subscriber *> &bucket = wheel_[s.wheel_bucket_];
    Subscriber *last = bucket.back();
    bucket[s.wheel_pos_] = last;
    last->wheel_pos_ = s.wheel_pos_;
    bucket.pop_back();
    s.wheel_pos_ = Subscriber::kNowhere;
}

void FanOut::tick(std::int64_t now_us, const std::function<bool(const Subscriber &)> &lost_slot,
                  bool slots_moved)
{
    try {
        tick_wheel(now_us, lost_slot, slots_moved);
    } catch (...) {
        /* A throw (an allocation, the callback, the sink) can leave streams taken out of a
         * bucket (wheel_scratch_, visit_) that still say they are in it: wheel_leave() would
         * then write into another stream's place, and the scratch would bring ended streams
         * back. The wheel is forgotten instead; the next tick looks at every stream. */
        forget_wheel();
        throw;
    }
}

void FanOut::forget_wheel() noexcept
{
    for (auto &bucket : wheel_)
        bucket.clear();
    wheel_scratch_.clear();
    visit_.clear();
    for (Subscriber *s : streams_)
        s->wheel_pos_ = Subscriber::kNowhere;
    wheel_ready_ = false;
}

void FanOut::tick_wheel(std::int64_t now_us,
                        const std::function<bool(const Subscriber &)> &lost_slot,
                        bool slots_moved)
{
    std::vector<Subscriber *> due, lost, expired;
    /* One look at each stream found (its lines are read once: a second pass over many
     * streams reads them from memory again): one with nothing to do goes at once to the
     * bucket of its next check, the others after what is done to them. */
    auto look = [&](Subscriber *s) {
        s->wheel_pos_ = Subscriber::kNowhere;
        bool act = false;
        if (s->delivery_.keepalive_due(now_us)) {
            due.push_back(s);
            act = true;
        }
        if (!s->closing_ && !s->ended_) {
            if (!slots_moved && lost_slot && lost_slot(*s)) {
                lost.push_back(s);
                act = true;
            } else if (s->delivery_.token_expired(now_us)) {
                expired.push_back(s); /* one also lost ends replaced first: close_now skips it */
                act = true;
            }
        }
        if (act)
            visit_.push_back(s);
        else
            wheel_file_next(*s, now_us);
    };
    /* The streams to look at: the buckets from the last tick's second to this one's (the
     * last tick's again: what it kept there was not due yet), or every stream when the wheel
     * cannot say (first tick, clock gone back, a gap longer than the wheel). */
    const std::int64_t key = floor_div(now_us, kWheelSlotUs);
    const std::int64_t from = wheel_now_;
    const bool all = !wheel_ready_ || key < from || key - from >= std::int64_t(kWheelSlots);
    if (all)
        forget_wheel();
    wheel_now_ = key;
    wheel_ready_ = true;
    visit_.clear();
    if (all) {
        for (Subscriber *s : streams_)
            if (s->started_)
                look(s);
    } else {
        for (std::int64_t k = from; k <= key; ++k) {
            /* Taken out whole first: a stream may be filed back into this bucket. */
            wheel_scratch_.swap(wheel_[bucket_of<kWheelSlots>(k)]);
            for (Subscriber *s : wheel_scratch_)
                look(s);
            wheel_scratch_.clear();
        }
    }
    /* Slots may have been taken: every stream's is looked at, as each tick did before. */
    if (slots_moved && lost_slot)
        for (Subscriber *s : streams_)
            if (!s->closing_ && !s->ended_ && lost_slot(*s))
                lost.push_back(s);
    for (Subscriber *s : due) {
        s->enqueue(keepalive_, false);
        push(*s);
    }
    if (!lost.empty())
        close_now(lost, EndReason::Replaced, replaced_notice());
    if (!expired.empty())
        close_now(expired, EndReason::TokenExpired, token_expired_notice());
    /* The streams acted on that go on (one whose keep-alive is not written yet stays in this
     * second's bucket and gets another at the next tick, as before). */
    for (Subscriber *s : visit_)
        if (!s->ended_ && s->started_ && s->wheel_pos_ == Subscriber::kNowhere)
            wheel_file_next(*s, now_us);
}

void FanOut::wheel_file_next(Subscriber &s, std::int64_t now_us)
{
    const std::int64_t wait = s.delivery_.next_wake_us(now_us);
    if (wait >= 0)
        wheel_file(s, floor_div(now_us + wait, kWheelSlotUs));
}

void FanOut::close_now(const std::vector<Subscriber *> &streams, EndReason why,
                       std::string notice)
{
    const SharedBytes bytes = shared(std::move(notice));
    for (Subscriber *s : streams) {
        if (s->ended_) /* its keep-alive's write failed (tick()) */
            continue;
        s->close_after(bytes, why);
        push(*s);
        if (!s->ended_)
            end(*s, s->ending_);
    }
}

} // namespace sse
