/* floor-server — the FLOOR of `make bench-nchan`: a measuring stick, not a product.
 *
 *   floor-server PORT          (listens on 127.0.0.1:PORT until killed)
 *
 * What a server must do at least to fan an event out over HTTP on this machine: one thread,
 * one epoll set, and per publish exactly one send() of the event to each subscriber of its
 * channel. No queue, no history, no ids, no keep-alive comments, no access control, no
 * logging, HTTP no further than the request line and Content-Length. The bench reads mod_sse's
 * and Nchan's CPU per delivery and latency as ratios to this server's, measured in the same run
 * by the same client (build/sse-load, build/publish-bench): what is left above it is what the
 * real servers spend beyond the kernel's send path.
 *
 *   GET /events/<ch> ...      answers "HTTP/1.1 200 OK", Content-Type: text/event-stream and
 *                             no Content-Length nor chunking (the body runs until the
 *                             connection closes, which sse-load reads as such), then holds the
 *                             socket as a subscriber of <ch> until the client closes it;
 *   POST /publish/<ch> ...    with a Content-Length body, on a keep-alive connection: sends
 *                             "data: <body>\n\n" to every subscriber of <ch> (the body is
 *                             taken as one line, as the bench's events are), then answers
 *                             "HTTP/1.1 200 OK" with an empty body;
 *   anything else             404 and the connection is closed.
 *
 * A subscriber whose socket buffer is full is waited for (poll) rather than queued for: the
 * publisher's answer waits with it, as Nchan's does. Channels are kept in a list searched by
 * name (the bench uses at most 100). Memory: a few bytes per subscriber, a request buffer per
 * connection while it sends a request.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQUEST 65536   /* request head and body together */
#define MAX_NAME 64

struct channel {
    char name[MAX_NAME];
    int *fds;          /* subscribers' sockets */
    int count, room;
};

struct conn {
    int open;
    int channel;       /* subscriber: index in channels, else -1 */
    int slot;          /* subscriber: index in that channel's fds */
    char *buf;         /* request bytes not yet handled (publishers and new connections) */
    size_t len;
};

static struct conn *conns;   /* indexed by fd */
static int conn_room;
static struct channel *channels;
static int channel_count, channel_room;
static int ep;

static void *grow(void *p, int *room, int need, size_t size)
{
    if (need <= *room)
        return p;
    int n = *room ? *room * 2 : 16;
    while (n < need)
        n *= 2;
    p = realloc(p, (size_t)n * size);
    if (!p) {
        perror("floor-server: realloc");
        exit(1);
    }
    *room = n;
    return p;
}

static int find_channel(const char *name, size_t len)
{
    for (int i = 0; i < channel_count; ++i)
        if (strlen(channels[i].name) == len && memcmp(channels[i].name, name, len) == 0)
            return i;
    channels = grow(channels, &channel_room, channel_count + 1, sizeof *channels);
    struct channel *c = &channels[channel_count];
    memset(c, 0, sizeof *c);
    memcpy(c->name, name, len < MAX_NAME - 1 ? len : MAX_NAME - 1);
    return channel_count++;
}

static void close_conn(int fd)
{
    struct conn *c = &conns[fd];
    if (c->channel >= 0) {   /* swap the channel's last subscriber into this one's slot */
        struct channel *ch = &channels[c->channel];
        int last = ch->fds[--ch->count];
        ch->fds[c->slot] = last;
        conns[last].slot = c->slot;
    }
    free(c->buf);
    memset(c, 0, sizeof *c);
    c->channel = -1;
    close(fd);
}

/* Sends all of it: a full socket buffer is waited for (bounded), never queued. */
static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd w = {.fd = fd, .events = POLLOUT};
            if (poll(&w, 1, 10000) <= 0)
                return -1;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

static void subscribe(int fd, const char *name, size_t len)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-cache\r\n\r\n";
    if (send_all(fd, head, sizeof head - 1) < 0) {
        close_conn(fd);
        return;
    }
    struct conn *c = &conns[fd];
    int i = find_channel(name, len);
    struct channel *ch = &channels[i];
    ch->fds = grow(ch->fds, &ch->room, ch->count + 1, sizeof *ch->fds);
    c->channel = i;
    c->slot = ch->count;
    ch->fds[ch->count++] = fd;
    free(c->buf);
    c->buf = NULL;
    c->len = 0;
}

/* One send() per subscriber of the channel; a subscriber that fails is closed. */
static void publish(const char *name, size_t len, const char *body, size_t body_len)
{
    static char event[MAX_REQUEST + 16];
    size_t n = 0;
    memcpy(event, "data: ", 6);
    n = 6;
    memcpy(event + n, body, body_len);
    n += body_len;
    memcpy(event + n, "\n\n", 2);
    n += 2;
    int i = find_channel(name, len);   /* may move `channels` */
    struct channel *ch = &channels[i];
    for (int k = ch->count - 1; k >= 0; --k)   /* backwards: close_conn swaps the last in */
        if (send_all(ch->fds[k], event, n) < 0)
            close_conn(ch->fds[k]);
}

/* Handles every whole request in the connection's buffer; returns -1 if it closed. */
static int handle_requests(int fd)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    static const char missing[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
    struct conn *c = &conns[fd];
    while (c->len > 0) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end)
            return c->len >= MAX_REQUEST ? (close_conn(fd), -1) : 0;
        size_t head = (size_t)(end - c->buf) + 4;
        size_t body = 0;
        for (char *h = c->buf; h && h < end; h = memchr(h, '\n', (size_t)(end - h))) {
            h += *h == '\n';
            if (strncasecmp(h, "Content-Length:", 15) == 0)
                body = strtoul(h + 15, NULL, 10);
        }
        if (body > MAX_REQUEST - head) {
            close_conn(fd);
            return -1;
        }
        if (c->len < head + body)
            return 0;
        const char *path = memchr(c->buf, ' ', head);
        const char *path_end = path ? memchr(path + 1, ' ', (size_t)(end - path - 1)) : NULL;
        if (path && path_end && strncmp(c->buf, "GET /events/", 12) == 0) {
            subscribe(fd, path + 9, (size_t)(path_end - path - 9));
            return -1;   /* no longer a request connection */
        }
        if (!path || !path_end || strncmp(c->buf, "POST /publish/", 14) != 0) {
            send_all(fd, missing, sizeof missing - 1);
            close_conn(fd);
            return -1;
        }
        publish(path + 10, (size_t)(path_end - path - 10), c->buf + head, body);
        if (send_all(fd, ok, sizeof ok - 1) < 0) {
            close_conn(fd);
            return -1;
        }
        memmove(c->buf, c->buf + head + body, c->len - head - body);
        c->len -= head + body;
    }
    return 0;
}

static void on_readable(int fd)
{
    struct conn *c = &conns[fd];
    if (c->channel >= 0) {   /* a subscriber sends nothing more: this is its close */
        char drain[512];
        ssize_t n = read(fd, drain, sizeof drain);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            close_conn(fd);
        return;
    }
    if (!c->buf && !(c->buf = malloc(MAX_REQUEST))) {
        close_conn(fd);
        return;
    }
    for (;;) {
        ssize_t n = read(fd, c->buf + c->len, MAX_REQUEST - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            if (handle_requests(fd) < 0 || c->len == MAX_REQUEST)
                return;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        } else {
            close_conn(fd);
            return;
        }
    }
}

static void on_accept(int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;   /* EAGAIN, or out of descriptors: the client sees its connect hang */
        if (fd >= conn_room) {
            int old = conn_room;
            conns = grow(conns, &conn_room, fd + 1, sizeof *conns);
            memset(conns + old, 0, (size_t)(conn_room - old) * sizeof *conns);
            for (int i = old; i < conn_room; ++i)
                conns[i].channel = -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[fd].open = 1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: floor-server PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(listener, (struct sockaddr *)&a, sizeof a) < 0 || listen(listener, 4096) < 0) {
        perror("floor-server: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; ++i) {
            int fd = evs[i].data.fd;
            if (fd == listener)
                on_accept(listener);
            else if (fd < conn_room && conns[fd].open)
                on_readable(fd);
        }
    }
}
