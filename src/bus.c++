#include "sse/bus.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <system_error>
#include <unistd.h>

namespace sse {

namespace {

constexpr std::uint32_t kBusMagic = 0x53534542;     /* "SSEB" */
constexpr std::uint32_t kLayoutVersion = 2; /* 2: record kinds and audiences */
constexpr std::uint32_t kRecordMagic = 0x53534552;  /* "SSER" */
constexpr std::uint32_t kPaddingMagic = 0x53534550; /* "SSEP": skip to the end of the ring */

/* Where the ring is and where it ends. Positions are byte counters that only grow; the offset
 * in the ring is pos % ring_size. */
struct CommittedState {
    std::atomic<std::uint64_t> head_pos;  /* where the next record goes */
    std::atomic<std::uint64_t> next_seq;  /* seq of the next record */
    std::atomic<std::uint64_t> tail_pos;  /* the oldest retained record (or head when empty) */
    std::atomic<std::uint64_t> tail_seq;  /* its seq; == next_seq when empty */
};

struct StateCopy {
    std::uint64_t head_pos, next_seq, tail_pos, tail_seq;
};

struct RecordHeader {
    std::uint32_t magic;
    std::uint32_t length;      /* whole record, multiple of 8 */
    std::uint64_t seq;
    std::int64_t time_us;
    std::uint16_t n_channels;
    std::uint16_t id_len;      /* 0: the id is the decimal seq */
    std::uint16_t event_len;
    std::uint16_t kind;        /* RecordKind */
    std::uint32_t wire_len;
    std::uint16_t n_only;      /* audience: client ids (or stream serials for EndStream) */
    std::uint16_t n_except;
    /* then: uint32 hash[n]; uint8 name_len[n]; names;
     *       uint8 target_len[n_only + n_except]; targets; id; event; wire */
};
static_assert(sizeof(RecordHeader) == 40, "record header layout");

std::size_t align8(std::size_t n) { return (n + 7) & ~static_cast<std::size_t>(7); }

} // namespace

struct BusHeader {
    std::uint32_t magic;
    std::uint32_t layout_version;
    std::uint64_t total_size;
    std::uint64_t ring_offset;
    std::uint64_t ring_size;
    std::int64_t created_us;
    pthread_mutex_t lock;                   /* robust, process-shared; writers only */
    std::atomic<std::uint64_t> version;     /* slot[version & 1] is the committed state */
    CommittedState slot[2];
    std::atomic<std::uint32_t> wake_word;   /* futex: bumped by every publish */
    std::atomic<std::uint64_t> published;
    std::atomic<std::uint64_t> evicted;
    std::atomic<std::uint64_t> lock_recoveries;

    unsigned char *ring() { return reinterpret_cast<unsigned char *>(this) + ring_offset; }

    /* A consistent copy of the committed state, without locking: the writer fills the other
     * slot and then bumps version, so a copy taken while version did not change is whole. */
    StateCopy snapshot() const
    {
        for (;;) {
            std::uint64_t v1 = version.load(std::memory_order_acquire);
            const CommittedState &s = slot[v1 & 1];
            StateCopy c{s.head_pos.load(std::memory_order_relaxed),
                        s.next_seq.load(std::memory_order_relaxed),
                        s.tail_pos.load(std::memory_order_relaxed),
                        s.tail_seq.load(std::memory_order_relaxed)};
            std::atomic_thread_fence(std::memory_order_acquire);
            if (version.load(std::memory_order_relaxed) == v1)
                return c;
        }
    }

    /* Writer only, lock held. */
    void commit(const StateCopy &c)
    {
        std::uint64_t v = version.load(std::memory_order_relaxed);
        CommittedState &s = slot[(v + 1) & 1];
        std::atomic_thread_fence(std::memory_order_release);
        s.head_pos.store(c.head_pos, std::memory_order_relaxed);
        s.next_seq.store(c.next_seq, std::memory_order_relaxed);
        s.tail_pos.store(c.tail_pos, std::memory_order_relaxed);
        s.tail_seq.store(c.tail_seq, std::memory_order_relaxed);
        version.store(v + 1, std::memory_order_release);
    }

    /* The position of the record (or padding) that starts at or after `pos`: skips the end of
     * the ring when too little is left for a header, or when a padding record says so. Only
     * call where a record is known to follow. A torn padding read is caught by the caller's
     * validation. */
    std::uint64_t locate(std::uint64_t pos)
    {
        std::uint64_t off = pos % ring_size;
        std::uint64_t left = ring_size - off;
        if (left < sizeof(RecordHeader))
            return pos + left;
        std::uint32_t magic;
        std::memcpy(&magic, ring() + off, sizeof magic);
        return magic == kPaddingMagic ? pos + left : pos;
    }
};

std::size_t Bus::min_size() { return 64 * 1024; }

std::string Bus::format(void *mem, std::size_t size, std::int64_t now_us)
{
    if (size < min_size())
        return "the bus needs at least " + std::to_string(min_size()) + " bytes";
    auto *h = static_cast<BusHeader *>(mem);
    std::memset(static_cast<void *>(h), 0, sizeof *h);
    h->total_size = size;
    h->ring_offset = align8(sizeof(BusHeader));
    h->ring_size = (size - h->ring_offset) & ~static_cast<std::uint64_t>(7);
    h->created_us = now_us;

    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0)
        return std::string("cannot create the bus lock: ") + std::strerror(rc);

    std::uint64_t first = now_us > 0 ? static_cast<std::uint64_t>(now_us) : 1;
    StateCopy empty{0, first, 0, first};
    h->version.store(0, std::memory_order_relaxed);
    for (auto &s : h->slot) {
        s.head_pos.store(empty.head_pos);
        s.next_seq.store(empty.next_seq);
        s.tail_pos.store(empty.tail_pos);
        s.tail_seq.store(empty.tail_seq);
    }
    h->layout_version = kLayoutVersion;
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = kBusMagic;
    return {};
}

Bus Bus::attach(void *mem, std::size_t size, std::string *err)
{
    auto *h = static_cast<BusHeader *>(mem);
    if (size < sizeof(BusHeader) || h->magic != kBusMagic) {
        *err = "no bus in this memory";
        return Bus();
    }
    if (h->layout_version != kLayoutVersion) {
        *err = "the bus has layout version " + std::to_string(h->layout_version) +
               ", this module uses " + std::to_string(kLayoutVersion);
        return Bus();
    }
    if (h->total_size != size) {
        *err = "the bus is " + std::to_string(h->total_size) + " bytes, expected " +
               std::to_string(size);
        return Bus();
    }
    return Bus(h);
}

std::size_t Bus::max_record_bytes() const { return h_->ring_size / 2; }

namespace {

class WriterLock {
public:
    explicit WriterLock(pthread_mutex_t *m) : m_(m)
    {
        int rc = pthread_mutex_lock(m_);
        if (rc == EOWNERDEAD) {
            /* The previous writer died inside publish(). Its half-written record is beyond the
             * committed head, so the committed state is whole: nothing to repair. */
            pthread_mutex_consistent(m_);
            recovered = true;
        } else if (rc != 0) {
            throw std::system_error(rc, std::generic_category(), "bus lock");
        }
    }
    ~WriterLock() { pthread_mutex_unlock(m_); }
    WriterLock(const WriterLock &) = delete;
    WriterLock &operator=(const WriterLock &) = delete;
    bool recovered = false;

private:
    pthread_mutex_t *m_;
};

void put(unsigned char *&p, const void *src, std::size_t n)
{
    std::memcpy(p, src, n);
    p += n;
}

} // namespace

PublishResult Bus::publish(const std::vector<std::string> &channels, const EventFields &fields,
                           std::int64_t now_us, const Audience &audience)
{
    return append(RecordKind::Event, channels, &fields, nullptr, audience, now_us);
}

PublishResult Bus::publish_control(RecordKind kind, const std::vector<std::string> &channels,
                                   const Audience &audience, const std::string &notice,
                                   std::int64_t now_us)
{
    return append(kind, channels, nullptr, &notice, audience, now_us);
}

PublishResult Bus::append(RecordKind kind, const std::vector<std::string> &channels,
                          const EventFields *fields, const std::string *notice,
                          const Audience &audience, std::int64_t now_us)
{
    WriterLock lock(&h_->lock);
    PublishResult result;
    result.recovered_lock = lock.recovered;
    if (lock.recovered)
        h_->lock_recoveries.fetch_add(1, std::memory_order_relaxed);

    StateCopy st = h_->snapshot();
    const std::uint64_t R = h_->ring_size;

    /* An event gets the next seq as its id unless the publisher gave one; a control record
     * has no id of its own on the wire. */
    EventFields ev;
    std::string wire;
    bool bus_id = true;
    if (fields) {
        ev = *fields;
        bus_id = ev.id.empty();
        if (bus_id)
            ev.id = std::to_string(st.next_seq);
        encode_event(ev, wire);
    } else {
        wire = *notice;
    }

    std::size_t len = sizeof(RecordHeader);
    for (const auto &c : channels)
        len += sizeof(std::uint32_t) + 1 + c.size();
    for (const auto *list : {&audience.only, &audience.except})
        for (const auto &t : *list)
            len += 1 + t.size();
    len += (bus_id ? 0 : ev.id.size()) + ev.event.size() + wire.size();
    len = align8(len);
    if (len > max_record_bytes())
        throw EventTooLarge(len);

    /* Where the record goes: not across the end of the ring. */
    std::uint64_t start = st.head_pos;
    std::uint64_t left = R - start % R;
    bool pad = false;
    if (left < len) {
        pad = left >= sizeof(RecordHeader);
        start += left;
    }
    const std::uint64_t end = start + len;

    /* Release space first, and commit that, before a byte of it is overwritten. */
    StateCopy next = st;
    while (end - next.tail_pos > R && next.tail_seq < next.next_seq) {
        std::uint64_t at = h_->locate(next.tail_pos);
        RecordHeader rh;
        std::memcpy(&rh, h_->ring() + at % R, sizeof rh);
        next.tail_pos = at + rh.length;
        ++next.tail_seq;
        ++result.evicted;
    }
    if (result.evicted > 0) {
        h_->commit(next);
        h_->evicted.fetch_add(result.evicted, std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_release);

    if (pad) {
        RecordHeader ph{};
        ph.magic = kPaddingMagic;
        ph.length = static_cast<std::uint32_t>(left);
        std::memcpy(h_->ring() + st.head_pos % R, &ph, sizeof ph);
    }

    unsigned char *base = h_->ring() + start % R;
    RecordHeader rh{};
    rh.magic = kRecordMagic;
    rh.length = static_cast<std::uint32_t>(len);
    rh.seq = next.next_seq;
    rh.time_us = now_us;
    rh.n_channels = static_cast<std::uint16_t>(channels.size());
    rh.id_len = static_cast<std::uint16_t>(bus_id ? 0 : ev.id.size());
    rh.event_len = static_cast<std::uint16_t>(ev.event.size());
    rh.kind = static_cast<std::uint16_t>(kind);
    rh.wire_len = static_cast<std::uint32_t>(wire.size());
    rh.n_only = static_cast<std::uint16_t>(audience.only.size());
    rh.n_except = static_cast<std::uint16_t>(audience.except.size());
    unsigned char *p = base;
    put(p, &rh, sizeof rh);
    for (const auto &c : channels) {
        std::uint32_t hv = ChannelSet::hash(c);
        put(p, &hv, sizeof hv);
    }
    for (const auto &c : channels)
        *p++ = static_cast<unsigned char>(c.size());
    for (const auto &c : channels)
        put(p, c.data(), c.size());
    for (const auto *list : {&audience.only, &audience.except})
        for (const auto &t : *list)
            *p++ = static_cast<unsigned char>(t.size());
    for (const auto *list : {&audience.only, &audience.except})
        for (const auto &t : *list)
            put(p, t.data(), t.size());
    if (!bus_id)
        put(p, ev.id.data(), ev.id.size());
    put(p, ev.event.data(), ev.event.size());
    put(p, wire.data(), wire.size());

    result.seq = next.next_seq;
    result.id = bus_id ? std::to_string(next.next_seq) : ev.id;
    next.head_pos = end;
    ++next.next_seq;
    if (next.tail_seq + 1 == next.next_seq)
        next.tail_pos = start; /* the bus was empty: this record is the oldest */
    h_->commit(next);
    h_->published.fetch_add(1, std::memory_order_relaxed);

    h_->wake_word.fetch_add(1, std::memory_order_release);
    wake_all();
    return result;
}

BusStats Bus::stats() const
{
    StateCopy st = h_->snapshot();
    BusStats s;
    s.total_size = h_->total_size;
    s.ring_size = h_->ring_size;
    s.bytes_used = st.tail_seq == st.next_seq ? 0 : st.head_pos - st.tail_pos;
    s.oldest_seq = st.tail_seq;
    s.next_seq = st.next_seq;
    s.published = h_->published.load(std::memory_order_relaxed);
    s.evicted = h_->evicted.load(std::memory_order_relaxed);
    s.lock_recoveries = h_->lock_recoveries.load(std::memory_order_relaxed);
    return s;
}

std::uint32_t Bus::wake_word() const { return h_->wake_word.load(std::memory_order_acquire); }

void Bus::wait(std::uint32_t seen, int timeout_ms) const
{
    struct timespec ts;
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
    /* Not FUTEX_PRIVATE_FLAG: the word is shared between processes. */
    syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&h_->wake_word), FUTEX_WAIT, seen, &ts,
            nullptr, 0);
}

void Bus::wake_all() const
{
    syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&h_->wake_word), FUTEX_WAKE, INT_MAX,
            nullptr, nullptr, 0);
}

std::string stream_target(std::uint64_t serial) { return std::to_string(serial); }

bool names_stream(const BusEvent &e, std::uint64_t serial)
{
    if (e.kind != RecordKind::EndStream)
        return false;
    const std::string me = stream_target(serial);
    return std::find(e.audience.only.begin(), e.audience.only.end(), me) != e.audience.only.end();
}

/* ---- ChannelSet ---- */

ChannelSet::ChannelSet(const std::vector<std::string> &names) : names_(names)
{
    for (const auto &n : names_)
        hashes_.push_back(hash(n));
}

std::uint32_t ChannelSet::hash(std::string_view name)
{
    std::uint32_t h = 2166136261u; /* FNV-1a */
    for (unsigned char c : name) {
        h ^= c;
        h *= 16777619u;
    }
    return h;
}

ChannelSet ChannelSet::all()
{
    ChannelSet s({"*"});
    s.all_ = true;
    return s;
}

int ChannelSet::find(std::uint32_t hv, std::string_view name) const
{
    if (all_)
        return 0;
    for (std::size_t i = 0; i < names_.size(); ++i)
        if (hashes_[i] == hv && names_[i] == name)
            return static_cast<int>(i);
    return -1;
}

/* ---- BusReader ---- */

namespace {

/* A record's header and channel list, read from the ring without trusting it: every length
 * is checked against the ring before use, since a concurrent writer may be overwriting it
 * (the caller validates the copy against the tail afterwards). */
struct RecordView {
    RecordHeader h;
    const unsigned char *hashes, *lens, *names, *target_lens, *targets, *id, *event, *wire;

    bool read(unsigned char *ring, std::uint64_t ring_size, std::uint64_t pos)
    {
        std::uint64_t off = pos % ring_size;
        if (ring_size - off < sizeof h)
            return false;
        std::memcpy(&h, ring + off, sizeof h);
        if (h.magic != kRecordMagic || h.length < sizeof h || h.length > ring_size - off)
            return false;
        const unsigned char *p = ring + off + sizeof h;
        const unsigned char *end = ring + off + h.length;
        hashes = p;
        lens = hashes + 4 * h.n_channels;
        names = lens + h.n_channels;
        if (names > end)
            return false;
        std::size_t names_len = 0;
        for (unsigned i = 0; i < h.n_channels; ++i)
            names_len += lens[i];
        target_lens = names + names_len;
        const unsigned n_targets = unsigned(h.n_only) + h.n_except;
        targets = target_lens + n_targets;
        if (targets > end)
            return false;
        std::size_t targets_len = 0;
        for (unsigned i = 0; i < n_targets; ++i)
            targets_len += target_lens[i];
        id = targets + targets_len;
        if (id > end)
            return false;
        event = id + h.id_len;
        wire = event + h.event_len;
        return wire <= end && static_cast<std::size_t>(end - wire) >= h.wire_len;
    }

    std::uint32_t hash(unsigned i) const
    {
        std::uint32_t v;
        std::memcpy(&v, hashes + 4 * i, sizeof v);
        return v;
    }

    /* Calls fn(index, name) for each channel. */
    template <typename Fn> void each_channel(Fn fn) const
    {
        const unsigned char *n = names;
        for (unsigned i = 0; i < h.n_channels; ++i) {
            fn(i, std::string_view(reinterpret_cast<const char *>(n), lens[i]));
            n += lens[i];
        }
    }

    RecordKind kind() const { return static_cast<RecordKind>(h.kind); }

    /* Whether an event is for `client_id`; control records are for whoever reads them. */
    bool admits(std::string_view client_id) const
    {
        if (kind() != RecordKind::Event || (h.n_only == 0 && h.n_except == 0))
            return true;
        bool listed_only = false, listed_except = false;
        const unsigned char *t = targets;
        for (unsigned i = 0; i < unsigned(h.n_only) + h.n_except; ++i) {
            std::string_view v(reinterpret_cast<const char *>(t), target_lens[i]);
            t += target_lens[i];
            if (!client_id.empty() && v == client_id)
                (i < h.n_only ? listed_only : listed_except) = true;
        }
        return (h.n_only == 0 || listed_only) && !listed_except;
    }

    void audience(Audience &out) const
    {
        out.only.clear();
        out.except.clear();
        const unsigned char *t = targets;
        for (unsigned i = 0; i < unsigned(h.n_only) + h.n_except; ++i) {
            (i < h.n_only ? out.only : out.except)
                .emplace_back(reinterpret_cast<const char *>(t), target_lens[i]);
            t += target_lens[i];
        }
    }

    std::string wire_id() const
    {
        return h.id_len ? std::string(reinterpret_cast<const char *>(id), h.id_len)
                        : std::to_string(h.seq);
    }
};

} // namespace

Bus::ChannelHistory Bus::channel_history(std::string_view channel) const
{
    const std::uint32_t hv = ChannelSet::hash(channel);
    ChannelHistory out;
    for (int attempt = 0; attempt < 8; ++attempt) {
        out = ChannelHistory();
        StateCopy st = h_->snapshot();
        std::uint64_t pos = st.tail_pos;
        bool torn = false;
        for (std::uint64_t seq = st.tail_seq; seq < st.next_seq; ++seq) {
            pos = h_->locate(pos);
            RecordView v;
            if (!v.read(h_->ring(), h_->ring_size, pos) || v.h.seq != seq) {
                torn = true;
                break;
            }
            bool on = false;
            v.each_channel([&](unsigned i, std::string_view name) {
                on = on || (v.hash(i) == hv && name == channel);
            });
            if (on && v.kind() == RecordKind::CloseChannels) {
                out = ChannelHistory();
            } else if (on && v.kind() == RecordKind::Event) {
                ++out.retained;
                out.last_id = v.wire_id();
            }
            pos += v.h.length;
        }
        std::atomic_thread_fence(std::memory_order_acquire);
        if (!torn && h_->snapshot().tail_seq <= st.tail_seq)
            break;
    }
    return out;
}

void BusReader::start_live()
{
    StateCopy st = bus_.h_->snapshot();
    pos_ = st.head_pos;
    seq_ = st.next_seq;
    replay_.clear();
    replay_next_ = 0;
}

bool BusReader::start_after(std::string_view last_event_id, const HistoryLimits &limits,
                            std::int64_t now_us)
{
    BusHeader *h = bus_.h_;
    struct Candidate {
        std::uint64_t pos, seq;
        std::int64_t time_us;
        std::vector<bool> on; /* which subscribed channels it is on */
    };
    std::vector<Candidate> all;
    std::uint64_t match_mine = 0, match_any = 0; /* seq + 1 of the newest match, 0: none */

    for (int attempt = 0; attempt < 8; ++attempt) {
        all.clear();
        match_mine = match_any = 0;
        StateCopy st = h->snapshot();
        std::uint64_t pos = st.tail_pos;
        bool torn = false;
        for (std::uint64_t seq = st.tail_seq; seq < st.next_seq; ++seq) {
            pos = h->locate(pos);
            RecordView v;
            if (!v.read(h->ring(), h->ring_size, pos) || v.h.seq != seq) {
                torn = true;
                break;
            }
            Candidate c{pos, seq, v.h.time_us, std::vector<bool>(channels_.size(), false)};
            bool mine = false;
            v.each_channel([&](unsigned i, std::string_view name) {
                int k = channels_.find(v.hash(i), name);
                if (k >= 0) {
                    c.on[k] = true;
                    mine = true;
                }
            });
            if (v.kind() == RecordKind::CloseChannels) {
                /* A closed channel's history is gone: forget what was collected for it. */
                for (auto &earlier : all)
                    for (std::size_t k = 0; k < c.on.size(); ++k)
                        if (c.on[k])
                            earlier.on[k] = false;
            } else if (v.kind() == RecordKind::Event) {
                if (!last_event_id.empty() && v.wire_id() == last_event_id) {
                    match_any = seq + 1;
                    if (mine)
                        match_mine = seq + 1;
                }
                if (mine && v.admits(client_id_))
                    all.push_back(std::move(c));
            }
            pos += v.h.length;
        }
        std::atomic_thread_fence(std::memory_order_acquire);
        StateCopy after = h->snapshot();
        if (!torn && after.tail_seq <= st.tail_seq) {
            pos_ = pos;
            seq_ = st.next_seq;
            break;
        }
        /* A writer evicted what we were scanning: scan again (bounded). On the last attempt,
         * keep what was read and start live at the current head. */
        if (attempt == 7) {
            pos_ = after.head_pos;
            seq_ = after.next_seq;
        }
    }

    std::uint64_t after_seq = match_mine ? match_mine : match_any; /* replay seq >= this */
    const bool found = after_seq != 0;

    /* SSEHistory: per subscribed channel, the newest `count` events no older than max_age_s.
     * An event on several subscribed channels is kept if any of them keeps it. */
    std::vector<std::uint64_t> kept_per_channel(channels_.size(), 0);
    std::vector<Queued> keep;
    const std::int64_t oldest_us =
        limits.max_age_s ? now_us - static_cast<std::int64_t>(limits.max_age_s) * 1000000 : 0;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
        if (it->seq < after_seq)
            break;
        if (limits.max_age_s && it->time_us < oldest_us)
            break;
        bool wanted = false;
        for (std::size_t k = 0; k < channels_.size(); ++k) {
            if (it->on[k] && kept_per_channel[k] < limits.count) {
                ++kept_per_channel[k];
                wanted = true;
            }
        }
        if (wanted)
            keep.push_back({it->pos, it->seq});
    }
    replay_.assign(keep.rbegin(), keep.rend());
    replay_next_ = 0;
    return found;
}

BusReader::Next BusReader::next(BusEvent *out)
{
    BusHeader *h = bus_.h_;
    auto copy_out = [&](const RecordView &v) {
        out->kind = v.kind();
        v.audience(out->audience);
        out->seq = v.h.seq;
        out->time_us = v.h.time_us;
        out->id = v.wire_id();
        out->event.assign(reinterpret_cast<const char *>(v.event), v.h.event_len);
        out->wire.assign(reinterpret_cast<const char *>(v.wire), v.h.wire_len);
        out->channels.clear();
        v.each_channel([&](unsigned, std::string_view name) { out->channels.emplace_back(name); });
    };

    while (replay_next_ < replay_.size()) {
        Queued q = replay_[replay_next_++];
        RecordView v;
        bool ok = v.read(h->ring(), h->ring_size, q.pos) && v.h.seq == q.seq;
        if (ok)
            copy_out(v);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (ok && h->snapshot().tail_seq <= q.seq)
            return Next::Event;
        /* Evicted while queued: skip everything the tail has passed, report it once. */
        std::uint64_t tail = h->snapshot().tail_seq;
        while (replay_next_ < replay_.size() && replay_[replay_next_].seq < tail)
            ++replay_next_;
        return Next::Overrun;
    }

    for (;;) {
        StateCopy st = h->snapshot();
        if (seq_ < st.tail_seq) {
            pos_ = st.tail_pos;
            seq_ = st.tail_seq;
            return Next::Overrun;
        }
        if (seq_ >= st.next_seq)
            return Next::None;
        std::uint64_t pos = h->locate(pos_);
        RecordView v;
        bool ok = v.read(h->ring(), h->ring_size, pos) && v.h.seq == seq_;
        bool mine = false;
        if (ok) {
            v.each_channel([&](unsigned i, std::string_view name) {
                if (!mine && channels_.find(v.hash(i), name) >= 0)
                    mine = true;
            });
            mine = mine && (channels_.is_all() || v.admits(client_id_));
            if (mine)
                copy_out(v);
        }
        std::atomic_thread_fence(std::memory_order_acquire);
        StateCopy after = h->snapshot();
        if (after.tail_seq > seq_)
            continue; /* overwritten under us: the tail check above reports the overrun */
        if (!ok) {
            /* A retained record that does not parse cannot happen with a sound writer; skip
             * to the head rather than spin on it. */
            pos_ = after.head_pos;
            seq_ = after.next_seq;
            return Next::Overrun;
        }
        pos_ = pos + v.h.length;
        ++seq_;
        if (mine)
            return Next::Event;
    }
}

} // namespace sse
