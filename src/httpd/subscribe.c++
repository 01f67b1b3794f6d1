/* The sse-subscribe handler: holds one EventSource stream on the worker thread that serves it
 * (the blocking mode, which works under every MPM and over HTTP/2).
 *
 * The thread waits on the bus's futex, wakes for every publish (or at the latest every second
 * to look at the socket and the child's state), and sends what the subscriber's BusReader
 * yields. It ends when the client goes away, a write fails, or the child is stopping (then
 * with a last `retry:`, as a suspended stream). */
#include "src/httpd/module.h"
#include "src/httpd/async_hub.h"
#include "src/httpd/subscription.h"
#include "src/httpd/token_check.h"

#include "sse/stream_open.h"

#include "ap_mpm.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_core.h"

#include "apr_portable.h"
#include "apr_strings.h"

#include <algorithm>
#include <poll.h>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

/* Longest sleep between looks at the client's socket and the child's state. */
constexpr int kMaxWaitMs = 1000;

/* Events written per write/flush at most, so a large replay goes out in steady pieces. */
constexpr int kBatchEvents = 256;

class Stream {
public:
    explicit Stream(request_rec *r)
        : r_(r), bb_(apr_brigade_create(r->pool, r->connection->bucket_alloc)) {}
    /* However the stream ends (an exception included), its last words go with it: the fd may
     * belong to the next connection by the time a stop comes. */
    ~Stream() { forget_last_words(); }
    Stream(const Stream &) = delete;
    Stream &operator=(const Stream &) = delete;

    /* Writes and flushes `bytes`; false when the client is gone. Last words set with
     * keep_last_words() are disarmed while a write is under way (a retry written in the
     * middle of an event would corrupt it) and armed again once it went out whole. */
    bool send(const std::string &bytes)
    {
        conn_rec *c = r_->connection;
        if (c->aborted)
            return false;
        if (last_words_)
            last_words_->armed = 0;
        apr_status_t rv = apr_brigade_write(bb_, nullptr, nullptr, bytes.data(), bytes.size());
        if (rv == APR_SUCCESS) {
            APR_BRIGADE_INSERT_TAIL(bb_, apr_bucket_flush_create(c->bucket_alloc));
            rv = ap_pass_brigade(r_->output_filters, bb_);
        }
        apr_brigade_cleanup(bb_);
        sent_bytes_ += bytes.size();
        const bool ok = rv == APR_SUCCESS && !c->aborted;
        if (last_words_ && ok && !c->data_in_output_filters) {
            std::atomic_signal_fence(std::memory_order_release);
            last_words_->armed = 1;
        }
        return ok;
    }

    /* prefork: keeps `lw` ready with this stream's last retry for child_stopping (see
     * ModuleState::LastWords), when the bytes can go to the socket as they are: a response
     * that is not chunked, on a connection with no filter but the core's (no TLS), not a
     * subrequest (its page may be filtered) — the conditions of the hub's direct writes. */
    void keep_last_words(ModuleState::LastWords *lw, std::int64_t retry_ms)
    {
        int threaded = 0;
        conn_rec *c = r_->connection;
        if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) != APR_SUCCESS ||
            threaded != AP_MPMQ_NOT_SUPPORTED || r_->chunked || r_->main || c->master ||
            !c->output_filters || c->output_filters->next || c->data_in_output_filters)
            return;
        apr_os_sock_t fd;
        if (apr_os_sock_get(&fd, ap_get_conn_socket(c)) != APR_SUCCESS)
            return;
        lw->fd = fd;
        lw->bytes.clear();
        encode_retry(retry_ms, lw->bytes);
        last_words_ = lw;
        /* fd and bytes are complete before child_stopping (a signal handler) can see armed. */
        std::atomic_signal_fence(std::memory_order_release);
        lw->armed = 1;
    }

    /* The stream ends: no last words any more. */
    void forget_last_words()
    {
        if (last_words_)
            last_words_->armed = 0;
        last_words_ = nullptr;
    }

    /* True when the peer closed or reset the connection. Looks at the socket without reading
     * from it (the input filters belong to the request; a pipelined request is not a close). */
    bool peer_gone() const
    {
        /* An HTTP/2 stream's connection has no socket of its own (mod_http2 gives it a
         * placeholder); it is marked aborted when the client resets the stream. */
        if (r_->connection->master)
            return r_->connection->aborted;
        apr_socket_t *sock = ap_get_conn_socket(r_->connection);
        apr_os_sock_t fd;
        if (!sock || apr_os_sock_get(&fd, sock) != APR_SUCCESS)
            return false;
        struct pollfd p = {fd, POLLRDHUP, 0};
        return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
    }

    apr_uint64_t sent_bytes() const { return sent_bytes_; }

private:
    request_rec *r_;
    apr_bucket_brigade *bb_;
    apr_uint64_t sent_bytes_ = 0;
    ModuleState::LastWords *last_words_ = nullptr;
};

bool child_is_stopping(const ModuleState *state)
{
    if (state->child_stopping.load())
        return true;
    int mpm_state = AP_MPMQ_RUNNING;
    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) != APR_SUCCESS ||
        mpm_state != AP_MPMQ_STOPPING)
        return false;
    /* prefork has no child_stopping call for a graceful restart; its signal handler sets the
     * MPM state instead. */
    int threaded = 0;
    if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) != APR_SUCCESS ||
        threaded == AP_MPMQ_NOT_SUPPORTED)
        return true;
    /* event: the state turns STOPPING just before the child's main thread closes every
     * worker's socket (close_worker_sockets, which reads the workers' sockets without a lock:
     * one whose connection a worker finished meanwhile has been freed under it, and the child
     * dies of SIGSEGV; seen under ASan when a stop woke every held stream at once, through
     * the bus the children share). child_stopping comes right after it; the stream ends only
     * then (bounded, in case it never comes). */
    for (int i = 0; i < 200 && !state->child_stopping.load(); ++i)
        apr_sleep(apr_time_from_msec(10));
    return true;
}

std::string last_event_id(request_rec *r, const Params &query)
{
    return resume_id(apr_table_get(r->headers_in, "Last-Event-ID"), query);
}

/* The client id from SSEClientId ("" when none is configured or it evaluates empty); on a
 * bad id answers itself and returns false. */
bool client_id_of(request_rec *r, const DirConfig &d, std::string &out)
{
    out.clear();
    if (!d.client_id_expr)
        return true;
    const char *err = nullptr;
    const char *v = ap_expr_str_exec(r, d.client_id_expr, &err);
    if (err) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "SSE0106: SSEClientId expression failed: %s",
                      err);
        answer_error(r, HTTP_INTERNAL_SERVER_ERROR, "SSE0106", kSubscribe,
                     "the client id expression of this location failed");
        return false;
    }
    out = v ? v : "";
    if (out.empty())
        return true;
    std::string bad = validate_client_id(out);
    if (bad.empty())
        return true;
    answer_error(r, HTTP_BAD_REQUEST, "SSE0106", kSubscribe, bad);
    return false;
}

/* The presence channel says who is connected, from where, to what: a subscribe naming it,
 * however (path, list, ?channel=, SSEChannel), is refused unless its location allows it
 * with SSEPresenceSubscribe on; then answers 403 itself and returns false. */
bool presence_allowed(request_rec *r, const ModuleState *state,
                      const std::vector<std::string> &channels)
{
    if (state->presence_channel.empty() || dir_config(r).presence_subscribe ||
        std::find(channels.begin(), channels.end(), state->presence_channel) == channels.end())
        return true;
    answer_error(r, HTTP_FORBIDDEN, "SSE0155", kSubscribe,
                 "channel \"" + state->presence_channel +
                     "\" is the presence channel (SSEPresenceChannel): it is read only where "
                     "the location allows it with SSEPresenceSubscribe on");
    return false;
}

/* What a control record on the bus means for this stream: nullptr to carry on, or why it
 * ends (after sending the record's notice). */
const char *control_ends_stream(const BusEvent &ev, std::uint64_t serial)
{
    if (ev.kind == RecordKind::CloseChannels)
        return "channel-closed";
    return names_stream(ev, serial) ? "replaced" : nullptr;
}

/* SSE0150: the channel table's unpublished share is taken (one client's streams naming
 * made-up channels, or subscribers ahead of their publishers). A client can repeat it at
 * will: one line per process per kRefusalLogPeriodUs, the others at debug, and SSE0151 says
 * how many were not logged. */
constexpr std::int64_t kRefusalLogPeriodUs = 10 * 1000000;

int refuse_unpublished(request_rec *r, const Registry &registry)
{
    static LogThrottle throttle(kRefusalLogPeriodUs);
    std::uint64_t skipped = 0;
    const bool log = throttle.allow(monotonic_us(), &skipped);
    if (log && skipped > 0)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "SSE0151: %" APR_UINT64_T_FMT " more subscribes were refused for the "
                      "same reason (SSE0150) in this process since its last SSE0150 line",
                      apr_uint64_t(skipped));
    const Endpoint who{kSubscribe.name, log ? kSubscribe.log_level : APLOG_DEBUG};
    return answer_error(r, HTTP_SERVICE_UNAVAILABLE, "SSE0150", who,
                        "no room for another channel that no publisher has written to: "
                        "subscribers hold " + std::to_string(registry.max_unpublished()) +
                            " such channels, as many as SSEMaxUnpublishedChannels allows "
                            "(channels that were published to are not limited by it)");
}

} // namespace

int subscribe_handler(request_rec *r)
{
    ModuleState *state = module_state(r);
    if (r->method_number == M_OPTIONS) {
        /* As httpd's own handlers answer it (the default handler, mod_reflector): 200, no
         * body, Allow from the method mask (HEAD goes with GET; TRACE unless TraceEnable Off).
         * A CORS preflight gets this answer; its Access-Control-* headers come from the
         * configuration (mod_headers). */
        if (int rv = ap_discard_request_body(r); rv != OK)
            return rv;
        ap_allow_methods(r, REPLACE_ALLOW, "GET", "OPTIONS", static_cast<const char *>(nullptr));
        return ap_send_http_options(r);
    }
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD, OPTIONS");
        return answer_error(r, HTTP_METHOD_NOT_ALLOWED, "SSE0103", kSubscribe,
                            std::string("method ") + r->method +
                                " is not served here; subscribe with GET");
    }
    Params query;
    RequestToken token;
    std::vector<std::string> channels;
    if (!query_params(r, query, kSubscribe) ||
        !token_verified(r, query, TokenUse::Subscribe, token) ||
        !request_channels(r, nullptr, query, channels, kSubscribe))
        return OK;
    apr_time_t token_expires = 0; /* a stream whose token has exp ends then */
    if (!token_covers(r, token, channels, TokenUse::Subscribe, &token_expires))
        return OK;
    if (!presence_allowed(r, state, channels))
        return OK;
    std::string resume_id = last_event_id(r, query);
    if (resume_id.size() > kMaxEventIdBytes) {
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0104", kSubscribe,
                            "Last-Event-ID is longer than " + std::to_string(kMaxEventIdBytes) +
                                " bytes");
    }
    /* No publish can give an id with NUL, CR or LF, or one that is not UTF-8 (the header is
     * read as Latin-1 then; ?lastEventId= is not): refused rather than replayed as unknown. */
    if (std::string bad = validate_event_id(resume_id); !bad.empty())
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0104", kSubscribe, "Last-Event-ID: " + bad);

    const DirConfig &d = dir_config(r);
    std::string client_id;
    if (!client_id_of(r, d, client_id))
        return OK;
    /* The bus position first, then the registry (see sse/stream_open.h): a DELETE or a
     * replace that the registry does not show yet reaches this stream on the bus. */
    StreamRequest req;
    req.channels = channels;
    req.client_id = client_id;
    req.resume_id = resume_id;
    req.join = !r->header_only;
    req.policy = static_cast<DuplicatePolicy>(d.duplicate_policy);
    req.pid = getpid();
    req.remote = r->useragent_ip ? r->useragent_ip : "";
    OpenedStream opened = open_stream(state->bus, state->registry, req, state->history, now_us());
    Subscription sub;
    if (opened.join) /* not for a HEAD request, nor when a channel was closed (204) */
        sub.begin(r, state, *opened.join, client_id, channels, resume_id);
    switch (opened.outcome) {
    case OpenedStream::Outcome::Open:
        break;
    case OpenedStream::Outcome::Closed:
        /* EventSource does not reconnect after a 204: this is how a closed channel's
         * subscribers are told to stop. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "SSE0105: subscribe answered 204: a channel of it was closed (DELETE)");
        r->status = HTTP_NO_CONTENT;
        return OK;
    case OpenedStream::Outcome::Duplicate:
        return answer_error(r, HTTP_CONFLICT, "SSE0107", kSubscribe,
                            "client id \"" + client_id +
                                "\" is already connected (SSEDuplicateClient reject)");
    case OpenedStream::Outcome::Full:
        apr_table_setn(r->headers_out, "Retry-After", "5");
        return answer_error(r, HTTP_SERVICE_UNAVAILABLE, "SSE0108", kSubscribe,
                            "the server holds as many streams as SSEMaxSubscribers allows");
    case OpenedStream::Outcome::TooManyChannels:
        apr_table_setn(r->headers_out, "Retry-After", "5");
        return answer_error(r, HTTP_SERVICE_UNAVAILABLE, "SSE0109", kSubscribe,
                            "no room for another channel (SSEMaxChannels), all in use");
    case OpenedStream::Outcome::TooManyUnpublished:
        apr_table_setn(r->headers_out, "Retry-After", "5");
        return refuse_unpublished(r, state->registry);
    }
    const std::int64_t retry_ms = opened.retry_ms >= 0 ? opened.retry_ms : d.retry_ms;

    ap_set_content_type(r, "text/event-stream");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    /* A stream has no length to take a range of: a Range header is ignored (RFC 9110 14.2;
     * httpd's byterange filter steps aside for a response without EOS) and this says so. */
    apr_table_setn(r->headers_out, "Accept-Ranges", "none");
    /* Compression would hold events back (or cost zlib state per stream): keep it off. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    apr_table_setn(r->subprocess_env, "no-brotli", "1");
    if (r->header_only)
        return OK;
    r->connection->keepalive = AP_CONN_CLOSE;

    BusReader reader = std::move(opened.reader);
    std::string out;
    encode_comment("ok", out);
    if (retry_ms >= 0)
        encode_retry(retry_ms, out);
    if (!opened.resume_found)
        encode_missed_notice("unknown-last-event-id", resume_id, out);

    Stream stream(r);
    const char *end_reason = nullptr;
    apr_uint64_t events_sent = 0;
    auto finish = [&]() {
        apr_table_setn(r->subprocess_env, "SSE_EVENTS",
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, events_sent));
        apr_table_setn(r->subprocess_env, "SSE_BYTES",
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, stream.sent_bytes()));
        apr_table_setn(r->subprocess_env, "SSE_END", end_reason);
        sub.end(end_reason);
        return OK;
    };
    if (!stream.send(out)) {
        end_reason = "write-failed";
        return finish();
    }

    /* Sends what the reader has now, in batches; false when the stream ends (end_reason
     * says why). */
    BusEvent ev;
    auto send_available = [&]() {
        for (;;) {
            out.clear();
            int batch = 0;
            for (; batch < kBatchEvents && !end_reason; ++batch) {
                BusReader::Next n = reader.next(&ev);
                if (n == BusReader::Next::None)
                    break;
                if (n == BusReader::Next::Overrun) {
                    encode_missed_notice("overrun", {}, out);
                } else if (ev.kind == RecordKind::Event) {
                    out += ev.wire;
                    ++events_sent;
                } else if ((end_reason = control_ends_stream(ev, sub.serial()))) {
                    out += ev.wire;
                }
            }
            if (!out.empty() && !stream.send(out) && !end_reason)
                end_reason = "write-failed";
            if (end_reason)
                return false;
            if (batch < kBatchEvents)
                return true;
        }
    };

    /* Event MPM: the replay goes out on this worker, then the hub holds the stream and the
     * worker is free for other requests. */
    if (can_suspend(r, d, state)) {
        if (!send_available())
            return finish();
        StreamSettings settings{d.keepalive, retry_ms, d.max_pending, token_expires};
        prepare_suspended_stream(r, std::move(reader), settings, events_sent,
                                 stream.sent_bytes(), channels, client_id, std::move(sub));
        return SUSPENDED;
    }

    stream.keep_last_words(&state->last_words, d.retry_ms >= 0 ? d.retry_ms : kRestartRetryMs);
    apr_time_t last_write = apr_time_now();
    for (;;) {
        std::uint32_t seen = state->bus.wake_word();
        /* First, so that nothing the bus holds goes out after the token's exp. */
        if (token_expires && apr_time_now() >= token_expires) {
            end_reason = "token-expired";
            stream.send(token_expired_notice());
            break;
        }
        apr_uint64_t before = stream.sent_bytes();
        if (!send_available())
            break;
        if (stream.sent_bytes() != before)
            last_write = apr_time_now();
        if (child_is_stopping(state)) {
            end_reason = "server-restart";
            /* As the hub does: clients come back to the new generation after SSERetry. */
            out.clear();
            encode_retry(d.retry_ms >= 0 ? d.retry_ms : kRestartRetryMs, out);
            stream.send(out);
            break;
        }
        if (stream.peer_gone()) {
            end_reason = "client-closed";
            break;
        }
        apr_time_t idle = apr_time_now() - last_write;
        if (idle >= d.keepalive) {
            out.clear();
            encode_comment("keepalive", out);
            if (!stream.send(out)) {
                end_reason = "write-failed";
                break;
            }
            last_write = apr_time_now();
            idle = 0;
        }
        reap_gone_processes(state);
        if (sub.lost_slot()) {
            end_reason = "replaced";
            stream.send(replaced_notice());
            break;
        }
        apr_interval_time_t until = d.keepalive - idle;
        if (token_expires) {
            const apr_time_t now = apr_time_now();
            if (token_expires - now < until)
                until = token_expires > now ? token_expires - now : 0;
        }
        int wait_ms = static_cast<int>(apr_time_as_msec(until)) + 1;
        state->bus.wait(seen, wait_ms < kMaxWaitMs ? wait_ms : kMaxWaitMs);
    }
    stream.forget_last_words();
    return finish();
}

} // namespace sse::httpd
