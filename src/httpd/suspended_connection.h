/* src/httpd/suspended_connection.h — one connection the event MPM left suspended, as the hub
 * drives it: every line of mod_sse that depends on httpd 2.4's event-MPM internals is here.
 *
 * httpd 2.4 has no public API for holding a suspended connection and ending it later (trunk
 * has ap_mpm_resume_suspended()). What follows was read in the 2.4.x branch's
 * server/mpm/event/event.c, server/core_filters.c and modules/ssl/ssl_engine_io.c (and APR
 * 1.7's memory/unix/apr_pools.c), and runs on Debian's 2.4.71 with APR 1.7.2. A newer 2.4
 * (or APR) may change any of it. "Pinned by" names the tests (event MPM; prefork never
 * suspends) seen to fail on 2.4.71 when the reliance is broken on purpose (the code changed
 * to do without it); where none fails, it says so.
 *
 * 1. Which hook call hands a connection over (handed_over()). The event MPM calls the
 *    suspend_connection hooks in six places; only the one after a handler returned SUSPENDED
 *    (process_socket(): `cs->pub.state == CONN_STATE_SUSPENDED`, then notify_suspend()) sees
 *    c->cs->state == CONN_STATE_SUSPENDED. The others (async I/O wait, write completion,
 *    keep-alive, lingering close x2) leave the connection the MPM's. suspendable() refuses,
 *    on the worker, what would not end in CONN_STATE_SUSPENDED (an internal redirect ends in
 *    write completion): pinned by t/hub-redirect.t (letting r->prev through fails it). The
 *    state test is the last guard behind it: no test reaches it.
 *
 * 2. When the worker has left (worker_left_by(), the "settled" wait). After the hooks return,
 *    notify_suspend() stores c->sbh = NULL, then cs->suspended = 1, in the connection's pool;
 *    the worker then leaves process_socket() and clears its worker_sockets[] slot, which
 *    close_worker_sockets() closes at an ungraceful stop. The hub waits until it sees c->sbh
 *    cleared, then kReleaseMs more, before it touches the scoreboard (the request's log and
 *    counters), closes the MPM's socket or destroys the pool. The 100 ms are a heuristic:
 *    only a worker preempted for 100 ms or more between those stores breaks it (cgroup CPU
 *    throttling can). It is accepted because no 2.4 API gives a better signal and a longer
 *    wait only keeps ended connections longer.
 *    Pinned by t/async.t ("clients that close right after the headers") and
 *    t/hub-stalled-log.t: without the wait, children segfault.
 *
 * 3. A dup of the socket until settled (adopted(), settle()). In that window
 *    close_worker_sockets() may close the MPM's descriptor, whose number may then be reused:
 *    the hub writes and polls through a dup() (and points the core output filter's
 *    core_net_rec::client_socket at it), and at settle() goes back to the MPM's descriptor, or
 *    ends the stream if it was closed (mpm_socket_open()). Without a spare descriptor (EMFILE)
 *    it uses the MPM's. Not pinned: no test provokes that window (an ungraceful stop within
 *    100 ms of a suspend).
 *
 * 4. Non-blocking writes through the core output filter (pass(), write_held(),
 *    write_budget(), write()). The socket's timeout is 0 from adopted() on. The core output
 *    filter, called with a brigade, waits up to the socket's timeout for POLLOUT once more
 *    than FlushMaxThreshold bytes are pending (and, with timeout 0, then fails and aborts the
 *    connection); mod_ssl passes it one record at a time. So the hub hands down no FLUSH
 *    bucket, never more than write_budget() at a time, and only when the core holds nothing
 *    (c->data_in_output_filters); what the socket does not take the core keeps, and calling
 *    the core filter with no brigade (as the event MPM's write completion does) writes it
 *    without waiting.
 *    Pinned by t/hub-tls.t: with the socket's Timeout kept, a TLS client that stops reading
 *    stalls the other streams of its child. The budget is not pinned: without it the core
 *    filter's wait fails at once (timeout 0) and such a client is ended (write-failed)
 *    instead of held, which no test tells apart.
 *
 * 5. mod_ssl's "SSL/TLS Coalescing Filter" holds small writes until a FLUSH: the constructor
 *    takes it out of both the connection's and the request's filter chains
 *    (ap_remove_output_filter() unlinks a connection filter from c->output_filters only).
 *    Pinned by t/async.t ("TLS") and t/hub-tls.t: without it, events wait in the filter.
 *
 * 6. The direct fast path (direct(): the queued bytes sent to the socket, send() or
 *    sendmsg()): exact when writes_as_is() (src/httpd/stream_transport.h): the response is
 *    not chunked (mod_sse ends the connection with the stream, so HTTP/1.1 sends no
 *    chunking), the connection has no filter but the core's (no TLS), no request filter
 *    rewrites the body (mod_substitute) and the core holds nothing. Otherwise the hub writes
 *    through the request's output filters (4). Pinned by t/async.t ("TLS": direct writes on
 *    a TLS connection break it) and t/filtered-stream.t (without the request-filter check the
 *    replay comes out rewritten by mod_substitute and the live events do not); the fast path
 *    itself carries every plain-HTTP held stream (t/async.t, t/scale.t). A request filter
 *    may hold bytes the core never sees (mod_substitute keeps an unfinished line, which an
 *    event's last line never is) or pass a FLUSH on its own (mod_substitute after 1,000 lines
 *    in one pass): the core then waits for the socket with timeout 0, and a client whose
 *    socket is full at that moment is ended (write-failed) and resumes. Not pinned.
 *
 * 7. The teardown (close()): ap_process_request_after_handler() (logs the request and frees
 *    it; c->sbh is NULL, so its scoreboard writes are skipped), ap_prep_lingering_close() (the
 *    pre-close hooks), shutdown and close of the socket, c->cs->state = CONN_STATE_SUSPENDED
 *    (so the MPM's pool cleanup, decrement_connection_count(), decrements the suspended count
 *    it incremented, not the lingering count), then apr_pool_destroy() of c->pool by the
 *    caller. The sequence is exercised by t/async.t ("MPM counters return": ConnsTotal back to
 *    0, one access-log line per stream), t/hub-stalled-log.t and t/hub-fault.t (ended streams
 *    released), t/restart.t and t/hub-tls.t (the last `retry:` and EOS at a graceful restart,
 *    end_with()). The CONN_STATE_SUSPENDED line is not pinned: without it t/async.t still
 *    passes on 2.4.71 (its ConnsAsync* stayed 0); it is kept because 2.4.x's
 *    decrement_connection_count() picks the counter by that state, and
 *    ap_process_request_after_handler() has just set it to LINGER or WRITE_COMPLETION.
 *
 * 8. The connection's allocator is its own, and APR 1.7's (release_cached_blocks(), in the
 *    constructor). The listener creates each connection's pool (ptrans) with an allocator of
 *    its own, owned by that pool, whose max free is MaxMemFree (2 MB by default); the
 *    connection's pools (the request's, the core output filter's deferred_write) and its
 *    bucket allocator draw from it, and it keeps what they free for this connection alone:
 *    at the handler's return two 8 KB blocks (the request's read buffer and one more), more
 *    if a recycled ptrans kept them. The constructor, on the worker that owns the connection
 *    (the allocator has no mutex), sets its max free to the least there is and gives what it
 *    keeps back to the system (Debian's APR maps each block with mmap and unmaps it when
 *    freed; an APR built on malloc frees it to malloc, where other connections reuse it).
 *    APR has no call that says whether an allocator keeps a block: the head of APR 1.7's
 *    private apr_allocator_t does (its highest non-empty free list), read only when the max
 *    free just set reads back there. close() hands the pool to the caller to destroy, never
 *    back to the MPM's recycled pools, so the lower limit ends with the connection (a
 *    connection the MPM keeps after all, SSE0503, keeps it: its later frees are unmapped,
 *    nothing else changes). Pinned by t/memory.t: without it 35,033 bytes per stream (before
 *    the 1.3 KB of sse/front_queue.h), against its limit of 1.25 x 21,775.
 *
 * 9. The core output filter's context starts with its set-aside brigade and the pool it sets
 *    data aside in (drop_deferred_write_pool(), in the constructor; struct
 *    core_output_filter_ctx is private to server/core_filters.c). The HTTP header filter
 *    passes the headers down alone, the core sets them aside (less than 4 KB, no FLUSH) in a
 *    deferred_write subpool it makes then, and clears it once written: one 8 KB node kept for
 *    160 bytes. A direct() stream (6) does not go through the core again before close(), so
 *    the constructor destroys that pool and stores NULL, which the core reads as "make one
 *    when needed". Only when the context still looks like 2.4.x's (its brigade the
 *    connection's and empty, the pool a subpool of the connection's pool): a plain stream
 *    drops from 26.8 to 22.7 KB of RSS (t/memory.t's figure, before sse/front_queue.h took
 *    it to 21.8). Not pinned: without it t/memory.t still passes (about 4 KB more is within
 *    its 1.25 x 21.8 KB); a 2.4 whose context
 *    differs only keeps the 4 KB. Compiled only for 2.4.47 and later (ap_release.h): up to
 *    2.4.46 the context's second field was another brigade (tmp_flush_bb, made in the
 *    connection's pool), which the checks above would take for that pool.
 *
 * Threads and ownership: constructed on the worker by the handler (hand_to_hub()), then used
 * by the hub's I/O thread only (adopted() to end_with()), then by the ender (release()).
 * Nothing here blocks except release() (the access log, the pre-close hooks), which is why the
 * ender runs it. The object is the transport (src/httpd/stream_transport.h) of the hub's
 * HubStream, which the caller deletes before destroying the pool release() returns.
 */
#ifndef SSE_HTTPD_SUSPENDED_CONNECTION_H
#define SSE_HTTPD_SUSPENDED_CONNECTION_H

#include "src/httpd/stream_transport.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace sse::httpd {

/* How long after its worker was seen leaving the MPM's suspend code a connection counts as
 * settled (reliance 2), and how often the I/O thread looks while some are not. */
constexpr int kReleaseMs = 100;
constexpr int kSettleCheckMs = 20;

class SuspendedConnection final : public StreamTransport {
public:
    /* On the worker, once the stream's first bytes are out: gives the connection allocator's
     * cached blocks back (8), takes mod_ssl's coalescing filter out (5), finds the
     * core output filter, decides direct() (6) and, if so, drops the core's deferred_write
     * pool (9). */
    explicit SuspendedConnection(request_rec *r);
    SuspendedConnection(const SuspendedConnection &) = delete;
    SuspendedConnection &operator=(const SuspendedConnection &) = delete;

    /* On the handler's worker: whether this request's connection ends in CONN_STATE_SUSPENDED
     * when the handler returns SUSPENDED (1): an async MPM's connection (c->cs), HTTP/1 (not
     * an h2 stream), no clogging input filter, not a subrequest nor an internal redirect. */
    static bool suspendable(const request_rec *r);

    /* In the suspend_connection hook: whether this call hands the connection over (1). */
    static bool handed_over(const conn_rec *c);
    static int mpm_state(const conn_rec *c) { return static_cast<int>(c->cs->state); }

    request_rec *request() const { return r_; }
    /* The descriptor the hub writes to and polls: a dup of the MPM's until settled (3). */
    int fd() const override { return fd_; }
    /* Plain bytes may be written to fd() (send(), sendmsg()), bypassing the filters (6). */
    bool direct() const override { return direct_; }

    /* I/O thread, at adoption: socket timeout 0 (4), and the dup (3). */
    void adopted() override;

    /* I/O thread: whether the worker left the MPM's suspend code kReleaseMs ago (2); the first
     * call that sees c->sbh cleared notes `now`. */
    bool worker_left_by(apr_time_t now) override;
    bool settled() const override { return settled_; }
    /* The MPM's descriptor while the hub is on the dup (3), or -1 when
     * close_worker_sockets() closed it; fd() otherwise. */
    int settled_fd() const override;
    /* The worker has left: the dup (if any) is closed (which also takes it out of any epoll
     * set) and fd() is the MPM's descriptor again. The caller re-registered it first. */
    void settle() override;

    /* direct(): straight to the socket; otherwise through the filters, at most
     * write_budget() at a time and only when the core holds nothing (4). */
    Wrote write(Subscriber &s) override;

    /* I/O thread, when the stream ends for a restart or a stop: `last` (may be empty), then
     * the end of the response, written without waiting; on direct() connections straight to
     * the socket, then marked aborted. Returns the bytes of `last` written to the socket
     * directly (through the filters the core counts them). */
    std::size_t end_with(const std::string &last) override;
    /* I/O thread: the stream ends without a last word (gone, failed, too far behind). */
    void abort() override { c_->aborted = 1; }

    /* Ender, once settled: the stream's access-log notes (SSE_EVENTS, SSE_BYTES, SSE_END),
     * then the teardown (7). Returns the connection's pool, which the caller destroys last,
     * once it has freed what it owns (this object included); nothing else of the MPM touches
     * the connection after that. */
    apr_pool_t *release(server_rec *s, std::uint64_t events, std::uint64_t bytes,
                        EndReason why) override;

private:
    /* Whether the hub still writes through the dup (3). */
    bool on_dup() const { return fd_ != mpm_fd_; }
    /* Whether the MPM's descriptor is still the connection's (close_worker_sockets() did not
     * close it). */
    bool mpm_socket_open() const;
    /* Through the filters (not direct()), all without waiting (4). */
    std::size_t write_budget() const;
    /* Whether the core output filter holds bytes the socket has not taken. */
    bool holds_data() const { return c_->data_in_output_filters != 0; }
    /* Appends bytes that stay valid until pass() returns. */
    void add(const char *data, std::size_t len);
    /* Hands what add() collected down the filters, without FLUSH; false: the connection failed. */
    bool pass();
    /* Calls the core output filter with no brigade: it writes what it holds, without waiting;
     * false: the connection failed. */
    bool write_held();
    /* The teardown (7). `direct_bytes`: what the hub wrote past the filters, for the access
     * log. */
    apr_pool_t *close(apr_uint64_t direct_bytes);

    request_rec *r_;
    conn_rec *c_;
    int fd_ = -1;                      /* see fd() */
    int mpm_fd_ = -1;                  /* the MPM's socket descriptor */
    apr_socket_t *own_sock_ = nullptr; /* wraps the dup for the core output filter */
    apr_bucket_brigade *bb_ = nullptr;
    ap_filter_t *core_ = nullptr;      /* the core output filter */
    bool direct_ = false;
    bool settled_ = false;
    apr_time_t worker_left_ = 0;       /* when c->sbh was first seen cleared; 0: not yet */
};

} // namespace sse::httpd

#endif
