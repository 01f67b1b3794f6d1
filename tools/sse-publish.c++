/* sse-publish — publish events to mod_sse through its local socket (SSEPublishSocket).
 *
 *   sse-publish [-S socket] [-e event] [-i id] [-r retry] [-o ids] [-x ids] [-w seconds]
 *               CHANNEL[,CHANNEL...] [DATA]
 *   sse-publish -l [-S socket] [-e event] [-r retry] [-o ids] [-x ids] [-w seconds]
 *               CHANNEL[,CHANNEL...]                                       # a line, an event
 *   sse-publish -f [-S socket] [-L last-event-id] [-e types] [-w seconds] CHANNEL[,CHANNEL...]  # read
 *
 * Data comes from the argument, or from standard input when it is absent (one trailing newline
 * removed). With -l every line of standard input is its own event, sent as soon as it is read
 * (`tail -f app.log | sse-publish -l logs`). Each event's id is printed on standard output.
 *
 * With -f it reads instead: it subscribes on the socket and prints the channels' events as an
 * HTTP subscriber gets them (event-stream text, each event once it is complete), until the
 * channels are closed (DELETE). When the connection ends (httpd restarting) it connects again
 * within -w seconds and resumes after the last event it printed, so nothing is missed or
 * printed twice.
 *
 * Events are sent one at a time and each waits for its answer. A connection that is refused
 * (httpd restarting: ECONNREFUSED, EAGAIN, or the daemon answering `busy`) is retried for -w
 * seconds (default 10); an event whose answer did not arrive because the connection broke is
 * sent again on a new connection. What no restart explains fails at once (exit 3) with what to
 * do: permission denied (the user is not in the socket's group), and a path that does not
 * exist before any connection was made (a wrong -S or SSEPublishSocket; once connected, a
 * socket gone during httpd's stop and start is waited for).
 *
 * Exit status: 0 all published (-f: the channels were closed); 1 an event or the subscription
 * was refused (the reason is printed); 2 usage; 3 the socket could not be reached.
 */
#include "sse/socket_protocol.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <getopt.h>
#include <iostream>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char *kDefaultSocket = "/var/run/apache2/sse-publish.sock";

const char *const kUsage =
    "usage: sse-publish [-S socket] [-e event] [-i id] [-r retry] [-o ids] [-x ids] "
    "[-w seconds] CHANNEL[,CHANNEL...] [DATA]\n"
    "       sse-publish -l [-S socket] [-e event] [-r retry] [-o ids] [-x ids] [-w seconds] "
    "CHANNEL[,CHANNEL...]\n"
    "       sse-publish -f [-S socket] [-L last-event-id] [-e types] [-w seconds] "
    "CHANNEL[,CHANNEL...]\n"
    "\n"
    "Publishes an event to mod_sse through its local socket and prints the event's id,\n"
    "or with -f prints the channels' events (event-stream text) as they are published.\n"
    "\n"
    "  -S socket   the SSEPublishSocket path (default: $SSE_PUBLISH_SOCKET, else\n"
    "              /var/run/apache2/sse-publish.sock)\n"
    "  -e event    event type (browsers: addEventListener(type, ...)); with -f: print only\n"
    "              events of these types (comma-separated; message: the untyped event)\n"
    "  -i id       event id (default: assigned by the bus)\n"
    "  -r retry    reconnection delay for the clients, in milliseconds\n"
    "  -o ids      deliver only to these client ids (comma-separated, repeatable)\n"
    "  -x ids      deliver to everyone except these client ids (comma-separated, repeatable)\n"
    "  -l          publish each line of standard input as its own event\n"
    "  -f          follow: print the channels' events until they are closed; reconnects\n"
    "              and resumes across httpd restarts\n"
    "  -L id       with -f: start after this event id (replay what came after it)\n"
    "  -w seconds  how long to keep retrying a socket that refuses connections (default 10)\n"
    "  -h, --help  this text\n"
    "\n"
    "DATA defaults to standard input (one trailing newline removed).\n"
    "Exit status: 0 published (-f: channels closed), 1 refused, 2 usage, 3 socket unreachable.\n";

double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

class Connection {
public:
    Connection(std::string path, double wait_s) : path_(std::move(path)), wait_s_(wait_s) {}
    ~Connection() { drop(); }

    /* Sends one frame and returns its answer line ("ok ..." / "error ..."), reconnecting and
     * resending while the socket is unreachable or the daemon answers busy (at its client
     * limit it answers that and closes, without taking the event), for at most wait_s
     * seconds. Empty: gave up, unreachable; the busy answer itself when still busy then. */
    std::string exchange(const std::string &frame)
    {
        double deadline = now_s() + wait_s_;
        for (;;) {
            if (fd_ < 0)
                connect_once();
            if (fd_ >= 0) {
                /* A daemon at its client limit answers busy and closes at once, maybe before
                 * the frame is sent (then send() fails with EPIPE): its answer is still there to
                 * read. Any other answer counts only for a frame sent whole. */
                std::string answer;
                const bool sent = send_all(frame);
                if (read_line(&answer) && (sent || is_busy(answer)) &&
                    (!is_busy(answer) || now_s() >= deadline))
                    return answer;
                drop(); /* broken before the answer (the event was not confirmed) or busy:
                         * send again */
            }
            if (hopeless() || now_s() >= deadline)
                return {};
            usleep(100 * 1000);
        }
    }

    static bool is_busy(const std::string &answer)
    {
        return answer.rfind("error ", 0) == 0 &&
               sse::is_refusal(std::string_view(answer).substr(6), sse::kBusyReason);
    }

    /* Why the socket could not be reached, and what to do about it. */
    std::string unreachable() const
    {
        if (connect_errno_ == EACCES || connect_errno_ == EPERM)
            return "permission denied on " + path_ +
                   ": publishing needs write access to the socket; join its group (the group "
                   "of SSEPublishSocket, by default httpd's Group, e.g. `adduser $USER "
                   "www-data`, then log in again) or run as a member of it";
        if (connect_errno_ == ENOENT || connect_errno_ == ENOTDIR)
            return "no such socket: " + path_ +
                   "; check the path (-S or SSE_PUBLISH_SOCKET) against SSEPublishSocket in "
                   "httpd's configuration (a relative path is under DefaultRuntimeDir), and "
                   "that httpd is running";
        return "cannot reach the socket " + path_ + ": " + error_;
    }

    double wait_s() const { return wait_s_; }

    /* Connects, retrying while the socket is unreachable, until `deadline` (now_s() time). */
    bool connect_until(double deadline)
    {
        for (;;) {
            if (fd_ < 0)
                connect_once();
            if (fd_ >= 0)
                return true;
            if (hopeless() || now_s() >= deadline)
                return false;
            usleep(100 * 1000);
        }
    }

    bool send_all(const std::string &data)
    {
        std::size_t off = 0;
        while (off < data.size()) {
            ssize_t n = send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                error_ = std::string(strerror(errno));
                return false;
            }
            off += static_cast<std::size_t>(n);
        }
        return true;
    }

    /* The next line, without its LF; false when the connection ended first. */
    bool read_line(std::string *line)
    {
        for (;;) {
            std::size_t lf = buf_.find('\n');
            if (lf != std::string::npos) {
                *line = buf_.substr(0, lf);
                buf_.erase(0, lf + 1);
                return true;
            }
            char tmp[4096];
            ssize_t n = read(fd_, tmp, sizeof tmp);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                error_ = n == 0 ? "connection closed before the answer" : strerror(errno);
                return false;
            }
            buf_.append(tmp, static_cast<std::size_t>(n));
        }
    }

    void drop()
    {
        if (fd_ >= 0)
            close(fd_);
        fd_ = -1;
        buf_.clear();
    }

private:
    void connect_once()
    {
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        if (path_.size() >= sizeof addr.sun_path) {
            error_ = "socket path too long";
            connect_errno_ = ENAMETOOLONG;
            return;
        }
        memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
        fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ >= 0 && connect(fd_, reinterpret_cast<struct sockaddr *>(&addr), sizeof addr) < 0) {
            connect_errno_ = errno;
            error_ = std::string(strerror(errno));
            close(fd_);
            fd_ = -1;
        } else if (fd_ >= 0) {
            connect_errno_ = 0;
            connected_once_ = true;
        }
    }

    /* The last connect failed for a reason no restart of httpd explains: retrying within -w
     * would only make the user wait. A missing path is one only before the first connection
     * (afterwards httpd's stop and start removes and makes it again). */
    bool hopeless() const
    {
        switch (connect_errno_) {
        case EACCES: case EPERM: case ENOTDIR: case ENAMETOOLONG:
            return true;
        case ENOENT:
            return !connected_once_;
        default:
            return false;
        }
    }

    std::string path_;
    double wait_s_;
    int fd_ = -1;
    int connect_errno_ = 0;
    bool connected_once_ = false;
    std::string buf_;
    std::string error_;
};

/* 0 published, 1 refused, 3 unreachable. */
int publish(Connection &conn, const std::vector<std::string> &channels, const sse::EventFields &ev,
            const sse::Audience &audience)
{
    std::string frame;
    sse::encode_frame(channels, ev, frame, audience);
    std::string answer = conn.exchange(frame);
    if (answer.empty()) {
        std::cerr << "sse-publish: " << conn.unreachable() << "\n";
        return 3;
    }
    if (answer.rfind("ok ", 0) == 0) {
        std::cout << answer.substr(3) << std::endl;
        return 0;
    }
    std::cerr << "sse-publish: refused: "
              << (answer.rfind("error ", 0) == 0 ? answer.substr(6) : answer) << "\n";
    return 1;
}

/* -f: prints the channels' events until they are closed (0), the subscription is refused (1)
 * or the socket stays unreachable for wait_s (3). An event is printed once complete, and its
 * id becomes where the next connection resumes. A daemon that is busy (full) or being
 * replaced is retried for wait_s, like an unreachable socket. */
int follow(Connection &conn, const std::vector<std::string> &channels, std::string last_id,
           const std::vector<std::string> &event_types)
{
    double deadline = now_s() + conn.wait_s();
    auto retry_or_give_up = [&]() {
        conn.drop();
        if (now_s() >= deadline)
            return false;
        usleep(100 * 1000);
        return true;
    };
    for (;;) {
        std::string block, line;
        sse::encode_subscribe_block(channels, last_id, block, event_types);
        if (!conn.connect_until(deadline)) {
            std::cerr << "sse-publish: " << conn.unreachable() << "\n";
            return 3;
        }
        if (!conn.send_all(block) || !conn.read_line(&line)) {
            if (retry_or_give_up())
                continue;
            std::cerr << "sse-publish: " << conn.unreachable() << "\n";
            return 3;
        }
        if (line.rfind("error ", 0) == 0) {
            std::string reason = line.substr(6);
            if (sse::is_refusal(reason, sse::kClosedReason)) { /* closed before (or while) we came back */
                std::cerr << "sse-publish: " << reason << "\n";
                return 0;
            }
            if (sse::is_refusal(reason, sse::kBusyReason) && retry_or_give_up())
                continue;
            std::cerr << "sse-publish: refused: " << reason << "\n";
            return 1;
        }
        /* Subscribed: `line` is the stream's first line (": ok"). */
        std::string event_text, event_id, event_type;
        bool have_id = false;
        do {
            if (!line.empty() && line.back() == '\r')
                line.pop_back();
            event_text += line + "\n";
            if (!line.empty()) {
                if (line.rfind("id:", 0) == 0) {
                    event_id = line.substr(line.size() > 3 && line[3] == ' ' ? 4 : 3);
                    have_id = true;
                } else if (line.rfind("event:", 0) == 0) {
                    event_type = line.substr(line.size() > 6 && line[6] == ' ' ? 7 : 6);
                }
                continue;
            }
            std::fwrite(event_text.data(), 1, event_text.size(), stdout);
            std::fflush(stdout);
            /* The server's notice has no id; a published event of that type always has one. */
            if (event_type == "sse-close" && !have_id)
                return 0;
            if (have_id)
                last_id = event_id;
            event_text.clear();
            event_type.clear();
            have_id = false;
        } while (conn.read_line(&line));
        /* The connection ended (httpd restarting): an incomplete event was not printed, and
         * the resume sends it again. */
        conn.drop();
        deadline = now_s() + conn.wait_s();
    }
}

int usage_error(const std::string &msg)
{
    std::cerr << "sse-publish: " << msg << "\n" << kUsage;
    return 2;
}

} // namespace

int main(int argc, char **argv)
{
    const char *env_socket = getenv("SSE_PUBLISH_SOCKET");
    std::string socket_path = env_socket && *env_socket ? env_socket : kDefaultSocket;
    sse::EventFields ev;
    sse::Audience audience;
    bool per_line = false, follow_mode = false;
    std::string resume_id;
    double wait_s = 10;

    static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                             {nullptr, 0, nullptr, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "S:e:i:r:o:x:w:lfL:h", longopts, nullptr)) != -1) {
        switch (opt) {
        case 'S': socket_path = optarg; break;
        case 'e': ev.event = optarg; break;
        case 'i': ev.id = optarg; break;
        case 'r':
            ev.retry = sse::parse_retry(optarg);
            if (ev.retry < 0)
                return usage_error("-r takes a number of milliseconds");
            break;
        case 'w': {
            char *end = nullptr;
            wait_s = strtod(optarg, &end);
            if (!*optarg || *end || wait_s < 0 || wait_s > 3600)
                return usage_error("-w takes a number of seconds from 0 to 3600");
            break;
        }
        case 'o': sse::Audience::append_list(optarg, audience.only); break;
        case 'x': sse::Audience::append_list(optarg, audience.except); break;
        case 'l': per_line = true; break;
        case 'f': follow_mode = true; break;
        case 'L': resume_id = optarg; break;
        case 'h': std::cout << kUsage; return 0;
        default: return usage_error("unknown option");
        }
    }
    int rest = argc - optind;
    if (rest < 1 || rest > 2 || ((per_line || follow_mode) && rest > 1))
        return usage_error(rest < 1 ? "no channel" : "too many arguments");
    if (follow_mode && (per_line || !ev.id.empty() || ev.retry >= 0 ||
                        !audience.only.empty() || !audience.except.empty()))
        return usage_error("-f reads: it takes only -S, -L, -e and -w");
    if (!resume_id.empty() && !follow_mode)
        return usage_error("-L is for -f");
    if (per_line && !ev.id.empty())
        return usage_error("-i cannot be used with -l (each line needs its own id)");
    std::vector<std::string> channels;
    sse::append_channel_list(argv[optind], channels);
    if (channels.empty())
        return usage_error("no channel");

    Connection conn(socket_path, wait_s);
    if (follow_mode) {
        std::vector<std::string> types; /* the daemon checks them (event-types) */
        sse::NameCollector(types, sse::kMaxEventTypesPerStream).add(ev.event);
        return follow(conn, channels, resume_id, types);
    }
    if (per_line) {
        int status = 0;
        std::string line;
        ev.has_data = true;
        while (std::getline(std::cin, line)) {
            if (!line.empty() && line.back() == '\r')
                line.pop_back();
            ev.data = line;
            int rc = publish(conn, channels, ev, audience);
            if (rc == 3)
                return 3;
            if (rc)
                status = rc;
        }
        return status;
    }

    ev.has_data = true;
    if (rest == 2) {
        ev.data = argv[optind + 1];
    } else {
        ev.data.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        if (!ev.data.empty() && ev.data.back() == '\n')
            ev.data.pop_back();
    }
    return publish(conn, channels, ev, audience);
}
