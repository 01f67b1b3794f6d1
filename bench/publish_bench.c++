/* publish-bench — how many events per second mod_sse accepts from publishers.
 *
 *   publish-bench socket PATH      PUBLISHERS SECONDS DATA_BYTES
 *   publish-bench http   HOST:PORT PUBLISHERS SECONDS DATA_BYTES
 *   publish-bench get    HOST:PORT PUBLISHERS SECONDS URL_PATH
 *
 * Each publisher is a thread with one connection that publishes an event and waits for its
 * answer before the next (as sse-publish and a typical application do): over the socket
 * protocol, or as HTTP/1.1 POSTs to /publish/bench on a keep-alive connection (any 2xx answer
 * is accepted: mod_sse 201, Nchan 202 without subscribers, bench-nchan's floor server 200).
 * `get` is the ceiling the HTTP publish is read against: the same loop of requests on the same
 * kind of connection, but GETs of URL_PATH (a small static file) answered 200. Prints one line:
 *   <mode> publishers=<n> events=<total> seconds=<s> events_per_s=<rate> failures=<n>
 */
#include "sse/socket_protocol.h"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Target {
    bool http = false; /* http and get */
    bool get = false;
    std::string path;  /* socket path */
    std::string host;  /* http */
    int port = 0;
};

int connect_to(const Target &t)
{
    if (t.http) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(t.port));
        inet_pton(AF_INET, t.host.c_str(), &a.sin_addr);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, reinterpret_cast<struct sockaddr *>(&a), sizeof a) < 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", t.path.c_str());
    if (connect(fd, reinterpret_cast<struct sockaddr *>(&a), sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, const std::string &s)
{
    std::size_t off = 0;
    while (off < s.size()) {
        ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        off += static_cast<std::size_t>(n);
    }
    return true;
}

/* Reads until `done(buf)` says a whole answer is there; returns its length, or 0 on error. */
template <typename Done> std::size_t read_answer(int fd, std::string &buf, Done done)
{
    for (;;) {
        if (std::size_t n = done(buf))
            return n;
        char tmp[8192];
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r <= 0)
            return 0;
        buf.append(tmp, static_cast<std::size_t>(r));
    }
}

std::size_t socket_answer(const std::string &b)
{
    std::size_t lf = b.find('\n');
    return lf == std::string::npos ? 0 : lf + 1;
}

std::size_t http_answer(const std::string &b)
{
    std::size_t end = b.find("\r\n\r\n");
    if (end == std::string::npos)
        return 0;
    std::size_t cl = b.find("Content-Length: ");
    if (cl == std::string::npos || cl > end)
        return 0;
    std::size_t len = strtoul(b.c_str() + cl + 16, nullptr, 10);
    return b.size() >= end + 4 + len ? end + 4 + len : 0;
}

void publisher(const Target &t, const std::string &data, Clock::time_point stop,
               std::atomic<long> &events, std::atomic<long> &failures)
{
    std::string request;
    if (t.get) {
        request = "GET " + data + " HTTP/1.1\r\nHost: " + t.host + "\r\n\r\n";
    } else if (t.http) {
        request = "POST /publish/bench HTTP/1.1\r\nHost: " + t.host +
                  "\r\nContent-Type: text/plain\r\nContent-Length: " +
                  std::to_string(data.size()) + "\r\n\r\n" + data;
    } else {
        sse::EventFields ev;
        ev.has_data = true;
        ev.data = data;
        sse::encode_frame({"bench"}, ev, request);
    }
    int fd = connect_to(t);
    std::string buf;
    long mine = 0;
    while (Clock::now() < stop) {
        if (fd < 0) {
            failures++;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            fd = connect_to(t);
            continue;
        }
        std::size_t n = 0;
        if (send_all(fd, request))
            n = t.http ? read_answer(fd, buf, http_answer) : read_answer(fd, buf, socket_answer);
        bool ok = n > 0 && (t.http ? buf.compare(0, 10, "HTTP/1.1 2") == 0
                                   : buf.compare(0, 3, "ok ") == 0);
        if (!ok) {
            failures++;
            close(fd);
            fd = connect_to(t);
            buf.clear();
            continue;
        }
        buf.erase(0, n);
        ++mine;
    }
    events += mine;
    if (fd >= 0)
        close(fd);
}

} // namespace

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: publish-bench socket|http|get PATH|HOST:PORT PUBLISHERS SECONDS "
                        "DATA_BYTES|URL_PATH\n");
        return 2;
    }
    Target t;
    t.get = strcmp(argv[1], "get") == 0;
    t.http = t.get || strcmp(argv[1], "http") == 0;
    if (t.http) {
        std::string hp = argv[2];
        std::size_t colon = hp.rfind(':');
        t.host = hp.substr(0, colon);
        t.port = atoi(hp.c_str() + colon + 1);
    } else {
        t.path = argv[2];
    }
    int publishers = atoi(argv[3]);
    double seconds = atof(argv[4]);
    std::string data = t.get ? std::string(argv[5])
                             : std::string(static_cast<std::size_t>(atoi(argv[5])), 'x');

    std::atomic<long> events{0}, failures{0};
    auto start = Clock::now();
    auto stop = start + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    std::vector<std::thread> threads;
    for (int i = 0; i < publishers; ++i)
        threads.emplace_back(publisher, std::cref(t), std::cref(data), stop, std::ref(events),
                             std::ref(failures));
    for (auto &th : threads)
        th.join();
    double took = std::chrono::duration<double>(Clock::now() - start).count();
    printf("%s publishers=%d events=%ld seconds=%.2f events_per_s=%.0f failures=%ld\n", argv[1],
           publishers, events.load(), took, events.load() / took, failures.load());
    return 0;
}
