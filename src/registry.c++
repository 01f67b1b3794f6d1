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
#include <set>
#include <stdexcept>
#include <system_error>

namespace sse {

namespace {

constexpr std::uint32_t kRegistryMagic = 0x53534552 ^ 0x00520000; /* distinct from the bus */
constexpr std::uint32_t kRegistryVersion = 2;

/* Processes the parent noted gone and no process has reaped yet (see note_gone()). */
constexpr unsigned kGoneNotes = 64;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::int32_t>::is_always_lock_free,
              "the registry's lock-free fields need lock-free atomics (libatomic's locks are per "
              "process)");

enum : std::uint32_t { kSlotFree = 0, kSlotLive = 1 };
enum : std::uint32_t { kEntryEmpty = 0, kEntryUsed = 1, kEntryTombstone = 2 };

struct Slot {
    std::uint32_t state;
    std::int32_t pid;
    std::uint64_t serial;
    std::uint8_t id_len;
    std::uint8_t remote_len;
    std::uint16_t n_channels;
    std::uint32_t reserved;
    char client_id[kMaxClientIdBytes];
    char remote[kMaxRemoteBytes + 1];
    std::uint32_t channel[kMaxChannelsPerEvent]; /* entry indices */
};

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
    char name[kMaxChannelNameBytes + 1];
};

/* The store that makes a record count (a slot live, an entry used or dropped). Release order:
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

bool pinned(const std::vector<std::uint32_t> &pins, std::uint32_t at)
{
    return std::find(pins.begin(), pins.end(), at) != pins.end();
}

struct GoneNote {
    std::atomic<std::int32_t> pid;
    std::atomic<std::uint64_t> serial_bound; /* its slots have serials below this */
};

std::size_t align64(std::size_t n) { return (n + 63) & ~static_cast<std::size_t>(63); }

std::uint32_t table_size_for(std::uint32_t max_channels)
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
    std::uint32_t table_size;
    std::uint32_t free_top;       /* entries on the free stack */
    std::uint32_t high_water;     /* slots [0, high_water) have ever been used */
    std::uint32_t live_channels;  /* used entries */
    std::atomic<std::uint64_t> next_serial; /* written under the lock; note_gone() reads it */
    std::uint64_t dropped_channels;
    std::atomic<std::uint64_t> socket_clients;
    /* Lock-free, written by the parent (note_gone), emptied under the lock (drain_gone). */
    std::atomic<std::uint64_t> gone_mask;     /* bit i: gone[i] names a process to reap */
    std::atomic<std::uint32_t> gone_overflow; /* a note found no free cell */
    GoneNote gone[kGoneNotes];
    pthread_mutex_t lock;
    std::uint64_t free_offset, slots_offset, table_offset;

    std::uint32_t *free_stack() { return reinterpret_cast<std::uint32_t *>(base() + free_offset); }
    Slot *slots() { return reinterpret_cast<Slot *>(base() + slots_offset); }
    ChannelEntry *table() { return reinterpret_cast<ChannelEntry *>(base() + table_offset); }
    unsigned char *base() { return reinterpret_cast<unsigned char *>(this); }

    std::string_view name(const ChannelEntry &e) const { return {e.name, e.name_len}; }

    /* Index of the entry for `name`, or table_size when absent. */
    std::uint32_t find(std::string_view name_)
    {
        const std::uint32_t hv = ChannelSet::hash(name_);
        const std::uint32_t mask = table_size - 1;
        for (std::uint32_t i = 0, at = hv & mask; i < table_size; ++i, at = (at + 1) & mask) {
            ChannelEntry &e = table()[at];
            if (e.state == kEntryEmpty)
                break;
            if (e.state == kEntryUsed && e.hash == hv && name(e) == name_)
                return at;
        }
        return table_size;
    }

    /* The entry for `name`, created when absent (dropping the least recently used entry
     * without subscribers, other than `pins`, when the table is full); table_size when there
     * is no room. */
    std::uint32_t find_or_create(std::string_view name_, std::int64_t now_us,
                                 const std::vector<std::uint32_t> &pins)
    {
        std::uint32_t at = find(name_);
        if (at != table_size)
            return at;
        if (live_channels >= max_channels && !drop_one(pins))
            return table_size;
        const std::uint32_t hv = ChannelSet::hash(name_);
        const std::uint32_t mask = table_size - 1;
        at = hv & mask;
        while (table()[at].state == kEntryUsed)
            at = (at + 1) & mask;
        /* Empty or a tombstone until the commit: a locker killed while it is written leaves the
         * probe chains as they were (an Empty in place of a tombstone would cut them). */
        ChannelEntry &e = table()[at];
        e.hash = hv;
        e.subscribers = 0;
        e.published = 0;
        e.retry_ms = -1;
        e.retry_set_us = 0;
        e.last_used_us = now_us;
        e.closed = 0;
        e.name_len = static_cast<std::uint32_t>(name_.size());
        std::memcpy(e.name, name_.data(), name_.size());
        test_point(RegistryPoint::EntryWritten);
        commit(e.state, kEntryUsed);
        ++live_channels;
        return at;
    }

    /* Entries that could be dropped for new ones: unused, not pinned, and without subscribers
     * once the slots `leaving` are released. */
    std::uint32_t droppable(const std::vector<std::uint32_t> &pins,
                            const std::vector<std::uint32_t> &leaving)
    {
        std::map<std::uint32_t, std::uint64_t> leaving_refs;
        for (std::uint32_t i : leaving)
            for (unsigned k = 0; k < slots()[i].n_channels; ++k)
                ++leaving_refs[slots()[i].channel[k]];
        std::uint32_t n = 0;
        for (std::uint32_t i = 0; i < table_size; ++i) {
            const ChannelEntry &e = table()[i];
            auto it = leaving_refs.find(i);
            const std::uint64_t going = it == leaving_refs.end() ? 0 : it->second;
            if (e.state == kEntryUsed && e.subscribers <= going && !pinned(pins, i))
                ++n;
        }
        return n;
    }

    bool drop_one(const std::vector<std::uint32_t> &pins)
    {
        std::uint32_t victim = table_size;
        for (std::uint32_t i = 0; i < table_size; ++i) {
            const ChannelEntry &e = table()[i];
            if (e.state == kEntryUsed && e.subscribers == 0 && !pinned(pins, i) &&
                (victim == table_size || e.last_used_us < table()[victim].last_used_us))
                victim = i;
        }
        if (victim == table_size)
            return false;
        commit(table()[victim].state, kEntryTombstone);
        --live_channels;
        ++dropped_channels;
        return true;
    }

    SubscriberInfo info(const Slot &s)
    {
        SubscriberInfo out;
        out.serial = s.serial;
        out.pid = s.pid;
        out.client_id.assign(s.client_id, s.id_len);
        out.remote.assign(s.remote, s.remote_len);
        for (unsigned i = 0; i < s.n_channels; ++i)
            out.channels.emplace_back(name(table()[s.channel[i]]));
        return out;
    }

    /* Frees a live slot: counts down its channels, pushes it on the free stack. */
    SubscriberInfo release(std::uint32_t index, std::int64_t now_us)
    {
        Slot &s = slots()[index];
        SubscriberInfo out = info(s);
        for (unsigned i = 0; i < s.n_channels; ++i) {
            ChannelEntry &e = table()[s.channel[i]];
            if (e.subscribers > 0)
                --e.subscribers;
            e.last_used_us = now_us;
        }
        commit(s.state, kSlotFree);
        free_stack()[free_top++] = index;
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

    /* After a holder died mid-update: rebuild what is derived from the slots. */
    void repair()
    {
        free_top = 0;
        for (std::uint32_t i = 0; i < table_size; ++i)
            table()[i].subscribers = 0;
        /* Probe chains need no repair: an entry changes state by one store (see commit()). */
        live_channels = 0;
        for (std::uint32_t i = 0; i < table_size; ++i)
            if (table()[i].state == kEntryUsed)
                ++live_channels;
        /* A live slot is always below high_water (it moves before the commit). */
        for (std::uint32_t i = high_water; i-- > 0;) {
            Slot &s = slots()[i];
            if (s.state == kSlotLive) {
                for (unsigned k = 0; k < s.n_channels; ++k)
                    ++table()[s.channel[k]].subscribers;
            } else {
                free_stack()[free_top++] = i;
            }
        }
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
           sizeof(ChannelEntry) * table_size_for(max_channels);
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
    h->table_size = table_size_for(max_channels);
    h->free_offset = align64(sizeof(RegistryHeader));
    h->slots_offset = h->free_offset + align64(sizeof(std::uint32_t) * max_subscribers);
    h->table_offset = h->slots_offset + align64(sizeof(Slot) * max_subscribers);
    h->next_serial = 1;
    /* Nothing past the header is written: zero is a free slot and an empty entry, slots at
     * and above high_water are taken in order before the free stack exists for them, so the
     * pages of the stack, the slots and the table are touched only when used (1,000,000
     * subscribers and channels: 1.1 GB of RSS in the parent when they were cleared here). */

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

Registry::Join Registry::join(int pid, std::string_view client_id, std::string_view remote,
                              const std::vector<std::string> &channels, DuplicatePolicy policy,
                              std::int64_t now_us)
{
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
    /* The entries this join uses are pinned: making room for one of its channels must not
     * drop another (the slot would point at an entry that a later channel reuses). */
    const std::size_t n = std::min(channels.size(), kMaxChannelsPerEvent);
    std::vector<std::uint32_t> refs(n, h_->table_size);
    std::vector<std::string_view> missing;
    for (std::size_t i = 0; i < n; ++i) {
        refs[i] = h_->find(channels[i]);
        if (refs[i] == h_->table_size &&
            std::find(missing.begin(), missing.end(), channels[i]) == missing.end())
            missing.push_back(channels[i]);
    }
    const std::uint32_t room = h_->max_channels - std::min(h_->live_channels, h_->max_channels);
    if (missing.size() > room && missing.size() > room + h_->droppable(refs, duplicates)) {
        j.outcome = Join::Outcome::TooManyChannels;
        return j;
    }
    for (std::uint32_t i : duplicates)
        j.replaced.push_back(h_->release(i, now_us));
    for (std::size_t i = 0; i < n; ++i) {
        if (refs[i] != h_->table_size)
            continue;
        refs[i] = h_->find_or_create(channels[i], now_us, refs);
        if (refs[i] == h_->table_size) /* the room was counted above */
            throw std::logic_error("registry: no channel entry after room was found");
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
    for (unsigned i = 0; i < s.n_channels; ++i) {
        s.channel[i] = refs[i];
        ChannelEntry &e = h_->table()[refs[i]];
        ++e.subscribers;
        e.last_used_us = now_us;
    }
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
    std::vector<std::uint32_t> pins;
    for (const auto &c : channels) {
        std::uint32_t at = h_->find_or_create(c, now_us, pins);
        if (at == h_->table_size)
            continue; /* full of channels with subscribers: the event still went out */
        pins.push_back(at);
        ChannelEntry &e = h_->table()[at];
        ++e.published;
        e.closed = 0;
        e.last_used_us = now_us;
        if (retry_only_ms >= 0) {
            e.retry_ms = retry_only_ms;
            e.retry_set_us = now_us;
        }
    }
}

std::vector<std::string> Registry::close_channels(const std::vector<std::string> &channels,
                                                  std::int64_t now_us)
{
    Locked lock(h_);
    std::vector<std::string> existed;
    for (const auto &c : channels) {
        std::uint32_t at = h_->find(c);
        if (at == h_->table_size)
            continue;
        ChannelEntry &e = h_->table()[at];
        e.closed = 1;
        e.retry_ms = -1;
        e.last_used_us = now_us;
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
        if (at == h_->table_size)
            continue;
        const ChannelEntry &e = h_->table()[at];
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
    if (at == h_->table_size)
        return false;
    *out = to_info(h_, h_->table()[at]);
    return true;
}

std::vector<ChannelInfo> Registry::channels() const
{
    Locked lock(h_);
    std::vector<ChannelInfo> out;
    for (std::uint32_t i = 0; i < h_->table_size; ++i)
        if (h_->table()[i].state == kEntryUsed)
            out.push_back(to_info(h_, h_->table()[i]));
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

void set_registry_test_hook(RegistryTestHook hook)
{
    test_hook.store(hook, std::memory_order_relaxed);
}

void Registry::set_socket_clients(std::uint64_t n)
{
    h_->socket_clients.store(n, std::memory_order_relaxed);
}

} // namespace sse
