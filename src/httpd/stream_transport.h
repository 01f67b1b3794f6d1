/* src/httpd/stream_transport.h — what the async hub holds a stream through: its socket and the
 * operations the hub calls on it, whatever keeps the stream (SSEHoldMode).
 *
 * Two implementations:
 * - SuspendedConnection (src/httpd/suspended_connection.h, SSEHoldMode request): httpd's
 *   connection and request, left suspended by the event MPM; written straight to the socket
 *   when writes_as_is() (plain HTTP, no filter rewriting the body), else through the request's
 *   output filters (TLS, mod_substitute); released by the ender (the access-log line, the
 *   connection's teardown).
 * - TakenSocket (src/httpd/taken_socket.h, SSEHoldMode socket): a dup of the socket of a
 *   connection that writes_as_is(); httpd finished the request and the connection at
 *   take-over. Always direct(), settled from the start; nothing of httpd's is left to
 *   release.
 *
 * Threads: constructed on the handler's worker; then used by the hub's I/O thread (from
 * adopted() to end_with()/abort()), then by the ender (release()). Nothing here blocks
 * except SuspendedConnection::release() (the access log, the pre-close hooks), which is why
 * the ender runs it.
 */
#ifndef SSE_HTTPD_STREAM_TRANSPORT_H
#define SSE_HTTPD_STREAM_TRANSPORT_H

#include "src/httpd/module.h"

#include "sse/fanout.h"

#include <cstddef>
#include <string>

namespace sse::httpd {

class StreamTransport {
public:
    virtual ~StreamTransport() = default;

    /* The descriptor the hub writes to (direct()) and polls. */
    virtual int fd() const = 0;
    /* Plain bytes may be written to fd() (send(), sendmsg()), bypassing any filter. */
    virtual bool direct() const = 0;

    /* I/O thread, when the hub takes the stream from its inbox. */
    virtual void adopted() = 0;

    /* I/O thread: whether whoever handed the stream over is done with it (a worker that
     * suspended a connection may still be in the MPM's code for a while); the first call
     * that sees it notes `now`. Until then the stream is not released. */
    virtual bool worker_left_by(apr_time_t now) = 0;
    virtual bool settled() const = 0;
    /* Once worker_left_by() said yes: the descriptor to poll from then on: fd() when it does
     * not change, -1 when the connection has lost its socket (the stream ends). */
    virtual int settled_fd() const = 0;
    /* Then: fd() becomes settled_fd() (the old one closed, which also takes it out of any
     * epoll set; the caller registered the new one first). */
    virtual void settle() = 0;

    enum class Wrote {
        All,      /* the queue is empty */
        WantOut,  /* the socket took part: EPOLLOUT is wanted */
        Failed,   /* the connection failed: the stream ends (write-failed) */
    };
    /* I/O thread: writes what `s`'s queue holds, as much as the connection takes now,
     * without waiting, and reports it with s.consumed()/s.wrote(). */
    virtual Wrote write(Subscriber &s) = 0;

    /* I/O thread, when the stream ends for a restart or a stop: `last` (may be empty), then
     * the end of the response, without waiting. Returns the bytes of `last` written to the
     * socket directly (sse::send_last(): part of it when the socket took part; the filters
     * count theirs). */
    virtual std::size_t end_with(const std::string &last) = 0;
    /* I/O thread: the stream ends without a last word (gone, failed, too far behind). */
    virtual void abort() = 0;

    /* Ender, once ended and settled: what remains of the stream for httpd (its access-log
     * line, or SSE0510; the connection's teardown). `s` is the stream's server, for logging.
     * Returns a pool the caller destroys last, once it has freed what it owns (this object
     * included), or nullptr. */
    virtual apr_pool_t *release(server_rec *s, std::uint64_t events, std::uint64_t bytes,
                                EndReason why) = 0;
};

/* Whether the bytes of r's body may be written to its socket as they are, past every filter,
 * from now on (the hub's direct writes: TakenSocket always, SuspendedConnection's direct()):
 * what goes out is then exactly what the handler's writes would have put on the wire. On the
 * handler's worker, once the stream's first bytes were flushed. True only when
 * - the response is not chunked (mod_sse ends the connection with the stream, so HTTP/1.1
 *   sends no chunking),
 * - r is the connection's own request: not a subrequest (r->main), not an HTTP/2 stream
 *   (c->master),
 * - the connection's output chain is the core output filter alone (no TLS: mod_ssl adds
 *   connection filters),
 * - the core output filter holds nothing of what was written (c->data_in_output_filters):
 *   what it held would go out after the direct bytes, or never,
 * - no request output filter below AP_FTYPE_PROTOCOL is left before the connection's chain:
 *   a resource or content-set filter (mod_substitute, mod_sed, mod_ext_filter; mod_deflate
 *   and mod_brotli take themselves out for event streams, no-gzip) rewrites the body, and
 *   would see the replay the handler wrote but none of the live events.
 * Otherwise every byte goes through r->output_filters (SuspendedConnection, not direct()). */
bool writes_as_is(const request_rec *r);

/* Writes the queue of `s` to the socket `fd` without waiting (send(), sendmsg()): the body is
 * the bytes themselves (writes_as_is()). */
StreamTransport::Wrote write_direct(int fd, Subscriber &s);

} // namespace sse::httpd

#endif
