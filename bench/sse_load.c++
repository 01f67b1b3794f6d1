/* sse-load — hold many EventSource connections, publish timestamped events, check every
 * delivery.
 *
 *   sse-load [options] HOST PORT
 *     -n N          streams to hold (default 1000); at most 200 wait for their answer at once
 *     -c K          channels; stream i subscribes to channel load<i % K> (default 1)
 *     -e E          events to publish on every channel (default 10)
 *     -r RATE       events per second per channel, 0: as fast as possible (default 100); a
 *                   round (one event on every channel) is published back to back
 *     -R RATE       events per second IN ALL instead, spread evenly over time: the channels
 *                   take turns, one publish every 1/RATE seconds
 *     -s PATH       subscribe path prefix (default /events/)
 *     -p PATH       publish path prefix (default /publish/)
 *     -w SECONDS    how long to wait for the deliveries after the last publish (default 30)
 *     -S SOCKET     publish through mod_sse's local socket instead of HTTP
 *     -A PORT       publish over HTTP to this port of HOST instead of PORT: subscribers on
 *                   one server, publishes on another (servers joined through Redis)
 *     -b BYTES      padding added to each event's data (default 0)
 *     -H SECONDS    hold the open streams this long before publishing (to measure memory)
 *     -P PREFIX     channel name prefix (default "load"): a fresh one per run keeps runs apart
 *     -T            streams over TLS (certificate not verified): each stream's handshake and
 *                   request are done blocking, one stream after another, then the socket is
 *                   switched to non-blocking; the publisher still speaks plain HTTP (use -e 0
 *                   to only hold TLS streams)
 *     -C PIDS       the server's process ids, comma-separated: prints their CPU time (utime +
 *                   stime from /proc) from the first publish to the last delivery, and per
 *                   delivery (server_cpu_us_per_delivery)
 *
 * One epoll thread holds the streams (HTTP/1.1, chunked or until close, parsed by the SSE
 * rules); the publisher runs on its own thread, one event after another on one keep-alive
 * connection, each waiting for the server's answer (any 2xx counts as accepted).
 * Each event's data is "<channel> <index> <publish time in microseconds> <padding>".
 * Prints key=value lines (round_ms: from the first publish of a round, one event on every
 * channel, to its last delivery); exits 1 if a stream was refused or an event lost, duplicated or out
 * of order.
 */
#include "sse/socket_protocol.h"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

std::int64_t now_us()
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    int pub_port = 0;   /* -A; 0: port */
    int streams = 1000, channels = 1, events = 10;
    double rate = 100, total_rate = 0, wait_s = 30;
    std::string sub_path = "/events/", pub_path = "/publish/", socket;
    int padding = 0;
    double hold_s = 0;
    std::string prefix = "load";
    bool tls = false;
    std::vector<int> server_pids;
};

struct Stream {
    int fd = -1;
    SSL *ssl = nullptr;     /* -T */
    int channel = 0;
    enum { Connecting, Headers, Body, Dead } state = Connecting;
    std::string in;         /* raw bytes not yet consumed */
    std::string text;       /* de-chunked stream text not yet parsed into lines */
    std::string data;       /* the event being assembled */
    long chunk_left = -1;   /* -1: expecting a chunk-size line */
    bool chunked = false;   /* else the body runs until the connection closes */
    const char *why = "";   /* why it died, for the report */
    bool open = false;      /* headers and the first comment arrived */
    int next = 0;           /* index of the next expected event */
    long lost = 0, dups = 0, disorder = 0;
};

std::vector<std::int64_t> latencies;
/* Per round (event index, one event on every channel): the earliest publish time and the
 * latest delivery, microseconds. A round's span is how long the server took to deliver a
 * burst of publishes, however the publisher's pacing shapes the per-event latencies. */
std::vector<std::int64_t> round_first_publish, round_last_delivery;

void on_event(Stream &s, const std::string &data)
{
    int ch, idx;
    long long ts;
    if (sscanf(data.c_str(), "%d %d %lld", &ch, &idx, &ts) != 3)
        return;
    if (idx == s.next) {
        ++s.next;
    } else if (idx < s.next) {
        ++s.dups;
        return;
    } else {
        ++s.disorder;
        s.lost += idx - s.next;
        s.next = idx + 1;
    }
    const std::int64_t now = now_us();
    latencies.push_back(now - ts);
    if (idx >= 0 && static_cast<std::size_t>(idx) < round_first_publish.size()) {
        auto &first = round_first_publish[static_cast<std::size_t>(idx)];
        auto &last = round_last_delivery[static_cast<std::size_t>(idx)];
        first = first ? std::min<std::int64_t>(first, ts) : ts;
        last = std::max(last, now);
    }
}

/* The SSE rules, enough for this test: data lines, blank line dispatch, comments. */
void parse_lines(Stream &s)
{
    std::size_t start = 0;
    for (;;) {
        std::size_t lf = s.text.find('\n', start);
        if (lf == std::string::npos)
            break;
        std::string_view line(s.text.data() + start, lf - start);
        start = lf + 1;
        if (line.empty()) {
            if (!s.data.empty()) {
                s.data.pop_back();
                on_event(s, s.data);
            }
            s.data.clear();
        } else if (line[0] == ':') {
            s.open = true;
        } else if (line.compare(0, 6, "data: ") == 0) {
            s.data.append(line.substr(6));
            s.data += '\n';
        }
    }
    s.text.erase(0, start);
}

void dechunk(Stream &s)
{
    for (;;) {
        if (s.chunk_left < 0) {
            std::size_t crlf = s.in.find("\r\n");
            if (crlf == std::string::npos)
                return;
            if (crlf == 0) { /* the CRLF after a chunk */
                s.in.erase(0, 2);
                continue;
            }
            s.chunk_left = strtol(s.in.c_str(), nullptr, 16);
            s.in.erase(0, crlf + 2);
            if (s.chunk_left == 0) {
                s.why = "the stream ended";
                s.state = Stream::Dead;
                return;
            }
        }
        std::size_t take = std::min<std::size_t>(s.in.size(), static_cast<std::size_t>(s.chunk_left));
        s.text.append(s.in, 0, take);
        s.in.erase(0, take);
        s.chunk_left -= static_cast<long>(take);
        if (s.chunk_left > 0)
            return;
        s.chunk_left = -1;
    }
}

/* Reads what the stream's socket has: > 0 bytes, 0 closed, -1 nothing now, -2 an error. */
ssize_t stream_read(Stream &s, char *buf, std::size_t size)
{
    if (s.ssl) {
        int n = SSL_read(s.ssl, buf, static_cast<int>(size));
        if (n > 0)
            return n;
        int err = SSL_get_error(s.ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            return -1;
        return err == SSL_ERROR_ZERO_RETURN ? 0 : -2;
    }
    ssize_t n = read(s.fd, buf, size);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? -1 : -2;
    return n;
}

void on_readable(Stream &s)
{
    char buf[65536];
    for (;;) {
        ssize_t n = stream_read(s, buf, sizeof buf);
        if (n == 0 || n == -2) {
            s.why = n == 0 ? "closed by the server" : "read error";
            s.state = Stream::Dead;
            return;
        }
        if (n < 0)
            break;
        s.in.append(buf, static_cast<std::size_t>(n));
    }
    if (s.state == Stream::Headers) {
        std::size_t end = s.in.find("\r\n\r\n");
        if (end == std::string::npos)
            return;
        if (s.in.compare(0, 12, "HTTP/1.1 200") == 0)
            s.open = true; /* headers are enough: not every server sends a first comment */
        if (s.in.compare(0, 12, "HTTP/1.1 200") != 0) {
            s.why = "status not 200";
            s.state = Stream::Dead;
            return;
        }
        std::string head = s.in.substr(0, end);
        for (auto &ch : head)
            ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
        s.chunked = head.find("transfer-encoding: chunked") != std::string::npos;
        s.in.erase(0, end + 4);
        s.state = Stream::Body;
    }
    if (s.chunked) {
        dechunk(s);
    } else {
        s.text += s.in;
        s.in.clear();
    }
    parse_lines(s);
}

int connect_tcp(const Options &o, bool nonblock, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    struct sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, o.host.c_str(), &a.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, reinterpret_cast<struct sockaddr *>(&a), sizeof a) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* -T: connects, shakes hands and sends the request, blocking; then makes the socket
 * non-blocking for the epoll loop. Returns false if any step failed. */
bool open_tls_stream(const Options &o, SSL_CTX *ctx, Stream &s, const std::string &request)
{
    s.fd = connect_tcp(o, false, o.port);
    if (s.fd < 0)
        return false;
    s.ssl = SSL_new(ctx);
    SSL_set_fd(s.ssl, s.fd);
    if (SSL_connect(s.ssl) != 1 ||
        SSL_write(s.ssl, request.data(), static_cast<int>(request.size())) !=
            static_cast<int>(request.size())) {
        s.why = "TLS handshake or request failed";
        return false;
    }
    fcntl(s.fd, F_SETFL, fcntl(s.fd, F_GETFL) | O_NONBLOCK);
    s.state = Stream::Headers;
    return true;
}

/* utime + stime of the processes, in seconds (-C). */
double cpu_seconds(const std::vector<int> &pids)
{
    long ticks = 0;
    for (int pid : pids) {
        FILE *f = fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
        if (!f)
            continue;
        char line[1024];
        if (fgets(line, sizeof line, f)) {
            const char *p = strrchr(line, ')');   /* the command name may hold spaces */
            unsigned long utime = 0, stime = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                            &stime) == 2)
                ticks += static_cast<long>(utime + stime);
        }
        fclose(f);
    }
    return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/* Publishes every event; returns how many were accepted. */
long publish_all(const Options &o, std::atomic<bool> &done)
{
    int fd = -1;
    if (!o.socket.empty()) {
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a{};
        a.sun_family = AF_UNIX;
        snprintf(a.sun_path, sizeof a.sun_path, "%s", o.socket.c_str());
        if (connect(fd, reinterpret_cast<struct sockaddr *>(&a), sizeof a) < 0)
            return 0;
    } else {
        fd = connect_tcp(o, false, o.pub_port ? o.pub_port : o.port);
    }
    long accepted = 0;
    std::string pad(static_cast<std::size_t>(o.padding), 'x');
    auto start = std::chrono::steady_clock::now();
    std::string buf;
    for (int i = 0; i < o.events && !done; ++i) {
        if (o.rate > 0 && o.total_rate <= 0) {
            auto due = start + std::chrono::microseconds(static_cast<long>(i * 1e6 / o.rate));
            std::this_thread::sleep_until(due);
        }
        for (int ch = 0; ch < o.channels; ++ch) {
            if (o.total_rate > 0) {
                const double nth = static_cast<double>(i) * o.channels + ch;
                std::this_thread::sleep_until(
                    start + std::chrono::microseconds(static_cast<long>(nth * 1e6 / o.total_rate)));
            }
            std::string data = std::to_string(ch) + " " + std::to_string(i) + " " +
                               std::to_string(now_us()) + " " + pad;
            std::string req;
            if (!o.socket.empty()) {
                sse::EventFields ev;
                ev.has_data = true;
                ev.data = data;
                sse::encode_frame({o.prefix + std::to_string(ch)}, ev, req);
            } else {
                req = "POST " + o.pub_path + o.prefix + std::to_string(ch) +
                      " HTTP/1.1\r\nHost: " + o.host + "\r\nContent-Type: text/plain\r\n"
                      "Content-Length: " + std::to_string(data.size()) + "\r\n\r\n" + data;
            }
            if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
                return accepted;
            /* Wait for the answer. */
            for (;;) {
                std::size_t end = o.socket.empty() ? buf.find("\r\n\r\n") : buf.find('\n');
                if (end != std::string::npos) {
                    std::size_t len = end + (o.socket.empty() ? 4 : 1);
                    if (o.socket.empty()) {
                        std::size_t cl = buf.find("Content-Length: ");
                        long body = cl < end ? strtol(buf.c_str() + cl + 16, nullptr, 10) : 0;
                        if (buf.size() < len + static_cast<std::size_t>(body))
                            goto more;
                        len += static_cast<std::size_t>(body);
                        /* mod_sse 201 Created; Nchan 202 Accepted when nobody listens; the
                         * floor server 200 */
                        if (buf.compare(0, 10, "HTTP/1.1 2") == 0)
                            ++accepted;
                    } else if (buf.compare(0, 3, "ok ") == 0) {
                        ++accepted;
                    }
                    buf.erase(0, len);
                    break;
                }
            more:
                char tmp[4096];
                ssize_t n = read(fd, tmp, sizeof tmp);
                if (n <= 0)
                    return accepted;
                buf.append(tmp, static_cast<std::size_t>(n));
            }
        }
    }
    close(fd);
    return accepted;
}

int usage()
{
    fprintf(stderr, "usage: sse-load [-n streams] [-c channels] [-e events] [-r rate] [-s path] "
                    "[-R rate] [-p path] [-w seconds] [-S socket] [-A port] [-b bytes] [-H seconds] [-P prefix] [-T] "
                    "[-C pids] HOST PORT\n");
    return 2;
}

} // namespace

int main(int argc, char **argv)
{
    Options o;
    int opt;
    while ((opt = getopt(argc, argv, "n:c:e:r:R:s:p:w:S:b:H:P:TC:A:")) != -1) {
        switch (opt) {
        case 'n': o.streams = atoi(optarg); break;
        case 'c': o.channels = std::max(1, atoi(optarg)); break;
        case 'e': o.events = atoi(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 's': o.sub_path = optarg; break;
        case 'p': o.pub_path = optarg; break;
        case 'w': o.wait_s = atof(optarg); break;
        case 'S': o.socket = optarg; break;
        case 'b': o.padding = atoi(optarg); break;
        case 'H': o.hold_s = atof(optarg); break;
        case 'P': o.prefix = optarg; break;
        case 'R': o.total_rate = atof(optarg); break;
        case 'T': o.tls = true; break;
        case 'A': o.pub_port = atoi(optarg); break;
        case 'C': {
            std::stringstream list(optarg);
            for (std::string pid; std::getline(list, pid, ',');)
                o.server_pids.push_back(atoi(pid.c_str()));
            break;
        }
        default: return usage();
        }
    }
    if (argc - optind != 2)
        return usage();
    o.host = argv[optind];
    o.port = atoi(argv[optind + 1]);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    int ep = epoll_create1(0);
    std::vector<Stream> streams(static_cast<std::size_t>(o.streams));
    SSL_CTX *tls = o.tls ? SSL_CTX_new(TLS_client_method()) : nullptr;
    struct epoll_event evs[1024];
    /* Streams asked for whose answer has not come yet (Connecting or Headers). */
    int answering = 0;
    auto awaits_answer = [](const Stream &t) {
        return t.state == Stream::Connecting || t.state == Stream::Headers;
    };
    /* Serves what epoll reports; returns how many events it had. */
    auto serve = [&](int timeout_ms) {
        int n = epoll_wait(ep, evs, 1024, timeout_ms);
        for (int k = 0; k < n; ++k) {
            Stream &t = streams[evs[k].data.u32];
            const bool awaited = awaits_answer(t);
            if (t.state == Stream::Connecting && (evs[k].events & EPOLLOUT)) {
                send(t.fd, t.in.data(), t.in.size(), MSG_NOSIGNAL);
                t.in.clear();
                t.state = Stream::Headers;
                struct epoll_event mod = {};
                mod.events = EPOLLIN | EPOLLRDHUP;
                mod.data.u32 = evs[k].data.u32;
                epoll_ctl(ep, EPOLL_CTL_MOD, t.fd, &mod);
            } else if (t.state == Stream::Headers || t.state == Stream::Body) {
                on_readable(t);
                if (t.state == Stream::Dead)
                    epoll_ctl(ep, EPOLL_CTL_DEL, t.fd, nullptr);
            }
            answering -= awaited && !awaits_answer(t);
        }
        return n;
    };
    auto t_connect = std::chrono::steady_clock::now();
    int refused = 0;
    /* Opening paces itself to the server: at most kAnswering streams wait for their answer at
     * once, so the server's accept queue (ListenBacklog 511) never overflows. An overflow
     * drops SYNs, and the kernel retries a dropped SYN after 1, 3, 7, 15, 31, 63 s: a slow
     * server (a sanitizer build) would then see streams arrive a minute late. The opening
     * gives up when no stream got its answer for kStall, or 300 s after the first connect. */
    constexpr int kAnswering = 200;
    constexpr auto kStall = std::chrono::seconds(60);
    const auto open_deadline = t_connect + std::chrono::seconds(300);
    auto last_answer = t_connect;
    int answering_before = 0;
    /* Serves until fewer than `limit` streams await their answer; false on a stall or at the
     * deadline. */
    auto serve_until_below = [&](int limit) {
        while (answering >= limit) {
            answering_before = answering;
            serve(100);
            const auto now = std::chrono::steady_clock::now();
            if (answering < answering_before)
                last_answer = now;
            else if (now - last_answer > kStall || now > open_deadline)
                return false;
        }
        return true;
    };
    for (int i = 0; i < o.streams; ++i) {
        Stream &s = streams[static_cast<std::size_t>(i)];
        s.channel = i % o.channels;
        std::string req = "GET " + o.sub_path + o.prefix + std::to_string(s.channel) +
                          " HTTP/1.1\r\nHost: " + o.host + "\r\nAccept: text/event-stream\r\n\r\n";
        struct epoll_event ev = {};
        ev.data.u32 = static_cast<uint32_t>(i);
        if (tls) {
            if (!open_tls_stream(o, tls, s, req)) {
                s.state = Stream::Dead;
                ++refused;
                continue;
            }
            ev.events = EPOLLIN | EPOLLRDHUP;
        } else {
            s.fd = connect_tcp(o, true, o.port);
            if (s.fd < 0) {
                s.state = Stream::Dead;
                ++refused;
                continue;
            }
            ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
            s.in = req; /* pending request, sent when writable */
        }
        epoll_ctl(ep, EPOLL_CTL_ADD, s.fd, &ev);
        ++answering;
        if (!serve_until_below(kAnswering)) {
            for (int j = i + 1; j < o.streams; ++j) {
                streams[static_cast<std::size_t>(j)].state = Stream::Dead;
                streams[static_cast<std::size_t>(j)].why = "not tried: the server stopped answering";
            }
            break;
        }
    }

    /* Wait for the last answers (bounded as above). */
    serve_until_below(1);
    auto count_open = [&] {
        int n = 0;
        for (auto &s : streams)
            n += s.open && s.state == Stream::Body;
        return n;
    };
    double connect_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_connect).count();
    int opened = count_open();
    {
        std::map<std::string, int> why;
        for (auto &s : streams)
            if (s.state != Stream::Body || !s.open)
                why[std::string(s.why) + " (state " + std::to_string(static_cast<int>(s.state)) + ")"]++;
        for (auto &w : why)
            printf("not_open=%d reason=%s\n", w.second, w.first.c_str());
    }

    printf("streams=%d opened=%d refused=%d connect_seconds=%.2f\n", o.streams, opened,
           o.streams - opened, connect_s);
    fflush(stdout);
    for (auto hold_end = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(static_cast<long>(o.hold_s * 1000));
         std::chrono::steady_clock::now() < hold_end;)
        serve(100);

    std::atomic<bool> done{false};
    long accepted = 0;
    auto t_pub = std::chrono::steady_clock::now();
    const double cpu_before = cpu_seconds(o.server_pids);
    round_first_publish.assign(static_cast<std::size_t>(o.events), 0);
    round_last_delivery.assign(static_cast<std::size_t>(o.events), 0);
    std::thread publisher([&] { accepted = publish_all(o, done); });
    /* Serve while publishing, then until every stream has every event or the wait ends. */
    std::atomic<bool> published{false};
    std::thread watcher([&] { publisher.join(); published = true; });
    std::chrono::steady_clock::time_point wait_end{};
    for (;;) {
        serve(50);
        /* Read once: were the publisher to finish between two reads, the second would see it
         * before wait_end was set (still the clock's epoch), and the wait would end at once,
         * counting every delivery not yet read as lost. */
        const bool done_publishing = published.load();
        if (done_publishing && wait_end == std::chrono::steady_clock::time_point{})
            wait_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(o.wait_s * 1000));
        bool all = true;
        for (auto &s : streams)
            if (s.state == Stream::Body && s.next < o.events) {
                all = false;
                break;
            }
        if (done_publishing && (all || std::chrono::steady_clock::now() > wait_end))
            break;
    }
    const double server_cpu = cpu_seconds(o.server_pids) - cpu_before;
    watcher.join();
    double pub_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_pub).count();

    long received = 0, lost = 0, dups = 0, disorder = 0, dead = 0;
    for (auto &s : streams) {
        if (s.state == Stream::Dead)
            ++dead;
        received += s.next - s.lost;
        lost += s.lost + (o.events - s.next);
        dups += s.dups;
        disorder += s.disorder;
    }
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double p) {
        return latencies.empty() ? 0.0
                                 : latencies[static_cast<std::size_t>(p * (latencies.size() - 1))] / 1000.0;
    };
    printf("published=%ld expected_deliveries=%ld delivered=%ld lost=%ld duplicated=%ld "
           "out_of_order=%ld closed=%ld\n",
           accepted, static_cast<long>(o.streams) * o.events, received, lost, dups, disorder, dead);
    printf("latency_ms_p50=%.2f latency_ms_p99=%.2f latency_ms_max=%.2f seconds=%.2f "
           "deliveries_per_s=%.0f\n",
           pct(0.5), pct(0.99), pct(1.0), pub_s, received / pub_s);
    std::vector<std::int64_t> spans;
    for (std::size_t i = 0; i < round_first_publish.size(); ++i)
        if (round_first_publish[i] && round_last_delivery[i])
            spans.push_back(round_last_delivery[i] - round_first_publish[i]);
    std::sort(spans.begin(), spans.end());
    if (!spans.empty())
        printf("round_ms_p50=%.2f round_ms_max=%.2f\n", spans[(spans.size() - 1) / 2] / 1000.0,
               spans.back() / 1000.0);
    if (!o.server_pids.empty())
        printf("server_cpu_s=%.2f server_cpu_us_per_delivery=%.2f\n", server_cpu,
               received ? server_cpu * 1e6 / static_cast<double>(received) : 0.0);
    fflush(stdout);
    for (auto &s : streams) {
        if (s.ssl)
            SSL_free(s.ssl);
        if (s.fd >= 0)
            close(s.fd);
    }
    if (tls)
        SSL_CTX_free(tls);
    bool ok = opened == o.streams && lost == 0 && dups == 0 && disorder == 0 &&
              accepted == static_cast<long>(o.events) * o.channels;
    return ok ? 0 : 1;
}
