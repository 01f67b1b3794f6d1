#include "sse/bus.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
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
/* 2: record kinds and audiences. 3: the seq index, monotonic record times. */
constexpr std::uint32_t kLayoutVersion = 3;
constexpr std::uint32_t kRecordMagic = 0x53534552;  /* "SSER" */
constexpr std::uint32_t kPaddingMagic = 0x53534550; /* "SSEP": skip to the end of the ring */

/* Every process has its own libatomic locks: an atomic that is not lock-free would not be
 * atomic between processes at all. */
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "64-bit atomics must be lock-free");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "32-bit atomics must be lock-free");
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "64-bit atomics must be lock-free");

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

/* The seq index: for each block of kIndexEvery records, where its first record starts and a
 * Bloom filter of the block's channels and publisher-given ids, so that a resume finds a seq
 * and walks the ring backwards block by block, reading only the blocks that may hold
 * something for it. Entry (seq / kIndexEvery) % index_slots is the block's.
 *
 * The writer of a block's first record fills its entry before committing the record,
 * seqlock-style: seq = 0, release fence, pos and filter, seq (release); the writer of every
 * record adds its keys to the filter before committing it. A reader takes an entry only when
 * it read the block's seq before and after it, and only for records its snapshot says are
 * committed: so the filter has the keys of every record the reader may look for (a writer
 * killed before its commit leaves extra keys at most), and the pos is the committed record's
 * (a killed writer's entry is filled again by whoever writes that record next). An entry
 * overwritten for a later block, or left at 0, is not used: the walk reads from an earlier
 * one. What the pos points to is validated like any read of the ring: by the tail check. */
constexpr std::uint64_t kIndexEvery = 64;
/* The smallest record (header, one hash, one length, a one-byte name, "data\n\n") is 56
 * bytes: one slot per 2048 ring bytes covers more blocks than fit. An entry is 80 bytes:
 * the index takes 3.8% of the segment. */
constexpr std::uint64_t kRingBytesPerSlot = 2048;
/* 512 bits, two per key: with 64 one-channel records of a few channels and their 64 ids, a
 * block that holds neither the channel nor the id looked for is read 6% of the time. */
constexpr unsigned kFilterWords = 8;

struct IndexEntry {
    std::atomic<std::uint64_t> seq;
    std::atomic<std::uint64_t> pos;
    std::atomic<std::uint64_t> filter[kFilterWords];
};

/* A key's two bits in a block filter: channels by ChannelSet::hash, ids by that hash mixed
 * again (an id that equals a channel name is another key). */
struct FilterKey {
    unsigned bit1, bit2;
    static FilterKey of(std::uint32_t h) { return {h % 512, (h >> 9) % 512}; }
    bool in(const std::uint64_t (&filter)[kFilterWords]) const
    {
        return (filter[bit1 / 64] >> (bit1 % 64) & 1) && (filter[bit2 / 64] >> (bit2 % 64) & 1);
    }
    static FilterKey channel(std::uint32_t channel_hash) { return of(channel_hash); }
    static FilterKey id(std::uint32_t id_hash) { return of(id_hash * 0x9E3779B1u ^ 0x5bd1e995u); }
};

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
    /* Writer only (lock held): the newest record's time. Records' times never decrease along
     * seq, so a cut by age may stop at the first record that is too old. */
    std::int64_t last_time_us;
    /* Writer only: seq + 1 of the newest record with a publisher-given id (0: none yet), read
     * by resumes to know whether any id but the bus's own can be on the ring. */
    std::atomic<std::uint64_t> newest_custom_id;
    std::uint64_t index_offset;
    std::uint64_t index_slots;

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

    IndexEntry &index(std::uint64_t seq)
    {
        auto *entries = reinterpret_cast<IndexEntry *>(reinterpret_cast<unsigned char *>(this) +
                                                       index_offset);
        return entries[(seq / kIndexEvery) % index_slots];
    }

    /* Writer only, lock held, before the record `seq` at `pos` is committed: the block's
     * entry starts with its first record, then every record adds its keys (its channels, and
     * its id when the publisher gave one). */
    void index_record(std::uint64_t seq, std::uint64_t pos, const std::vector<std::string> &channels,
                      const std::string *custom_id)
    {
        IndexEntry &e = index(seq);
        const std::uint64_t block = seq / kIndexEvery * kIndexEvery;
        if (seq == block) {
            e.seq.store(0, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_release);
            e.pos.store(pos, std::memory_order_relaxed);
            for (auto &w : e.filter)
                w.store(0, std::memory_order_relaxed);
        }
        auto add = [&](FilterKey k) {
            for (unsigned bit : {k.bit1, k.bit2})
                e.filter[bit / 64].fetch_or(std::uint64_t(1) << (bit % 64),
                                            std::memory_order_relaxed);
        };
        for (const auto &c : channels)
            add(FilterKey::channel(ChannelSet::hash(c)));
        if (custom_id)
            add(FilterKey::id(ChannelSet::hash(*custom_id)));
        if (seq == block)
            e.seq.store(seq, std::memory_order_release);
    }

    /* The entry of the block starting at `block` (a multiple of kIndexEvery), if the index
     * still holds it: where the block's first record was written, and its filter. The record
     * may have been evicted since: the caller validates what it reads there. */
    bool indexed_block(std::uint64_t block, std::uint64_t *pos,
                       std::uint64_t (*filter)[kFilterWords] = nullptr)
    {
        IndexEntry &e = index(block);
        std::uint64_t s1 = e.seq.load(std::memory_order_acquire);
        std::uint64_t p = e.pos.load(std::memory_order_relaxed);
        if (filter)
            for (unsigned i = 0; i < kFilterWords; ++i)
                (*filter)[i] = e.filter[i].load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (s1 != block || e.seq.load(std::memory_order_relaxed) != block)
            return false;
        *pos = p;
        return true;
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
    h->index_offset = align8(sizeof(BusHeader));
    h->index_slots = (size - h->index_offset) / (kRingBytesPerSlot + sizeof(IndexEntry)) + 1;
    h->ring_offset = align8(h->index_offset + h->index_slots * sizeof(IndexEntry));
    h->ring_size = (size - h->ring_offset) & ~static_cast<std::uint64_t>(7);
    h->created_us = now_us;
    h->last_time_us = now_us;
    std::memset(reinterpret_cast<unsigned char *>(h) + h->index_offset, 0,
                h->index_slots * sizeof(IndexEntry));

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

/* Test seam (t/unit/test_bus.c++ kills a writer here): called, when set, at three points inside
 * a publish while the lock is held: 0 after space is released, 1 after the record's bytes are
 * written, 2 after it is indexed and before it is committed. */
namespace bus_testing {
void (*inside_publish)(int step) = nullptr;
}

PublishResult Bus::append(RecordKind kind, const std::vector<std::string> &channels,
                          const EventFields *fields, const std::string *notice,
                          const Audience &audience, std::int64_t now_us)
{
    WriterLock lock(&h_->lock);
    PublishResult result;
    result.recovered_lock = lock.recovered;
    if (lock.recovered) {
        h_->lock_recoveries.fetch_add(1, std::memory_order_relaxed);
        /* The dead writer may have committed its record and died before waking anyone. */
        wake_all();
    }

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
    if (bus_testing::inside_publish)
        bus_testing::inside_publish(0);

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
    /* Under the lock and never before the previous record: the clock may step back, and
     * writers take `now_us` before they queue for the lock. */
    rh.time_us = std::max(now_us, h_->last_time_us);
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
    if (bus_testing::inside_publish)
        bus_testing::inside_publish(1);

    result.seq = next.next_seq;
    result.id = bus_id ? std::to_string(next.next_seq) : ev.id;
    next.head_pos = end;
    ++next.next_seq;
    if (next.tail_seq + 1 == next.next_seq)
        next.tail_pos = start; /* the bus was empty: this record is the oldest */
    if (!bus_id)
        h_->newest_custom_id.store(result.seq + 1, std::memory_order_relaxed);
    h_->last_time_us = rh.time_us;
    h_->index_record(result.seq, start, channels, bus_id ? nullptr : &ev.id);
    if (bus_testing::inside_publish)
        bus_testing::inside_publish(2);
    h_->commit(next);
    h_->published.fetch_add(1, std::memory_order_relaxed);
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
    /* The word changes first: a reader between wake_word() and wait() then finds it changed
     * and does not sleep (FUTEX_WAIT compares it atomically). */
    h_->wake_word.fetch_add(1, std::memory_order_release);
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

std::vector<std::uint64_t> ended_streams(const BusEvent &e)
{
    std::vector<std::uint64_t> serials;
    if (e.kind != RecordKind::EndStream)
        return serials;
    for (const auto &target : e.audience.only)
        serials.push_back(std::strtoull(target.c_str(), nullptr, 10));
    return serials;
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

namespace bus_testing {
void (*after_record_copy)() = nullptr;
}

namespace {

/* One record, parsed from a private copy of its bytes (all but the encoded event), never from
 * the ring: a writer may evict and overwrite the record at any moment, and every length used
 * below is one that was checked against the copy. The encoded event is copied out of the ring
 * only when the record is delivered, with its length from the copy; the caller's tail check
 * afterwards discards it (and everything else read here) if a writer got there first. */
class RecordCopy {
public:
    explicit RecordCopy(std::vector<unsigned char> &buf) : buf_(buf) {}

    /* False when the bytes at `pos` are not a whole record (a writer is overwriting them). */
    bool read(BusHeader *bus, std::uint64_t pos)
    {
        const std::uint64_t off = pos % bus->ring_size;
        if (bus->ring_size - off < sizeof h_)
            return false;
        rec_ = bus->ring() + off;
        std::memcpy(&h_, rec_, sizeof h_);
        if (h_.magic != kRecordMagic || h_.length < sizeof h_ ||
            h_.length > bus->ring_size - off || h_.wire_len > h_.length - sizeof h_)
            return false;
        const std::size_t n = h_.length - h_.wire_len; /* everything before the wire, at most */
        if (buf_.size() < n)
            buf_.resize(n);
        std::memcpy(buf_.data(), rec_, n);
        if (bus_testing::after_record_copy)
            bus_testing::after_record_copy();

        std::size_t p = sizeof h_;
        auto take = [&](std::size_t bytes) {
            std::size_t at = p;
            p = bytes <= n - p ? p + bytes : n + 1; /* n + 1: past the end, refused below */
            return at;
        };
        hashes_ = take(4 * std::size_t(h_.n_channels));
        lens_ = take(h_.n_channels);
        if (p > n)
            return false;
        names_ = take(sum(lens_, h_.n_channels));
        target_lens_ = take(n_targets());
        if (p > n)
            return false;
        targets_ = take(sum(target_lens_, n_targets()));
        id_ = take(h_.id_len);
        event_ = take(h_.event_len);
        wire_ = p;
        return p <= n; /* then wire_ + wire_len <= length: the wire lies in the record */
    }

    const RecordHeader &header() const { return h_; }
    RecordKind kind() const { return static_cast<RecordKind>(h_.kind); }

    std::uint32_t hash(unsigned i) const
    {
        std::uint32_t v;
        std::memcpy(&v, &buf_[hashes_ + 4 * i], sizeof v);
        return v;
    }

    /* Calls fn(index, name) for each channel. */
    template <typename Fn> void each_channel(Fn fn) const
    {
        std::size_t at = names_;
        for (unsigned i = 0; i < h_.n_channels; ++i) {
            fn(i, view(at, buf_[lens_ + i]));
            at += buf_[lens_ + i];
        }
    }

    /* Whether an event is for `client_id`; control records are for whoever reads them. */
    bool admits(std::string_view client_id) const
    {
        if (kind() != RecordKind::Event || n_targets() == 0)
            return true;
        bool listed_only = false, listed_except = false;
        each_target([&](unsigned i, std::string_view v) {
            if (!client_id.empty() && v == client_id)
                (i < h_.n_only ? listed_only : listed_except) = true;
        });
        return (h_.n_only == 0 || listed_only) && !listed_except;
    }

    void audience(Audience &out) const
    {
        out.only.clear();
        out.except.clear();
        each_target([&](unsigned i, std::string_view v) {
            (i < h_.n_only ? out.only : out.except).emplace_back(v);
        });
    }

    /* Whether the record's wire id is `id`; `seq_id` is `id` read as a bus id (0: it is not
     * one), so that no id is formatted for the comparison. */
    bool has_id(std::string_view id, std::uint64_t seq_id) const
    {
        if (h_.id_len == 0)
            return seq_id != 0 && h_.seq == seq_id;
        return id == view(id_, h_.id_len);
    }

    std::string wire_id() const
    {
        return h_.id_len ? std::string(view(id_, h_.id_len)) : std::to_string(h_.seq);
    }

    void copy_out(BusEvent *out) const
    {
        out->kind = kind();
        audience(out->audience);
        out->seq = h_.seq;
        out->time_us = h_.time_us;
        out->id = wire_id();
        out->event.assign(view(event_, h_.event_len));
        out->wire.assign(reinterpret_cast<const char *>(rec_ + wire_), h_.wire_len);
        out->channels.clear();
        each_channel([&](unsigned, std::string_view name) { out->channels.emplace_back(name); });
    }

private:
    unsigned n_targets() const { return unsigned(h_.n_only) + h_.n_except; }
    std::size_t sum(std::size_t lens, unsigned count) const
    {
        std::size_t total = 0;
        for (unsigned i = 0; i < count; ++i)
            total += buf_[lens + i];
        return total;
    }
    std::string_view view(std::size_t at, std::size_t len) const
    {
        return std::string_view(reinterpret_cast<const char *>(buf_.data()) + at, len);
    }
    template <typename Fn> void each_target(Fn fn) const
    {
        std::size_t at = targets_;
        for (unsigned i = 0; i < n_targets(); ++i) {
            fn(i, view(at, buf_[target_lens_ + i]));
            at += buf_[target_lens_ + i];
        }
    }

    std::vector<unsigned char> &buf_;
    RecordHeader h_;
    const unsigned char *rec_ = nullptr;
    std::size_t hashes_ = 0, lens_ = 0, names_ = 0, target_lens_ = 0, targets_ = 0, id_ = 0,
                event_ = 0, wire_ = 0; /* offsets in the record */
};

/* `id` as a bus-assigned id (the decimal seq, as the bus writes it), or 0. */
std::uint64_t as_seq_id(std::string_view id)
{
    if (id.empty() || id.size() > 20 || id[0] == '0')
        return 0;
    std::uint64_t v = 0;
    for (char c : id) {
        if (c < '0' || c > '9' || v > (UINT64_MAX - (c - '0')) / 10)
            return 0;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

} // namespace

Bus::ChannelHistory Bus::channel_history(std::string_view channel) const
{
    const std::uint32_t hv = ChannelSet::hash(channel);
    std::vector<unsigned char> buf;
    RecordCopy v(buf);
    ChannelHistory out;
    for (int attempt = 0; attempt < 8; ++attempt) {
        out = ChannelHistory();
        StateCopy st = h_->snapshot();
        std::uint64_t pos = st.tail_pos;
        bool torn = false;
        for (std::uint64_t seq = st.tail_seq; seq < st.next_seq; ++seq) {
            pos = h_->locate(pos);
            if (!v.read(h_, pos) || v.header().seq != seq) {
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
            pos += v.header().length;
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

/* The ring is walked backwards from the head, a block of kIndexEvery records at a time (each
 * found through the seq index, read forwards, then taken newest first), so that a resume reads
 * what it replays and little more: it stops at the id, or once SSEHistory is satisfied for
 * every subscribed channel and nothing further back can be the id.
 *
 * Nothing read is trusted until the end: then the tail is read again, and what a writer
 * evicted meanwhile (every record of a block whose first record is now older than the tail:
 * the lengths that led to it may have been overwritten) is dropped. An id matched there is
 * not found (false), so the caller reports that events may be missing; events after a trusted
 * match are all trusted. Live reading continues from the head the walk started from, so
 * whatever was published during the walk comes live, or as an overrun if it is evicted before
 * it is read. */
bool BusReader::start_after(std::string_view last_event_id, const HistoryLimits &limits,
                            std::int64_t now_us)
{
    BusHeader *h = bus_.h_;
    const StateCopy st = h->snapshot();
    const std::size_t n_channels = channels_.size();
    const std::size_t words = (n_channels + 63) / 64;
    const std::uint64_t seq_id = as_seq_id(last_event_id);
    /* Without a retained publisher-given id, only the record `seq_id` can match. */
    const bool custom_ids = h->newest_custom_id.load(std::memory_order_relaxed) > st.tail_seq;
    const std::int64_t oldest_us =
        limits.max_age_s ? now_us - static_cast<std::int64_t>(limits.max_age_s) * 1000000 : 0;
    const FilterKey id_key = FilterKey::id(ChannelSet::hash(last_event_id));
    std::vector<FilterKey> channel_keys;
    for (std::uint32_t hv : channels_.hashes())
        channel_keys.push_back(FilterKey::channel(hv));

    struct Seen {
        std::uint64_t seq, pos, chain; /* chain: the first record of its block */
        std::int64_t time_us;
        RecordKind kind;
        bool mine, admitted, id_match;
    };
    std::vector<Seen> block;
    std::vector<std::uint64_t> bits; /* `words` per record of `block`: its subscribed channels */
    RecordCopy rec(scratch_);

    /* Reads [lo, hi) into block, oldest first, from the index entry for lo (lo a multiple of
     * kIndexEvery, or the tail) or an earlier one. Returns the first seq read, or hi when the
     * tail has passed hi. */
    auto read_block = [&](std::uint64_t lo, std::uint64_t hi) -> std::uint64_t {
        for (int attempt = 0; attempt < 16; ++attempt) {
            block.clear();
            bits.clear();
            const StateCopy cur = h->snapshot();
            if (cur.tail_seq >= hi)
                return hi;
            std::uint64_t first = std::max(lo, cur.tail_seq), pos = cur.tail_pos;
            while (first > cur.tail_seq && !h->indexed_block(first, &pos))
                first = first - kIndexEvery > cur.tail_seq ? first - kIndexEvery : cur.tail_seq;
            if (first == cur.tail_seq)
                pos = cur.tail_pos;
            bool torn = false;
            for (std::uint64_t seq = first; seq < hi; ++seq) {
                pos = h->locate(pos);
                if (!rec.read(h, pos) || rec.header().seq != seq) {
                    torn = true; /* evicted under us: again from the new tail */
                    break;
                }
                Seen s{seq, pos, first, rec.header().time_us, rec.kind(), false, false, false};
                bits.resize(bits.size() + words, 0);
                std::uint64_t *mask = &bits[bits.size() - words];
                rec.each_channel([&](unsigned i, std::string_view name) {
                    int k = channels_.find(rec.hash(i), name);
                    if (k >= 0) {
                        mask[k / 64] |= std::uint64_t(1) << (k % 64);
                        s.mine = true;
                    }
                });
                if (s.kind == RecordKind::Event) {
                    s.admitted = s.mine && rec.admits(client_id_);
                    s.id_match = !last_event_id.empty() && rec.has_id(last_event_id, seq_id);
                }
                block.push_back(s);
                pos += rec.header().length;
            }
            if (!torn)
                return first;
        }
        return hi; /* a writer kept overwriting this block: treat it as evicted */
    };

    std::vector<bool> closed(n_channels, false);
    std::vector<std::uint64_t> kept(n_channels, 0);
    std::vector<Seen> keep; /* newest first */
    Seen match_mine{}, match_any{};
    bool found_mine = false, found_any = false;
    auto satisfied = [&]() {
        for (std::size_t k = 0; k < n_channels; ++k)
            if (!closed[k] && kept[k] < limits.count)
                return false;
        return true;
    };
    bool collecting = !satisfied();

    std::uint64_t hi = st.next_seq;
    while (hi > st.tail_seq && !found_mine) {
        if (!collecting && !custom_ids) {
            /* Only the bus id itself can still match. */
            if (seq_id < st.tail_seq || seq_id >= hi)
                break;
            hi = seq_id + 1;
        }
        const std::uint64_t block_start = (hi - 1) / kIndexEvery * kIndexEvery;
        const std::uint64_t lo = std::max(st.tail_seq, block_start);
        /* A block whose filter has neither a subscribed channel (while collecting) nor the id
         * holds nothing for this resume: skip it unread. */
        std::uint64_t filter[kFilterWords], unused;
        if (!channels_.is_all() && h->indexed_block(block_start, &unused, &filter)) {
            bool may = (seq_id >= lo && seq_id < hi) || (custom_ids && id_key.in(filter));
            for (std::size_t k = 0; collecting && !may && k < n_channels; ++k)
                may = channel_keys[k].in(filter);
            if (!may) {
                hi = lo;
                continue;
            }
        }
        const std::uint64_t first = read_block(lo, hi);
        if (first == hi)
            break;
        for (std::size_t i = block.size(); i-- > 0 && !found_mine;) {
            const Seen &s = block[i];
            const std::uint64_t *mask = &bits[i * words];
            auto on = [&](std::size_t k) { return (mask[k / 64] >> (k % 64)) & 1; };
            if (s.kind == RecordKind::CloseChannels) {
                for (std::size_t k = 0; k < n_channels; ++k)
                    if (on(k))
                        closed[k] = true;
                continue;
            }
            if (s.kind != RecordKind::Event)
                continue;
            if (s.id_match) {
                if (s.mine) {
                    match_mine = s;
                    found_mine = true;
                    break;
                }
                if (!found_any)
                    match_any = s;
                found_any = true;
            }
            if (!collecting)
                continue;
            /* Times never decrease along seq: everything from here back is too old. */
            if (limits.max_age_s && s.time_us < oldest_us) {
                collecting = false;
                continue;
            }
            if (!s.admitted)
                continue;
            bool wanted = false;
            for (std::size_t k = 0; k < n_channels; ++k) {
                if (on(k) && !closed[k] && kept[k] < limits.count) {
                    ++kept[k];
                    wanted = true;
                }
            }
            if (wanted)
                keep.push_back(s);
            collecting = !satisfied();
        }
        hi = first;
    }

    std::atomic_thread_fence(std::memory_order_acquire);
    const std::uint64_t tail = h->snapshot().tail_seq;
    const Seen *match = found_mine ? &match_mine : found_any ? &match_any : nullptr;
    const bool found = match && match->chain >= tail;
    replay_.clear();
    for (auto it = keep.rbegin(); it != keep.rend(); ++it)
        if (it->chain >= tail && (!found || it->seq > match->seq))
            replay_.push_back({it->pos, it->seq});
    replay_next_ = 0;
    pos_ = st.head_pos;
    seq_ = st.next_seq;
    return found;
}

BusReader::Next BusReader::next(BusEvent *out)
{
    BusHeader *h = bus_.h_;
    RecordCopy v(scratch_);

    while (replay_next_ < replay_.size()) {
        Queued q = replay_[replay_next_++];
        bool ok = v.read(h, q.pos) && v.header().seq == q.seq;
        if (ok)
            v.copy_out(out);
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
        bool ok = v.read(h, pos) && v.header().seq == seq_;
        bool mine = false;
        if (ok) {
            v.each_channel([&](unsigned i, std::string_view name) {
                if (!mine && channels_.find(v.hash(i), name) >= 0)
                    mine = true;
            });
            mine = mine && (channels_.is_all() || v.admits(client_id_));
            if (mine)
                v.copy_out(out);
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
        pos_ = pos + v.header().length;
        ++seq_;
        if (mine)
            return Next::Event;
    }
}

} // namespace sse
