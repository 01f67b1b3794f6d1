/* src/httpd/taken_socket.h — a stream held by its socket alone (SSEHoldMode socket): the
 * handler dup()s a plain-HTTP connection's socket, returns OK, and httpd finishes the
 * request (its access-log line, SSE_END socket-held) and the connection (pools freed) as for
 * any response; the hub then writes to the dup until the stream ends. About 3 KB per idle
 * stream instead of the 22 KB of a suspended connection (t/memory.t).
 *
 * The hand-over, on the handler's worker (hand_to_hub(), src/httpd/async_hub.h):
 *   possible(r) -> take(r) (the dup) -> the stream is parked in the connection's config,
 *   owned by that slot (a cleanup on c->pool deletes it if it is still there) -> OK ->
 *   httpd logs the request and frees r->pool -> lingering close: the pre_close_connection
 *   hook (adopt_taken_socket(), APR_HOOK_REALLY_FIRST) takes the stream out of the slot,
 *   marks the connection aborted and pushes the stream to the hub's inbox -> httpd closes
 *   its descriptor (no FIN: the dup keeps the socket open) and frees c->pool.
 * Whoever takes the stream out of the slot owns it (the slot is emptied in the same step):
 * the hook or the cleanup, on the thread that runs the connection, never both.
 *
 * What this relies on in httpd 2.4 (read in the 2.4.x branch: server/connection.c,
 * server/mpm/event/event.c, server/mpm/prefork/prefork.c, server/core_filters.c; runs on
 * Debian's 2.4.71). "Pinned by": the test (event MPM) that fails when the reliance breaks.
 *
 * 1. A connection whose handler returned OK with c->keepalive = AP_CONN_CLOSE reaches the
 *    pre_close_connection hooks before its socket is closed: the event MPM's process_socket()
 *    goes (through write completion, when nothing is pending) to process_lingering_close(),
 *    which calls ap_start_lingering_close() -> ap_prep_lingering_close() ->
 *    ap_run_pre_close_connection(), then close_connection() (close_socket_nonblocking(),
 *    the pool back to the recycled ones, cleared); prefork's ap_lingering_close() the same.
 *    Every 2.4.x path goes there, an ungraceful stop's too (close_worker_sockets() only
 *    closes the descriptor; the worker still runs process_lingering_close()); only
 *    close_connection() after a failed apr_pollset_add() skips the hooks. A connection that
 *    never gets there runs c->pool's cleanups when its pool is cleared: the parked stream is
 *    deleted then, never held (the safety net SSE_TEST_FAULT=hold-socket-not-adopted drives).
 *    Pinned by t/hold-socket.t ("take-over: ...", "event received": without the hook the
 *    stream is never held, and the c->pool cleanup ends it once httpd is done with the
 *    connection; seen failing with the hook unregistered). The cleanup's side is driven by
 *    SSE_TEST_FAULT=hold-socket-not-adopted (t/hold-socket.t, "... freed once").
 *
 * 2. No FIN at httpd's close (adopt_taken_socket() sets c->aborted = 1): in
 *    ap_start_lingering_close(), `return (c->aborted || apr_socket_shutdown(csd,
 *    APR_SHUTDOWN_WRITE))` skips the shutdown() of an aborted connection, and the callers
 *    then close the socket at once (event: close_connection(); prefork:
 *    apr_socket_close()). close() of one descriptor of a socket that another (the dup) keeps
 *    open sends nothing; shutdown() would end the stream for the client whatever the dup.
 *    ap_flush_conn() runs before (FLUSH and EOC down c->output_filters): the core output
 *    filter writes nothing for an aborted connection, and holds nothing (4).
 *    Pinned by t/hold-socket.t ("no EOF after take-over", "keep-alives arrive"): without
 *    the aborted mark the client reads EOF right after the first bytes (seen failing).
 *
 * 3. The access-log line is written at take-over, by ap_process_request_after_handler()
 *    after the handler's OK, with the notes set before returning (SSE_EVENTS and SSE_BYTES so
 *    far, SSE_END socket-held); the stream's end is logged as SSE0510 instead.
 *    Pinned by t/hold-socket.t ("the access-log line is written at take-over", "SSE_END
 *    socket-held", "still one access-log line").
 *
 * 4. possible() is writes_as_is() (src/httpd/stream_transport.h), the predicate a suspended
 *    connection's direct writes use too: the bytes the hub writes to the socket are the
 *    response as is: not chunked (mod_sse sets AP_CONN_CLOSE, so HTTP/1.1 sends no
 *    chunking), the connection's output chain is the core filter alone (no TLS: mod_ssl adds
 *    connection filters), no request output filter below AP_FTYPE_PROTOCOL is left (one that
 *    rewrites the body would see none of what follows), and the core output filter holds
 *    nothing of what the handler wrote (c->data_in_output_filters == 0 after its FLUSH): what
 *    it held would go out after the hub's bytes, or never. Any of these failing, the stream
 *    is held as a suspended connection instead (SSEHoldMode request), written through the
 *    request's filters.
 *    Pinned by t/hold-socket.t ("fallback: TLS holds in request mode": without the
 *    connection-filter check the client gets plaintext on a TLS connection; seen failing) and
 *    t/filtered-stream.t (mod_substitute on text/event-stream: without the request-filter
 *    check the live events come out unrewritten). The data_in_output_filters check is not
 *    pinned: no test makes a socket too full to take the first bytes.
 *
 * 5. Nothing the hub keeps points into r->pool or c->pool (both are destroyed at take-over):
 *    this object copies the client's address and the path (without query string), the
 *    stream's BusReader, Subscription, DeliverySettings, channels and client id are
 *    std::-owned copies (src/httpd/async_hub.c++, HubStream). Not pinned by a test of its
 *    own: an ASan build (make test-asan) of t/hold-socket.t reports any use after free.
 *
 * Prefork has no hub: SSEHoldMode socket there means what request does (the stream is held
 * by its process).
 */
#ifndef SSE_HTTPD_TAKEN_SOCKET_H
#define SSE_HTTPD_TAKEN_SOCKET_H

#include "src/httpd/stream_transport.h"

#include <memory>
#include <string>

namespace sse::httpd {

class TakenSocket final : public StreamTransport {
public:
    /* On the handler's worker, once the stream's first bytes are out: whether its socket
     * can be taken over (4). */
    static bool possible(const request_rec *r);
    /* A dup of r's socket (close-on-exec), or nullptr when it cannot be made (EMFILE, or the
     * test fault hold-socket-dup-fails). */
    static std::unique_ptr<TakenSocket> take(request_rec *r, bool fail_dup);

    ~TakenSocket() override;
    TakenSocket(const TakenSocket &) = delete;
    TakenSocket &operator=(const TakenSocket &) = delete;

    int fd() const override { return fd_; }
    bool direct() const override { return true; }
    void adopted() override {}
    bool worker_left_by(apr_time_t) override { return true; }
    bool settled() const override { return true; }
    int settled_fd() const override { return fd_; }
    void settle() override {}
    Wrote write(Subscriber &s) override;
    /* `last` without waiting, then the descriptor is closed (the client reads EOF). */
    std::size_t end_with(const std::string &last) override;
    void abort() override;
    /* Logs SSE0510 (the access-log line of the stream's end); nothing to free: nullptr. */
    apr_pool_t *release(server_rec *s, std::uint64_t events, std::uint64_t bytes,
                        EndReason why) override;

private:
    TakenSocket(int fd, const request_rec *r);
    void close_fd();

    int fd_;
    std::string client_;  /* r->useragent_ip */
    std::string path_;    /* r->uri (no query string), escaped for the log */
    apr_time_t started_;  /* r->request_time */
    server_rec *server_;  /* r->server (in pconf: it outlives the request), for SSE0510 */
};

} // namespace sse::httpd

#endif
