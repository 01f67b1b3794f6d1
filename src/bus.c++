#include "sse/bus.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <csignal>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <system_error>
#include <unistd.h>

namespace sse {

namespace {

constexpr std::uint32_t kBusMagic = 0x53534542;     /* "SSEB" */
/* 2: record kinds and audiences. 3: the seq index, monotonic record times. 4: the count of
 * readers asleep on the wake word. 5: Gap records, the newest gap in the committed state; the
 * interest slots (InterestSlot). */
constexpr std::uint32_t kLayoutVersion = 5;
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
    /* The seq after the newest Gap record (0: none): committed with the head, so a resume's
     * one snapshot tells both where live reading starts and whether a gap lies before it. */
    std::atomic<std::uint64_t> after_gap;
};

struct StateCopy {
    std::uint64_t head_pos, next_seq, tail_pos, tail_seq, after_gap;
};

struct RecordHeader {
    std::uint32_t magic;
    std::uint32_t length;      /* whole record, multiple of 8 */
    std::uint64_t seq;
    std::int64_t time_us;
    std::uint16_t n_channels;
    std::uint16_t id_len;      /* 0: the id is the decimal seq */
    std::uint16_t event_len;
    std::uint16_t kind;        /* RecordKind, | kHasTopics | kPrivateUpdate */
    std::uint32_t wire_len;
    std::uint16_t n_only;      /* audience: client ids (or stream serials for EndStream) */
    std::uint16_t n_except;
    /* then: uint32 hash[n]; uint8 name_len[n]; names;
     *       uint8 target_len[n_only + n_except]; targets; id; event; wire */
};
static_assert(sizeof(RecordHeader) == 40, "record header layout");
static_assert(InterestSlot::kSlots <= 64, "the asleep mask has a bit per interest slot");

/* Flags in RecordHeader::kind above the RecordKind. kHasTopics: the record holds a Mercure
 * update's topics between its event type and its wire (uint16 count, uint16 length each,
 * the bytes), so a record without them is laid out as in layout 3. */
constexpr std::uint16_t kKindMask = 0x00FF;
constexpr std::uint16_t kHasTopics = 0x0100;
constexpr std::uint16_t kPrivateUpdate = 0x0200;

/* The topics section's size: what record_length() and write_record() count alike. */
std::size_t topics_bytes(const UpdateTopics *t)
{
    if (!t)
        return 0;
    std::size_t n = 2 + 2 * t->topics.size();
    for (const auto &topic : t->topics)
        n += topic.size();
    return n;
}

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

/* One InterestSlot in the header. Its owner writes interest and read_pos only while its bit
 * in BusHeader::asleep is clear, then sets the bit (release): a publisher that reads the bit
 * set (acquire) reads what the owner wrote before. No alignas for cache lines: the shared
 * segment's base is only 8-byte aligned (apr_shm puts its own header first), so a type that
 * asks for more would sit misaligned (UBSan: "misaligned address ... requires 64 byte
 * alignment"); an owner writes its slot once per sleep, so sharing a line costs little. */
struct InterestSlotState {
    std::atomic<std::uint32_t> owner;     /* pid; 0: free */
    std::atomic<std::uint32_t> word;      /* futex the owner sleeps on; publishers change it */
    std::atomic<std::uint64_t> read_pos;  /* the owner's reader's ring position as it sleeps */
    std::atomic<std::uint64_t> interest[WakeInterest::kWords];
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
    /* Readers inside wait() or wait_or(), counted before the futex compares the word: a
     * publish that reads 0 here after bumping the word skips FUTEX_WAKE (see wake_all). A
     * reader killed while counted leaves it too high: spare wake-ups, never a lost one. */
    std::atomic<std::uint32_t> waiters;
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
    /* Bit i: interest slot i's owner may be asleep (InterestSlot::wait_or). */
    std::atomic<std::uint64_t> asleep;
    std::atomic<std::uint64_t> interest_woken, interest_spared;
    InterestSlotState interest_slots[InterestSlot::kSlots];

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
                        s.tail_seq.load(std::memory_order_relaxed),
                        s.after_gap.load(std::memory_order_relaxed)};
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
        s.after_gap.store(c.after_gap, std::memory_order_relaxed);
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
    StateCopy empty{0, first, 0, first, 0};
    h->version.store(0, std::memory_order_relaxed);
    for (auto &s : h->slot) {
        s.head_pos.store(empty.head_pos);
        s.next_seq.store(empty.next_seq);
        s.tail_pos.store(empty.tail_pos);
        s.tail_seq.store(empty.tail_seq);
        s.after_gap.store(empty.after_gap);
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
                           std::int64_t now_us, const Audience &audience,
                           const UpdateTopics *topics)
{
    return append(RecordKind::Event, channels, &fields, nullptr, audience, now_us, topics);
}

PublishResult Bus::publish_control(RecordKind kind, const std::vector<std::string> &channels,
                                   const Audience &audience, const std::string &notice,
                                   std::int64_t now_us)
{
    return append(kind, channels, nullptr, &notice, audience, now_us);
}

PublishResult Bus::publish_gap(const std::string &notice, std::int64_t now_us)
{
    return append(RecordKind::Gap, {}, nullptr, &notice, {}, now_us);
}

/* Test seam (t/unit/test_bus.c++ kills a writer here): called, when set, at three points inside
 * a publish while the lock is held: 0 after space is released, 1 after the record's bytes are
 * written, 2 after it is indexed and before it is committed. */
namespace bus_testing {
void (*inside_publish)(int step) = nullptr;
}

namespace {

/* What a record carries besides its channels and audience. An event gets the next seq as its
 * id unless the publisher gave one (then the id is stored in the record); a control record
 * has no id of its own on the wire, only its notice. */
struct RecordPayload {
    EventFields ev;
    std::string wire;
    bool bus_id = true;
    const UpdateTopics *topics = nullptr;
};

RecordPayload make_payload(const EventFields *fields, const std::string *notice,
                           std::uint64_t next_seq)
{
    RecordPayload p;
    if (fields) {
        p.ev = *fields;
        p.bus_id = p.ev.id.empty();
        if (p.bus_id)
            p.ev.id = std::to_string(next_seq);
        encode_event(p.ev, p.wire);
    } else {
        p.wire = *notice;
    }
    return p;
}

/* The record's size in the ring, padded to 8: the layout RecordHeader describes. */
std::size_t record_length(const std::vector<std::string> &channels, const Audience &audience,
                          const RecordPayload &p)
{
    std::size_t len = sizeof(RecordHeader);
    for (const auto &c : channels)
        len += sizeof(std::uint32_t) + 1 + c.size();
    for (const auto *list : {&audience.only, &audience.except})
        for (const auto &t : *list)
            len += 1 + t.size();
    len += (p.bus_id ? 0 : p.ev.id.size()) + p.ev.event.size() + topics_bytes(p.topics) +
           p.wire.size();
    return align8(len);
}

/* Where a record of `len` bytes goes when the head is at `head_pos`: never across the end of
 * the ring (readers copy a record in one piece), so when too little is left it starts at the
 * next lap, and the rest is marked as padding if a header fits there (locate() skips a rest
 * too short for one without being told). */
struct Placement {
    std::uint64_t start, end;
    std::uint64_t left; /* bytes from the head to the end of the ring */
    bool pad;
};

Placement place_record(std::uint64_t head_pos, std::uint64_t len, std::uint64_t ring_size)
{
    Placement at{head_pos, 0, ring_size - head_pos % ring_size, false};
    if (at.left < len) {
        at.pad = at.left >= sizeof(RecordHeader);
        at.start += at.left;
    }
    at.end = at.start + len;
    return at;
}

/* Writer only, lock held. Evicts the oldest records until [tail, end) fits in the ring, and
 * commits the new tail before the caller overwrites a byte of the evicted records: a reader
 * that then finds the tail past what it read knows the bytes it copied may be torn. Returns
 * the state to build on (the committed one when nothing was evicted). */
StateCopy release_space(BusHeader *h, const StateCopy &st, std::uint64_t end,
                        PublishResult &result)
{
    const std::uint64_t R = h->ring_size;
    StateCopy next = st;
    while (end - next.tail_pos > R && next.tail_seq < next.next_seq) {
        std::uint64_t at = h->locate(next.tail_pos);
        RecordHeader rh;
        std::memcpy(&rh, h->ring() + at % R, sizeof rh);
        next.tail_pos = at + rh.length;
        ++next.tail_seq;
        ++result.evicted;
    }
    if (result.evicted > 0) {
        h->commit(next);
        h->evicted.fetch_add(result.evicted, std::memory_order_relaxed);
    }
    return next;
}

/* Writer only, lock held, after release_space(): writes the padding (if any) and the record's
 * bytes beyond the committed head, where no reader looks until the commit. Returns the
 * record's time. */
std::int64_t write_record(BusHeader *h, std::uint64_t head_pos, const Placement &at,
                          std::uint64_t seq, std::int64_t now_us, RecordKind kind,
                          const std::vector<std::string> &channels, const Audience &audience,
                          const RecordPayload &payload)
{
    const std::uint64_t R = h->ring_size;
    if (at.pad) {
        RecordHeader ph{};
        ph.magic = kPaddingMagic;
        ph.length = static_cast<std::uint32_t>(at.left);
        std::memcpy(h->ring() + head_pos % R, &ph, sizeof ph);
    }

    const EventFields &ev = payload.ev;
    const std::string &wire = payload.wire;
    const bool bus_id = payload.bus_id;
    unsigned char *base = h->ring() + at.start % R;
    RecordHeader rh{};
    rh.magic = kRecordMagic;
    rh.length = static_cast<std::uint32_t>(at.end - at.start);
    rh.seq = seq;
    /* Under the lock and never before the previous record: the clock may step back, and
     * writers take `now_us` before they queue for the lock. */
    rh.time_us = std::max(now_us, h->last_time_us);
    rh.n_channels = static_cast<std::uint16_t>(channels.size());
    rh.id_len = static_cast<std::uint16_t>(bus_id ? 0 : ev.id.size());
    rh.event_len = static_cast<std::uint16_t>(ev.event.size());
    rh.kind = static_cast<std::uint16_t>(kind);
    if (payload.topics)
        rh.kind |= kHasTopics | (payload.topics->is_private ? kPrivateUpdate : 0);
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
    if (const UpdateTopics *t = payload.topics) {
        const auto count = static_cast<std::uint16_t>(t->topics.size());
        put(p, &count, sizeof count);
        for (const auto &topic : t->topics) {
            const auto len = static_cast<std::uint16_t>(topic.size());
            put(p, &len, sizeof len);
        }
        for (const auto &topic : t->topics)
            put(p, topic.data(), topic.size());
    }
    put(p, wire.data(), wire.size());
    return rh.time_us;
}

} // namespace

/* A publish, all under the writer lock, in this order (readers rely on it, see bus.h and
 * BusHeader): release space and commit the new tail; write the record beyond the head; index
 * it; commit the new head; wake the readers. A writer killed at any step leaves the committed
 * state whole. */
std::size_t Bus::event_record_bytes(const std::vector<std::string> &channels,
                                    const EventFields &ev, const Audience &audience,
                                    const UpdateTopics *topics) const
{
    RecordPayload payload = make_payload(&ev, nullptr, UINT64_MAX);
    payload.topics = topics;
    return record_length(channels, audience, payload);
}

PublishResult Bus::append(RecordKind kind, const std::vector<std::string> &channels,
                          const EventFields *fields, const std::string *notice,
                          const Audience &audience, std::int64_t now_us,
                          const UpdateTopics *topics)
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
    RecordPayload payload = make_payload(fields, notice, st.next_seq);
    payload.topics = topics;
    const bool bus_id = payload.bus_id;
    const std::size_t len = record_length(channels, audience, payload);
    if (len > max_record_bytes())
        throw EventTooLarge(len);
    const Placement at = place_record(st.head_pos, len, h_->ring_size);

    StateCopy next = release_space(h_, st, at.end, result);
    std::atomic_thread_fence(std::memory_order_release);
    if (bus_testing::inside_publish)
        bus_testing::inside_publish(0);

    const std::int64_t time_us = write_record(h_, st.head_pos, at, next.next_seq, now_us, kind,
                                              channels, audience, payload);
    if (bus_testing::inside_publish)
        bus_testing::inside_publish(1);

    result.seq = next.next_seq;
    result.id = bus_id ? std::to_string(next.next_seq) : payload.ev.id;
    next.head_pos = at.end;
    ++next.next_seq;
    if (next.tail_seq + 1 == next.next_seq)
        next.tail_pos = at.start; /* the bus was empty: this record is the oldest */
    if (kind == RecordKind::Gap)
        next.after_gap = next.next_seq;
    if (!bus_id)
        h_->newest_custom_id.store(result.seq + 1, std::memory_order_relaxed);
    h_->last_time_us = time_us;
    h_->index_record(result.seq, at.start, channels, bus_id ? nullptr : &payload.ev.id);
    if (bus_testing::inside_publish)
        bus_testing::inside_publish(2);
    h_->commit(next);
    h_->published.fetch_add(1, std::memory_order_relaxed);
    wake_word_sleepers();
    wake_interested(&channels, next.head_pos);
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
    s.after_gap = st.after_gap;
    s.waiters = h_->waiters.load(std::memory_order_relaxed);
    s.interest_asleep = static_cast<std::uint32_t>(
        __builtin_popcountll(h_->asleep.load(std::memory_order_relaxed)));
    s.interest_woken = h_->interest_woken.load(std::memory_order_relaxed);
    s.interest_spared = h_->interest_spared.load(std::memory_order_relaxed);
    return s;
}

std::uint32_t Bus::wake_word() const { return h_->wake_word.load(std::memory_order_acquire); }

namespace {

/* A reader counted in BusHeader::waiters for as long as it may sleep on the wake word. The
 * count is raised, then a full fence, before the kernel reads the word (wake_all() mirrors
 * it): of the two orders, either the publisher's read of the count comes after this store and
 * it wakes, or its bump of the word came before this reader's futex compares it and the
 * reader does not sleep (the store-buffering pattern, forbidden by the two fences). */
class CountedWaiter {
public:
    explicit CountedWaiter(std::atomic<std::uint32_t> &waiters) : waiters_(waiters)
    {
        waiters_.fetch_add(1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    ~CountedWaiter() { waiters_.fetch_sub(1, std::memory_order_relaxed); }
    CountedWaiter(const CountedWaiter &) = delete;
    CountedWaiter &operator=(const CountedWaiter &) = delete;

private:
    std::atomic<std::uint32_t> &waiters_;
};

} // namespace

void Bus::wait(std::uint32_t seen, int timeout_ms) const
{
    struct timespec ts;
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
    CountedWaiter counted(h_->waiters);
    /* Not FUTEX_PRIVATE_FLAG: the word is shared between processes. */
    syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&h_->wake_word), FUTEX_WAIT, seen, &ts,
            nullptr, 0);
}

bool Bus::wake_all() const
{
    const bool called = wake_word_sleepers();
    wake_interested(nullptr, 0);
    return called;
}

bool Bus::wake_word_sleepers() const
{
    /* The word changes first: a reader between wake_word() and wait() then finds it changed
     * and does not sleep (FUTEX_WAIT compares it atomically). Then the count of sleepers, after
     * a full fence (see CountedWaiter): with nobody counted, nobody sleeps on the old word, so
     * the system call is skipped (every publish while no process has a reader waiting). */
    h_->wake_word.fetch_add(1, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (h_->waiters.load(std::memory_order_relaxed) == 0)
        return false;
    syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&h_->wake_word), FUTEX_WAKE, INT_MAX,
            nullptr, nullptr, 0);
    return true;
}

namespace {

/* Sleeps on a word shared between processes and a LocalWake's word at once (futex_waitv).
 * False when the kernel cannot (ENOSYS, or a filter's EPERM). */
bool wait_two(std::atomic<std::uint32_t> &shared, std::uint32_t seen,
              const std::atomic<std::uint32_t> &local, std::uint32_t local_seen, int timeout_ms)
{
#ifdef SYS_futex_waitv
    struct futex_waitv w[2] = {};
    w[0].uaddr = reinterpret_cast<std::uintptr_t>(&shared);
    w[0].val = seen;
    w[0].flags = FUTEX_32; /* shared between processes */
    w[1].uaddr = reinterpret_cast<std::uintptr_t>(&local);
    w[1].val = local_seen;
    w[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    /* futex_waitv's timeout is a point in time on the clock it is given. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += static_cast<long>(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000L;
    }
    if (syscall(SYS_futex_waitv, w, 2, 0, &until, CLOCK_MONOTONIC) >= 0)
        return true;
    return errno == EAGAIN || errno == EINTR || errno == ETIMEDOUT;
#else
    (void)shared, (void)seen, (void)local, (void)local_seen, (void)timeout_ms;
    return false;
#endif
}

} // namespace

bool Bus::wait_or(std::uint32_t seen, const LocalWake &local, std::uint32_t local_seen,
                  int timeout_ms) const
{
    CountedWaiter counted(h_->waiters);
    return wait_two(h_->wake_word, seen, local.word_, local_seen, timeout_ms);
}

void Bus::wake_interested(const std::vector<std::string> *channels, std::uint64_t head_pos) const
{
    /* After the commit and the full fence of wake_word_sleepers() (see InterestSlot). */
    std::uint64_t asleep = h_->asleep.load(std::memory_order_acquire);
    if (asleep == 0)
        return;
    /* A record on more channels than an event may have (an EndStream of a stream on many)
     * wakes every sleeper: rare, and no allocation here. So does a record on none (a Gap):
     * it is for every stream, whatever its channels. */
    if (channels && (channels->empty() || channels->size() > kMaxChannelsPerEvent))
        channels = nullptr;
    std::uint32_t hashes[kMaxChannelsPerEvent];
    std::size_t n = 0;
    if (channels)
        for (const auto &c : *channels)
            hashes[n++] = ChannelSet::hash(c);
    std::uint64_t woken = 0, spared = 0;
    for (; asleep != 0; asleep &= asleep - 1) {
        const unsigned i = static_cast<unsigned>(__builtin_ctzll(asleep));
        InterestSlotState &slot = h_->interest_slots[i];
        bool wake = !channels || head_pos >= slot.read_pos.load(std::memory_order_relaxed) +
                                                 h_->ring_size / 2;
        for (std::size_t k = 0; k < n && !wake; ++k) {
            const FilterKey key = FilterKey::channel(hashes[k]);
            wake = (slot.interest[key.bit1 / 64].load(std::memory_order_relaxed) >>
                        (key.bit1 % 64) & 1) &&
                   (slot.interest[key.bit2 / 64].load(std::memory_order_relaxed) >>
                        (key.bit2 % 64) & 1);
        }
        if (!wake) {
            ++spared;
            continue;
        }
        /* The bit first, then the word: see InterestSlot. Only the one who cleared it wakes. */
        const std::uint64_t bit = std::uint64_t(1) << i;
        if ((h_->asleep.fetch_and(~bit, std::memory_order_seq_cst) & bit) == 0)
            continue;
        slot.word.fetch_add(1, std::memory_order_seq_cst);
        syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&slot.word), FUTEX_WAKE, 1, nullptr,
                nullptr, 0);
        ++woken;
    }
    if (woken)
        h_->interest_woken.fetch_add(woken, std::memory_order_relaxed);
    if (spared)
        h_->interest_spared.fetch_add(spared, std::memory_order_relaxed);
}

/* ---- WakeInterest ---- */

void WakeInterest::add(std::string_view channel)
{
    const FilterKey key = FilterKey::channel(ChannelSet::hash(channel));
    for (unsigned bit : {key.bit1, key.bit2})
        if (counts_[bit]++ == 0)
            words_[bit / 64] |= std::uint64_t(1) << (bit % 64);
}

void WakeInterest::remove(std::string_view channel)
{
    const FilterKey key = FilterKey::channel(ChannelSet::hash(channel));
    for (unsigned bit : {key.bit1, key.bit2})
        if (counts_[bit] > 0 && --counts_[bit] == 0)
            words_[bit / 64] &= ~(std::uint64_t(1) << (bit % 64));
}

bool WakeInterest::may_hold(std::string_view channel) const
{
    const FilterKey key = FilterKey::channel(ChannelSet::hash(channel));
    return (words_[key.bit1 / 64] >> (key.bit1 % 64) & 1) &&
           (words_[key.bit2 / 64] >> (key.bit2 % 64) & 1);
}

/* ---- InterestSlot ---- */

InterestSlot InterestSlot::claim(Bus bus)
{
    InterestSlot slot;
    const auto me = static_cast<std::uint32_t>(getpid());
    for (unsigned i = 0; i < kSlots; ++i) {
        InterestSlotState &st = bus.h_->interest_slots[i];
        std::uint32_t owner = st.owner.load(std::memory_order_acquire);
        const bool gone = owner != 0 && owner != me &&
                          kill(static_cast<pid_t>(owner), 0) != 0 && errno == ESRCH;
        if ((owner != 0 && !gone) ||
            !st.owner.compare_exchange_strong(owner, me, std::memory_order_acq_rel))
            continue;
        /* A killed owner may have left its bit set: a publish would wake nobody for it. */
        bus.h_->asleep.fetch_and(~(std::uint64_t(1) << i), std::memory_order_seq_cst);
        for (auto &w : st.interest)
            w.store(0, std::memory_order_relaxed);
        slot.h_ = bus.h_;
        slot.index_ = i;
        return slot;
    }
    return slot;
}

InterestSlot &InterestSlot::operator=(InterestSlot &&o) noexcept
{
    if (this != &o) {
        release();
        h_ = o.h_;
        index_ = o.index_;
        written_ = o.written_;
        o.h_ = nullptr;
    }
    return *this;
}

void InterestSlot::release()
{
    if (!h_)
        return;
    h_->asleep.fetch_and(~(std::uint64_t(1) << index_), std::memory_order_seq_cst);
    h_->interest_slots[index_].owner.store(0, std::memory_order_release);
    h_ = nullptr;
}

bool InterestSlot::wait_or(const BusReader &caught_up, const WakeInterest &interest,
                           const LocalWake &local, std::uint32_t local_seen, int timeout_ms)
{
    InterestSlotState &st = h_->interest_slots[index_];
    const std::uint64_t bit = std::uint64_t(1) << index_;
    const std::uint32_t seen = st.word.load(std::memory_order_seq_cst);
    for (unsigned w = 0; w < WakeInterest::kWords; ++w)
        if (written_[w] != interest.words()[w]) {
            written_[w] = interest.words()[w];
            st.interest[w].store(written_[w], std::memory_order_relaxed);
        }
    st.read_pos.store(caught_up.ring_position(), std::memory_order_relaxed);
    h_->asleep.fetch_or(bit, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool ok = true;
    if (h_->snapshot().next_seq == caught_up.position())
        ok = wait_two(st.word, seen, local.word_, local_seen, timeout_ms);
    h_->asleep.fetch_and(~bit, std::memory_order_seq_cst);
    return ok;
}

bool Bus::can_wait_or()
{
#ifdef SYS_futex_waitv
    /* A word that does not hold the value given: EAGAIN at once where the call works. */
    std::uint32_t word = 0;
    struct futex_waitv w = {};
    w.uaddr = reinterpret_cast<std::uintptr_t>(&word);
    w.val = 1;
    w.flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    return syscall(SYS_futex_waitv, &w, 1, 0, nullptr, 0) < 0 && errno == EAGAIN;
#else
    return false;
#endif
}

void LocalWake::wake()
{
    word_.fetch_add(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&word_), FUTEX_WAKE_PRIVATE, INT_MAX,
            nullptr, nullptr, 0);
}

void LocalWake::wait(std::uint32_t seen, int timeout_ms) const
{
    struct timespec ts;
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
    syscall(SYS_futex, reinterpret_cast<const std::uint32_t *>(&word_), FUTEX_WAIT_PRIVATE, seen,
            &ts, nullptr, 0);
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
        if (!take_topics(take, p, n))
            return false;
        wire_ = p;
        return p <= n; /* then wire_ + wire_len <= length: the wire lies in the record */
    }

    const RecordHeader &header() const { return h_; }
    RecordKind kind() const { return static_cast<RecordKind>(h_.kind & kKindMask); }

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
        out->id_from_bus = h_.id_len == 0;
        out->event.assign(view(event_, h_.event_len));
        out->wire.assign(reinterpret_cast<const char *>(rec_ + wire_), h_.wire_len);
        out->channels.clear();
        each_channel([&](unsigned, std::string_view name) { out->channels.emplace_back(name); });
        out->topics.clear();
        out->private_update = (h_.kind & kPrivateUpdate) != 0;
        std::size_t at = topics_;
        for (unsigned i = 0; i < n_topics_; ++i) {
            const std::size_t len = u16(topic_lens_ + 2 * i);
            out->topics.emplace_back(view(at, len));
            at += len;
        }
    }

private:
    unsigned n_targets() const { return unsigned(h_.n_only) + h_.n_except; }
    std::size_t u16(std::size_t at) const
    {
        std::uint16_t v;
        std::memcpy(&v, &buf_[at], sizeof v);
        return v;
    }
    /* The Mercure topics section, when the record has one (kHasTopics). */
    template <typename Take> bool take_topics(Take &take, std::size_t &p, std::size_t n)
    {
        n_topics_ = 0;
        if (!(h_.kind & kHasTopics))
            return true;
        const std::size_t count_at = take(2);
        if (p > n)
            return false;
        n_topics_ = static_cast<unsigned>(u16(count_at));
        topic_lens_ = take(2 * std::size_t(n_topics_));
        if (p > n)
            return false;
        std::size_t total = 0;
        for (unsigned i = 0; i < n_topics_; ++i)
            total += u16(topic_lens_ + 2 * i);
        topics_ = take(total);
        return p <= n;
    }
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
                event_ = 0, topic_lens_ = 0, topics_ = 0, wire_ = 0; /* offsets in the record */
    unsigned n_topics_ = 0;
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

namespace {

/* One resume's walk backwards from the head (see BusReader::start_after below): which
 * retained records it should replay, newest first, and which record matched the id. It reads
 * the ring without the lock, so what it returns is still to be checked against the tail. */
class ResumeWalk {
public:
    /* A record read by the walk: what the decision needs, so that the record's bytes (which a
     * writer may overwrite) are not looked at again. */
    struct Seen {
        std::uint64_t seq, pos, chain; /* chain: the first record of its block */
        std::int64_t time_us;
        RecordKind kind;
        bool mine, admitted, id_match;
    };

    ResumeWalk(BusHeader *h, const StateCopy &st, const ChannelSet &channels,
               std::string_view client_id, std::vector<unsigned char> &scratch,
               std::string_view last_event_id, const HistoryLimits &limits, std::int64_t now_us)
        : h_(h), st_(st), channels_(channels), client_id_(client_id), last_event_id_(last_event_id),
          limits_(limits), n_channels_(channels.size()), words_((n_channels_ + 63) / 64),
          seq_id_(as_seq_id(last_event_id)),
          /* Without a retained publisher-given id, only the record `seq_id` can match. */
          custom_ids_(h->newest_custom_id.load(std::memory_order_relaxed) > st.tail_seq),
          oldest_us_(limits.max_age_s
                         ? now_us - static_cast<std::int64_t>(limits.max_age_s) * 1000000
                         : 0),
          id_key_(FilterKey::id(ChannelSet::hash(last_event_id))), rec_(scratch),
          closed_(n_channels_, false), kept_(n_channels_, 0)
    {
        for (std::uint32_t hv : channels_.hashes())
            channel_keys_.push_back(FilterKey::channel(hv));
        collecting_ = !satisfied();
    }

    /* Walks from the head to the id, or until SSEHistory is met for every channel and
     * nothing further back can be the id, or to the tail. */
    void run()
    {
        std::uint64_t hi = st_.next_seq;
        while (hi > st_.tail_seq && !found_mine_) {
            if (!collecting_ && !custom_ids_) {
                /* Only the bus id itself can still match (and, until one is seen, an event
                 * SSEHistory leaves out must be looked for on the way). */
                if (seq_id_ < st_.tail_seq || seq_id_ >= hi)
                    break;
                if (left_out_)
                    hi = seq_id_ + 1;
            }
            const std::uint64_t block_start = (hi - 1) / kIndexEvery * kIndexEvery;
            const std::uint64_t lo = std::max(st_.tail_seq, block_start);
            if (nothing_for_us(block_start, lo, hi)) {
                hi = lo;
                continue;
            }
            const std::uint64_t first = read_block(lo, hi);
            if (first == hi)
                break;
            for (std::size_t i = block_.size(); i-- > 0 && !found_mine_;)
                take(block_[i], &bits_[i * words_]);
            hi = first;
        }
    }

    /* The newest match on a subscribed channel, else the newest on any channel, or nullptr. */
    const Seen *match() const
    {
        return found_mine_ ? &match_mine_ : found_any_ ? &match_any_ : nullptr;
    }
    /* What to replay, newest first. */
    const std::vector<Seen> &keep() const { return keep_; }
    /* Whether an event this subscriber would get, newer than `seq`, is left out of keep()
     * because SSEHistory (count or age) does not reach back to it. */
    bool left_out_after(std::uint64_t seq) const { return left_out_ && left_out_seq_ > seq; }

private:
    bool satisfied() const
    {
        for (std::size_t k = 0; k < n_channels_; ++k)
            if (!closed_[k] && kept_[k] < limits_.count)
                return false;
        return true;
    }

    static bool on(const std::uint64_t *mask, std::size_t k)
    {
        return (mask[k / 64] >> (k % 64)) & 1;
    }

    /* A block whose filter has neither a subscribed channel (while collecting) nor the id
     * holds nothing for this resume: it is skipped unread. [lo, hi) is the part still to
     * walk. False when the index no longer holds the block (or for a hub, which takes all). */
    bool nothing_for_us(std::uint64_t block_start, std::uint64_t lo, std::uint64_t hi)
    {
        std::uint64_t filter[kFilterWords], unused;
        if (channels_.is_all() || !h_->indexed_block(block_start, &unused, &filter))
            return false;
        bool may = (seq_id_ >= lo && seq_id_ < hi) || (custom_ids_ && id_key_.in(filter));
        for (std::size_t k = 0; (collecting_ || !left_out_) && !may && k < n_channels_; ++k)
            may = channel_keys_[k].in(filter);
        return !may;
    }

    /* Reads [lo, hi) into block_, oldest first, from the index entry for lo (lo a multiple of
     * kIndexEvery, or the tail) or an earlier one. Returns the first seq read, or hi when the
     * tail has passed hi. */
    std::uint64_t read_block(std::uint64_t lo, std::uint64_t hi)
    {
        for (int attempt = 0; attempt < 16; ++attempt) {
            block_.clear();
            bits_.clear();
            const StateCopy cur = h_->snapshot();
            if (cur.tail_seq >= hi)
                return hi;
            std::uint64_t first = std::max(lo, cur.tail_seq), pos = cur.tail_pos;
            while (first > cur.tail_seq && !h_->indexed_block(first, &pos))
                first = first - kIndexEvery > cur.tail_seq ? first - kIndexEvery : cur.tail_seq;
            if (first == cur.tail_seq)
                pos = cur.tail_pos;
            if (read_records(first, hi, pos))
                return first;
            /* evicted under us: again from the new tail */
        }
        return hi; /* a writer kept overwriting this block: treat it as evicted */
    }

    /* Reads the records [first, hi) starting at `pos`; false when one is not what the walk
     * expects there (a writer evicted and overwrote it). */
    bool read_records(std::uint64_t first, std::uint64_t hi, std::uint64_t pos)
    {
        for (std::uint64_t seq = first; seq < hi; ++seq) {
            pos = h_->locate(pos);
            if (!rec_.read(h_, pos) || rec_.header().seq != seq)
                return false;
            note(seq, pos, first);
            pos += rec_.header().length;
        }
        return true;
    }

    /* Adds the record just read to block_, with its subscribed channels in bits_. */
    void note(std::uint64_t seq, std::uint64_t pos, std::uint64_t first)
    {
        Seen s{seq, pos, first, rec_.header().time_us, rec_.kind(), false, false, false};
        bits_.resize(bits_.size() + words_, 0);
        std::uint64_t *mask = &bits_[bits_.size() - words_];
        rec_.each_channel([&](unsigned i, std::string_view name) {
            int k = channels_.find(rec_.hash(i), name);
            if (k >= 0) {
                mask[k / 64] |= std::uint64_t(1) << (k % 64);
                s.mine = true;
            }
        });
        if (s.kind == RecordKind::Event) {
            s.admitted = s.mine && rec_.admits(client_id_);
            s.id_match = !last_event_id_.empty() && rec_.has_id(last_event_id_, seq_id_);
        }
        block_.push_back(s);
    }

    /* Takes one record, newest first: a CloseChannels record closes its channels' history
     * for everything older; an event may be the id, and may be replayed. */
    void take(const Seen &s, const std::uint64_t *mask)
    {
        if (s.kind == RecordKind::CloseChannels) {
            for (std::size_t k = 0; k < n_channels_; ++k)
                if (on(mask, k))
                    closed_[k] = true;
            return;
        }
        if (s.kind != RecordKind::Event)
            return;
        if (s.id_match) {
            if (s.mine) {
                match_mine_ = s;
                found_mine_ = true;
                return;
            }
            if (!found_any_)
                match_any_ = s;
            found_any_ = true;
        }
        if (collecting_)
            collect(s, mask);
        else
            note_left_out(s, mask);
    }

    /* The newest event SSEHistory leaves out that this subscriber would get (an admitted
     * event of a channel whose history no close cut off). Walking newest first, the first
     * one seen is the newest. */
    void note_left_out(const Seen &s, const std::uint64_t *mask)
    {
        if (left_out_ || !s.admitted)
            return;
        for (std::size_t k = 0; k < n_channels_; ++k) {
            if (on(mask, k) && !closed_[k]) {
                left_out_ = true;
                left_out_seq_ = s.seq;
                return;
            }
        }
    }

    /* Keeps an event while some channel of it still wants events under SSEHistory. */
    void collect(const Seen &s, const std::uint64_t *mask)
    {
        /* Times never decrease along seq: everything from here back is too old. */
        if (limits_.max_age_s && s.time_us < oldest_us_) {
            collecting_ = false;
            note_left_out(s, mask);
            return;
        }
        if (!s.admitted)
            return;
        bool wanted = false;
        for (std::size_t k = 0; k < n_channels_; ++k) {
            if (on(mask, k) && !closed_[k] && kept_[k] < limits_.count) {
                ++kept_[k];
                wanted = true;
            }
        }
        if (wanted)
            keep_.push_back(s);
        else
            note_left_out(s, mask);
        collecting_ = !satisfied();
    }

    BusHeader *const h_;
    const StateCopy st_;
    const ChannelSet &channels_;
    const std::string_view client_id_, last_event_id_;
    const HistoryLimits &limits_;
    const std::size_t n_channels_, words_;
    const std::uint64_t seq_id_;
    const bool custom_ids_;
    const std::int64_t oldest_us_;
    const FilterKey id_key_;
    std::vector<FilterKey> channel_keys_;
    RecordCopy rec_;
    std::vector<Seen> block_;          /* the block being walked, oldest first */
    std::vector<std::uint64_t> bits_;  /* `words_` per record of block_: its subscribed channels */
    std::vector<bool> closed_;         /* per channel: a CloseChannels record was passed */
    std::vector<std::uint64_t> kept_;  /* per channel: events kept for replay */
    std::vector<Seen> keep_;           /* newest first */
    Seen match_mine_{}, match_any_{};
    bool found_mine_ = false, found_any_ = false;
    bool left_out_ = false;            /* see left_out_after() */
    std::uint64_t left_out_seq_ = 0;
    bool collecting_ = false;          /* SSEHistory is not met yet for some channel */
};

} // namespace

/* The ring is walked backwards from the head, a block of kIndexEvery records at a time (each
 * found through the seq index, read forwards, then taken newest first), so that a resume reads
 * what it replays and little more: it stops at the id, or once SSEHistory is satisfied for
 * every subscribed channel and nothing further back can be the id (ResumeWalk).
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
    ResumeWalk walk(h, st, channels_, client_id_, scratch_, last_event_id, limits, now_us);
    walk.run();

    std::atomic_thread_fence(std::memory_order_acquire);
    const std::uint64_t tail = h->snapshot().tail_seq;
    const ResumeWalk::Seen *match = walk.match();
    const bool found = match && match->chain >= tail;
    replay_.clear();
    for (auto it = walk.keep().rbegin(); it != walk.keep().rend(); ++it)
        if (it->chain >= tail && (!found || it->seq > match->seq))
            replay_.push_back({it->pos, it->seq});
    replay_next_ = 0;
    pos_ = st.head_pos;
    seq_ = st.next_seq;
    /* Found, but older than what SSEHistory replays, or than a gap before the position: some
     * event between may be lost to this client too. */
    return found && !walk.left_out_after(match->seq) && match->seq >= st.after_gap;
}

void BusReader::start_earliest(const HistoryLimits &limits, std::int64_t now_us)
{
    start_after(std::string_view("\n", 1), limits, now_us);
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
        if (ok && v.kind() == RecordKind::Gap) {
            mine = true; /* every stream's, whatever its channels */
            v.copy_out(out);
        } else if (ok) {
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
