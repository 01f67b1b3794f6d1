/* The sse-subscribe handler: holds one EventSource stream on the worker thread that serves it
 * (the blocking mode, which works under every MPM and over HTTP/2).
 *
 * The thread waits on the bus's futex, wakes for every publish (or at the latest every second
 * to look at the socket and the child's state), and sends what the subscriber's BusReader
 * yields. It ends when the client goes away, a write fails, or the child is stopping (then
 * with a last `retry:`, as a suspended stream). */
#include "src/httpd/module.h"
#include "src/httpd/async_hub.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/subscribe.h"
#include "src/httpd/subscription.h"
#include "src/httpd/token_check.h"

#include "sse/delivery.h"
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
#include <optional>
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

/* Anything but GET: OPTIONS as httpd's own handlers answer it (the default handler,
 * mod_reflector: 200, no body, Allow from the method mask; a CORS preflight gets this answer,
 * its Access-Control-* headers come from the configuration), anything else 405. */
int answer_not_get(request_rec *r)
{
    if (r->method_number == M_OPTIONS) {
        if (int rv = ap_discard_request_body(r); rv != OK)
            return rv;
        ap_allow_methods(r, REPLACE_ALLOW, "GET", "OPTIONS", static_cast<const char *>(nullptr));
        return ap_send_http_options(r);
    }
    apr_table_setn(r->headers_out, "Allow", "GET, HEAD, OPTIONS");
    return answer_error(r, HTTP_METHOD_NOT_ALLOWED, "SSE0103", kSubscribe,
                        std::string("method ") + r->method +
                            " is not served here; subscribe with GET");
}

/* Reads and checks the request (query, token, channels, Last-Event-ID, client id); false
 * when it was answered (an error). */
bool read_subscribe(request_rec *r, const ModuleState *state, SubscribeAsk &ask)
{
    Params query;
    RequestToken token;
    if (!query_params(r, query, kSubscribe) ||
        !token_verified(r, query, TokenUse::Subscribe, token) ||
        !request_channels(r, nullptr, query, ask.channels, kSubscribe) ||
        !token_covers(r, token, ask.channels, TokenUse::Subscribe, &ask.token_expires) ||
        !presence_allowed(r, state, ask.channels))
        return false;
    if (std::string bad = select_event_types(query, ask.event_types); !bad.empty()) {
        answer_error(r, HTTP_BAD_REQUEST, "SSE0119", kSubscribe, bad);
        return false;
    }
    if (!event_types_allowed(r, ask.event_types, kSubscribe))
        return false;
    ask.resume_id = last_event_id(r, query);
    if (ask.resume_id.size() > kMaxEventIdBytes) {
        answer_error(r, HTTP_BAD_REQUEST, "SSE0104", kSubscribe,
                     "Last-Event-ID is longer than " + std::to_string(kMaxEventIdBytes) +
                         " bytes");
        return false;
    }
    /* No publish can give an id with NUL, CR or LF, or one that is not UTF-8 (the header is
     * read as Latin-1 then; ?lastEventId= is not): refused rather than replayed as unknown. */
    if (std::string bad = validate_event_id(ask.resume_id); !bad.empty()) {
        answer_error(r, HTTP_BAD_REQUEST, "SSE0104", kSubscribe, "Last-Event-ID: " + bad);
        return false;
    }
    return client_id_of(r, dir_config(r), ask.client_id);
}

/* The bus position first, then the registry (see sse/stream_open.h): a DELETE or a replace
 * that the registry does not show yet reaches this stream on the bus. With SSERedis, a
 * resume the bus cannot serve may be served from Redis: *replay then holds what goes out
 * before the bus (resume_with_redis()). */
OpenedStream open_subscribe(request_rec *r, ModuleState *state, const SubscribeAsk &ask,
                            std::unique_ptr<StreamReplay> *replay)
{
    const DirConfig &d = dir_config(r);
    StreamRequest req;
    req.channels = ask.channels;
    req.client_id = ask.client_id;
    req.resume_id = ask.resume_id;
    req.earliest = ask.earliest;
    req.join = !r->header_only;
    req.policy = static_cast<DuplicatePolicy>(d.duplicate_policy);
    req.pid = getpid();
    req.remote = r->useragent_ip ? r->useragent_ip : "";
    req.note = ask.note;
    if (state->redis && !req.earliest && !req.resume_id.empty()) {
        BusReader reader(state->bus, ChannelSet(req.channels), req.client_id);
        *replay = resume_with_redis(state, r, req, &reader, &req.positioned_found);
        req.positioned.emplace(std::move(reader));
    }
    return open_stream(state->bus, state->registry, req, state->history, now_us());
}

/* Answers a stream that is not opened; false when it is (Open). */
bool answered_refusal(request_rec *r, const ModuleState *state, const OpenedStream &opened,
                      const std::string &client_id, int *rv)
{
    *rv = OK;
    switch (opened.outcome) {
    case OpenedStream::Outcome::Open:
        return false;
    case OpenedStream::Outcome::Closed:
        /* EventSource does not reconnect after a 204: this is how a closed channel's
         * subscribers are told to stop. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "SSE0105: subscribe answered 204: a channel of it was closed (DELETE)");
        r->status = HTTP_NO_CONTENT;
        return true;
    case OpenedStream::Outcome::Duplicate:
        *rv = answer_error(r, HTTP_CONFLICT, "SSE0107", kSubscribe,
                           "client id \"" + client_id +
                               "\" is already connected (SSEDuplicateClient reject)");
        return true;
    case OpenedStream::Outcome::Full:
        apr_table_setn(r->headers_out, "Retry-After", "5");
        *rv = answer_error(r, HTTP_SERVICE_UNAVAILABLE, "SSE0108", kSubscribe,
                           "the server holds as many streams as SSEMaxSubscribers allows");
        return true;
    case OpenedStream::Outcome::TooManyChannels:
        apr_table_setn(r->headers_out, "Retry-After", "5");
        *rv = answer_error(r, HTTP_SERVICE_UNAVAILABLE, "SSE0109", kSubscribe,
                           "no room for another channel (SSEMaxChannels), all in use");
        return true;
    case OpenedStream::Outcome::TooManyUnpublished:
        apr_table_setn(r->headers_out, "Retry-After", "5");
        *rv = refuse_unpublished(r, state->registry);
        return true;
    }
    return false;
}

void set_stream_headers(request_rec *r)
{
    ap_set_content_type(r, "text/event-stream");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    /* A stream has no length to take a range of: a Range header is ignored (RFC 9110 14.2;
     * httpd's byterange filter steps aside for a response without EOS) and this says so. */
    apr_table_setn(r->headers_out, "Accept-Ranges", "none");
    /* Compression would hold events back (or cost zlib state per stream): keep it off. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    apr_table_setn(r->subprocess_env, "no-brotli", "1");
}

/* One accepted stream on its worker: the delivery rules (Delivery, read_stream) over the
 * transport (Stream: a brigade and a FLUSH per write). It sends the first bytes and the
 * replay, then hands the stream to the hub (event MPM) or holds it here until it ends. */
class HeldStream {
public:
    HeldStream(request_rec *r, ModuleState *state, BusReader reader, Subscription sub,
               const DeliverySettings &settings)
        : r_(r), state_(state), reader_(std::move(reader)), sub_(std::move(sub)),
          delivery_(settings, apr_time_now()), stream_(r)
    {
    }

    /* `replay` (may be null): what a resume took from Redis, sent before the bus. */
    int serve(const SubscribeAsk &ask, bool resume_found, std::unique_ptr<StreamReplay> replay)
    {
        std::string first;
        Delivery::opening(delivery_.settings().retry_ms, resume_found, ask.resume_id, first);
        if (!send(first))
            return finish(EndReason::WriteFailed);
        if (replay && replay->reader && !send_available(*replay->reader))
            return finish(*end_);
        replay.reset();
        const DirConfig &d = dir_config(r_);
        /* Event MPM: the replay goes out on this worker, then the hub holds the stream (its
         * suspended connection, or its socket: SSEHoldMode) and the worker is free for other
         * requests. */
        if (can_suspend(r_, d, state_)) {
            if (!send_available(reader_))
                return finish(*end_);
            return hand_to_hub(r_, d, state_, std::move(reader_), delivery_.settings(),
                               events_sent_, stream_.sent_bytes(), ask.channels,
                               ask.client_id, std::move(sub_));
        }
        return hold();
    }

private:
    /* Until the stream ends: wakes for every publish, at the latest every kMaxWaitMs. */
    int hold()
    {
        stream_.keep_last_words(&state_->last_words, delivery_.restart_retry_ms());
        for (;;) {
            const std::uint32_t seen = state_->bus.wake_word();
            if (!serve_round())
                break;
            state_->bus.wait(seen, wait_ms());
        }
        stream_.forget_last_words();
        return finish(*end_);
    }

    /* One look at what the stream has to send and at what may end it; false once it ended
     * (end_ says why). */
    bool serve_round()
    {
        /* First, so that nothing the bus holds goes out after the token's exp. */
        if (delivery_.token_expired(apr_time_now()))
            return end_with(EndReason::TokenExpired, token_expired_notice());
        if (!send_available(reader_))
            return false;
        if (child_is_stopping(state_)) {
            /* As the hub does: clients come back to the new generation, after the retry
             * they were told. */
            std::string last;
            delivery_.restart_bytes(last);
            return end_with(EndReason::ServerRestart, last);
        }
        if (stream_.peer_gone()) {
            end_ = EndReason::ClientClosed;
            return false;
        }
        if (delivery_.keepalive_due(apr_time_now())) {
            std::string comment;
            Delivery::keepalive_bytes(comment);
            if (!send(comment)) {
                end_ = EndReason::WriteFailed;
                return false;
            }
        }
        reap_gone_processes(state_);
        if (sub_.lost_slot())
            return end_with(EndReason::Replaced, replaced_notice());
        return true;
    }

    /* Sends what `reader` (the stream's, or a replay's) has now, in batches; false when the
     * stream ends (end_ says why). */
    bool send_available(BusReader &reader)
    {
        for (;;) {
            out_.clear();
            int batch = 0;
            const ReadStop stop = read_stream(reader, delivery_, [&](std::string &&b, bool ev) {
                out_ += b;
                events_sent_ += ev ? 1 : 0;
                return ++batch < kBatchEvents;
            });
            if (stop.ended)
                end_ = stop.reason;
            if (!out_.empty() && !send(out_) && !end_)
                end_ = EndReason::WriteFailed;
            if (end_)
                return false;
            if (stop.drained)
                return true;
        }
    }

    /* Until the next keep-alive or the token's exp, at most kMaxWaitMs (the socket and the
     * child's state are looked at then). */
    int wait_ms() const
    {
        const std::int64_t until = delivery_.next_wake_us(apr_time_now());
        if (until < 0 || until / 1000 + 1 >= kMaxWaitMs)
            return kMaxWaitMs;
        return static_cast<int>(until / 1000) + 1;
    }

    bool send(const std::string &bytes)
    {
        if (!stream_.send(bytes))
            return false;
        delivery_.wrote(apr_time_now());
        return true;
    }

    /* The stream's last words, whether they go out or not, and its end. */
    bool end_with(EndReason why, const std::string &notice)
    {
        end_ = why;
        stream_.send(notice);
        return false;
    }

    int finish(EndReason why)
    {
        note_stream_end(r_, events_sent_, stream_.sent_bytes(), why);
        sub_.end(end_reason_name(why));
        return OK;
    }

    request_rec *r_;
    ModuleState *state_;
    BusReader reader_;
    Subscription sub_;
    Delivery delivery_;
    Stream stream_;
    std::string out_;
    apr_uint64_t events_sent_ = 0;
    std::optional<EndReason> end_;
};

} // namespace

int subscribe_handler(request_rec *r)
{
    if (r->method_number != M_GET)
        return answer_not_get(r);
    ModuleState *state = module_state(r);
    SubscribeAsk ask;
    if (!read_subscribe(r, state, ask))
        return OK;
    return serve_subscribe(r, state, ask);
}

int serve_subscribe(request_rec *r, ModuleState *state, SubscribeAsk &ask)
{
    std::unique_ptr<StreamReplay> replay;
    OpenedStream opened = open_subscribe(r, state, ask, &replay);
    Subscription sub;
    if (opened.join) /* not for a HEAD request, nor when a channel was closed (204) */
        sub.begin(r, state, *opened.join, ask.client_id, ask.channels, ask.resume_id, ask.note);
    if (int rv; answered_refusal(r, state, opened, ask.client_id, &rv))
        return rv;
    if (ask.answer_last_event_id)
        apr_table_set(r->headers_out, "Last-Event-ID",
                      !ask.earliest && opened.resume_found ? ask.resume_id.c_str() : "earliest");
    set_stream_headers(r);
    if (r->header_only)
        return OK;
    r->connection->keepalive = AP_CONN_CLOSE;

    const DirConfig &d = dir_config(r);
    DeliverySettings settings;
    settings.keepalive_us = d.keepalive;
    /* A retry-only publish's value for the channels, else SSERetry: the client is told it
     * first, and again at a restart. */
    settings.retry_ms = opened.retry_ms >= 0 ? opened.retry_ms : d.retry_ms;
    settings.token_expires_us = ask.token_expires;
    settings.serial = sub.serial();
    settings.event_types = std::move(ask.event_types);
    settings.mercure = std::move(ask.mercure);
    HeldStream held(r, state, std::move(opened.reader), std::move(sub), settings);
    return held.serve(ask, opened.resume_found, std::move(replay));
}

} // namespace sse::httpd
