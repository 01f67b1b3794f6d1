/* The publish socket daemon: one process, one thread, poll() over the listening socket and
 * every client. Each client has a FrameParser; each complete event goes through
 * publish_event(), the same path as the HTTP handler, and is answered in order.
 *
 * Protection of the bus and the other clients:
 * - at most `max_clients` connections; one more is answered "error busy ..." and closed;
 * - an event's bytes are bounded by the parser (SSEMaxMessageSize);
 * - a client that stops reading its answers is not read from either once 64 KiB of answers
 *   wait for it (it cannot make the daemon buffer without bound);
 * - a client that starts an event and does not finish it within 30 s is told so and closed;
 *   an idle client between events may stay (a `tail -f` publisher is quiet for hours).
 */
#include "src/httpd/publish_socket.h"

#include "sse/publisher.h"
#include "sse/socket_protocol.h"

#include "ap_listen.h"
#include "mpm_common.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <list>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

constexpr apr_time_t kIncompleteEventTimeout = apr_time_from_sec(30);
constexpr apr_time_t kStopGrace = apr_time_from_sec(2);
constexpr std::size_t kMaxPendingAnswers = 64 * 1024;
constexpr int kPollMs = 1000;

volatile sig_atomic_t stop_requested = 0;

void on_sigterm(int) { stop_requested = 1; }

struct Client {
    int fd;
    FrameParser parser;
    std::string out;
    apr_time_t event_started = 0; /* when the current incomplete event began; 0: none */
    bool closing = false;         /* close once `out` is written */
    Client(int f, std::size_t max_event) : fd(f), parser(max_event) {}
};

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

class Daemon {
public:
    Daemon(server_rec *s, int listen_fd, ModuleState *state, int max_clients,
           std::size_t max_event)
        : s_(s), listen_fd_(listen_fd), state_(state), max_clients_(max_clients),
          max_event_(max_event) {}

    [[noreturn]] void run()
    {
        apr_time_t stop_deadline = 0;
        pid_t parent = getppid();
        for (;;) {
            if (stop_requested && !stop_deadline) {
                stop_deadline = apr_time_now() + kStopGrace;
                for (auto &c : clients_)
                    if (!c.parser.mid_event())
                        c.closing = true;
            }
            if (getppid() != parent) /* httpd's parent is gone (kill -9): nobody supervises */
                stop_requested = 1;
            sweep();
            state_->registry.set_socket_clients(clients_.size());
            if (stop_deadline && (clients_.empty() || apr_time_now() > stop_deadline)) {
                state_->registry.set_socket_clients(0);
                _exit(0);
            }

            std::vector<struct pollfd> fds;
            std::vector<Client *> owners;
            /* Read once: a SIGTERM arriving after poll() must not shift fds against owners. */
            const bool listening = !stop_requested;
            if (listening)
                fds.push_back({listen_fd_, POLLIN, 0});
            for (auto &c : clients_) {
                short events = 0;
                if (!c.closing && c.out.size() < kMaxPendingAnswers)
                    events |= POLLIN;
                if (!c.out.empty())
                    events |= POLLOUT;
                fds.push_back({c.fd, events, 0});
                owners.push_back(&c);
            }
            int n = poll(fds.data(), fds.size(), kPollMs);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s_,
                             "SSE0404: publish socket daemon: poll failed");
                _exit(1);
            }
            const std::size_t first_client = listening ? 1 : 0;
            for (std::size_t i = first_client; i < fds.size(); ++i) {
                Client &c = *owners[i - first_client];
                if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
                    read_from(c);
                if (!c.closing || !c.out.empty())
                    if (fds[i].revents & POLLOUT)
                        write_to(c);
            }
            /* Clients that left in this round are gone before new ones are counted, so a
             * client connecting just after another disconnected is not told "busy". */
            sweep();
            if (listening && !stop_requested && (fds[0].revents & POLLIN))
                accept_clients();
        }
    }

private:
    void accept_clients()
    {
        for (int k = 0; k < 64; ++k) {
            int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                return;
            if (active_clients() >= max_clients_) {
                std::string busy = error_line("busy: " + std::to_string(max_clients_) +
                                                " clients are connected, the most "
                                                "SSEPublishSocketClients allows");
                ssize_t ignored = write(fd, busy.data(), busy.size());
                (void)ignored;
                close(fd);
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_,
                             "SSE0411: publish socket refused a client: %d clients already "
                             "connected (SSEPublishSocketClients)",
                             max_clients_);
                continue;
            }
            clients_.emplace_back(fd, max_event_);
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
        std::vector<Frame> frames;
        c.parser.feed(std::string_view(buf, static_cast<std::size_t>(n)), frames);
        for (const Frame &f : frames)
            c.out += answer(f);
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

    std::string answer(const Frame &f)
    {
        std::string error = f.error;
        if (error.empty()) {
            try {
                PublishAttempt a = publish_event(state_->bus, &state_->registry, f.channels,
                                                 f.fields, f.audience, apr_time_now());
                if (a.outcome == PublishAttempt::Outcome::Published) {
                    if (a.result.recovered_lock)
                        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                                     "SSE0202: a process died while publishing; the bus lock "
                                     "was recovered and no committed event was lost");
                    return ok_line(a.result.id);
                }
                error = a.error;
            } catch (const std::exception &e) {
                error = std::string("internal error: ") + e.what();
            }
        }
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s_, "SSE0410: publish socket refused an event: %s",
                     error.c_str());
        return error_line(error);
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
};

} // namespace

void run_socket_daemon(server_rec *s, apr_pool_t *pool, int listen_fd, ModuleState *state,
                       int max_clients, apr_size_t max_event_bytes)
{
    /* The parent's signals are not for us: restarts and stops come as SIGTERM from the
     * parent's pool cleanup (prefork also signals its whole process group with SIGHUP). */
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
    set_nonblocking(listen_fd);
    if (ap_run_drop_privileges(pool, s) != OK) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "SSE0404: publish socket daemon cannot drop privileges");
        _exit(1);
    }
    try {
        Daemon(s, listen_fd, state, max_clients, max_event_bytes).run();
    } catch (...) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0404: publish socket daemon failed");
        _exit(1);
    }
}

} // namespace sse::httpd
