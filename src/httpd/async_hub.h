/* src/httpd/async_hub.h — holding subscribers without a worker thread each (event MPM).
 *
 * The handler sends a stream's headers, first bytes and replay on its worker thread, then
 * hands the stream to this child's hub, and the worker is free. Two ways (SSEHoldMode, per
 * location), behind one interface (StreamTransport, src/httpd/stream_transport.h):
 * - request (the default): the handler returns SUSPENDED; in the suspend_connection hook the
 *   connection is handed over, and the hub keeps httpd's connection and request (about 22 KB
 *   per idle stream, src/httpd/suspended_connection.h);
 * - socket: on plain HTTP the handler dup()s the socket and returns OK; httpd logs the
 *   request and closes the connection (without a FIN: the dup keeps the socket), and the
 *   pre_close_connection hook hands the stream over (about 3 KB per idle stream,
 *   src/httpd/taken_socket.h). A stream whose socket cannot be taken (TLS, a filter, the dup
 *   failing) is held as in request mode.
 * The hub's threads:
 * - the I/O thread sleeps on its interest slot's futex in the bus and a word of its own at
 *   once (InterestSlot::wait_or, sse/bus.h), so a publish on a channel of its streams wakes it
 *   directly and publishes on other channels do not (without a slot: on the bus's shared word,
 *   Bus::wait_or, woken by every publish); while it holds no stream it sleeps on its own word only (a
 *   new stream pokes it), so publishes neither wake it nor, when no process has a reader
 *   waiting on the bus, make the publisher call FUTEX_WAKE at all; it reads each new event
 *   once (one shared copy of its bytes for every subscriber of this process), queues it for
 *   the subscribers of its channels, and writes only to sockets that epoll reports
 *   writable. Nothing on it blocks. A plain
 *   HTTP stream (not chunked, no output filter but the core's) is sent (send(), sendmsg())
 *   straight from the queue. Otherwise (TLS) data goes down the output filters without
 *   FLUSH buckets and the core output filter is then called directly with no brigade (as the
 *   event MPM's write completion does), which writes what the socket takes and keeps the
 *   rest until EPOLLOUT;
 * - the socket watcher wakes the I/O thread when one of its sockets has an event while it
 *   sleeps; the ender runs what may block (both below).
 *
 * What each stream gets (the channel index, audiences, control records, keep-alives, token
 * expiry, SSEMaxPending) is FanOut's (sse/fanout.h, with one stream's rules in
 * sse/delivery.h), unit-tested there; this hub is its transport (a FanOutSink).
 *
 * Events addressed to some client ids (only/except) are queued for the streams they admit.
 * Control records end streams: CloseChannels those of the closed channels, EndStream the
 * streams whose serial it names (SSEDuplicateClient replace); each gets the record's notice
 * first.
 *
 * A stream whose token expires (DeliverySettings::token_expires_us) gets an `sse-close` notice
 * (reason token-expired) at the first tick after it, and ends (SSE_END token-expired). The hub
 * ticks once a second and fan-out does not look at the deadline (a compare per stream per event
 * for every stream, token or not): events published in that second may still reach it.
 *
 * A subscriber whose queue grows beyond SSEMaxPending, not counting the event being written
 * (one event larger than the limit still goes through), is dropped (it reconnects with
 * Last-Event-ID and replays what it missed). A client that goes away is seen at once
 * (EPOLLRDHUP). At child_stopping every stream gets a last `retry:` and is closed, so browsers
 * come back to the new generation.
 *
 * Ending a suspended connection: httpd 2.4 has no public call for it (trunk has
 * ap_mpm_resume_suspended()). The sequence that works on 2.4.71 (log and free the request,
 * pre-close hooks, close, CONN_STATE_SUSPENDED, the pool destroyed once the worker that
 * suspended it has left the MPM's suspend code), and every other reliance on the event MPM's
 * internals, with the tests that pin them, are in src/httpd/suspended_connection.h.
 *
 * Threads, and what each may wait for:
 * - A worker runs hand_to_hub() (the handler), adopt_suspended_stream() (the
 *   suspend_connection hook) and adopt_taken_socket() (the pre_close_connection hook), which
 *   take the inbox's mutex for a push; can_suspend() too.
 * - The I/O thread serves the sockets and never blocks: it sleeps only on the futexes (at
 *   most the 1 s tick; 20 ms while a stream is settling), and only after a round that found
 *   nothing left to do (a publish or a poke after the round began makes the sleep return at
 *   once); every socket has timeout 0, it takes no lock shared with other processes (the bus
 *   is read lock-free), only the inbox's and the ender's mutexes for a push or a pop, and
 *   logs nothing on the way. It reads its epoll set itself (without waiting) while the
 *   socket watcher has fired and until a round finds nothing left, then re-arms the watcher.
 * - The socket watcher sleeps in epoll_wait on the I/O thread's epoll set, registered
 *   one-shot: when a socket has an event while the I/O thread sleeps (a client left, a socket
 *   became writable) it pokes the I/O thread once; it is re-armed only by the I/O thread
 *   before it sleeps, so a busy I/O thread is never poked for sockets. On its wake-ups and
 *   its 1 s tick it reaps the streams of dead processes (reap_gone_processes: announcing
 *   them publishes, which may wait for the bus's and the registry's process-shared locks).
 * - Only where the kernel has no futex_waitv (Linux < 5.16; Bus::can_wait_or()), the I/O
 *   thread sleeps on its own word and a bus relay thread sleeps on the bus's futex and pokes
 *   it after each publish (the design before futex_waitv: one more thread wake-up per
 *   publish and child, with or without streams).
 * - The ender runs what may block, in the order streams ended: an ended stream's registry
 *   slot and disconnect event (process-shared locks), its access-log line (a piped logger may
 *   stall) and the release of its connection (pre-close hooks). A stall there delays only the
 *   closing of ended streams, never the live ones.
 * - child_stopping's thread calls stop_async_hub() (a flag and a poke); the pchild cleanup,
 *   after the MPM joined its workers, joins the hub's threads.
 *
 * Ownership of a stream (its HubStream, which holds its StreamTransport: a
 * SuspendedConnection in request mode, a TakenSocket in socket mode, SSEHoldMode):
 *   worker: hand_to_hub() makes it and parks it in the connection's config slot, which owns
 *   it: whoever takes it out (emptying the slot in the same step) owns it;
 *   -> request mode: the suspend hook, adopt_suspended_stream(), moves it to the hub's inbox,
 *      or deletes it when the connection was not handed over (it is then never held);
 *   -> socket mode: the pre_close_connection hook, adopt_taken_socket(), moves it to the
 *      inbox; if the connection is closed without that hook (in 2.4 only after a failed
 *      apr_pollset_add()), a cleanup on c->pool finds it still parked and deletes it
 *      (SSE0511);
 *   -> I/O thread: takes it from the inbox and owns it while it is live and while it ends
 *      (end(): out of every set, its last bytes written);
 *   -> ender, in two steps: at end(), its Subscription only (the slot is released at once;
 *      the I/O thread no longer touches it); once ended and settled (a suspended
 *      connection's worker left the MPM's suspend code, see suspended_connection.h; a taken
 *      socket at once), the whole stream: the ender has its transport release it (the
 *      access-log line and the connection's teardown, or SSE0510), deletes the stream and
 *      destroys the pool the transport returned. The I/O thread hands it over at the end of
 *      a loop round and never looks at it again.
 *
 * If any of the hub's threads fails (an exception escapes its loop), the hub is dead:
 * can_suspend() says no from then on (new streams are held by their workers), the streams it
 * holds are ended with a `retry:` (SSE_END hub-failed) and released, and the failure is logged
 * (SSE0500).
 */
#ifndef SSE_HTTPD_ASYNC_HUB_H
#define SSE_HTTPD_ASYNC_HUB_H

#include "src/httpd/config.h"
#include "src/httpd/module.h"
#include "src/httpd/subscription.h"

namespace sse::httpd {

class AsyncHub;

/* child_init: starts the hub's threads in this child (event MPM only); stopped and joined by
 * a cleanup on `pchild`. Throws std::system_error when its epoll sets, eventfd or threads
 * cannot be made (the caller logs; streams then hold a worker each). */
AsyncHub *start_async_hub(apr_pool_t *pchild, server_rec *s, ModuleState *state);

/* Whether this request's stream can be suspended: an async MPM with a working hub, HTTP/1 (not
 * an h2 stream), no clogging input filter, not a subrequest nor an internal redirect (their
 * connection is not left suspended), SSEAsync On. */
bool can_suspend(request_rec *r, const DirConfig &d, const ModuleState *state);

/* Handler, on its worker, when can_suspend(): the stream's headers and first bytes are out,
 * `reader` is positioned after what was sent; `settings` are the stream's delivery rules
 * (sse/delivery.h), `events_sent`/`bytes_sent` what it got so far. Makes the hub's stream and
 * parks it in the connection's config; the hub ends `sub` when the stream ends. Returns what
 * the handler returns:
 * - OK when the socket is taken over (SSEHoldMode socket, TakenSocket::possible(r), the dup
 *   made): the request's access-log notes say SSE_END socket-held, the connection is to
 *   close, and adopt_taken_socket() hands the stream over at its close;
 * - SUSPENDED otherwise (SSEHoldMode request, or any failure to take the socket): the
 *   connection is held suspended, adopt_suspended_stream() hands it over. */
int hand_to_hub(request_rec *r, const DirConfig &d, ModuleState *state, BusReader reader,
                const DeliverySettings &settings, apr_uint64_t events_sent,
                apr_uint64_t bytes_sent, const std::vector<std::string> &channels,
                const std::string &client_id, Subscription sub);

/* suspend_connection hook: hands the connection's stream (if it has one, in request mode)
 * to the hub, when the connection is in CONN_STATE_SUSPENDED (the handler's SUSPENDED
 * return); in any other state the stream is dropped (the MPM keeps the connection). */
void adopt_suspended_stream(conn_rec *c, ModuleState *state);

/* pre_close_connection hook (APR_HOOK_REALLY_FIRST): hands the connection's socket-mode
 * stream (if it has one) to the hub and marks the connection aborted, so httpd closes its
 * descriptor without shutdown() (src/httpd/taken_socket.h). */
void adopt_taken_socket(conn_rec *c, ModuleState *state);

/* child_stopping: every held stream is told to come back and closed; the hub's threads end. */
void stop_async_hub(AsyncHub *hub);

} // namespace sse::httpd

#endif
