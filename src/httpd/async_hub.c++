/* The per-child hub of suspended streams (see the header for the design).
 *
 * Pinned to httpd 2.4 internals (checked against the 2.4.x branch's server/mpm/event/event.c,
 * server/core_filters.c and modules/ssl/ssl_engine_io.c, and run on Debian's 2.4.71; t/async.t
 * fails if the MPM changes under them). 2.4 has no public API for any of this (trunk has
 * ap_mpm_resume_suspended()):
 * - adopt_suspended_stream(): the event MPM calls the suspend_connection hooks in six places;
 *   only the one after a handler returned SUSPENDED sees c->cs->state == CONN_STATE_SUSPENDED
 *   (the others: async I/O wait, write completion, keep-alive, lingering close x2).
 * - After the hooks return, notify_suspend() writes c->sbh = NULL and then cs->suspended = 1 in
 *   the connection's pool; the worker then leaves process_socket() and clears its
 *   worker_sockets[] slot, which close_worker_sockets() closes at an ungraceful stop. The hub
 *   waits until it sees c->sbh cleared, then kReleaseMs more ("settled", see settle()), before
 *   it touches the scoreboard (the request's log and counters), closes the MPM's socket or
 *   destroys the pool. The 100 ms are a heuristic: only a worker preempted for 100 ms or more
 *   between those stores breaks it (cgroup CPU throttling can). It is accepted because no 2.4
 *   API gives a better signal and a longer wait only keeps ended connections longer.
 * - Until settled the hub writes through a dup() of the socket (and points the core output
 *   filter's core_net_rec::client_socket at it), so a close_worker_sockets() in that window
 *   cannot leave it writing to a reused descriptor.
 * - Ending (finish()): ap_process_request_after_handler(), ap_prep_lingering_close(), close,
 *   c->cs->state = CONN_STATE_SUSPENDED (so the MPM's pool cleanup decrements the suspended
 *   count it incremented), then apr_pool_destroy(c->pool).
 * - The core output filter, called with a brigade, waits up to the socket's timeout for
 *   POLLOUT once more than FlushMaxThreshold bytes are pending; mod_ssl passes it one record
 *   at a time. The socket's timeout is 0 from adoption on (that wait then fails at once and
 *   aborts the connection), and the hub never hands down more than write_budget() at a time,
 *   only when the core holds nothing, so that wait is never reached.
 */
#include "src/httpd/async_hub.h"
#include "sse/stream_open.h"
#include "sse/token.h"

#include "ap_mpm.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_request.h"
#include "mpm_common.h"

#include "apr_portable.h"
#include "apr_strings.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

using Bytes = std::shared_ptr<const std::string>;

/* Most plaintext handed to the output filters at once (TLS); the core filter holds what the
 * socket does not take, and the hub waits for EPOLLOUT before handing more. See
 * write_budget(). */
constexpr std::size_t kWriteChunk = 16 * 1024;
constexpr std::size_t kMinBudget = 1024;
/* What mod_ssl may add to each piece (record header, IV, MAC or tag, padding), counted
 * generously. */
constexpr std::size_t kRecordSlack = 128;
constexpr int kTickMs = 1000;
/* How long after its worker was seen leaving the MPM's suspend code a stream counts as
 * settled (see the top of this file). */
constexpr int kReleaseMs = 100;
constexpr int kSettleCheckMs = 20;

enum class EndReason { PeerGone, WriteFailed, FellBehind, Stopping, ChannelClosed, Replaced,
                       HubFailed, TokenExpired };

const char *reason_name(EndReason r)
{
    switch (r) {
    case EndReason::PeerGone: return "client-closed";
    case EndReason::WriteFailed: return "write-failed";
    case EndReason::FellBehind: return "fell-behind";
    case EndReason::Stopping: return "server-restart";
    case EndReason::ChannelClosed: return "channel-closed";
    case EndReason::Replaced: return "replaced";
    case EndReason::HubFailed: return "hub-failed";
    case EndReason::TokenExpired: return "token-expired";
    }
    return "unknown";
}

/* SSE_TEST_FAULT, for the tests only (docs/tests.md), read once when a child starts its hub:
 * hub-start-fail (the hub cannot start), hub-io-throw-after:N (the I/O thread throws when it
 * takes its N-th stream), hub-ender-throw-after:N (the ender throws after its N-th task). The
 * throws are not std::exceptions, like those of a library that throws anything. Unset, or any
 * other value: no fault. */
struct HubFault {
    bool start_fail = false;
    long io_throw_after = 0;    /* 0: never */
    long ender_throw_after = 0;

    static HubFault from_env()
    {
        HubFault f;
        const char *v = getenv("SSE_TEST_FAULT");
        if (!v)
            return f;
        const std::string spec = v;
        auto count_after = [&](const char *prefix) {
            return spec.rfind(prefix, 0) == 0 ? std::atol(spec.c_str() + strlen(prefix)) : 0L;
        };
        f.start_fail = spec == "hub-start-fail";
        f.io_throw_after = count_after("hub-io-throw-after:");
        f.ender_throw_after = count_after("hub-ender-throw-after:");
        return f;
    }
};

struct InjectedFault {}; /* deliberately not a std::exception */

/* Throws InjectedFault when `count` (incremented here) reaches `after` (> 0). */
void fault_point(long after, long &count)
{
    if (after > 0 && ++count == after)
        throw InjectedFault{};
}

} // namespace

/* One suspended stream. Created on the worker by the handler; owned by the hub's I/O thread
 * once adopted, then by the ender thread once ended and settled. */
struct SuspendedStream {
    request_rec *r;
    conn_rec *c;
    int fd = -1;      /* what the hub writes to and polls: a dup of mpm_fd until settled */
    int mpm_fd = -1;  /* the MPM's socket descriptor */
    apr_socket_t *own_sock = nullptr; /* wraps the dup for the core output filter (TLS) */
    std::vector<std::string> channels;
    std::string client_id;
    Subscription sub;
    BusReader reader;
    StreamSettings settings;
    apr_bucket_brigade *bb = nullptr;
    ap_filter_t *core = nullptr;
    std::uint64_t next_seq = 0; /* the hub delivers events from this seq on */
    std::uint64_t last_seq = 0; /* the last one queued (an event on two channels comes once) */
    std::deque<Bytes> queue;
    std::size_t queued = 0;
    std::size_t front_offset = 0; /* bytes of queue.front() already handed over */
    bool direct = false;          /* plain socket writes: see prepare_suspended_stream() */
    bool want_out = false;
    bool dead = false;
    bool dirty = false;           /* queued to in this fan-out round, not yet pushed */
    bool settled = false;         /* the worker has left the MPM's suspend code: see settle() */
    EndReason ending = EndReason::PeerGone; /* with `closing`: why, once its notice is out */
    bool closing = false;
    EndReason why = EndReason::PeerGone;    /* once dead: how it ended */
    apr_time_t worker_left = 0;   /* when c->sbh was first seen cleared; 0: not yet */
    apr_time_t last_write = 0;
    apr_uint64_t events_sent = 0, bytes_sent = 0;

    SuspendedStream(request_rec *req, BusReader rd) : r(req), c(req->connection), reader(std::move(rd)) {}
};

class AsyncHub {
public:
    /* Throws std::system_error when the epoll set or the eventfd cannot be made. */
    AsyncHub(server_rec *s, ModuleState *state, const HubFault &fault)
        : s_(s), state_(state), hub_reader_(state->bus, ChannelSet::all()), fault_(fault)
    {
        hub_reader_.start_live();
        epfd_ = epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0)
            throw std::system_error(errno, std::generic_category(), "epoll_create1");
        wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wake_fd_ < 0) {
            int err = errno;
            close(epfd_);
            throw std::system_error(err, std::generic_category(), "eventfd");
        }
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr; /* nullptr: the wake-up eventfd */
        if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev) < 0) {
            int err = errno;
            close(wake_fd_);
            close(epfd_);
            throw std::system_error(err, std::generic_category(), "epoll_ctl");
        }
        keepalive_comment_ = std::make_shared<const std::string>(": keepalive\n\n");
    }

    ~AsyncHub()
    {
        close(wake_fd_);
        close(epfd_);
    }

    void start()
    {
        ender_ = std::thread([this] { supervise("ender", [this] { ender_loop(); }); });
        io_thread_ = std::thread([this] { supervise("I/O", [this] { io_loop(); }); });
        watcher_ = std::thread([this] { supervise("bus watcher", [this] { watch_bus(); }); });
    }

    /* Whether new streams may be suspended: not once a hub thread failed. */
    bool accepting() const { return !broken_.load(); }

    /* From child_stopping: streams end, late arrivals are closed as they come. */
    void stop()
    {
        stopping_.store(true);
        poke();
    }

    /* From the pchild cleanup, after the MPM joined its workers (also when start() failed
     * half-way: only started threads are joined). */
    void exit_and_join()
    {
        stopping_.store(true);
        exiting_.store(true);
        poke();
        state_->bus.wake_all();
        if (io_thread_.joinable())
            io_thread_.join();
        if (watcher_.joinable())
            watcher_.join();
        {
            std::lock_guard<std::mutex> lock(ender_mu_);
            ender_exit_ = true;
        }
        ender_cv_.notify_one();
        if (ender_.joinable())
            ender_.join();
    }

    void adopt(SuspendedStream *s)
    {
        {
            std::lock_guard<std::mutex> lock(inbox_mu_);
            inbox_.push_back(s);
        }
        poke();
    }

private:
    /* A hub thread's entry: runs `loop` until it returns (the hub is exiting). If anything
     * escapes it, the hub is dead: the failure is logged (SSE0500), it takes no new stream from
     * then on (can_suspend() says no: new streams are held by their workers, the blocking
     * mode), the I/O thread ends the streams it holds with a `retry:` (they reconnect and are
     * served by workers), and the loop runs again, to release them: their registry slots,
     * presence, access-log lines and connections (without that a graceful restart would never
     * finish). Falling back in the process, rather than making the child exit, keeps the
     * streams the child's workers hold and its publishes going. */
    template <typename Loop> void supervise(const char *what, Loop loop) noexcept
    {
        for (int failures = 0;; ++failures) {
            if (failures > 3 && !exiting_.load())
                std::this_thread::sleep_for(std::chrono::seconds(1)); /* no spinning */
            const bool returned = guarded([&] { loop(); return true; }, [&](const char *why) {
                ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s_,
                             "SSE0500: async hub %s thread failed: %s; the hub closes the streams "
                             "it holds and new streams are held by their workers",
                             what, why);
                broken_.store(true);
                poke();
                return false;
            });
            if (returned)
                return;
        }
    }

    /* Ends every held stream; one whose ending fails is dropped from the hub's sets (nothing
     * more can be done safely for it), so a failing stream cannot make this loop forever. */
    void end_all(EndReason why)
    {
        std::vector<SuspendedStream *> all(streams_.begin(), streams_.end());
        for (auto *s : all)
            guarded([&] { end(s, why); }, [&](const char *) {
                s->dead = true;
                streams_.erase(s);
            });
    }

    EndReason closing_reason() const
    {
        return broken_.load() ? EndReason::HubFailed : EndReason::Stopping;
    }

    void poke()
    {
        std::uint64_t one = 1;
        ssize_t n = write(wake_fd_, &one, sizeof one);
        (void)n;
    }

    /* The wake word is read before exiting_ is checked: exit_and_join() sets exiting_ and then
     * calls wake_all(), which bumps the word, so wait(seen) cannot sleep through it. */
    void watch_bus()
    {
        std::uint32_t last = state_->bus.wake_word();
        for (;;) {
            std::uint32_t seen = state_->bus.wake_word();
            if (exiting_.load())
                return;
            if (seen != last) {
                last = seen;
                poke();
            }
            /* Not on the I/O thread: announcing what it frees publishes (takes locks). If a
             * stopped lock holder stalls it, the I/O thread's own 1 s tick keeps fan-out going. */
            reap_gone_processes(state_);
            state_->bus.wait(seen, kTickMs);
        }
    }

    void io_loop()
    {
        std::vector<struct epoll_event> events(512);
        apr_time_t last_tick = apr_time_now();
        bool closed_all = false;
        while (!exiting_.load()) {
            int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()),
                               settling_.empty() ? kTickMs : kSettleCheckMs);
            for (int i = 0; i < n; ++i) {
                auto *s = static_cast<SuspendedStream *>(events[i].data.ptr);
                if (!s) {
                    std::uint64_t drained;
                    ssize_t r = read(wake_fd_, &drained, sizeof drained);
                    (void)r;
                    take_inbox();
                    fan_out();
                    continue;
                }
                if (s->dead)
                    continue;
                if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    end(s, EndReason::PeerGone);
                else if (events[i].events & EPOLLOUT)
                    push(s);
            }
            if ((stopping_.load() || broken_.load()) && !closed_all) {
                closed_all = true;
                end_all(closing_reason());
            }
            apr_time_t now = apr_time_now();
            if (now - last_tick >= apr_time_from_msec(kTickMs)) {
                last_tick = now;
                fan_out(); /* also covers a bus watcher that is gone */
                keepalives(now);
                end_lost_slots_and_expired_tokens(now);
            }
            settle(now);
            flush_finishing();
        }
        take_inbox();
        end_all(closing_reason());
        settle(apr_time_now(), true);
        flush_finishing();
    }

    /* One stream at a time out of the inbox: a failure leaves the others there, and the one
     * it happened on is already the hub's (in streams_), so it is ended with the rest. */
    void take_inbox()
    {
        for (;;) {
            SuspendedStream *s;
            {
                std::lock_guard<std::mutex> lock(inbox_mu_);
                if (inbox_.empty())
                    return;
                s = inbox_.front();
                inbox_.pop_front();
            }
            streams_.insert(s);
            settling_.push_back(s);
            take_socket(s);
            fault_point(fault_.io_throw_after, io_taken_);
            if (stopping_.load() || broken_.load()) {
                end(s, closing_reason());
                continue;
            }
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP;
            ev.data.ptr = s;
            if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
                end(s, EndReason::WriteFailed);
                continue;
            }
            /* Catch up from where the handler left off to the bus head; the hub delivers
             * everything after that. */
            BusEvent e;
            for (;;) {
                BusReader::Next nx = s->reader.next(&e);
                if (nx == BusReader::Next::None)
                    break;
                if (nx == BusReader::Next::Overrun)
                    enqueue(s, missed_notice());
                else if (e.kind == RecordKind::Event)
                    enqueue(s, std::make_shared<const std::string>(std::move(e.wire)));
                else if (e.kind == RecordKind::CloseChannels)
                    close_after_notice(s, EndReason::ChannelClosed,
                                       std::make_shared<const std::string>(std::move(e.wire)));
                else if (names_stream(e, s->sub.serial()))
                    close_after_notice(s, EndReason::Replaced,
                                       std::make_shared<const std::string>(std::move(e.wire)));
            }
            s->next_seq = s->reader.position();
            for (const auto &ch : s->channels)
                channels_[ch].insert(s);
            by_serial_[s->sub.serial()] = s;
            push(s);
            if (s->closing)
                end(s, s->ending);
        }
    }

    static core_net_rec *core_net(SuspendedStream *s)
    {
        return static_cast<core_net_rec *>(s->core->ctx);
    }

    /* Nothing the hub calls may wait for the socket: timeout 0 (the core output filter keeps
     * the timeout it finds). Until the worker has left the MPM's code, the hub uses a dup of
     * the descriptor: an ungraceful stop's close_worker_sockets() closes the MPM's one, whose
     * number may then be reused. Without a spare descriptor (EMFILE) it uses the MPM's. */
    void take_socket(SuspendedStream *s)
    {
        apr_socket_t *sock = ap_get_conn_socket(s->c);
        apr_socket_timeout_set(sock, 0);
        apr_os_sock_t fd = -1;
        apr_os_sock_get(&fd, sock);
        s->mpm_fd = s->fd = fd;
        if (fd < 0)
            return;
        int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dup_fd < 0)
            return;
        s->fd = dup_fd;
        if (!s->direct) {
            apr_os_sock_t own = dup_fd;
            apr_os_sock_put(&s->own_sock, &own, s->c->pool);
            apr_socket_timeout_set(s->own_sock, 0);
            core_net(s)->client_socket = s->own_sock;
        }
    }

    /* Streams whose worker has left (c->sbh seen cleared, then kReleaseMs) go back to the
     * MPM's descriptor; ended ones go to the ender. `all`: the workers are joined. */
    void settle(apr_time_t now, bool all = false)
    {
        std::size_t kept = 0;
        for (SuspendedStream *s : settling_) {
            if (!all) {
                if (!s->worker_left && !__atomic_load_n(&s->c->sbh, __ATOMIC_ACQUIRE))
                    s->worker_left = now;
                if (!s->worker_left || now - s->worker_left < apr_time_from_msec(kReleaseMs)) {
                    settling_[kept++] = s;
                    continue;
                }
            }
            release_dup(s);
            s->settled = true;
            if (s->dead)
                hand_over(s, false, true);
        }
        settling_.resize(kept);
    }

    void release_dup(SuspendedStream *s)
    {
        if (s->fd == s->mpm_fd)
            return;
        apr_os_sock_t fd = -1;
        apr_os_sock_get(&fd, ap_get_conn_socket(s->c));
        const bool mpm_closed = fd != s->mpm_fd; /* close_worker_sockets() */
        if (!s->dead && !mpm_closed) {
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP | (s->want_out ? static_cast<std::uint32_t>(EPOLLOUT) : 0u);
            ev.data.ptr = s;
            if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->mpm_fd, &ev) == 0)
                epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd, nullptr);
            else
                end(s, EndReason::WriteFailed);
        } else if (!s->dead) {
            end(s, EndReason::WriteFailed);
        }
        if (s->own_sock)
            core_net(s)->client_socket = ap_get_conn_socket(s->c);
        close(s->fd); /* also leaves the epoll set */
        s->fd = s->mpm_fd;
    }

    void fan_out()
    {
        BusEvent e;
        std::vector<SuspendedStream *> dirty;
        for (int k = 0; k < 4096; ++k) {
            BusReader::Next nx = hub_reader_.next(&e);
            if (nx == BusReader::Next::None)
                break;
            if (nx == BusReader::Next::Overrun) {
                Bytes notice = missed_notice();
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
                        close_after_notice(it->second, EndReason::Replaced, notice);
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
                for (SuspendedStream *s : it->second) {
                    if (e.seq < s->next_seq || s->last_seq == e.seq)
                        continue;
                    s->last_seq = e.seq;
                    if (e.kind == RecordKind::CloseChannels)
                        close_after_notice(s, EndReason::ChannelClosed, wire);
                    else if (everyone || audience.admits(s->client_id))
                        enqueue(s, wire);
                    else
                        continue;
                    mark_dirty(s, dirty);
                }
            }
            if (k == 4095)
                poke(); /* more to read: come back after serving the sockets */
        }
        for (SuspendedStream *s : dirty) {
            s->dirty = false;
            if (!s->dead)
                push(s);
            if (!s->dead && s->closing)
                end(s, s->ending);
        }
    }

    /* The stream gets `notice` and nothing after it; it ends once that is handed over. */
    void close_after_notice(SuspendedStream *s, EndReason why, const Bytes &notice)
    {
        if (s->closing)
            return;
        enqueue(s, notice);
        s->closing = true;
        s->ending = why;
    }

    /* Each stream is pushed once per round, however many events it got in it. */
    static void mark_dirty(SuspendedStream *s, std::vector<SuspendedStream *> &dirty)
    {
        if (!s->dirty) {
            s->dirty = true;
            dirty.push_back(s);
        }
    }

    void enqueue(SuspendedStream *s, const Bytes &bytes)
    {
        if (s->dead || s->closing)
            return;
        s->queue.push_back(bytes);
        s->queued += bytes->size();
    }

    void keepalives(apr_time_t now)
    {
        std::vector<SuspendedStream *> due;
        for (auto *s : streams_)
            if (now - s->last_write >= s->settings.keepalive)
                due.push_back(s);
        for (auto *s : due) {
            enqueue(s, keepalive_comment_);
            push(s);
        }
    }

    /* Streams whose registry slot a replacing join took, and whose EndStream record never
     * came (the replacer died before publishing it): they end as if it had come. One
     * lock-free read of the registry per stream and tick. */
    /* One pass a tick over the streams: those whose slot was taken (a replacing stream of the
     * same client id) and those whose token's exp has come end, each with its notice. */
    void end_lost_slots_and_expired_tokens(apr_time_t now)
    {
        std::vector<SuspendedStream *> lost, expired;
        for (auto *s : streams_) {
            if (s->closing || s->dead)
                continue;
            if (s->sub.lost_slot())
                lost.push_back(s);
            else if (s->settings.token_expires && now >= s->settings.token_expires)
                expired.push_back(s);
        }
        if (!lost.empty())
            close_now(lost, EndReason::Replaced, replaced_notice());
        if (!expired.empty())
            close_now(expired, EndReason::TokenExpired, token_expired_notice());
    }

    /* Each of `streams` gets `notice` (what the socket takes now) and ends. */
    void close_now(const std::vector<SuspendedStream *> &streams, EndReason why,
                   std::string notice)
    {
        const Bytes bytes = std::make_shared<const std::string>(std::move(notice));
        for (auto *s : streams) {
            close_after_notice(s, why, bytes);
            push(s);
            if (!s->dead)
                end(s, s->ending);
        }
    }

    /* Plaintext handed to the output filters at once (TLS): with what mod_ssl adds per record
     * (kRecordSlack per piece, and half the threshold to spare) it stays under the core's
     * FlushMaxThreshold, above which the core output filter would wait for the socket.
     * A FlushMaxThreshold under 2 KiB cannot be honoured: a slow stream may then be ended
     * (write-failed) instead of held; it is never waited for. */
    static std::size_t write_budget(conn_rec *c)
    {
        auto *conf = static_cast<core_server_config *>(
            ap_get_core_module_config(c->base_server->module_config));
        std::size_t half = conf->flush_max_threshold / 2;
        return std::max<std::size_t>(kMinBudget, std::min(half, kWriteChunk));
    }

    /* SSEMaxPending bounds what waits behind the piece being written, not that piece: one
     * event whose encoding is larger than the limit (a body of bare CRs grows 7-fold, each
     * line getting "data: ") goes out whole instead of ending every stream that receives it;
     * the stream falls behind when more is queued after it. */
    static bool fell_behind(const SuspendedStream &s)
    {
        const std::size_t front = s.queue.empty() ? 0 : s.queue.front()->size();
        return s.queued - front > s.settings.max_pending;
    }

    /* Writes what the socket takes; never blocks. */
    void push(SuspendedStream *s)
    {
        if (s->dead)
            return;
        if (fell_behind(*s)) {
            end(s, EndReason::FellBehind);
            return;
        }
        if (s->direct) {
            push_direct(s);
            return;
        }
        conn_rec *c = s->c;
        if (c->data_in_output_filters && !write_buffered(s))
            return;
        const std::size_t budget = write_budget(c);
        while (!c->data_in_output_filters && !s->queue.empty()) {
            std::vector<Bytes> inflight;
            std::size_t charged = 0, plain = 0;
            while (!s->queue.empty() && charged + kRecordSlack < budget) {
                Bytes b = s->queue.front();
                std::size_t len = std::min(b->size() - s->front_offset,
                                           budget - charged - kRecordSlack);
                APR_BRIGADE_INSERT_TAIL(s->bb, apr_bucket_transient_create(
                                                    b->data() + s->front_offset, len,
                                                    c->bucket_alloc));
                charged += len + kRecordSlack;
                plain += len;
                s->front_offset += len;
                if (s->front_offset == b->size()) {
                    s->front_offset = 0;
                    s->queue.pop_front();
                    s->queued -= b->size();
                    if (b != keepalive_comment_)
                        ++s->events_sent;
                }
                inflight.push_back(std::move(b));
            }
            /* No FLUSH bucket: the core filter then writes without waiting. */
            apr_status_t rv = ap_pass_brigade(s->r->output_filters, s->bb);
            apr_brigade_cleanup(s->bb);
            if (rv != APR_SUCCESS || c->aborted) {
                end(s, EndReason::WriteFailed);
                return;
            }
            s->bytes_sent += plain;
            s->last_write = apr_time_now();
            if (!write_buffered(s))
                return;
        }
        want_out(s, c->data_in_output_filters != 0);
    }

    /* Plain HTTP without chunking: the body is the bytes themselves and the only output
     * filter left is the core's, with nothing buffered; one writev() per wake-up. */
    void push_direct(SuspendedStream *s)
    {
        while (!s->queue.empty()) {
            struct iovec iov[64];
            int n = 0;
            std::size_t total = 0;
            for (auto it = s->queue.begin(); it != s->queue.end() && n < 64 && total < 256 * 1024;
                 ++it, ++n) {
                std::size_t skip = n == 0 ? s->front_offset : 0;
                iov[n].iov_base = const_cast<char *>((*it)->data() + skip);
                iov[n].iov_len = (*it)->size() - skip;
                total += iov[n].iov_len;
            }
            ssize_t w = writev(s->fd, iov, n);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    want_out(s, true);
                    return;
                }
                end(s, EndReason::WriteFailed);
                return;
            }
            std::size_t left = static_cast<std::size_t>(w);
            s->bytes_sent += left;
            s->last_write = apr_time_now();
            while (left > 0) {
                std::size_t rest = s->queue.front()->size() - s->front_offset;
                if (left < rest) {
                    s->front_offset += left;
                    break;
                }
                left -= rest;
                if (s->queue.front() != keepalive_comment_)
                    ++s->events_sent;
                s->queued -= s->queue.front()->size();
                s->queue.pop_front();
                s->front_offset = 0;
            }
            if (static_cast<std::size_t>(w) < total) {
                want_out(s, true);
                return;
            }
        }
        want_out(s, false);
    }

    /* Calls the core output filter with no brigade: it writes what it holds, non-blocking. */
    bool write_buffered(SuspendedStream *s)
    {
        apr_status_t rv = s->core->frec->filter_func.out_func(s->core, nullptr);
        if (rv != APR_SUCCESS || s->c->aborted) {
            end(s, EndReason::WriteFailed);
            return false;
        }
        if (s->c->data_in_output_filters)
            want_out(s, true);
        return true;
    }

    void want_out(SuspendedStream *s, bool out)
    {
        if (s->want_out == out)
            return;
        s->want_out = out;
        struct epoll_event ev = {};
        ev.events = EPOLLRDHUP | (out ? static_cast<std::uint32_t>(EPOLLOUT) : 0u);
        ev.data.ptr = s;
        epoll_ctl(epfd_, EPOLL_CTL_MOD, s->fd, &ev);
    }

    /* Ends a stream on the I/O thread: out of every set and the epoll set, its last `retry:`
     * (stop) written without waiting. The rest (registry, presence, access log, close,
     * pool) is the ender's, once the stream is settled. */
    void end(SuspendedStream *s, EndReason why)
    {
        if (s->dead)
            return;
        s->dead = true;
        s->why = why;
        streams_.erase(s);
        by_serial_.erase(s->sub.serial());
        for (const auto &ch : s->channels) {
            auto it = channels_.find(ch);
            if (it != channels_.end()) {
                it->second.erase(s);
                if (it->second.empty())
                    channels_.erase(it);
            }
        }
        epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd, nullptr);

        conn_rec *c = s->c;
        const bool come_back = why == EndReason::Stopping || why == EndReason::HubFailed;
        if (come_back && s->direct) {
            /* What is queued is dropped (the client resumes with Last-Event-ID). */
            std::string last;
            encode_retry(s->settings.retry_ms >= 0 ? s->settings.retry_ms : kRestartRetryMs, last);
            if (s->front_offset == 0 && send(s->fd, last.data(), last.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
                s->bytes_sent += last.size();
            c->aborted = 1;
        } else if (come_back && !c->aborted) {
            /* Only between events: with part of an event handed down (push() splits large
             * ones over TLS), a retry: would land inside it and the client would dispatch a
             * cut event under its id, never to get it whole. Without it, the cut event is
             * dropped by the client at the close and replayed after its Last-Event-ID. */
            if (s->front_offset == 0) {
                std::string last;
                encode_retry(s->settings.retry_ms >= 0 ? s->settings.retry_ms : kRestartRetryMs,
                             last);
                APR_BRIGADE_INSERT_TAIL(s->bb, apr_bucket_heap_create(last.data(), last.size(),
                                                                      nullptr, c->bucket_alloc));
            }
            APR_BRIGADE_INSERT_TAIL(s->bb, apr_bucket_eos_create(c->bucket_alloc));
            if (ap_pass_brigade(s->r->output_filters, s->bb) == APR_SUCCESS)
                s->core->frec->filter_func.out_func(s->core, nullptr);
            apr_brigade_cleanup(s->bb);
        } else {
            c->aborted = 1; /* gone, failed, or too far behind: it reconnects and replays */
        }
        /* The registry slot and the disconnect go at once; the connection once settled. */
        hand_over(s, true, s->settled);
    }

    /* `leave`: the ender releases the stream's registry slot (Subscription::end) at once;
     * the I/O thread no longer touches s->sub. `finish`: at the end of this loop round (the
     * current epoll batch may still name the stream), the ender takes the stream and
     * deletes it; the I/O thread never looks at it again. */
    void hand_over(SuspendedStream *s, bool leave, bool finish)
    {
        if (finish)
            finishing_.push_back(s);
        if (!leave)
            return;
        {
            std::lock_guard<std::mutex> lock(ender_mu_);
            ender_queue_.push_back({s, true, false});
        }
        ender_cv_.notify_one();
    }

    void flush_finishing()
    {
        if (finishing_.empty())
            return;
        {
            std::lock_guard<std::mutex> lock(ender_mu_);
            for (SuspendedStream *s : finishing_)
                ender_queue_.push_back({s, false, true});
        }
        finishing_.clear();
        ender_cv_.notify_one();
    }

    /* The ender thread: what may block (the registry's and the bus's process-shared locks,
     * the access log, mod_log_config's piped loggers) runs here, in the order streams ended,
     * so a stalled logger or a stopped lock holder delays only the closing of ended streams,
     * never the live ones. */
    void ender_loop()
    {
        for (;;) {
            EnderTask t;
            {
                std::unique_lock<std::mutex> lock(ender_mu_);
                ender_cv_.wait(lock, [this] { return !ender_queue_.empty() || ender_exit_; });
                if (ender_queue_.empty())
                    return;
                t = ender_queue_.front(); /* one at a time: a failure loses no other task */
                ender_queue_.pop_front();
            }
            if (t.leave)
                leave(t.s);
            if (t.finish)
                finish(t.s);
            fault_point(fault_.ender_throw_after, ender_done_);
        }
    }

    void leave(SuspendedStream *s)
    {
        try {
            s->sub.end(reason_name(s->why));
        } catch (const std::exception &e) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_, "SSE0502: ending a held stream: %s",
                         e.what());
        } catch (...) {
            /* Anything else too: escaping, it would restart the ender and lose the slot. */
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                         "SSE0502: ending a held stream: an unknown exception");
        }
    }

    /* Releases a settled, ended stream's connection (the sequence pinned at the top of this
     * file). The worker has left: the scoreboard writes of the request's end (c->sbh is NULL)
     * are skipped, and the pool can go. */
    void finish(SuspendedStream *s)
    {
        request_rec *r = s->r;
        conn_rec *c = s->c;
        const char *why = reason_name(s->why);
        apr_table_setn(r->subprocess_env, "SSE_EVENTS",
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, s->events_sent));
        apr_table_setn(r->subprocess_env, "SSE_BYTES",
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, s->bytes_sent));
        apr_table_setn(r->subprocess_env, "SSE_END", why);
        if (s->direct)
            r->bytes_sent = static_cast<apr_off_t>(s->bytes_sent);
        c->keepalive = AP_CONN_CLOSE;
        apr_socket_t *sock = ap_get_conn_socket(c);
        ap_process_request_after_handler(r); /* logs the request and frees it */
        ap_prep_lingering_close(c);          /* pre-close hooks */
        apr_socket_shutdown(sock, APR_SHUTDOWN_READWRITE);
        apr_socket_close(sock);
        c->cs->state = CONN_STATE_SUSPENDED;
        delete s;
        apr_pool_destroy(c->pool);
    }

    static Bytes missed_notice()
    {
        auto out = std::make_shared<std::string>();
        encode_missed_notice("overrun", {}, *out);
        return out;
    }

    server_rec *s_;
    ModuleState *state_;
    BusReader hub_reader_;
    int epfd_ = -1, wake_fd_ = -1;
    std::thread io_thread_, watcher_, ender_;
    std::atomic<bool> stopping_{false}, exiting_{false}, broken_{false};
    HubFault fault_;
    long io_taken_ = 0, ender_done_ = 0; /* counted for fault_ only */
    std::mutex inbox_mu_;
    std::deque<SuspendedStream *> inbox_;
    std::unordered_set<SuspendedStream *> streams_;
    std::unordered_map<std::uint64_t, SuspendedStream *> by_serial_;
    std::unordered_map<std::string, std::unordered_set<SuspendedStream *>> channels_;
    std::vector<SuspendedStream *> settling_; /* adopted, worker maybe not gone yet */
    std::vector<SuspendedStream *> finishing_; /* ended and settled: for the ender, at the
                                                * end of this loop round */
    std::mutex ender_mu_;
    std::condition_variable ender_cv_;
    struct EnderTask {
        SuspendedStream *s = nullptr;
        bool leave = false, finish = false;
    };
    std::deque<EnderTask> ender_queue_;
    bool ender_exit_ = false;
    Bytes keepalive_comment_;
};

namespace {

apr_status_t join_hub(void *data)
{
    guarded(nullptr, "the async hub's exit", [data] {
        auto *hub = static_cast<AsyncHub *>(data);
        hub->exit_and_join();
        delete hub;
    });
    return APR_SUCCESS;
}

} // namespace

AsyncHub *start_async_hub(apr_pool_t *pchild, server_rec *s, ModuleState *state)
{
    int async = 0;
    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS || !async)
        return nullptr;
    const HubFault fault = HubFault::from_env();
    if (fault.start_fail)
        throw std::runtime_error("SSE_TEST_FAULT=hub-start-fail");
    auto *hub = new AsyncHub(s, state, fault);
    try {
        hub->start();
    } catch (...) {
        hub->exit_and_join();
        delete hub;
        throw;
    }
    apr_pool_cleanup_register(pchild, hub, join_hub, apr_pool_cleanup_null);
    return hub;
}

bool can_suspend(request_rec *r, const DirConfig &d, const ModuleState *state)
{
    conn_rec *c = r->connection;
    /* An internal redirect (r->prev: RewriteRule in a directory, ErrorDocument, Action) or a
     * subrequest (r->main) does not end in CONN_STATE_SUSPENDED: the MPM goes on with the
     * connection, so the stream stays on its worker. */
    return d.async && state->hub && state->hub->accepting() && !state->child_stopping.load() &&
           c->cs && !c->master && !c->clogging_input_filters && !r->main && !r->prev;
}

void prepare_suspended_stream(request_rec *r, BusReader reader, const StreamSettings &settings,
                              apr_uint64_t events_sent, apr_uint64_t bytes_sent,
                              const std::vector<std::string> &channels,
                              const std::string &client_id, Subscription sub)
{
    conn_rec *c = r->connection;
    auto *s = new SuspendedStream(r, std::move(reader));
    s->channels = channels;
    s->client_id = client_id;
    s->sub = std::move(sub);
    s->settings = settings;
    s->events_sent = events_sent;
    s->bytes_sent = bytes_sent;
    s->last_write = apr_time_now();
    s->bb = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_os_sock_t fd;
    apr_os_sock_get(&fd, ap_get_conn_socket(c));
    s->fd = fd;
    /* mod_ssl's coalescing filter holds small writes until a FLUSH: take it out, so that
     * writes without FLUSH reach the socket. */
    for (ap_filter_t *f = c->output_filters; f;) {
        ap_filter_t *next = f->next;
        if (f->frec && f->frec->name && !strcasecmp(f->frec->name, "SSL/TLS Coalescing Filter")) {
            /* ap_remove_output_filter() unlinks a connection filter from c->output_filters
             * only; the request's chain runs into it too. */
            for (ap_filter_t *p = r->output_filters; p; p = p->next)
                if (p->next == f)
                    p->next = next;
            ap_remove_output_filter(f);
        }
        f = next;
    }
    s->core = c->output_filters;
    while (s->core->next)
        s->core = s->core->next;
    /* Direct writes are exact when the response is not chunked (mod_sse ends the connection
     * with the stream, so HTTP/1.1 sends no chunking), the connection has no filter but the
     * core's (no TLS, no other module rewriting bytes) and the core holds nothing. */
    s->direct = !r->chunked && c->output_filters == s->core && !c->data_in_output_filters;
    ap_set_module_config(c->conn_config, &sse_module, s);
}

void adopt_suspended_stream(conn_rec *c, ModuleState *state)
{
    auto *s = static_cast<SuspendedStream *>(ap_get_module_config(c->conn_config, &sse_module));
    if (!s)
        return;
    ap_set_module_config(c->conn_config, &sse_module, nullptr);
    /* Only the call after the handler's SUSPENDED return hands the connection over; in any
     * other state (write completion, keep-alive, lingering close) the MPM still owns it and
     * its request may be gone: the stream is dropped, never held. can_suspend() keeps this
     * from happening; this is the last guard. */
    if (!state || !state->hub || c->cs->state != CONN_STATE_SUSPENDED) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c,
                      "SSE0503: a stream was not held: its connection was not suspended "
                      "(state %d)", static_cast<int>(c->cs->state));
        delete s;
        return;
    }
    state->hub->adopt(s);
}

void stop_async_hub(AsyncHub *hub)
{
    if (hub)
        hub->stop();
}

} // namespace sse::httpd
