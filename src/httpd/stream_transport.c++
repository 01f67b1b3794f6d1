/* The direct write both transports use, and when it may be used (see stream_transport.h). */
#include "src/httpd/stream_transport.h"

#include "util_filter.h"

#include <cerrno>
#include <sys/socket.h>
#include <sys/uio.h>

namespace sse::httpd {

namespace {

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

} // namespace

bool writes_as_is(const request_rec *r)
{
    const conn_rec *c = r->connection;
    if (r->chunked || c->master || r->main || !c->output_filters || c->output_filters->next ||
        c->data_in_output_filters)
        return false;
    /* The request's chain runs into the connection's: what sits before it is the request's. */
    for (const ap_filter_t *f = r->output_filters; f && f != c->output_filters; f = f->next)
        if (f->frec && f->frec->ftype < AP_FTYPE_PROTOCOL)
            return false;
    return true;
}

/* One system call per wake-up: up to 64 pieces or 256 KB. */
StreamTransport::Wrote write_direct(int fd, Subscriber &s)
{
    while (!s.queue_empty()) {
        struct iovec iov[64];
        int n = 0;
        std::size_t total = 0, skip = s.front_offset();
        for (auto it = s.queue().begin();
             it != s.queue().end() && n < 64 && total < 256 * 1024; ++it, ++n, skip = 0) {
            iov[n].iov_base = const_cast<char *>((*it)->data() + skip);
            iov[n].iov_len = (*it)->size() - skip;
            total += iov[n].iov_len;
        }
        ssize_t w = send_pieces(fd, iov, n);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR ? StreamTransport::Wrote::WantOut
                                                     : StreamTransport::Wrote::Failed;
        s.wrote(static_cast<std::size_t>(w), apr_time_now());
        s.consumed(static_cast<std::size_t>(w));
        if (static_cast<std::size_t>(w) < total)
            return StreamTransport::Wrote::WantOut;
    }
    return StreamTransport::Wrote::All;
}

} // namespace sse::httpd
