/* The per-child hub of suspended streams (see the header for the design). What it relies on
 * in httpd 2.4's event MPM is in src/httpd/suspended_connection.h; this file uses only that
 * class for the connections it holds; what each stream gets is decided by FanOut
 * (sse/fanout.h).
 */
#include "src/httpd/async_hub.h"
#include "src/httpd/suspended_connection.h"
#include "sse/fanout.h"

#include "ap_mpm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
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
#include <vector>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

/* What mod_ssl may add to each piece (record header, IV, MAC or tag, padding), counted
 * generously. */
constexpr std::size_t kRecordSlack = 128;
constexpr int kTickMs = 1000;
/* Records fanned out per loop round at most, so a burst does not keep the sockets waiting. */
constexpr std::size_t kFanOutBatch = 4096;
constexpr int kMaxSocketEvents = 512;

/* SSE_TEST_FAULT, for the tests only (docs/tests.md), read once when a child starts its hub:
 * hub-start-fail (the hub cannot start), hub-io-throw-after:N (the I/O thread throws when it
 * takes its N-th stream), hub-ender-throw-after:N (the ender throws after its N-th task). The
 * throws are not std::exceptions, like those of a library that throws anything.
 * hub-no-waitv: the hub runs as on a kernel without futex_waitv (a bus relay thread).
 * hub-waitv-fails: futex_waitv works at start, then its first wait fails (the hub goes over to
 * the relay). Unset, or any other value: no fault. */
struct HubFault {
    bool start_fail = false;
    bool no_waitv = false;
    bool waitv_fails = false;
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
        f.no_waitv = spec == "hub-no-waitv";
        f.waitv_fails = spec == "hub-waitv-fails";
        f.io_throw_after = count_after("hub-io-throw-after:");
        f.ender_throw_after = count_after("hub-ender-throw-after:");
        return f;
    }
};

struct InjectedFault {}; /* deliberately not a std::exception */

/* Writes `n` pieces to the socket `fd` without waiting, as writev() would: one piece (the
 * usual delivery of one event) with send(), several with sendmsg(). Both take the socket
 * path directly, where writev() goes through the file layer first (its checks, the iovec
 * import, fsnotify): on 100 channels x 100 streams that layer was about 1 us of the 15 us of
 * kernel time per delivery (bench/run-fanout-cost, docs/benchmarks.md). */
ssize_t send_pieces(int fd, struct iovec *iov, int n)
{
    if (n == 1)
        return send(fd, iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    struct msghdr msg = {};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(n);
    return sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Throws InjectedFault when `count` (incremented here) reaches `after` (> 0). */
void fault_point(long after, long &count)
{
    if (after > 0 && ++count == after)
        throw InjectedFault{};
}

} // namespace

/* One suspended stream: what the fan-out keeps of it (Subscriber: its queue, its rules), its
 * connection and its registry slot. Created on the worker by the handler; owned by the hub's
 * I/O thread once adopted, then by the ender thread once ended and settled. */
struct SuspendedStream : Subscriber {
    /* want_out and conn (its descriptor, direct()) first: next to what Subscriber's
     * delivery fields touch (sse/fanout.h), so a delivery touches adjacent cache lines. */
    bool want_out = false; /* EPOLLOUT is asked for */
    SuspendedConnection conn;
    Subscription sub;

    SuspendedStream(request_rec *r, BusReader reader, const std::vector<std::string> &channels,
                    const std::string &client_id, const DeliverySettings &settings,
                    apr_size_t max_pending)
        : Subscriber(std::move(reader), channels, client_id, settings, max_pending,
                     apr_time_now()),
          conn(r)
    {
    }
};

/* The hub: its threads, the epoll set and the connections; what each stream gets is FanOut's
 * (sse/fanout.h), which the I/O thread owns and which writes through this class (the
 * FanOutSink: send(), sendmsg() or the filters, without waiting). */
class AsyncHub final : private FanOutSink {
public:
    /* Throws std::system_error when an epoll set or the eventfd cannot be made. */
    AsyncHub(server_rec *s, ModuleState *state, const HubFault &fault)
        : s_(s), state_(state), fanout_(state->bus, *this),
          wait_or_(!fault.no_waitv && Bus::can_wait_or()), fault_(fault)
    {
        /* Without a slot (all taken) the hub is woken by every publish, as without one. */
        if (wait_or_)
            interest_ = InterestSlot::claim(state->bus);
        try {
            epfd_ = checked(epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
            watch_fd_ = checked(epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
            stop_fd_ = checked(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
            struct epoll_event ev = {};
            ev.events = EPOLLIN;
            ev.data.fd = stop_fd_;
            checked(epoll_ctl(watch_fd_, EPOLL_CTL_ADD, stop_fd_, &ev), "epoll_ctl");
            ev.events = EPOLLIN | EPOLLONESHOT;
            ev.data.fd = epfd_;
            checked(epoll_ctl(watch_fd_, EPOLL_CTL_ADD, epfd_, &ev), "epoll_ctl");
        } catch (...) {
            close_fds();
            throw;
        }
    }

    ~AsyncHub() { close_fds(); }

    void start()
    {
        /* The relay first: from now on only the I/O thread touches wait_or_ and relay_
         * (sleep_until_woken), and exit_and_join() joins it before it looks at relay_. */
        if (!wait_or_)
            start_relay(state_->bus.wake_word());
        ender_ = std::thread([this] { supervise("ender", [this] { ender_loop(); }); });
        io_thread_ = std::thread([this] { supervise("I/O", [this] { io_loop(); }); });
        watcher_ = std::thread(
            [this] { supervise("socket watcher", [this] { watch_sockets(); }); });
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
        std::uint64_t one = 1;
        ssize_t n = write(stop_fd_, &one, sizeof one); /* the socket watcher */
        (void)n;
        state_->bus.wake_all();                        /* the bus relay */
        if (io_thread_.joinable())
            io_thread_.join();
        if (watcher_.joinable())
            watcher_.join();
        if (relay_.joinable())
            relay_.join();
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

    /* Ends every held stream. A stream whose ending fails is already out of the fan-out's
     * sets (nothing more can be done safely for it), so each retry has one stream fewer; the
     * bound (one attempt per stream, plus one) stops a failure that ends none (the copy of the
     * set failing to allocate) from spinning the I/O thread. */
    void end_all(EndReason why)
    {
        for (std::size_t attempts = fanout_.size() + 1; attempts > 0; --attempts)
            if (guarded([&] { fanout_.end_all(why); return true; },
                        [](const char *) { return false; }))
                return;
    }

    EndReason closing_reason() const
    {
        return broken_.load() ? EndReason::HubFailed : EndReason::ServerRestart;
    }

    static int checked(int r, const char *what)
    {
        if (r < 0)
            throw std::system_error(errno, std::generic_category(), what);
        return r;
    }

    void close_fds()
    {
        for (int fd : {stop_fd_, watch_fd_, epfd_})
            if (fd >= 0)
                close(fd);
    }

    /* Wakes the I/O thread (or keeps it from sleeping): from any thread. */
    void poke() { wake_.wake(); }

    /* The socket watcher: sleeps until the I/O thread's epoll set has events while the I/O
     * thread sleeps on the futexes, and wakes it. The set is in watch_fd_ with EPOLLONESHOT:
     * after firing once it stays quiet until the I/O thread, having read the set until it was
     * empty, re-arms it before sleeping (arm_socket_watcher). Also, once per wake-up or tick,
     * reaps the streams of dead processes (announcing them publishes, which takes locks: not
     * on the I/O thread; if a stopped lock holder stalls it, the I/O thread's tick keeps
     * fan-out going and only socket wake-ups wait). */
    void watch_sockets()
    {
        for (;;) {
            struct epoll_event ev[2];
            const int n = epoll_wait(watch_fd_, ev, 2, kTickMs);
            if (exiting_.load())
                return;
            for (int i = 0; i < n; ++i) {
                if (ev[i].data.fd == epfd_) {
                    sockets_ready_.store(true);
                    poke();
                }
            }
            reap_gone_processes(state_);
        }
    }

    /* False if it could not be armed (the I/O thread then keeps reading its set itself). */
    bool arm_socket_watcher()
    {
        struct epoll_event ev = {};
        ev.events = EPOLLIN | EPOLLONESHOT;
        ev.data.fd = epfd_;
        return epoll_ctl(watch_fd_, EPOLL_CTL_MOD, epfd_, &ev) == 0;
    }

    /* Only where the I/O thread cannot wait on the bus itself (no futex_waitv): turns every
     * publish into a poke, starting from the word `last` (a publish after it is poked for
     * at once). The wake word is read before exiting_ is checked: exit_and_join()
     * sets exiting_ and then calls wake_all(), which bumps the word, so wait(seen) cannot
     * sleep through it. */
    void relay_bus(std::uint32_t last)
    {
        for (;;) {
            std::uint32_t seen = state_->bus.wake_word();
            if (exiting_.load())
                return;
            if (seen != last) {
                last = seen;
                poke();
            }
            state_->bus.wait(seen, kTickMs);
        }
    }

    /* `since`: the bus word the I/O thread last looked at the bus after. */
    void start_relay(std::uint32_t since)
    {
        relay_ = std::thread(
            [this, since] { supervise("bus relay", [this, since] { relay_bus(since); }); });
    }

    /* Sleeps until a publish or a poke after the words were read (or the timeout). If
     * futex_waitv, which worked when the hub started, fails (a seccomp filter installed
     * later, say), the hub goes over to the relay for good: without it, publishes would wait
     * for the next tick.
     * Without a stream, until a poke only: what is published meanwhile has nobody here to go
     * to, and the stream that comes next is caught up from its own position (FanOut::add,
     * start). Its adopt() pokes after the push to the inbox, which this round read after
     * local_seen: it cannot be missed. */
    void sleep_until_woken(std::uint32_t bus_seen, std::uint32_t local_seen, int timeout_ms)
    {
        if (fanout_.size() == 0) {
            wake_.wait(local_seen, timeout_ms);
            return;
        }
        if (wait_or_ && (fault_.waitv_fails || !wait_for_bus(bus_seen, local_seen, timeout_ms))) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                         "SSE0504: the async hub can no longer wait on the bus and its own "
                         "word at once (futex_waitv: %s); a relay thread wakes it from now on",
                         fault_.waitv_fails ? "SSE_TEST_FAULT=hub-waitv-fails" : strerror(errno));
            wait_or_ = false;
            start_relay(bus_seen); /* so a publish since bus_seen wakes this wait at once */
        }
        if (!wait_or_)
            wake_.wait(local_seen, timeout_ms);
    }

    /* With an interest slot, only publishes on the channels of the streams held here (and
     * the other cases InterestSlot lists) wake it; it re-checks the bus itself before it
     * sleeps. Without one, every publish after `bus_seen` does. */
    bool wait_for_bus(std::uint32_t bus_seen, std::uint32_t local_seen, int timeout_ms)
    {
        if (interest_.valid())
            return interest_.wait_or(fanout_.reader(), fanout_.interest(), wake_, local_seen,
                                     timeout_ms);
        return state_->bus.wait_or(bus_seen, wake_, local_seen, timeout_ms);
    }

    /* One round: the wake-up words are read first, then everything that may have woken it is
     * looked at (the sockets when the watcher fired or is still disarmed, the inbox, the
     * bus); it sleeps only when a round found nothing left over, so a publish or a poke that
     * lands after the words were read makes the sleep return at once. The socket watcher is
     * re-armed only before sleeping: while the thread is busy (EPOLLOUT traffic, bursts) it
     * reads the epoll set itself every round and nobody wakes anybody. */
    void io_loop()
    {
        std::vector<struct epoll_event> events(kMaxSocketEvents);
        apr_time_t last_tick = apr_time_now();
        bool closed_all = false;
        bool polling = true; /* the socket watcher may be disarmed (also after a restart) */
        while (!exiting_.load()) {
            const std::uint32_t bus_seen = state_->bus.wake_word(), local_seen = wake_.word();
            polling = sockets_ready_.exchange(false) || polling;
            const bool full = polling && serve_sockets(events);
            take_inbox();
            const bool more = fanout_.run(kFanOutBatch);
            if ((stopping_.load() || broken_.load()) && !closed_all) {
                closed_all = true;
                end_all(closing_reason());
            }
            apr_time_t now = apr_time_now();
            if (now - last_tick >= apr_time_from_msec(kTickMs)) {
                last_tick = now;
                /* Streams whose registry slot a replacing join took, and whose EndStream
                 * record never came (the replacer died before publishing it), end as if it
                 * had come: one lock-free read of the registry per stream and tick. */
                fanout_.tick(now, [](const Subscriber &sub) {
                    return static_cast<const SuspendedStream &>(sub).sub.lost_slot();
                });
            }
            settle(now);
            flush_finishing();
            if (more || full || exiting_.load())
                continue;
            if (polling) /* fires at once if events came since serve_sockets */
                polling = !arm_socket_watcher();
            /* Unarmed, nobody wakes it for the sockets: it looks again soon. */
            sleep_until_woken(bus_seen, local_seen,
                              settling_.empty() && !polling ? kTickMs : kSettleCheckMs);
        }
        take_inbox();
        end_all(closing_reason());
        settle(apr_time_now(), true);
        flush_finishing();
    }

    /* What epoll reports, without waiting. True when the batch was full (more may wait). */
    bool serve_sockets(std::vector<struct epoll_event> &events)
    {
        const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), 0);
        for (int i = 0; i < n; ++i) {
            auto *s = static_cast<SuspendedStream *>(events[i].data.ptr);
            if (s->ended())
                continue;
            if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                fanout_.end(*s, EndReason::ClientClosed);
            else if (events[i].events & EPOLLOUT)
                fanout_.push(*s);
        }
        return n == static_cast<int>(events.size());
    }

    /* One stream at a time out of the inbox: a failure leaves the others there, and the one
     * it happened on is already the hub's (in the fan-out), so it is ended with the rest. */
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
            fanout_.add(*s);
            settling_.push_back(s);
            s->conn.take_socket();
            fault_point(fault_.io_throw_after, io_taken_);
            if (stopping_.load() || broken_.load()) {
                fanout_.end(*s, closing_reason());
                continue;
            }
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP;
            ev.data.ptr = s;
            if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->conn.fd(), &ev) < 0) {
                fanout_.end(*s, EndReason::WriteFailed);
                continue;
            }
            /* Catch up from where the handler left off to the bus head; the fan-out delivers
             * everything after that. */
            fanout_.start(*s);
        }
    }

    /* Streams whose worker has left (SuspendedConnection::worker_left_by) go back to the
     * MPM's descriptor; ended ones go to the ender. `all`: the workers are joined. */
    void settle(apr_time_t now, bool all = false)
    {
        std::size_t kept = 0;
        for (SuspendedStream *s : settling_) {
            if (!all && !s->conn.worker_left_by(now)) {
                settling_[kept++] = s;
                continue;
            }
            release_dup(s);
            if (s->ended())
                hand_over(s, false, true);
        }
        settling_.resize(kept);
    }

    /* The epoll set watches the MPM's descriptor instead of the dup; a stream whose MPM
     * descriptor close_worker_sockets() closed ends. */
    void release_dup(SuspendedStream *s)
    {
        if (s->conn.on_dup() && !s->ended()) {
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP | (s->want_out ? static_cast<std::uint32_t>(EPOLLOUT) : 0u);
            ev.data.ptr = s;
            if (s->conn.mpm_socket_open() &&
                epoll_ctl(epfd_, EPOLL_CTL_ADD, s->conn.mpm_fd(), &ev) == 0)
                epoll_ctl(epfd_, EPOLL_CTL_DEL, s->conn.fd(), nullptr);
            else
                fanout_.end(*s, EndReason::WriteFailed);
        }
        s->conn.settle();
    }

    /* FanOutSink: writes what the socket takes; never blocks. */
    void write_queued(Subscriber &sub) override
    {
        auto *s = static_cast<SuspendedStream *>(&sub);
        if (s->conn.direct())
            write_direct(s);
        else
            write_filtered(s);
    }

    /* Through the filters (TLS): at most write_budget() at a time, only when the core holds
     * nothing (see suspended_connection.h, 4). */
    void write_filtered(SuspendedStream *s)
    {
        if (s->conn.holds_data() && !write_buffered(s))
            return;
        const std::size_t budget = s->conn.write_budget();
        while (!s->conn.holds_data() && !s->queue_empty()) {
            std::vector<SharedBytes> inflight; /* what the brigade points into, until pass() */
            std::size_t charged = 0, plain = 0, skip = s->front_offset();
            for (auto it = s->queue().begin();
                 it != s->queue().end() && charged + kRecordSlack < budget; ++it, skip = 0) {
                const std::string &b = **it;
                const std::size_t len = std::min(b.size() - skip, budget - charged - kRecordSlack);
                s->conn.add(b.data() + skip, len);
                charged += len + kRecordSlack;
                plain += len;
                inflight.push_back(*it);
            }
            s->consumed(plain);
            if (!s->conn.pass()) {
                fanout_.end(*s, EndReason::WriteFailed);
                return;
            }
            s->wrote(plain, apr_time_now());
            if (!write_buffered(s))
                return;
        }
        want_out(s, s->conn.holds_data());
    }

    /* Plain HTTP without chunking: the body is the bytes themselves and the only output
     * filter left is the core's, with nothing buffered; one system call per wake-up. */
    void write_direct(SuspendedStream *s)
    {
        while (!s->queue_empty()) {
            struct iovec iov[64];
            int n = 0;
            std::size_t total = 0, skip = s->front_offset();
            for (auto it = s->queue().begin();
                 it != s->queue().end() && n < 64 && total < 256 * 1024; ++it, ++n, skip = 0) {
                iov[n].iov_base = const_cast<char *>((*it)->data() + skip);
                iov[n].iov_len = (*it)->size() - skip;
                total += iov[n].iov_len;
            }
            ssize_t w = send_pieces(s->conn.fd(), iov, n);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    want_out(s, true);
                    return;
                }
                fanout_.end(*s, EndReason::WriteFailed);
                return;
            }
            s->wrote(static_cast<std::size_t>(w), apr_time_now());
            s->consumed(static_cast<std::size_t>(w));
            if (static_cast<std::size_t>(w) < total) {
                want_out(s, true);
                return;
            }
        }
        want_out(s, false);
    }

    /* Has the core output filter write what it holds (SuspendedConnection::write_held). */
    bool write_buffered(SuspendedStream *s)
    {
        if (!s->conn.write_held()) {
            fanout_.end(*s, EndReason::WriteFailed);
            return false;
        }
        if (s->conn.holds_data())
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
        epoll_ctl(epfd_, EPOLL_CTL_MOD, s->conn.fd(), &ev);
    }

    /* FanOutSink: a stream ends on the I/O thread (FanOut took it out of its sets): out of
     * the epoll set, its last `retry:` (stop) written without waiting. The rest (registry,
     * presence, access log, close, pool) is the ender's, once the stream is settled. */
    void ended(Subscriber &sub, EndReason why) override
    {
        auto *s = static_cast<SuspendedStream *>(&sub);
        epoll_ctl(epfd_, EPOLL_CTL_DEL, s->conn.fd(), nullptr);
        if (comes_back(why)) {
            /* Only between events: with part of an event handed down (write_filtered() splits
             * large ones over TLS), a retry: would land inside it and the client would
             * dispatch a cut event under its id, never to get it whole. Without it, the cut
             * event is dropped by the client at the close and replayed after its
             * Last-Event-ID. */
            std::string last;
            if (s->front_offset() == 0)
                s->delivery().restart_bytes(last);
            s->bytes_sent += s->conn.end_with(last);
        } else {
            s->conn.abort(); /* gone, failed, or too far behind: it reconnects and replays */
        }
        /* The registry slot and the disconnect go at once; the connection once settled. */
        hand_over(s, true, s->conn.settled());
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
            s->sub.end(end_reason_name(s->end_reason()));
        } catch (const std::exception &e) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_, "SSE0502: ending a held stream: %s",
                         e.what());
        } catch (...) {
            /* Anything else too: escaping, it would restart the ender and lose the slot. */
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                         "SSE0502: ending a held stream: an unknown exception");
        }
    }

    /* Releases a settled, ended stream's connection (SuspendedConnection::close), with its
     * access-log notes. */
    void finish(SuspendedStream *s)
    {
        note_stream_end(s->conn.request(), s->events_sent, s->bytes_sent, s->end_reason());
        apr_pool_t *pool = s->conn.close(s->bytes_sent);
        delete s;
        apr_pool_destroy(pool); /* last: see SuspendedConnection::close() */
    }

    server_rec *s_;
    ModuleState *state_;
    FanOut fanout_; /* the I/O thread's */
    bool wait_or_;     /* the I/O thread sleeps on the bus and wake_ at once (futex_waitv);
                          only the I/O thread changes it, once the hub started */
    int epfd_ = -1;    /* the streams' sockets: read by the I/O thread only */
    int watch_fd_ = -1, stop_fd_ = -1; /* the socket watcher's: epfd_ (one-shot), and exit */
    LocalWake wake_;   /* pokes for the I/O thread */
    InterestSlot interest_; /* the I/O thread's; freed when the hub is deleted */
    std::atomic<bool> sockets_ready_{false}; /* the socket watcher fired (and is disarmed) */
    std::thread io_thread_, watcher_, relay_, ender_;
    std::atomic<bool> stopping_{false}, exiting_{false}, broken_{false};
    HubFault fault_;
    long io_taken_ = 0, ender_done_ = 0; /* counted for fault_ only */
    std::mutex inbox_mu_;
    std::deque<SuspendedStream *> inbox_;
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
    return d.async && state->hub && state->hub->accepting() && !state->child_stopping.load() &&
           SuspendedConnection::suspendable(r);
}

void prepare_suspended_stream(request_rec *r, BusReader reader, const DeliverySettings &settings,
                              apr_size_t max_pending, apr_uint64_t events_sent,
                              apr_uint64_t bytes_sent, const std::vector<std::string> &channels,
                              const std::string &client_id, Subscription sub)
{
    auto *s = new SuspendedStream(r, std::move(reader), channels, client_id, settings,
                                  max_pending);
    s->sub = std::move(sub);
    s->events_sent = events_sent;
    s->bytes_sent = bytes_sent;
    ap_set_module_config(r->connection->conn_config, &sse_module, s);
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
    if (!state || !state->hub || !SuspendedConnection::handed_over(c)) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c,
                      "SSE0503: a stream was not held: its connection was not suspended "
                      "(state %d)", SuspendedConnection::mpm_state(c));
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
