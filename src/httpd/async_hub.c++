/* The per-child hub of suspended streams (see the header for the design). What it relies on
 * in httpd 2.4's event MPM is in src/httpd/suspended_connection.h; this file uses only that
 * class for the connections it holds; what each stream gets is decided by FanOut
 * (sse/fanout.h).
 */
#include "src/httpd/async_hub.h"
#include "src/httpd/suspended_connection.h"
#include "src/httpd/taken_socket.h"
#include "sse/fanout.h"

#include "ap_mpm.h"
#include "http_main.h"

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
 * the relay). hold-socket-dup-fails: SSEHoldMode socket cannot dup() a socket (the stream is
 * held in request mode instead). hold-socket-not-adopted: the pre_close_connection hook leaves
 * a taken socket's stream parked, as when a connection is closed without its hooks (the pool
 * cleanup then frees it, SSE0511). Unset, or any other value: no fault. */
struct HubFault {
    bool start_fail = false;
    bool dup_fails = false;
    bool not_adopted = false;
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
        f.dup_fails = spec == "hold-socket-dup-fails";
        f.not_adopted = spec == "hold-socket-not-adopted";
        f.no_waitv = spec == "hub-no-waitv";
        f.waitv_fails = spec == "hub-waitv-fails";
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

/* One held stream: what the fan-out keeps of it (Subscriber: its queue, its rules), its
 * transport (a suspended connection, or a taken socket: SSEHoldMode) and its registry slot.
 * Everything here is its own (std:: copies), nothing in a request's or connection's pool: a
 * taken socket's pools are gone once httpd closed the connection (taken_socket.h, 5).
 * Created on the worker by the handler; owned by the hub's I/O thread once adopted, then by
 * the ender thread once ended and settled. */
struct HubStream : Subscriber {
    /* want_out and conn first: next to what Subscriber's delivery fields touch
     * (sse/fanout.h), so a delivery touches adjacent cache lines. */
    bool want_out = false; /* EPOLLOUT is asked for */
    bool taken = false;    /* conn is a TakenSocket (SSEHoldMode socket) */
    /* conn->fd() while conn->direct(), else -1: a direct write reads it here, in this line,
     * instead of the transport's own (a separate allocation: one more cold cache line, and
     * an indirect call, per delivery). Kept by AsyncHub::refresh_direct() whenever the
     * transport's descriptor may change (adoption, settle()). */
    int direct_fd = -1;
    std::unique_ptr<StreamTransport> conn;
    Subscription sub;

    HubStream(std::unique_ptr<StreamTransport> transport, BusReader reader,
              const std::vector<std::string> &channels, const std::string &client_id,
              const DeliverySettings &settings, apr_size_t max_pending)
        : Subscriber(std::move(reader), channels, client_id, settings, max_pending,
                     apr_time_now()),
          conn(std::move(transport))
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
    /* SSE_TEST_FAULT=hold-socket-dup-fails. */
    bool dup_fails() const { return fault_.dup_fails; }
    /* SSE_TEST_FAULT=hold-socket-not-adopted. */
    bool not_adopted() const { return fault_.not_adopted; }

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

    void adopt(std::unique_ptr<HubStream> s)
    {
        {
            std::lock_guard<std::mutex> lock(inbox_mu_);
            inbox_.push_back(s.get());
            s.release(); /* the inbox's now */
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
            /* Also when the wall clock was stepped back: waiting for it to pass last_tick again
             * would stop keep-alives, token expiry and the replaced check for as long as the
             * step (the fan-out's clocks are wall time; its wheel walks every stream then). */
            if (now - last_tick >= apr_time_from_msec(kTickMs) || now < last_tick) {
                last_tick = now;
                /* Streams whose registry slot a replacing join took, and whose EndStream
                 * record never came (the replacer died before publishing it), end as if it
                 * had come: every stream's slot is read (lock-free) only in a tick after
                 * the registry counted a slot taken; read before, so that one taken during
                 * the walk moves it again for the next tick. */
                const std::uint64_t taken =
                    state_->registry.valid() ? state_->registry.slots_taken() : 0;
                fanout_.tick(
                    now,
                    [](const Subscriber &sub) {
                        return static_cast<const HubStream &>(sub).sub.lost_slot();
                    },
                    taken != slots_taken_seen_);
                slots_taken_seen_ = taken;
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
            auto *s = static_cast<HubStream *>(events[i].data.ptr);
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
            HubStream *s;
            {
                std::lock_guard<std::mutex> lock(inbox_mu_);
                if (inbox_.empty())
                    return;
                s = inbox_.front();
                inbox_.pop_front();
            }
            fanout_.add(*s);
            /* Only a stream that is not settled yet waits in settling_: one that is (a taken
             * socket) goes to the ender from ended() directly, and settle() would hand it over
             * a second time if it ended in this round (the ender then used it after freeing
             * it). */
            if (!s->conn->settled())
                settling_.push_back(s);
            s->conn->adopted();
            fault_point(fault_.io_throw_after, io_taken_);
            if (stopping_.load() || broken_.load()) {
                fanout_.end(*s, closing_reason());
                continue;
            }
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP;
            ev.data.ptr = s;
            if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->conn->fd(), &ev) < 0) {
                fanout_.end(*s, EndReason::WriteFailed);
                continue;
            }
            refresh_direct(s);
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
        for (HubStream *s : settling_) {
            if (!all && !s->conn->worker_left_by(now)) {
                settling_[kept++] = s;
                continue;
            }
            release_dup(s);
            if (s->ended())
                hand_over(s, false, true);
        }
        settling_.resize(kept);
    }

    /* The epoll set watches the descriptor the transport settles on (a suspended
     * connection's MPM descriptor instead of its dup); a stream whose connection lost its
     * socket (close_worker_sockets() closed it) ends. */
    void release_dup(HubStream *s)
    {
        const int next = s->conn->settled_fd();
        if (next != s->conn->fd() && !s->ended()) {
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP | (s->want_out ? static_cast<std::uint32_t>(EPOLLOUT) : 0u);
            ev.data.ptr = s;
            if (next >= 0 && epoll_ctl(epfd_, EPOLL_CTL_ADD, next, &ev) == 0)
                epoll_ctl(epfd_, EPOLL_CTL_DEL, s->conn->fd(), nullptr);
            else
                fanout_.end(*s, EndReason::WriteFailed);
        }
        s->conn->settle();
        refresh_direct(s);
    }

    static void refresh_direct(HubStream *s)
    {
        s->direct_fd = s->conn->direct() ? s->conn->fd() : -1;
    }

    /* FanOutSink: writes what the socket takes; never blocks. */
    void write_queued(Subscriber &sub) override
    {
        auto *s = static_cast<HubStream *>(&sub);
        switch (s->direct_fd >= 0 ? write_direct(s->direct_fd, *s) : s->conn->write(*s)) {
        case StreamTransport::Wrote::All:
            want_out(s, false);
            break;
        case StreamTransport::Wrote::WantOut:
            want_out(s, true);
            break;
        case StreamTransport::Wrote::Failed:
            fanout_.end(*s, EndReason::WriteFailed);
            break;
        }
    }

    void want_out(HubStream *s, bool out)
    {
        if (s->want_out == out)
            return;
        s->want_out = out;
        struct epoll_event ev = {};
        ev.events = EPOLLRDHUP | (out ? static_cast<std::uint32_t>(EPOLLOUT) : 0u);
        ev.data.ptr = s;
        epoll_ctl(epfd_, EPOLL_CTL_MOD, s->conn->fd(), &ev);
    }

    /* FanOutSink: a stream ends on the I/O thread (FanOut took it out of its sets): out of
     * the epoll set, its last `retry:` (stop) written without waiting. The rest (registry,
     * presence, access log, close, pool) is the ender's, once the stream is settled. */
    void ended(Subscriber &sub, EndReason why) override
    {
        auto *s = static_cast<HubStream *>(&sub);
        epoll_ctl(epfd_, EPOLL_CTL_DEL, s->conn->fd(), nullptr);
        if (comes_back(why)) {
            /* Only between events: with part of an event handed down (write_filtered() splits
             * large ones over TLS), a retry: would land inside it and the client would
             * dispatch a cut event under its id, never to get it whole. Without it, the cut
             * event is dropped by the client at the close and replayed after its
             * Last-Event-ID. */
            std::string last;
            if (s->front_offset() == 0)
                s->delivery().restart_bytes(last);
            s->bytes_sent += s->conn->end_with(last);
        } else {
            s->conn->abort(); /* gone, failed, or too far behind: it reconnects and replays */
        }
        /* The registry slot and the disconnect go at once; the connection once settled. */
        hand_over(s, true, s->conn->settled());
    }

    /* `leave`: the ender releases the stream's registry slot (Subscription::end) at once;
     * the I/O thread no longer touches s->sub. `finish`: at the end of this loop round (the
     * current epoll batch may still name the stream), the ender takes the stream and
     * deletes it; the I/O thread never looks at it again. */
    void hand_over(HubStream *s, bool leave, bool finish)
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
            for (HubStream *s : finishing_)
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

    void leave(HubStream *s)
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

    /* Releases a settled, ended stream: its transport's release (the access-log line or
     * SSE0510, the connection's teardown), then the stream, then the pool it returned. */
    void finish(HubStream *s)
    {
        apr_pool_t *pool = s->conn->release(s_, s->events_sent, s->bytes_sent, s->end_reason());
        delete s;
        if (pool)
            apr_pool_destroy(pool); /* last: see StreamTransport::release() */
    }

    server_rec *s_;
    ModuleState *state_;
    FanOut fanout_; /* the I/O thread's */
    std::uint64_t slots_taken_seen_ = 0; /* Registry::slots_taken() at the last tick */
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
    std::deque<HubStream *> inbox_;
    std::vector<HubStream *> settling_; /* adopted, worker maybe not gone yet */
    std::vector<HubStream *> finishing_; /* ended and settled: for the ender, at the
                                                * end of this loop round */
    std::mutex ender_mu_;
    std::condition_variable ender_cv_;
    struct EnderTask {
        HubStream *s = nullptr;
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

namespace {

/* A stream the handler made waits in its connection's config slot until a hook hands it to
 * the hub (the suspend_connection hook in request mode, the pre_close_connection hook in
 * socket mode). The slot owns it: whoever takes it out, emptying the slot in the same step,
 * owns it. All on the thread that runs the connection (its worker; a pool cleanup runs
 * there too, or at the child's exit after the workers were joined). */
HubStream *parked(conn_rec *c)
{
    return static_cast<HubStream *>(ap_get_module_config(c->conn_config, &sse_module));
}

std::unique_ptr<HubStream> take_parked(conn_rec *c)
{
    std::unique_ptr<HubStream> s(parked(c));
    ap_set_module_config(c->conn_config, &sse_module, nullptr);
    return s;
}

/* A cleanup on c->pool, for a socket-mode stream: when the pool goes (cleared for reuse or
 * destroyed) and the pre_close_connection hook did not take the stream (the event MPM closes
 * without the hooks only after a failed apr_pollset_add()), it is deleted here: its registry slot released
 * (Subscription's destructor), its dup closed. After the hook took it the slot is empty and
 * this does nothing. */
apr_status_t drop_parked(void *data)
{
    guarded(ap_server_conf, "dropping a taken socket's stream", [data] {
        auto *c = static_cast<conn_rec *>(data);
        if (!parked(c))
            return;
        take_parked(c).reset();
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                     "SSE0511: a socket-held stream ended before the hub took it: its "
                     "connection was closed without its pre-close hooks");
    });
    return APR_SUCCESS;
}

} // namespace

int hand_to_hub(request_rec *r, const DirConfig &d, ModuleState *state, BusReader reader,
                const DeliverySettings &settings, apr_uint64_t events_sent,
                apr_uint64_t bytes_sent, const std::vector<std::string> &channels,
                const std::string &client_id, Subscription sub)
{
    conn_rec *c = r->connection;
    std::unique_ptr<StreamTransport> transport;
    if (d.hold_socket && TakenSocket::possible(r))
        transport = TakenSocket::take(r, state->hub->dup_fails());
    const bool taken = transport != nullptr;
    if (!taken)
        transport = std::make_unique<SuspendedConnection>(r);
    std::unique_ptr<HubStream> s(new HubStream(std::move(transport), std::move(reader), channels,
                                               client_id, settings, d.max_pending));
    s->taken = taken;
    s->sub = std::move(sub);
    s->events_sent = events_sent;
    s->bytes_sent = bytes_sent;
    ap_set_module_config(c->conn_config, &sse_module, s.release());
    if (!taken)
        return SUSPENDED;
    apr_pool_cleanup_register(c->pool, c, drop_parked, apr_pool_cleanup_null);
    /* httpd logs the request now (taken_socket.h, 3), and closes the connection without
     * a FIN once adopt_taken_socket() marked it aborted (2). */
    c->keepalive = AP_CONN_CLOSE;
    note_stream_end(r, events_sent, bytes_sent, "socket-held");
    return OK;
}

void adopt_taken_socket(conn_rec *c, ModuleState *state)
{
    HubStream *s = parked(c);
    if (!s || !s->taken)
        return;
    c->aborted = 1; /* no shutdown() at httpd's lingering close (taken_socket.h, 2) */
    if (!state || !state->hub || state->hub->not_adopted())
        return; /* (the first cannot happen: the handler took the socket for this hub) the
                 * stream stays parked: drop_parked() frees it with the connection's pool */
    state->hub->adopt(take_parked(c));
}

void adopt_suspended_stream(conn_rec *c, ModuleState *state)
{
    HubStream *parked_stream = parked(c);
    /* A socket-mode stream waits for the pre_close_connection hook (the event MPM calls the
     * suspend hooks on the way there too, at write completion). */
    if (!parked_stream || parked_stream->taken)
        return;
    std::unique_ptr<HubStream> s = take_parked(c);
    /* Only the call after the handler's SUSPENDED return hands the connection over; in any
     * other state (write completion, keep-alive, lingering close) the MPM still owns it and
     * its request may be gone: the stream is dropped, never held. can_suspend() keeps this
     * from happening; this is the last guard. */
    if (!state || !state->hub || !SuspendedConnection::handed_over(c)) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, c,
                      "SSE0503: a stream was not held: its connection was not suspended "
                      "(state %d)", SuspendedConnection::mpm_state(c));
        return;
    }
    state->hub->adopt(std::move(s));
}

void stop_async_hub(AsyncHub *hub)
{
    if (hub)
        hub->stop();
}

} // namespace sse::httpd
