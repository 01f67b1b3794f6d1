#include "sse/registry.h"

#include "sse/bus.h" /* ChannelSet::hash */

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <map>
#include <pthread.h>
#include <stdexcept>
#include <system_error>

namespace sse {

namespace {

constexpr std::uint32_t kRegistryMagic = 0x53534552 ^ 0x00520000; /* distinct from the bus */
constexpr std::uint32_t kRegistryVersion = 6; /* 6: slots_taken */

/* Processes the parent noted gone and no process has reaped yet (see note_gone()). */
constexpr unsigned kGoneNotes = 64;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::int32_t>::is_always_lock_free,
              "the registry's lock-free fields need lock-free atomics (libatomic's locks are per "
              "process)");

enum : std::uint32_t { kSlotFree = 0, kSlotLive = 1 };
enum : std::uint32_t { kEntryFree = 0, kEntryUsed = 1 };
constexpr std::uint32_t kNone = 0xffffffffu; /* no entry, no index cell */

struct Slot {
    std::uint32_t state;
    std::int32_t pid;
    std::uint64_t serial;
    std::uint8_t id_len;
    std::uint8_t remote_len;
    std::uint16_t n_channels;
    std::uint32_t note_len; /* its note's bytes, in RegistryHeader::notes() */
    char client_id[kMaxClientIdBytes];
    char remote[kMaxRemoteBytes + 1];
    std::uint32_t channel[kMaxChannelsPerEvent]; /* entry indices */
};

/* The idle lists an entry can be on (see RegistryHeader::refresh()). */
enum : std::uint32_t { kListNone = 0, kListUnpublished = 1, kListPublished = 2 };

struct ChannelEntry {
    std::uint32_t state;
    std::uint32_t hash;
    std::uint64_t subscribers;
    std::uint64_t published;
    std::int64_t retry_ms;
    std::int64_t retry_set_us;
    std::int64_t last_used_us;
    std::uint32_t closed;
    std::uint32_t name_len;
    /* Derived (rebuilt by repair()): which idle list holds the entry, and its neighbours
     * there (entry indices, kNone at the ends). */
    std::uint32_t list, prev, next, reserved;
    char name[kMaxChannelNameBytes + 1];
};

/* A cell of the hash index: the entry (index + 1; 0: empty) and its name's hash. */
struct IndexCell {
    std::uint32_t ref;
    std::uint32_t hash;
};

/* An idle list: entries without subscribers that are not closed, least recently used first. */
struct IdleList {
    std::uint32_t head, tail, length;
};

/* The store that makes a record count (a slot live, an entry used or free). Release order:
 * everything the locker wrote before it is in memory first, so a locker killed at any point
 * (kill -9 leaves memory as the compiled stores left it) leaves either the old record or the
 * complete new one. */
void commit(std::uint32_t &state, std::uint32_t value)
{
    __atomic_store_n(&state, value, __ATOMIC_RELEASE);
}

std::atomic<RegistryTestHook> test_hook{nullptr};

void test_point(RegistryPoint at)
{
    if (RegistryTestHook hook = test_hook.load(std::memory_order_relaxed))
        hook(at);
}

bool process_gone(int pid) { return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH; }

struct GoneNote {
    std::atomic<std::int32_t> pid;
    std::atomic<std::uint64_t> serial_bound; /* its slots have serials below this */
};

std::size_t align64(std::size_t n) { return (n + 63) & ~static_cast<std::size_t>(63); }

/* Cells of the hash index: at least twice the entries (load at most 1/2: short probes). */
std::uint32_t index_size_for(std::uint32_t max_channels)
{
    std::uint32_t n = 16;
    while (n < 2 * max_channels)
        n *= 2;
    return n;
}

} // namespace

struct RegistryHeader {
    std::uint32_t magic;
    std::uint32_t version;
    std::uint64_t total_size;
    std::uint32_t max_subscribers;
    std::uint32_t max_channels;
    std::uint32_t index_size;
    std::uint32_t free_top;       /* entries on the free stack */
    std::uint32_t high_water;     /* slots [0, high_water) have ever been used */
    std::uint32_t live_channels;  /* used entries */
    std::uint32_t entry_free_top; /* entries on the entry free stack */
    std::uint32_t entry_high;     /* entries [0, entry_high) have ever been used */
    std::uint32_t unpublished;    /* used entries neither published to nor closed */
    std::atomic<std::uint32_t> max_unpublished; /* set at each configuration load */
    IdleList idle[3];             /* [kListUnpublished], [kListPublished]; [0] unused */
    std::atomic<std::uint64_t> next_serial; /* written under the lock; note_gone() reads it */
    std::uint64_t dropped_channels;
    std::uint64_t refused_unpublished; /* joins refused by the unpublished share */
    /* The newest use stamp given (stamp()): the LRU order's clock, which never goes back. */
    std::int64_t last_stamp_us;
    std::atomic<std::uint64_t> socket_clients;
    /* Live slots freed by someone other than their stream (a replacing join), counted after
     * the release; a holder killed between the two leaves the count to repair(). Lock-free
     * readers (Registry::slots_taken()) walk their streams' slots only when it moved. */
    std::atomic<std::uint64_t> slots_taken;
    /* Lock-free, written by the parent (note_gone), emptied under the lock (drain_gone). */
    std::atomic<std::uint64_t> gone_mask;     /* bit i: gone[i] names a process to reap */
    std::atomic<std::uint32_t> gone_overflow; /* a note found no free cell */
    GoneNote gone[kGoneNotes];
    pthread_mutex_t lock;
    std::uint64_t free_offset, slots_offset, entry_free_offset, entries_offset, index_offset,
        notes_offset;

    std::uint32_t *free_stack() { return reinterpret_cast<std::uint32_t *>(base() + free_offset); }
    Slot *slots() { return reinterpret_cast<Slot *>(base() + slots_offset); }
    std::uint32_t *entry_free() { return reinterpret_cast<std::uint32_t *>(base() + entry_free_offset); }
    ChannelEntry *entries() { return reinterpret_cast<ChannelEntry *>(base() + entries_offset); }
    IndexCell *index() { return reinterpret_cast<IndexCell *>(base() + index_offset); }
    /* Slot i's note: kMaxSlotNoteBytes at notes() + i * kMaxSlotNoteBytes, apart from the
     * slots so that a stream without a note never touches these pages. */
    char *note(std::uint32_t slot) { return reinterpret_cast<char *>(base() + notes_offset) + std::size_t(slot) * kMaxSlotNoteBytes; }
    unsigned char *base() { return reinterpret_cast<unsigned char *>(this); }

    std::string_view name(const ChannelEntry &e) const { return {e.name, e.name_len}; }
    static bool is_unpublished(const ChannelEntry &e) { return e.published == 0 && !e.closed; }
    std::uint32_t unpublished_cap() const
    {
        return std::min(max_unpublished.load(std::memory_order_relaxed), max_channels);
    }

    /* ---- the hash index (derived from the entries: repair() rebuilds it) ---- */

    /* The index cell of `name`, or kNone. */
    std::uint32_t find_cell(std::string_view name_, std::uint32_t hv)
    {
        const std::uint32_t mask = index_size - 1;
        for (std::uint32_t at = hv & mask;; at = (at + 1) & mask) {
            const IndexCell &c = index()[at];
            if (c.ref == 0)
                return kNone; /* load <= 1/2: an empty cell is always reached */
            if (c.hash == hv && name(entries()[c.ref - 1]) == name_)
                return at;
        }
    }

    /* Index of the entry for `name`, or kNone when absent. */
    std::uint32_t find(std::string_view name_)
    {
        const std::uint32_t cell = find_cell(name_, ChannelSet::hash(name_));
        return cell == kNone ? kNone : index()[cell].ref - 1;
    }

    void index_insert(std::uint32_t entry)
    {
        const std::uint32_t hv = entries()[entry].hash;
        const std::uint32_t mask = index_size - 1;
        std::uint32_t at = hv & mask;
        while (index()[at].ref != 0)
            at = (at + 1) & mask;
        index()[at] = IndexCell{entry + 1, hv};
    }

    /* Removes a cell without a tombstone (backward shift): the cells after it that the gap
     * would cut from their home move back, so lookups stay as short as at first however many
     * channels come and go. Several stores: a locker killed in here leaves the index to
     * repair(), which rebuilds it from the entries. */
    void index_erase(std::uint32_t gap)
    {
        const std::uint32_t mask = index_size - 1;
        for (std::uint32_t at = (gap + 1) & mask; index()[at].ref != 0; at = (at + 1) & mask) {
            const std::uint32_t home = index()[at].hash & mask;
            /* The cell stays when its home is cyclically in (gap, at]. */
            const bool stays = gap <= at ? (gap < home && home <= at) : (gap < home || home <= at);
            if (stays)
                continue;
            index()[gap] = index()[at];
            gap = at;
            test_point(RegistryPoint::IndexShifted);
        }
        index()[gap] = IndexCell{0, 0};
    }

    /* ---- idle lists: O(1) least-recently-used order ---- */

    void unlink(std::uint32_t i)
    {
        ChannelEntry &e = entries()[i];
        if (e.list == kListNone)
            return;
        IdleList &l = idle[e.list];
        (e.prev == kNone ? l.head : entries()[e.prev].next) = e.next;
        (e.next == kNone ? l.tail : entries()[e.next].prev) = e.prev;
        --l.length;
        e.list = kListNone;
    }

    void link_tail(std::uint32_t i, std::uint32_t list)
    {
        ChannelEntry &e = entries()[i];
        IdleList &l = idle[list];
        e.list = list;
        e.prev = l.tail;
        e.next = kNone;
        (l.tail == kNone ? l.head : entries()[l.tail].next) = i;
        l.tail = i;
        ++l.length;
    }

    /* The time of a use at `now_us` for the LRU order: later than every stamp given before,
     * whatever the clock says. A wall clock stepped back (or a caller's older reading) would
     * otherwise make the newest use look the oldest: the next drop would pick it, and
     * repair() would rebuild the idle lists in that order. */
    std::int64_t stamp(std::int64_t now_us)
    {
        last_stamp_us = std::max(now_us, last_stamp_us + 1);
        return last_stamp_us;
    }

    /* After any change to an entry (its subscribers, closed, published) at `now_us`: it is
     * the most recently used, and on the idle list of its kind when it can be dropped (no
     * subscribers, not closed: a closed channel is kept until a publish reopens it). */
    void refresh(std::uint32_t i, std::int64_t now_us)
    {
        ChannelEntry &e = entries()[i];
        e.last_used_us = stamp(now_us);
        unlink(i);
        if (e.subscribers == 0 && !e.closed)
            link_tail(i, is_unpublished(e) ? kListUnpublished : kListPublished);
    }

    /* An entry becomes a publisher's (a publish or a DELETE): it leaves the share. */
    void mark_published(ChannelEntry &e)
    {
        if (is_unpublished(e) && unpublished > 0)
            --unpublished;
    }

    /* ---- entries ---- */

    /* The head of an idle list, unless it is one of `pins`: those were refresh()ed last, so
     * when the head is pinned every entry of the list is. */
    std::uint32_t head(std::uint32_t list, const std::vector<std::uint32_t> &pins)
    {
        const std::uint32_t at = idle[list].head;
        return std::find(pins.begin(), pins.end(), at) == pins.end() ? at : kNone;
    }

    /* Drops the least recently used entry of `list` (or of either, the older head, for
     * kListNone), other than `pins`. False when there is none. */
    bool drop_one(std::uint32_t list, const std::vector<std::uint32_t> &pins)
    {
        std::uint32_t victim = kNone;
        if (list != kListNone) {
            victim = head(list, pins);
        } else {
            const std::uint32_t u = head(kListUnpublished, pins), p = head(kListPublished, pins);
            victim = u == kNone ? p
                     : p == kNone ? u
                     : entries()[p].last_used_us < entries()[u].last_used_us ? p : u;
        }
        if (victim == kNone)
            return false;
        ChannelEntry &e = entries()[victim];
        const std::uint32_t cell = find_cell(name(e), e.hash);
        unlink(victim);
        if (is_unpublished(e))
            --unpublished;
        commit(e.state, kEntryFree);
        test_point(RegistryPoint::EntryDropped);
        if (cell != kNone)
            index_erase(cell);
        entry_free()[entry_free_top++] = victim;
        --live_channels;
        ++dropped_channels;
        return true;
    }

    /* A new entry for `name_` (absent), made room for as the caller decided: `unpublished_`
     * entries first drop one of their own kind when the share is taken, then any entry when
     * the table is full. kNone when no entry can be dropped. Not on an idle list: the caller
     * counts its subscriber or publish, then refresh()es it. `pins` are never dropped. */
    std::uint32_t create(std::string_view name_, bool unpublished_, std::int64_t now_us,
                         const std::vector<std::uint32_t> &pins = {})
    {
        if (unpublished_ && unpublished >= unpublished_cap()) {
            if (!drop_one(kListUnpublished, pins))
                return kNone;
        } else if (live_channels >= max_channels && !drop_one(kListNone, pins)) {
            return kNone;
        }
        const std::uint32_t at = entry_free_top > 0 ? entry_free()[--entry_free_top] : entry_high;
        ChannelEntry &e = entries()[at];
        e.hash = ChannelSet::hash(name_);
        e.subscribers = 0;
        e.published = 0;
        e.retry_ms = -1;
        e.retry_set_us = 0;
        e.last_used_us = stamp(now_us);
        e.closed = 0;
        e.list = kListNone;
        e.prev = e.next = kNone;
        e.name_len = static_cast<std::uint32_t>(name_.size());
        std::memcpy(e.name, name_.data(), name_.size());
        /* Before the commit: a used entry is always below entry_high. */
        entry_high = std::max(entry_high, at + 1);
        test_point(RegistryPoint::EntryWritten);
        commit(e.state, kEntryUsed);
        index_insert(at);
        ++live_channels;
        if (unpublished_)
            ++unpublished;
        return at;
    }

    SubscriberInfo info(const Slot &s)
    {
        SubscriberInfo out;
        out.serial = s.serial;
        out.pid = s.pid;
        out.client_id.assign(s.client_id, s.id_len);
        out.remote.assign(s.remote, s.remote_len);
        out.note.assign(note(static_cast<std::uint32_t>(&s - slots())), s.note_len);
        for (unsigned i = 0; i < s.n_channels; ++i)
            out.channels.emplace_back(name(entries()[s.channel[i]]));
        return out;
    }

    /* Frees a live slot: counts down its channels, pushes it on the free stack. */
    SubscriberInfo release(std::uint32_t index_, std::int64_t now_us)
    {
        Slot &s = slots()[index_];
        SubscriberInfo out = info(s);
        for (unsigned i = 0; i < s.n_channels; ++i) {
            ChannelEntry &e = entries()[s.channel[i]];
            if (e.subscribers > 0)
                --e.subscribers;
            refresh(s.channel[i], now_us);
        }
        commit(s.state, kSlotFree);
        free_stack()[free_top++] = index_;
        return out;
    }

    /* Slots a join can take: freed ones below high_water, and the never-used ones above. */
    std::uint32_t free_slots() const { return free_top + (max_subscribers - high_water); }

    /* The next slot for a join (free_slots() > 0): a freed one, else the first never used
     * (high_water moves past it when the slot is committed). */
    std::uint32_t take_slot() { return free_top > 0 ? free_stack()[--free_top] : high_water; }

    /* Frees the slots of every process that no longer exists (kill(pid, 0)). */
    void release_dead(std::int64_t now_us, std::vector<SubscriberInfo> &out)
    {
        std::map<int, bool> dead;
        for (std::uint32_t i = 0; i < high_water; ++i) {
            const Slot &s = slots()[i];
            if (s.state != kSlotLive)
                continue;
            auto it = dead.find(s.pid);
            if (it == dead.end())
                it = dead.emplace(s.pid, process_gone(s.pid)).first;
            if (it->second)
                out.push_back(release(i, now_us));
        }
    }

    /* Frees the slots of the processes note_gone() named, and of every process that is gone
     * when a note found no room. */
    std::vector<SubscriberInfo> drain_gone(std::int64_t now_us)
    {
        std::vector<SubscriberInfo> out;
        const std::uint64_t mask = gone_mask.load(std::memory_order_acquire);
        for (unsigned n = 0; n < kGoneNotes; ++n) {
            const std::uint64_t bit = std::uint64_t(1) << n;
            if (!(mask & bit))
                continue;
            const int pid = gone[n].pid.load(std::memory_order_relaxed);
            const std::uint64_t bound = gone[n].serial_bound.load(std::memory_order_relaxed);
            for (std::uint32_t i = 0; i < high_water; ++i) {
                const Slot &s = slots()[i];
                /* The bound keeps a later process that got the same pid out of it. */
                if (s.state == kSlotLive && s.pid == pid && s.serial < bound)
                    out.push_back(release(i, now_us));
            }
            /* A locker killed before this store leaves the note: the next one frees nothing
             * more for it. */
            gone_mask.fetch_and(~bit, std::memory_order_release);
        }
        if (gone_overflow.load(std::memory_order_acquire)) {
            gone_overflow.store(0, std::memory_order_relaxed);
            release_dead(now_us, out);
        }
        return out;
    }

    /* After a holder died mid-update: rebuild everything derived from the slots' and the
     * entries' states (each changed by one committing store): the free stacks, the counts,
     * the hash index and the idle lists (in last-use order). Allocates nothing and throws
     * nothing (it runs with the lock owned but not yet consistent). Linear in the tables, once per
     * holder killed. */
    void repair() noexcept
    {
        /* The dead holder may have been a replacing join killed after it freed live slots
         * and before it counted them. */
        slots_taken.fetch_add(1, std::memory_order_release);
        free_top = 0;
        entry_free_top = 0;
        live_channels = 0;
        unpublished = 0;
        for (IdleList &l : idle)
            l = IdleList{kNone, kNone, 0};
        std::memset(static_cast<void *>(index()), 0, sizeof(IndexCell) * std::size_t(index_size));
        for (std::uint32_t i = entry_high; i-- > 0;) {
            ChannelEntry &e = entries()[i];
            if (e.state != kEntryUsed) {
                entry_free()[entry_free_top++] = i;
                continue;
            }
            e.subscribers = 0;
            e.list = kListNone;
            index_insert(i);
            ++live_channels;
            if (is_unpublished(e))
                ++unpublished;
        }
        /* A live slot is always below high_water (it moves before the commit). */
        for (std::uint32_t i = high_water; i-- > 0;) {
            Slot &s = slots()[i];
            if (s.state == kSlotLive) {
                for (unsigned k = 0; k < s.n_channels; ++k)
                    ++entries()[s.channel[k]].subscribers;
            } else {
                free_stack()[free_top++] = i;
            }
        }
        /* The used entries in last-use order, sorted in place in the entry free stack's
         * unused tail: free + used entries = entry_high <= max_channels cells. Nothing is
         * allocated: repair runs while this process owns the lock, and a throw here would
         * leave it owned and inconsistent, every other process waiting forever. */
        std::uint32_t *const by_last_use = entry_free() + entry_free_top;
        std::uint32_t used = 0;
        for (std::uint32_t i = 0; i < entry_high; ++i)
            if (entries()[i].state == kEntryUsed)
                by_last_use[used++] = i;
        std::sort(by_last_use, by_last_use + used, [this](std::uint32_t a, std::uint32_t b) {
            const std::int64_t ta = entries()[a].last_used_us, tb = entries()[b].last_used_us;
            return ta != tb ? ta < tb : a < b;
        });
        for (std::uint32_t k = 0; k < used; ++k)
            refresh(by_last_use[k], entries()[by_last_use[k]].last_used_us);
    }
};

namespace {

class Locked {
public:
    enum Mode { Wait, TryOnly };
    explicit Locked(RegistryHeader *h, Mode mode = Wait) : h_(h)
    {
        int rc = mode == Wait ? pthread_mutex_lock(&h_->lock) : pthread_mutex_trylock(&h_->lock);
        if (rc == EOWNERDEAD) {
            h_->repair();
            pthread_mutex_consistent(&h_->lock);
        } else if (rc == EBUSY && mode == TryOnly) {
            h_ = nullptr;
        } else if (rc != 0) {
            throw std::system_error(rc, std::generic_category(), "registry lock");
        }
    }
    ~Locked()
    {
        if (h_)
            pthread_mutex_unlock(&h_->lock);
    }
    bool held() const { return h_ != nullptr; }
    Locked(const Locked &) = delete;
    Locked &operator=(const Locked &) = delete;

private:
    RegistryHeader *h_;
};

/* For the channel table's least-recently-used order only. */
std::int64_t wall_us()
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return std::int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

} // namespace

std::size_t Registry::bytes_needed(std::uint32_t max_subscribers, std::uint32_t max_channels)
{
    return align64(sizeof(RegistryHeader)) + align64(sizeof(std::uint32_t) * max_subscribers) +
           align64(sizeof(Slot) * max_subscribers) +
           align64(sizeof(std::uint32_t) * max_channels) +
           align64(sizeof(ChannelEntry) * max_channels) +
           align64(sizeof(IndexCell) * index_size_for(max_channels)) +
           std::size_t(kMaxSlotNoteBytes) * max_subscribers;
}

std::string Registry::format(void *mem, std::size_t size, std::uint32_t max_subscribers,
                             std::uint32_t max_channels)
{
    if (max_subscribers == 0 || max_channels == 0)
        return "the registry needs room for at least one subscriber and one channel";
    if (size < bytes_needed(max_subscribers, max_channels))
        return "the registry needs " + std::to_string(bytes_needed(max_subscribers, max_channels)) +
               " bytes";
    auto *h = static_cast<RegistryHeader *>(mem);
    std::memset(static_cast<void *>(h), 0, sizeof *h);
    h->total_size = size;
    h->max_subscribers = max_subscribers;
    h->max_channels = max_channels;
    h->max_unpublished = max_channels;
    h->index_size = index_size_for(max_channels);
    for (IdleList &l : h->idle)
        l = IdleList{kNone, kNone, 0};
    h->free_offset = align64(sizeof(RegistryHeader));
    h->slots_offset = h->free_offset + align64(sizeof(std::uint32_t) * max_subscribers);
    h->entry_free_offset = h->slots_offset + align64(sizeof(Slot) * max_subscribers);
    h->entries_offset = h->entry_free_offset + align64(sizeof(std::uint32_t) * max_channels);
    h->index_offset = h->entries_offset + align64(sizeof(ChannelEntry) * max_channels);
    h->notes_offset = h->index_offset + align64(sizeof(IndexCell) * h->index_size);
    h->next_serial = 1;
    /* Nothing past the header is written: zero is a free slot, a free entry and an empty
     * index cell, slots and entries at and above their high-water marks are taken in order
     * before the free stacks exist for them, so the pages of the stacks, the slots, the
     * entries and the index are touched only when used (1,000,000 subscribers and channels:
     * 1.1 GB of RSS in the parent when they were cleared here). */

    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0)
        return std::string("cannot create the registry lock: ") + std::strerror(rc);
    h->version = kRegistryVersion;
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = kRegistryMagic;
    return {};
}

Registry Registry::attach(void *mem, std::size_t size, std::string *err)
{
    auto *h = static_cast<RegistryHeader *>(mem);
    if (size < sizeof(RegistryHeader) || h->magic != kRegistryMagic) {
        *err = "no registry in this memory";
        return Registry();
    }
    if (h->version != kRegistryVersion) {
        *err = "the registry has layout version " + std::to_string(h->version) +
               ", this module uses " + std::to_string(kRegistryVersion);
        return Registry();
    }
    if (h->total_size != size) {
        *err = "the registry is " + std::to_string(h->total_size) + " bytes, expected " +
               std::to_string(size);
        return Registry();
    }
    return Registry(h);
}

void Registry::set_max_unpublished(std::uint32_t n)
{
    h_->max_unpublished.store(std::max<std::uint32_t>(n, 1), std::memory_order_relaxed);
}

std::uint32_t Registry::max_channels() const { return h_->max_channels; }

std::uint32_t Registry::max_unpublished() const { return h_->unpublished_cap(); }

Registry::Join Registry::join(int pid, std::string_view client_id, std::string_view remote,
                              const std::vector<std::string> &channels, DuplicatePolicy policy,
                              std::int64_t now_us, std::string_view note)
{
    if (note.size() > kMaxSlotNoteBytes)
        throw std::invalid_argument("registry: a slot's note is longer than kMaxSlotNoteBytes");
    Locked lock(h_);
    test_point(RegistryPoint::JoinLocked);
    Join j;
    j.reaped = h_->drain_gone(now_us);
    /* Decide first, change after: a join that fails frees no live stream's slot. */
    std::vector<std::uint32_t> duplicates;
    if (!client_id.empty() && policy != DuplicatePolicy::Allow) {
        for (std::uint32_t i = 0; i < h_->high_water; ++i) {
            Slot &s = h_->slots()[i];
            if (s.state != kSlotLive || std::string_view(s.client_id, s.id_len) != client_id)
                continue;
            if (process_gone(s.pid)) {
                j.reaped.push_back(h_->release(i, now_us));
            } else if (policy == DuplicatePolicy::Reject) {
                j.outcome = Join::Outcome::Duplicate;
                return j;
            } else {
                duplicates.push_back(i);
            }
        }
    }
    if (h_->free_slots() + duplicates.size() == 0) {
        j.outcome = Join::Outcome::Full;
        return j;
    }
    const std::size_t n = std::min(channels.size(), kMaxChannelsPerEvent);
    std::vector<std::uint32_t> refs(n, kNone);
    std::size_t missing = 0;
    for (std::size_t i = 0; i < n; ++i) {
        refs[i] = h_->find(channels[i]);
        if (refs[i] == kNone &&
            std::find(channels.begin(), channels.begin() + i, channels[i]) == channels.begin() + i)
            ++missing;
    }
    if (missing > 0) {
        /* The idle entries that could be dropped once the replaced streams are released and
         * this join's own entries are counted (an entry this join uses is never dropped to
         * make room for another of its channels: the slot would point at a reused entry).
         * Only the entries these touch change, so this costs O(channels), not O(table). */
        std::map<std::uint32_t, std::int64_t> change; /* entry -> subscribers added */
        for (std::uint32_t i : duplicates)
            for (unsigned k = 0; k < h_->slots()[i].n_channels; ++k)
                --change[h_->slots()[i].channel[k]];
        for (std::uint32_t r : refs)
            if (r != kNone)
                ++change[r];
        std::int64_t avail[3] = {0, h_->idle[kListUnpublished].length,
                                 h_->idle[kListPublished].length};
        for (const auto &[at, d] : change) {
            const ChannelEntry &e = h_->entries()[at];
            const std::uint32_t kind = RegistryHeader::is_unpublished(e) ? kListUnpublished
                                                                         : kListPublished;
            const bool idle_now = e.subscribers == 0 && !e.closed;
            const bool idle_after = std::int64_t(e.subscribers) + d <= 0 && !e.closed;
            avail[kind] += std::int64_t(idle_after) - std::int64_t(idle_now);
        }
        const std::int64_t m = std::int64_t(missing);
        const std::int64_t need_table = std::int64_t(h_->live_channels) + m - h_->max_channels;
        const std::int64_t need_share = std::int64_t(h_->unpublished) + m - h_->unpublished_cap();
        if (need_table > avail[kListUnpublished] + avail[kListPublished])
            j.outcome = Join::Outcome::TooManyChannels;
        else if (need_share > avail[kListUnpublished])
            j.outcome = Join::Outcome::TooManyUnpublished;
        if (j.outcome != Join::Outcome::Joined) {
            if (j.outcome == Join::Outcome::TooManyUnpublished)
                ++h_->refused_unpublished;
            return j;
        }
    }
    {
        /* Counted after the releases (a reader that sees the count sees them), and also when
         * one throws (its info() allocates before it commits) after another was committed:
         * the stream of a slot freed and not counted would be told only by a later count. */
        struct CountTaken {
            std::atomic<std::uint64_t> &count;
            bool freed = false;
            ~CountTaken()
            {
                if (freed)
                    count.fetch_add(1, std::memory_order_release);
            }
        } taken{h_->slots_taken};
        j.replaced.reserve(duplicates.size()); /* the moves below cannot throw */
        for (std::uint32_t i : duplicates) {
            SubscriberInfo info = h_->release(i, now_us);
            taken.freed = true;
            j.replaced.push_back(std::move(info));
        }
    }
    /* The entries found count this stream first: counted, they are off the idle lists, so
     * making room for the new ones cannot drop them. */
    for (std::uint32_t r : refs)
        if (r != kNone) {
            ++h_->entries()[r].subscribers;
            h_->refresh(r, now_us);
        }
    for (std::size_t i = 0; i < n; ++i) {
        if (refs[i] != kNone)
            continue; /* found before: counted above */
        refs[i] = h_->find(channels[i]); /* named twice: made just above */
        if (refs[i] == kNone)
            refs[i] = h_->create(channels[i], true, now_us);
        if (refs[i] == kNone) /* the room was counted above */
            throw std::logic_error("registry: no channel entry after room was found");
        ++h_->entries()[refs[i]].subscribers;
        h_->refresh(refs[i], now_us);
    }
    std::uint32_t index = h_->take_slot();
    Slot &s = h_->slots()[index];
    s.pid = pid;
    s.serial = h_->next_serial.fetch_add(1, std::memory_order_relaxed);
    s.id_len = static_cast<std::uint8_t>(std::min(client_id.size(), kMaxClientIdBytes));
    std::memcpy(s.client_id, client_id.data(), s.id_len);
    s.remote_len = static_cast<std::uint8_t>(std::min(remote.size(), kMaxRemoteBytes));
    std::memcpy(s.remote, remote.data(), s.remote_len);
    s.n_channels = static_cast<std::uint16_t>(n);
    for (unsigned i = 0; i < s.n_channels; ++i)
        s.channel[i] = refs[i];
    s.note_len = static_cast<std::uint32_t>(note.size());
    if (!note.empty())
        std::memcpy(h_->note(index), note.data(), note.size());
    /* Before the commit: a live slot is always below high_water. */
    h_->high_water = std::max(h_->high_water, index + 1);
    commit(s.state, kSlotLive);
    test_point(RegistryPoint::SlotCommitted);
    j.slot = index;
    j.serial = s.serial;
    return j;
}

bool Registry::leave(std::uint32_t slot, std::uint64_t serial, SubscriberInfo *out)
{
    Locked lock(h_);
    if (slot >= h_->max_subscribers)
        return false;
    Slot &s = h_->slots()[slot];
    if (s.state != kSlotLive || s.serial != serial)
        return false;
    SubscriberInfo info = h_->release(slot, wall_us());
    if (out)
        *out = std::move(info);
    return true;
}

bool Registry::holds(std::uint32_t slot, std::uint64_t serial) const
{
    if (slot >= h_->max_subscribers)
        return false;
    const Slot &s = h_->slots()[slot];
    /* The state is committed (release) after the serial is written: a slot seen live has the
     * serial of the stream that committed it. */
    return __atomic_load_n(&s.state, __ATOMIC_ACQUIRE) == kSlotLive &&
           __atomic_load_n(&s.serial, __ATOMIC_RELAXED) == serial;
}

std::uint64_t Registry::slots_taken() const
{
    return h_->slots_taken.load(std::memory_order_acquire);
}

void Registry::note_gone(int pid)
{
    const std::uint64_t bound = h_->next_serial.load(std::memory_order_acquire);
    const std::uint64_t mask = h_->gone_mask.load(std::memory_order_acquire);
    for (unsigned n = 0; n < kGoneNotes; ++n) {
        const std::uint64_t bit = std::uint64_t(1) << n;
        if (mask & bit)
            continue;
        h_->gone[n].pid.store(pid, std::memory_order_relaxed);
        h_->gone[n].serial_bound.store(bound, std::memory_order_relaxed);
        h_->gone_mask.fetch_or(bit, std::memory_order_release);
        return;
    }
    h_->gone_overflow.store(1, std::memory_order_release);
}

std::vector<SubscriberInfo> Registry::reap_noted()
{
    if (h_->gone_mask.load(std::memory_order_acquire) == 0 &&
        h_->gone_overflow.load(std::memory_order_acquire) == 0)
        return {};
    Locked lock(h_, Locked::TryOnly);
    if (!lock.held())
        return {}; /* the notes wait for the next call, or the next join */
    return h_->drain_gone(wall_us());
}

std::vector<SubscriberInfo> Registry::reap_dead()
{
    Locked lock(h_);
    const std::int64_t now_us = wall_us();
    std::vector<SubscriberInfo> out = h_->drain_gone(now_us);
    h_->release_dead(now_us, out);
    return out;
}

void Registry::note_publish(const std::vector<std::string> &channels, std::int64_t retry_only_ms,
                            std::int64_t now_us)
{
    Locked lock(h_);
    /* The entries of this publish are not dropped for its next channels. */
    std::vector<std::uint32_t> pins;
    for (const auto &c : channels) {
        std::uint32_t at = h_->find(c);
        if (at != kNone)
            h_->mark_published(h_->entries()[at]);
        else
            at = h_->create(c, false, now_us, pins); /* not counted in the share */
        if (at == kNone)
            continue; /* full of channels with subscribers or closed: the event still went out */
        pins.push_back(at);
        ChannelEntry &e = h_->entries()[at];
        ++e.published;
        e.closed = 0;
        if (retry_only_ms >= 0) {
            e.retry_ms = retry_only_ms;
            e.retry_set_us = h_->stamp(now_us);
        }
        h_->refresh(at, now_us);
    }
}

std::vector<std::string> Registry::close_channels(const std::vector<std::string> &channels,
                                                  std::int64_t now_us)
{
    Locked lock(h_);
    std::vector<std::string> existed;
    for (const auto &c : channels) {
        std::uint32_t at = h_->find(c);
        if (at == kNone)
            continue;
        ChannelEntry &e = h_->entries()[at];
        h_->mark_published(e);
        e.closed = 1;
        e.retry_ms = -1;
        h_->refresh(at, now_us); /* off the idle lists: kept until a publish reopens it */
        existed.push_back(c);
    }
    return existed;
}

void Registry::subscribe_view(const std::vector<std::string> &channels, bool *any_closed,
                              std::int64_t *retry_ms) const
{
    Locked lock(h_);
    *any_closed = false;
    *retry_ms = -1;
    std::int64_t newest = 0;
    for (const auto &c : channels) {
        std::uint32_t at = h_->find(c);
        if (at == kNone)
            continue;
        const ChannelEntry &e = h_->entries()[at];
        if (e.closed)
            *any_closed = true;
        if (e.retry_ms >= 0 && e.retry_set_us >= newest) {
            newest = e.retry_set_us;
            *retry_ms = e.retry_ms;
        }
    }
    test_point(RegistryPoint::ViewRead);
}

namespace {

ChannelInfo to_info(RegistryHeader *h, const ChannelEntry &e)
{
    ChannelInfo out;
    out.name = std::string(h->name(e));
    out.subscribers = e.subscribers;
    out.published = e.published;
    out.retry_ms = e.retry_ms;
    out.closed = e.closed != 0;
    return out;
}

} // namespace

bool Registry::channel(std::string_view name, ChannelInfo *out) const
{
    Locked lock(h_);
    std::uint32_t at = h_->find(name);
    if (at == kNone)
        return false;
    *out = to_info(h_, h_->entries()[at]);
    return true;
}

std::vector<ChannelInfo> Registry::channels() const
{
    Locked lock(h_);
    std::vector<ChannelInfo> out;
    for (std::uint32_t i = 0; i < h_->entry_high; ++i)
        if (h_->entries()[i].state == kEntryUsed)
            out.push_back(to_info(h_, h_->entries()[i]));
    std::sort(out.begin(), out.end(),
              [](const ChannelInfo &a, const ChannelInfo &b) { return a.name < b.name; });
    return out;
}

RegistryTotals Registry::totals() const
{
    Locked lock(h_);
    RegistryTotals t;
    t.max_subscribers = h_->max_subscribers;
    t.max_channels = h_->max_channels;
    t.channels = h_->live_channels;
    t.unpublished_channels = h_->unpublished;
    t.max_unpublished_channels = h_->unpublished_cap();
    t.refused_unpublished = h_->refused_unpublished;
    t.dropped_channels = h_->dropped_channels;
    t.socket_clients = h_->socket_clients.load(std::memory_order_relaxed);
    std::map<int, std::uint64_t> per_pid;
    for (std::uint32_t i = 0; i < h_->high_water; ++i) {
        const Slot &s = h_->slots()[i];
        if (s.state == kSlotLive) {
            ++t.subscribers;
            ++per_pid[s.pid];
        }
    }
    for (const auto &kv : per_pid)
        t.processes.push_back({kv.first, kv.second});
    return t;
}

std::vector<SubscriberInfo> Registry::noted() const
{
    Locked lock(h_);
    std::vector<SubscriberInfo> out;
    for (std::uint32_t i = 0; i < h_->high_water; ++i) {
        const Slot &s = h_->slots()[i];
        if (s.state == kSlotLive && s.note_len > 0)
            out.push_back(h_->info(s));
    }
    return out;
}

bool LogThrottle::allow(std::int64_t now_us, std::uint64_t *skipped)
{
    std::int64_t next = next_us_.load(std::memory_order_relaxed);
    /* More than a period ahead, the clock went back: the period counts from `now_us`, so a
     * clock stepped back silences the log for one period, not for the step. */
    while (next > now_us + period_us_ &&
           !next_us_.compare_exchange_weak(next, now_us + period_us_, std::memory_order_relaxed)) {
    }
    if (next > now_us + period_us_)
        next = now_us + period_us_;
    /* One thread wins the period; the others count themselves skipped. */
    if (now_us < next ||
        !next_us_.compare_exchange_strong(next, now_us + period_us_, std::memory_order_relaxed)) {
        skipped_.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    *skipped = skipped_.exchange(0, std::memory_order_relaxed);
    return true;
}

void set_registry_test_hook(RegistryTestHook hook)
{
    test_hook.store(hook, std::memory_order_relaxed);
}

void Registry::set_socket_clients(std::uint64_t n)
{
    h_->socket_clients.store(n, std::memory_order_relaxed);
}

} // namespace sse
