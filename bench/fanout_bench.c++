/* Fan-out cost per event: records read once from the bus and queued for N streams of one
 * process, then "written" by a null transport (every queued byte taken at once), as the hub's
 * I/O thread does after each publish. Compares, in the same run and alternating which goes
 * first, the hub's fan-out before issue 13 (a faithful copy below: OldFanOut, the code of
 * AsyncHub::fan_out/enqueue/push at 2d099cb without the socket writes) with FanOut
 * (sse/fanout.h) behind a null FanOutSink.
 *
 * Per round: E events are published round-robin to C channels (each stream is on one of them,
 * so an event reaches N/C streams), then each fan-out drains them. Publishing is not timed.
 *
 *   make bench-fanout             (or: build/fanout-bench [STREAMS CHANNELS EVENTS ROUNDS])
 * Prints per implementation the median over the rounds of events/s and of ns per delivered
 * event (event x stream). */
#include "sse/bus.h"
#include "sse/fanout.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

using namespace sse;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;
using Bytes = std::shared_ptr<const std::string>;

/* The hub's fan-out at 2d099cb, its socket writes replaced by taking everything. */
class OldFanOut {
public:
    struct Stream {
        std::vector<std::string> channels;
        std::string client_id;
        std::uint64_t serial = 0, next_seq = 0, last_seq = 0;
        std::deque<Bytes> queue;
        std::size_t queued = 0, front_offset = 0, max_pending = 1 << 20;
        bool dead = false, dirty = false, closing = false;
        std::uint64_t events_sent = 0, bytes_sent = 0;
    };

    explicit OldFanOut(Bus bus) : reader_(bus, ChannelSet::all()) { reader_.start_live(); }

    void add(Stream *s)
    {
        s->next_seq = reader_.position();
        streams_.insert(s);
        for (const auto &ch : s->channels)
            channels_[ch].insert(s);
        by_serial_[s->serial] = s;
    }

    void fan_out()
    {
        BusEvent e;
        std::vector<Stream *> dirty;
        for (int k = 0; k < 4096; ++k) {
            BusReader::Next nx = reader_.next(&e);
            if (nx == BusReader::Next::None)
                break;
            if (nx == BusReader::Next::Overrun) {
                std::string n;
                encode_missed_notice("overrun", {}, n);
                Bytes notice = std::make_shared<const std::string>(std::move(n));
                for (auto *s : streams_) {
                    enqueue(s, notice);
                    mark_dirty(s, dirty);
                }
                continue;
            }
            if (e.kind == RecordKind::EndStream) {
                Bytes notice = std::make_shared<const std::string>(std::move(e.wire));
                for (const auto &serial : e.audience.only) {
                    auto it = by_serial_.find(std::strtoull(serial.c_str(), nullptr, 10));
                    if (it != by_serial_.end() && e.seq >= it->second->next_seq) {
                        close_after_notice(it->second, notice);
                        mark_dirty(it->second, dirty);
                    }
                }
                continue;
            }
            Bytes wire = std::make_shared<const std::string>(std::move(e.wire));
            const bool everyone = e.audience.everyone();
            const AudienceMatcher audience(e.audience);
            for (const auto &ch : e.channels) {
                auto it = channels_.find(ch);
                if (it == channels_.end())
                    continue;
                for (Stream *s : it->second) {
                    if (e.seq < s->next_seq || s->last_seq == e.seq)
                        continue;
                    s->last_seq = e.seq;
                    if (e.kind == RecordKind::CloseChannels)
                        close_after_notice(s, wire);
                    else if (everyone || audience.admits(s->client_id))
                        enqueue(s, wire);
                    else
                        continue;
                    mark_dirty(s, dirty);
                }
            }
        }
        for (Stream *s : dirty) {
            s->dirty = false;
            if (!s->dead)
                push(s);
        }
    }

private:
    void close_after_notice(Stream *s, const Bytes &notice)
    {
        if (s->closing)
            return;
        enqueue(s, notice);
        s->closing = true;
    }
    static void mark_dirty(Stream *s, std::vector<Stream *> &dirty)
    {
        if (!s->dirty) {
            s->dirty = true;
            dirty.push_back(s);
        }
    }
    void enqueue(Stream *s, const Bytes &bytes)
    {
        if (s->dead || s->closing)
            return;
        s->queue.push_back(bytes);
        s->queued += bytes->size();
    }
    static bool fell_behind(const Stream &s)
    {
        const std::size_t front = s.queue.empty() ? 0 : s.queue.front()->size();
        return s.queued - front > s.max_pending;
    }
    /* push_direct() with a writev() that takes everything. */
    void push(Stream *s)
    {
        if (fell_behind(*s)) {
            s->dead = true;
            return;
        }
        std::size_t total = 0;
        for (const auto &b : s->queue)
            total += b->size();
        total -= s->front_offset;
        s->bytes_sent += total;
        while (!s->queue.empty()) {
            ++s->events_sent;
            s->queued -= s->queue.front()->size();
            s->queue.pop_front();
        }
        s->front_offset = 0;
    }

    BusReader reader_;
    std::unordered_set<Stream *> streams_;
    std::unordered_map<std::uint64_t, Stream *> by_serial_;
    std::unordered_map<std::string, std::unordered_set<Stream *>> channels_;
};

/* A transport that takes every queued byte at once. */
struct NullSink : FanOutSink {
    void write_queued(Subscriber &s) override
    {
        std::size_t total = 0;
        for (const auto &p : s.queue())
            total += p->size();
        total -= s.front_offset();
        s.wrote(total, kT0);
        s.consumed(total);
    }
    void ended(Subscriber &, EndReason) override {}
};

double seconds_since(Clock::time_point t0)
{
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char **argv)
{
    const int streams = argc > 1 ? std::atoi(argv[1]) : 10000;
    const int channels = argc > 2 ? std::atoi(argv[2]) : 100;
    const int events = argc > 3 ? std::atoi(argv[3]) : 4000;
    const int rounds = argc > 4 ? std::atoi(argv[4]) : 15;
    const std::size_t size = 64u << 20;
    std::unique_ptr<std::uint64_t[]> mem(new std::uint64_t[size / 8]);
    if (!Bus::format(mem.get(), size, kT0).empty())
        return 1;
    std::string err;
    Bus bus = Bus::attach(mem.get(), size, &err);

    std::vector<std::string> names;
    for (int c = 0; c < channels; ++c)
        names.push_back("bench-channel-" + std::to_string(c));

    NullSink sink;
    FanOut fan(bus, sink);
    OldFanOut old(bus);
    std::vector<std::unique_ptr<Subscriber>> subs;
    std::vector<std::unique_ptr<OldFanOut::Stream>> olds;
    DeliverySettings settings;
    settings.keepalive_us = 15000000;
    for (int i = 0; i < streams; ++i) {
        const std::vector<std::string> mine{names[i % channels]};
        settings.serial = static_cast<std::uint64_t>(i + 1);
        BusReader r(bus, ChannelSet(mine));
        r.start_live();
        subs.push_back(std::make_unique<Subscriber>(std::move(r), mine, "", settings, 1 << 20, kT0));
        fan.add(*subs.back());
        fan.start(*subs.back());
        auto o = std::make_unique<OldFanOut::Stream>();
        o->channels = mine;
        o->serial = settings.serial;
        old.add(o.get());
        olds.push_back(std::move(o));
    }

    EventFields ev;
    ev.has_data = true;
    ev.data = std::string(60, 'x'); /* a small event, as in the nchan comparison */
    std::vector<double> old_rate, new_rate;
    for (int round = 0; round < rounds; ++round) {
        for (int i = 0; i < events; ++i)
            bus.publish({names[i % channels]}, ev, kT0);
        auto time_new = [&] {
            const auto t0 = Clock::now();
            while (fan.run(4096)) {
            }
            new_rate.push_back(events / seconds_since(t0));
        };
        auto time_old = [&] {
            const auto t0 = Clock::now();
            for (int k = 0; k * 4096 < events + 4096; ++k)
                old.fan_out();
            old_rate.push_back(events / seconds_since(t0));
        };
        if (round % 2) {
            time_new();
            time_old();
        } else {
            time_old();
            time_new();
        }
    }
    std::uint64_t new_events = 0, old_events = 0;
    for (const auto &s : subs)
        new_events += s->events_sent;
    for (const auto &s : olds)
        old_events += s->events_sent;
    const double per = double(streams) / channels; /* streams each event reaches */
    std::printf("%d streams, %d channels (%.0f streams per event), %d events x %d rounds\n",
                streams, channels, per, events, rounds);
    std::printf("old hub fan-out: %10.0f events/s  %6.1f ns per delivery  (%llu delivered)\n",
                median(old_rate), 1e9 / (median(old_rate) * per),
                static_cast<unsigned long long>(old_events));
    std::printf("FanOut:          %10.0f events/s  %6.1f ns per delivery  (%llu delivered)\n",
                median(new_rate), 1e9 / (median(new_rate) * per),
                static_cast<unsigned long long>(new_events));
    return 0;
}
