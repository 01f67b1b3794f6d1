/* The local socket's daemon (sse-publishd), serving publishers and subscribers: one process,
 * poll() over the listening socket and every client.
 * Each client has a FrameParser; each complete event goes through publish_event(), the same
 * path as the HTTP handler, and is answered in order.
 *
 * A client that sends a subscribe block becomes a subscriber: it gets a BusReader and the
 * same event stream an HTTP subscriber gets (same bytes per event, same replay and missed
 * notices, same end on DELETE). A second thread (BusWaker) exists only once somebody has
 * subscribed: it turns the bus's futex wake-ups into an eventfd that poll() watches.
 *
 * With SSERedis, the daemon (started then even without SSEPublishSocket: no listening
 * socket, listen_fd -1) also runs the server's one Redis reader, a thread of its own
 * (redis_bus.h), the cluster figures' reporter (redis_cluster_state.h) and, with
 * SSEPresenceChannel, the presence forwarder (redis_presence.h); its socket publishes go
 * through Redis like the HTTP handler's.
 *
 * Protection of the bus and the other clients:
 * - at most `max_clients` connections; one more is answered "error busy ..." and closed;
 * - an event's bytes are bounded by the parser (SSEMaxMessageSize);
 * - a client that stops reading its answers is not read from either once 64 KiB of answers
 *   wait for it (it cannot make the daemon buffer without bound);
 * - a client that starts an event and does not finish it within 30 s is told so and closed;
 *   an idle client between events may stay (a `tail -f` publisher is quiet for hours);
 * - a client that is done (or told to go) but does not read its last answers is closed 30 s
 *   later all the same;
 * - with no file descriptor left (EMFILE, ENFILE), a spare one kept for the purpose is given
 *   up to accept the waiting client, tell it "error busy" and close it, so that clients are
 *   answered and the listening socket does not stay readable (poll() would spin).
 */
#include "src/httpd/publish_socket.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/redis_cluster_state.h"
#include "src/httpd/redis_presence.h"

#include "sse/bus.h"
#include "sse/delivery.h"
#include "sse/publisher.h"
#include "sse/socket_protocol.h"
#include "sse/stream_open.h"

#include "ap_listen.h"
#include "mpm_common.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <system_error>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

constexpr apr_time_t kIncompleteEventTimeout = apr_time_from_sec(30);
constexpr apr_time_t kStopGrace = apr_time_from_sec(2);
constexpr apr_time_t kClosingGrace = apr_time_from_sec(30);
constexpr std::size_t kMaxPendingAnswers = 64 * 1024;
constexpr int kPollMs = 1000;

volatile sig_atomic_t stop_requested = 0;

void on_sigterm(int) { stop_requested = 1; }

struct Client {
    int fd;
    FrameParser parser;
    std::string out;              /* answers, or a subscriber's events, not yet written */
    apr_time_t event_started = 0; /* when the current incomplete event began; 0: none */
    bool closing = false;         /* close once `out` is written */
    apr_time_t closing_since = 0; /* when it was first seen closing with `out` unwritten */
    bool input_closed = false;    /* a subscriber shut down its sending side (still reads) */
    std::unique_ptr<BusReader> reader; /* set: a subscriber; it publishes nothing more */
    /* A subscriber's rules: no registry slot, so no EndStream record ends it (they name HTTP
     * streams by serial); no keep-alives nor token; its event-types filter. Set with reader. */
    std::optional<Delivery> rules;
    Client(int f, std::size_t max_event) : fd(f), parser(max_event) {}
};

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Makes the bus's wake-ups (a futex in the segment, which poll() cannot watch) readable on an
 * eventfd, while the daemon has subscribers. Its thread starts with the first subscriber and
 * sleeps on a condition variable while there are none, so a daemon that only publishes
 * is not woken by every event. */
class BusWaker {
public:
    explicit BusWaker(Bus bus) : bus_(bus) {}

    /* The eventfd to poll for POLLIN, or -1 before the first subscriber. */
    int fd() const { return efd_; }

    /* Starts or stops watching; the first start creates the eventfd and the thread (with
     * every signal blocked: SIGTERM is the main loop's). Throws std::system_error when they
     * cannot be created. */
    void set_active(bool on)
    {
        if (on && efd_ < 0) {
            int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            if (fd < 0)
                throw std::system_error(errno, std::generic_category(), "eventfd");
            efd_ = fd;
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_BLOCK, &all, &old);
            try {
                /* A watcher that fails would leave the daemon's subscribers unwoken: the
                 * daemon exits instead, and the parent starts a new one (SSE0402). */
                std::thread([this] {
                    guarded([this] { watch(); }, [](const char *why) {
                        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, nullptr,
                                     "SSE0404: publish socket daemon's bus watcher failed: %s",
                                     why);
                        _exit(1);
                    });
                }).detach();
            } catch (...) {
                pthread_sigmask(SIG_SETMASK, &old, nullptr);
                efd_ = -1;
                close(fd);
                throw;
            }
            pthread_sigmask(SIG_SETMASK, &old, nullptr);
        }
        std::lock_guard<std::mutex> lock(mutex_);
        if (active_ != on) {
            active_ = on;
            changed_.notify_one();
        }
    }

    /* Empties the eventfd after poll() reported it. */
    void drain()
    {
        std::uint64_t count;
        while (read(efd_, &count, sizeof count) > 0) {
        }
    }

private:
    void watch()
    {
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                changed_.wait(lock, [this] { return active_; });
            }
            /* Anything published before `seen` was read may not have been looked at yet:
             * signal once now, then at every change. */
            std::uint32_t seen = bus_.wake_word();
            signal();
            while (active()) {
                bus_.wait(seen, kPollMs);
                std::uint32_t now = bus_.wake_word();
                if (now != seen) {
                    seen = now;
                    signal();
                }
            }
        }
    }

    bool active()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return active_;
    }

    void signal()
    {
        std::uint64_t one = 1;
        ssize_t ignored = write(efd_, &one, sizeof one);
        (void)ignored;
    }

    Bus bus_;
    int efd_ = -1; /* set before the thread starts, never changed after */
    std::mutex mutex_;
    std::condition_variable changed_;
    bool active_ = false;
};

class Daemon {
public:
    Daemon(server_rec *s, int listen_fd, ModuleState *state, int max_clients,
           std::size_t max_event)
        : s_(s), listen_fd_(listen_fd), state_(state), max_clients_(max_clients),
          max_event_(max_event), waker_(state->bus), spare_fd_(open_spare()) {}

    /* The daemon's loop: housekeeping (stop, feed, sweep), then one poll() over the listening
     * socket, the bus waker and every client, then serving what it reported. Never returns:
     * the daemon is a child process that ends with _exit(). */
    [[noreturn]] void run()
    {
        apr_time_t stop_deadline = 0;
        pid_t parent = getppid();
        for (;;) {
            notice_stop(stop_deadline, parent);
            housekeep(stop_deadline);
            /* Built and read with the same `listening`: a SIGTERM arriving after poll() must
             * not shift the descriptors against their owners. */
            PollSet set = poll_set();
            int n = poll(set.fds.data(), set.fds.size(), poll_timeout(stop_deadline));
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s_,
                             "SSE0404: publish socket daemon: poll failed");
                _exit(1);
            }
            bool accept_now = serve_ready(set);
            /* Clients that left in this round are gone before new ones are counted, so a
             * client connecting just after another disconnected is not told "busy". */
            sweep();
            if (accept_now && !stop_requested)
                accept_clients();
        }
    }

private:
    /* fds[i] belongs to owners[i]; nullptr for the listening socket and the waker. */
    struct PollSet {
        std::vector<struct pollfd> fds;
        std::vector<Client *> owners;
    };

    /* On the first round after SIGTERM: starts the grace and closes every client that is not
     * in the middle of an event. A parent that is gone counts as a SIGTERM (from the next
     * round on). */
    void notice_stop(apr_time_t &stop_deadline, pid_t parent)
    {
        if (stop_requested && !stop_deadline) {
            stop_deadline = apr_time_now() + kStopGrace;
            for (auto &c : clients_)
                if (c.reader || !c.parser.mid_event())
                    c.closing = true; /* subscribers reconnect to the next daemon */
        }
        if (getppid() != parent) /* httpd's parent is gone (kill -9): nobody supervises */
            stop_requested = 1;
    }

    /* Feeds the subscribers, drops the clients that are done, publishes the count, and ends
     * the daemon once stopping and nobody is left (or the grace is over). */
    void housekeep(apr_time_t stop_deadline)
    {
        sweep();
        feed_subscribers();
        sweep();
        state_->registry.set_socket_clients(clients_.size());
        if (stop_deadline && (clients_.empty() || apr_time_now() > stop_deadline)) {
            state_->registry.set_socket_clients(0);
            _exit(0);
        }
    }

    /* What this round polls: new clients unless stopping (or paused for one round), the bus
     * waker, and each client for what it can do now. */
    PollSet poll_set()
    {
        PollSet set;
        const bool listening = listen_fd_ >= 0 && !stop_requested && !listen_paused_;
        listen_paused_ = false;
        if (listening) {
            set.fds.push_back({listen_fd_, POLLIN, 0});
            set.owners.push_back(nullptr);
        }
        if (waker_.fd() >= 0) {
            set.fds.push_back({waker_.fd(), POLLIN, 0});
            set.owners.push_back(nullptr);
        }
        for (auto &c : clients_) {
            short events = 0;
            /* A subscriber is read only to notice that it left (POLLHUP comes anyway). */
            if (!c.closing && !c.input_closed && (c.reader || c.out.size() < kMaxPendingAnswers))
                events |= POLLIN;
            if (!c.out.empty())
                events |= POLLOUT;
            set.fds.push_back({c.fd, events, 0});
            set.owners.push_back(&c);
        }
        return set;
    }

    int poll_timeout(apr_time_t stop_deadline) const
    {
        int timeout_ms = kPollMs;
        if (stop_deadline) /* do not sleep past the grace: the parent kills at 3 s */
            timeout_ms = static_cast<int>(std::clamp<apr_time_t>(
                apr_time_as_msec(stop_deadline - apr_time_now()) + 1, 0, kPollMs));
        return timeout_ms;
    }

    /* Serves what poll() reported on each descriptor; returns whether new clients wait. */
    bool serve_ready(const PollSet &set)
    {
        bool accept_now = false;
        for (std::size_t i = 0; i < set.fds.size(); ++i) {
            const short revents = set.fds[i].revents;
            if (!set.owners[i]) {
                if (listen_fd_ >= 0 && set.fds[i].fd == listen_fd_)
                    accept_now = revents & POLLIN;
                else if (revents & POLLIN)
                    waker_.drain(); /* the subscribers are fed at the top of the loop */
                continue;
            }
            Client &c = *set.owners[i];
            if (c.reader && (revents & (POLLHUP | POLLERR))) {
                c.closing = true; /* the subscriber is gone: nobody reads what is pending */
                c.out.clear();
                continue;
            }
            if (revents & (POLLIN | POLLHUP | POLLERR))
                read_from(c);
            if (!c.closing || !c.out.empty())
                if (revents & POLLOUT)
                    write_to(c);
        }
        return accept_now;
    }

    static int open_spare() { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

    void accept_clients()
    {
        for (int k = 0; k < 64; ++k) {
            int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE)
                    refuse_without_descriptor();
                return;
            }
            if (active_clients() >= max_clients_) {
                refuse(fd, refusal(kBusyReason, std::to_string(max_clients_) +
                               " clients are connected, the most SSEPublishSocketClients allows"));
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                             "SSE0411: publish socket refused a client: %d clients already "
                             "connected (SSEPublishSocketClients)",
                             max_clients_);
                continue;
            }
            clients_.emplace_back(fd, max_event_);
        }
    }

    static void refuse(int fd, const std::string &why)
    {
        std::string line = error_line(why);
        ssize_t ignored = write(fd, line.data(), line.size());
        (void)ignored;
        close(fd);
    }

    /* accept4() failed for want of a descriptor: the spare one makes room for the waiting
     * client, which is told and closed. Without a spare (it could not be reopened yet) the
     * listening socket is left alone for a poll round. */
    void refuse_without_descriptor()
    {
        const int err = errno;
        int fd = -1;
        if (spare_fd_ >= 0) {
            close(spare_fd_);
            spare_fd_ = -1;
            fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (fd >= 0)
            refuse(fd, refusal(kBusyReason, "the publish socket daemon has no file descriptor left"));
        else
            listen_paused_ = true; /* ENFILE, or no spare: not again before the next round */
        spare_fd_ = open_spare();
        apr_time_t now = apr_time_now();
        if (now - last_fd_warning_ >= apr_time_from_sec(10)) {
            last_fd_warning_ = now;
            ap_log_error(APLOG_MARK, APLOG_ERR, err, s_,
                         "SSE0413: publish socket refused a client: no file descriptor left "
                         "(raise the open-files limit, or lower SSEPublishSocketClients)");
        }
    }

    /* Clients still sending events (a closing one only waits for its answers to drain). */
    int active_clients() const
    {
        int n = 0;
        for (const auto &c : clients_)
            n += c.closing ? 0 : 1;
        return n;
    }

    void read_from(Client &c)
    {
        char buf[65536];
        ssize_t n = read(c.fd, buf, sizeof buf);
        if (c.reader) {
            /* A subscriber's bytes mean nothing. End of input alone is a half-close
             * (`socat`, `nc -N` after sending the block): it still reads, so keep streaming
             * until POLLHUP says it is gone. */
            if (n == 0) {
                c.input_closed = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                c.closing = true;
                c.out.clear();
            }
            return;
        }
        if (n == 0) {
            /* End of its events (it may still read the answers). An event it did not finish
             * is dropped: it was never answered "ok". */
            c.closing = true;
            return;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            c.closing = true;
            c.out.clear();
            return;
        }
        if (n < 0)
            return;
        std::vector<ClientBlock> blocks;
        c.parser.feed(std::string_view(buf, static_cast<std::size_t>(n)), blocks);
        for (const ClientBlock &f : blocks) {
            if (f.subscribe) {
                subscribe(c, f); /* what follows a subscribe block is not read */
                if (c.reader) {
                    write_to(c);
                    return;
                }
                continue;
            }
            c.out += answer(f);
        }
        if (c.parser.mid_event()) {
            if (!c.event_started)
                c.event_started = apr_time_now();
        } else {
            c.event_started = 0;
            if (stop_requested)
                c.closing = true; /* between two events: the graceful moment to close */
        }
        write_to(c);
    }

    std::string answer(const ClientBlock &f)
    {
        std::string error = f.error;
        if (error.empty()) {
            try {
                PublishAttempt a = submit_event(state_, s_, f.channels, f.fields, f.audience);
                if (a.outcome == PublishAttempt::Outcome::Published) {
                    if (a.result.recovered_lock)
                        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                                     "SSE0202: a process died while publishing; the bus lock "
                                     "was recovered and no committed event was lost");
                    return ok_line(a.result.id);
                }
                if (a.outcome == PublishAttempt::Outcome::Unavailable) /* SSE0701 said it */
                    return error_line(refusal(kUnavailableReason, a.error));
                error = a.error;
            } catch (const std::exception &e) {
                error = std::string("internal error: ") + e.what();
            }
        }
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_, "SSE0410: publish socket refused an event: %s",
                     error.c_str());
        return error_line(error);
    }

    /* Answers a subscribe block: the stream's first bytes (and the replay it asks for), or
     * an error line, after which the client is still a publisher. */
    void subscribe(Client &c, const ClientBlock &f)
    {
        std::string error = f.error;
        if (error.empty())
            error = validate_channel_list(f.subscribe_channels);
        std::optional<OpenedStream> opened;
        if (error.empty()) {
            /* The bus position before the registry view (see sse/stream_open.h): a DELETE
             * the view misses reaches the reader. No slot: socket subscribers are not
             * counted. */
            StreamRequest req;
            req.channels = f.subscribe_channels;
            req.resume_id = f.last_event_id;
            req.join = false;
            opened.emplace(open_stream(state_->bus, state_->registry, req, state_->history,
                                       apr_time_now()));
            if (opened->outcome == OpenedStream::Outcome::Closed)
                error = refusal(kClosedReason, "a channel of it was closed (DELETE); it opens "
                                               "again at its next publish");
        }
        if (error.empty()) {
            try {
                waker_.set_active(true);
            } catch (const std::exception &e) {
                error = std::string("internal error: ") + e.what();
            }
        }
        if (!error.empty()) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                         "SSE0412: publish socket refused a subscriber: %s", error.c_str());
            c.out += error_line(error);
            return;
        }
        c.reader = std::make_unique<BusReader>(std::move(opened->reader));
        DeliverySettings rules;
        rules.event_types = f.event_types;
        c.rules.emplace(rules, 0);
        /* The retry is a retry-only publish's value, as HTTP streams get it (no SSERetry:
         * the socket has no location). */
        Delivery::opening(opened->retry_ms, opened->resume_found, f.last_event_id, c.out);
        c.event_started = 0;
        if (stop_requested)
            c.closing = true; /* the daemon is stopping: the client comes back to the next */
        feed(c);
    }

    /* Moves what the bus has for each subscriber into its output, up to kMaxPendingAnswers
     * each (a subscriber that does not read stays behind in the bus, not in memory here,
     * and gets the "overrun" notice if the ring passes it), and stops the waker when nobody
     * subscribes any more. */
    void feed_subscribers()
    {
        bool any = false;
        for (auto &c : clients_) {
            if (c.reader && !c.closing) {
                feed(c);
                any = true;
            }
        }
        if (!any && waker_.fd() >= 0)
            waker_.set_active(false);
    }

    /* Up to kMaxPendingAnswers at a time, written before the next batch, until the reader
     * has nothing more or the socket is full (then POLLOUT brings us back; a backlog must
     * not wait for the next publish or the poll timeout). A CloseChannels record ends the
     * stream after its notice, as over HTTP. */
    void feed(Client &c)
    {
        for (;;) {
            ReadStop stop;
            if (!c.closing && c.out.size() < kMaxPendingAnswers) {
                stop = read_stream(*c.reader, *c.rules, [&](std::string &&bytes, bool) {
                    c.out += bytes;
                    return c.out.size() < kMaxPendingAnswers;
                });
                if (stop.ended)
                    c.closing = true;
            }
            write_to(c);
            if (stop.drained || c.closing || !c.out.empty())
                return;
        }
    }

    void write_to(Client &c)
    {
        while (!c.out.empty()) {
            ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
            if (n > 0) {
                c.out.erase(0, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            c.out.clear();
            c.closing = true;
            return;
        }
    }

    /* Closes finished clients and those stalled in the middle of an event. */
    void sweep()
    {
        apr_time_t now = apr_time_now();
        for (auto it = clients_.begin(); it != clients_.end();) {
            Client &c = *it;
            if (!c.closing && c.event_started && now - c.event_started > kIncompleteEventTimeout) {
                c.out += error_line("timeout: the event was not finished within 30 seconds");
                write_to(c);
                c.closing = true;
                c.out.clear();
            }
            if (c.closing && !c.out.empty()) {
                if (!c.closing_since)
                    c.closing_since = now;
                else if (now - c.closing_since > kClosingGrace)
                    c.out.clear(); /* it does not read its last answers: close all the same */
            }
            if (c.closing && c.out.empty()) {
                close(c.fd);
                it = clients_.erase(it);
            } else {
                ++it;
            }
        }
    }

    server_rec *s_;
    int listen_fd_;
    ModuleState *state_;
    int max_clients_;
    std::size_t max_event_;
    std::list<Client> clients_;
    BusWaker waker_;
    int spare_fd_;                /* given up when accept4() finds no descriptor left */
    bool listen_paused_ = false;  /* skip the listening socket for one poll round */
    apr_time_t last_fd_warning_ = 0;
};

} // namespace

void run_socket_daemon(server_rec *s, apr_pool_t *pool, int listen_fd, ModuleState *state,
                       int max_clients, apr_size_t max_event_bytes)
{
    /* The parent's signals are not for us: restarts and stops come as SIGTERM from the
     * parent's pool cleanup (prefork also signals its whole process group with SIGHUP).
     * fork_daemon() forks with SIGTERM blocked: one sent before the handler is installed
     * waits, and is taken when the mask is cleared below. */
    stop_requested = 0;
    signal(SIGTERM, on_sigterm);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGWINCH, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);

    prctl(PR_SET_NAME, "sse-publishd"); /* how ps, pgrep and the tests find it */
    ap_close_listeners();
    if (listen_fd >= 0)
        set_nonblocking(listen_fd);
    if (ap_run_drop_privileges(pool, s) != OK) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "SSE0404: publish socket daemon cannot drop privileges");
        _exit(1);
    }
    if (state->redis) {
        start_redis_reader(s, state, &stop_requested);
        start_cluster_reporter(s, state, &stop_requested);
        if (!state->presence_channel.empty())
            start_presence_forwarder(s, state, &stop_requested);
    }
    guarded([&] {
        /* Never destroyed: the BusWaker's detached thread may be waiting on its condition
         * variable, and destroying that would block the exit below. */
        (new Daemon(s, listen_fd, state, max_clients, max_event_bytes))->run();
    }, [&](const char *why) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0404: publish socket daemon failed: %s",
                     why);
    });
    _exit(1); /* run() never returns: only a failure gets here */
}

} // namespace sse::httpd
