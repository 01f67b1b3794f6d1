/* The per-child hub of suspended streams (see the header for the design). */
#include "src/httpd/async_hub.h"

#include "ap_mpm.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_request.h"
#include "mpm_common.h"

#include "apr_portable.h"
#include "apr_strings.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

using Bytes = std::shared_ptr<const std::string>;

/* Bytes handed to the output filters at once; the core filter holds what the socket does
 * not take, and the hub waits for EPOLLOUT before handing more. */
constexpr std::size_t kWriteChunk = 16 * 1024;
constexpr int kTickMs = 1000;
/* How long an ended connection's pool is kept after its worker was seen leaving the MPM's
 * suspend code (see bury()). */
constexpr int kReleaseMs = 100;

enum class EndReason { PeerGone, WriteFailed, FellBehind, Stopping, ChannelClosed, Replaced };

const char *reason_name(EndReason r)
{
    switch (r) {
    case EndReason::PeerGone: return "client-closed";
    case EndReason::WriteFailed: return "write-failed";
    case EndReason::FellBehind: return "fell-behind";
    case EndReason::Stopping: return "server-restart";
    case EndReason::ChannelClosed: return "channel-closed";
    case EndReason::Replaced: return "replaced";
    }
    return "unknown";
}

} // namespace

/* One suspended stream. Created on the worker by the handler; owned by the hub's I/O thread
 * once adopted. */
struct SuspendedStream {
    request_rec *r;
    conn_rec *c;
    int fd = -1;
    std::vector<std::string> channels;
    std::string client_id;
    Subscription sub;
    BusReader reader;
    StreamSettings settings;
    apr_bucket_brigade *bb = nullptr;
    ap_filter_t *core = nullptr;
    std::uint64_t next_seq = 0; /* the hub delivers events from this seq on */
    std::uint64_t last_seq = 0; /* the last one queued (an event on two channels comes once) */
    std::deque<Bytes> queue;
    std::size_t queued = 0;
    std::size_t front_offset = 0; /* direct mode: bytes of queue.front() already written */
    bool direct = false;          /* plain socket writes: see prepare_suspended_stream() */
    bool want_out = false;
    bool dead = false;
    bool dirty = false;           /* queued to in this fan-out round, not yet pushed */
    EndReason ending = EndReason::PeerGone; /* with `closing`: why, once its notice is out */
    bool closing = false;
    apr_time_t last_write = 0;
    apr_uint64_t events_sent = 0, bytes_sent = 0;

    SuspendedStream(request_rec *req, BusReader rd) : r(req), c(req->connection), reader(std::move(rd)) {}
};

class AsyncHub {
public:
    AsyncHub(server_rec *s, ModuleState *state)
        : s_(s), state_(state), hub_reader_(state->bus, ChannelSet::all())
    {
        hub_reader_.start_live();
        epfd_ = epoll_create1(EPOLL_CLOEXEC);
        wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr; /* nullptr: the wake-up eventfd */
        epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev);
        keepalive_comment_ = std::make_shared<const std::string>(": keepalive\n\n");
    }

    ~AsyncHub()
    {
        close(wake_fd_);
        close(epfd_);
    }

    void start()
    {
        io_thread_ = std::thread([this] { guarded("I/O", [this] { io_loop(); }); });
        watcher_ = std::thread([this] { guarded("bus watcher", [this] { watch_bus(); }); });
    }

    /* From child_stopping: streams end, late arrivals are closed as they come. */
    void stop()
    {
        stopping_.store(true);
        poke();
    }

    /* From the pchild cleanup, after the MPM joined its workers. */
    void exit_and_join()
    {
        stopping_.store(true);
        exiting_.store(true);
        poke();
        state_->bus.wake_all();
        if (io_thread_.joinable())
            io_thread_.join();
        if (watcher_.joinable())
            watcher_.join();
    }

    void adopt(SuspendedStream *s)
    {
        {
            std::lock_guard<std::mutex> lock(inbox_mu_);
            inbox_.push_back(s);
        }
        poke();
    }

private:
    template <typename Fn> void guarded(const char *what, Fn fn)
    {
        try {
            fn();
        } catch (const std::exception &e) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s_, "SSE0500: async hub %s thread failed: %s",
                         what, e.what());
        }
    }

    void poke()
    {
        std::uint64_t one = 1;
        ssize_t n = write(wake_fd_, &one, sizeof one);
        (void)n;
    }

    void watch_bus()
    {
        std::uint32_t last = state_->bus.wake_word();
        while (!exiting_.load()) {
            std::uint32_t seen = state_->bus.wake_word();
            if (seen != last) {
                last = seen;
                poke();
            }
            reap_gone_processes(state_); /* never waits for the registry lock */
            state_->bus.wait(seen, kTickMs);
        }
    }

    void io_loop()
    {
        std::vector<struct epoll_event> events(512);
        apr_time_t last_tick = apr_time_now();
        bool closed_all = false;
        while (!exiting_.load()) {
            int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()),
                               releasing_.empty() ? kTickMs : kReleaseMs);
            for (int i = 0; i < n; ++i) {
                auto *s = static_cast<SuspendedStream *>(events[i].data.ptr);
                if (!s) {
                    std::uint64_t drained;
                    ssize_t r = read(wake_fd_, &drained, sizeof drained);
                    (void)r;
                    take_inbox();
                    fan_out();
                    continue;
                }
                if (s->dead)
                    continue;
                if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    end(s, EndReason::PeerGone);
                else if (events[i].events & EPOLLOUT)
                    push(s);
            }
            if (stopping_.load() && !closed_all) {
                closed_all = true;
                std::vector<SuspendedStream *> all(streams_.begin(), streams_.end());
                for (auto *s : all)
                    end(s, EndReason::Stopping);
            }
            apr_time_t now = apr_time_now();
            if (now - last_tick >= apr_time_from_msec(kTickMs)) {
                last_tick = now;
                keepalives(now);
            }
            bury();
        }
        take_inbox();
        std::vector<SuspendedStream *> all(streams_.begin(), streams_.end());
        for (auto *s : all)
            end(s, EndReason::Stopping);
        bury(true);
    }

    void take_inbox()
    {
        std::vector<SuspendedStream *> fresh;
        {
            std::lock_guard<std::mutex> lock(inbox_mu_);
            fresh.swap(inbox_);
        }
        for (SuspendedStream *s : fresh) {
            streams_.insert(s);
            if (stopping_.load()) {
                end(s, EndReason::Stopping);
                continue;
            }
            struct epoll_event ev = {};
            ev.events = EPOLLRDHUP;
            ev.data.ptr = s;
            if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
                end(s, EndReason::WriteFailed);
                continue;
            }
            /* Catch up from where the handler left off to the bus head; the hub delivers
             * everything after that. */
            BusEvent e;
            for (;;) {
                BusReader::Next nx = s->reader.next(&e);
                if (nx == BusReader::Next::None)
                    break;
                if (nx == BusReader::Next::Overrun)
                    enqueue(s, missed_notice());
                else if (e.kind == RecordKind::Event)
                    enqueue(s, std::make_shared<const std::string>(std::move(e.wire)));
                else if (e.kind == RecordKind::CloseChannels)
                    close_after_notice(s, EndReason::ChannelClosed,
                                       std::make_shared<const std::string>(std::move(e.wire)));
                else if (names_stream(e, s->sub.serial()))
                    close_after_notice(s, EndReason::Replaced,
                                       std::make_shared<const std::string>(std::move(e.wire)));
            }
            s->next_seq = s->reader.position();
            for (const auto &ch : s->channels)
                channels_[ch].insert(s);
            by_serial_[s->sub.serial()] = s;
            push(s);
            if (s->closing)
                end(s, s->ending);
        }
    }

    void fan_out()
    {
        BusEvent e;
        std::vector<SuspendedStream *> dirty;
        for (int k = 0; k < 4096; ++k) {
            BusReader::Next nx = hub_reader_.next(&e);
            if (nx == BusReader::Next::None)
                break;
            if (nx == BusReader::Next::Overrun) {
                Bytes notice = missed_notice();
                for (auto *s : streams_) {
                    enqueue(s, notice);
                    mark_dirty(s, dirty);
                }
                continue;
            }
            if (e.kind == RecordKind::EndStream) {
                Bytes notice = std::make_shared<const std::string>(std::move(e.wire));
                for (const auto &serial : e.audience.only) {
                    auto it = by_serial_.find(std::strtoull(serial.c_str(), nullptr, 10));
                    if (it != by_serial_.end() && e.seq >= it->second->next_seq) {
                        close_after_notice(it->second, EndReason::Replaced, notice);
                        mark_dirty(it->second, dirty);
                    }
                }
                continue;
            }
            Bytes wire = std::make_shared<const std::string>(std::move(e.wire));
            const bool everyone = e.audience.everyone();
            const AudienceMatcher audience(e.audience);
            for (const auto &ch : e.channels) {
                auto it = channels_.find(ch);
                if (it == channels_.end())
                    continue;
                for (SuspendedStream *s : it->second) {
                    if (e.seq < s->next_seq || s->last_seq == e.seq)
                        continue;
                    s->last_seq = e.seq;
                    if (e.kind == RecordKind::CloseChannels)
                        close_after_notice(s, EndReason::ChannelClosed, wire);
                    else if (everyone || audience.admits(s->client_id))
                        enqueue(s, wire);
                    else
                        continue;
                    mark_dirty(s, dirty);
                }
            }
            if (k == 4095)
                poke(); /* more to read: come back after serving the sockets */
        }
        for (SuspendedStream *s : dirty) {
            s->dirty = false;
            if (!s->dead)
                push(s);
            if (!s->dead && s->closing)
                end(s, s->ending);
        }
    }

    /* The stream gets `notice` and nothing after it; it ends once that is handed over. */
    void close_after_notice(SuspendedStream *s, EndReason why, const Bytes &notice)
    {
        if (s->closing)
            return;
        enqueue(s, notice);
        s->closing = true;
        s->ending = why;
    }

    /* Each stream is pushed once per round, however many events it got in it. */
    static void mark_dirty(SuspendedStream *s, std::vector<SuspendedStream *> &dirty)
    {
        if (!s->dirty) {
            s->dirty = true;
            dirty.push_back(s);
        }
    }

    void enqueue(SuspendedStream *s, const Bytes &bytes)
    {
        if (s->dead || s->closing)
            return;
        s->queue.push_back(bytes);
        s->queued += bytes->size();
    }

    void keepalives(apr_time_t now)
    {
        std::vector<SuspendedStream *> due;
        for (auto *s : streams_)
            if (now - s->last_write >= s->settings.keepalive)
                due.push_back(s);
        for (auto *s : due) {
            enqueue(s, keepalive_comment_);
            push(s);
        }
    }

    /* Writes what the socket takes; never blocks. */
    void push(SuspendedStream *s)
    {
        if (s->dead)
            return;
        if (s->queued > s->settings.max_pending) {
            end(s, EndReason::FellBehind);
            return;
        }
        if (s->direct) {
            push_direct(s);
            return;
        }
        conn_rec *c = s->c;
        if (c->data_in_output_filters && !write_buffered(s))
            return;
        while (!c->data_in_output_filters && !s->queue.empty()) {
            std::vector<Bytes> inflight;
            std::size_t chunk = 0;
            while (!s->queue.empty() && chunk < kWriteChunk) {
                Bytes b = s->queue.front();
                s->queue.pop_front();
                s->queued -= b->size();
                APR_BRIGADE_INSERT_TAIL(s->bb, apr_bucket_transient_create(
                                                    b->data(), b->size(), c->bucket_alloc));
                chunk += b->size();
                if (b != keepalive_comment_)
                    ++s->events_sent;
                inflight.push_back(std::move(b));
            }
            /* No FLUSH bucket: the core filter then writes without waiting. */
            apr_status_t rv = ap_pass_brigade(s->r->output_filters, s->bb);
            apr_brigade_cleanup(s->bb);
            if (rv != APR_SUCCESS || c->aborted) {
                end(s, EndReason::WriteFailed);
                return;
            }
            s->bytes_sent += chunk;
            s->last_write = apr_time_now();
            if (!write_buffered(s))
                return;
        }
        want_out(s, c->data_in_output_filters != 0);
    }

    /* Plain HTTP without chunking: the body is the bytes themselves and the only output
     * filter left is the core's, with nothing buffered; one writev() per wake-up. */
    void push_direct(SuspendedStream *s)
    {
        while (!s->queue.empty()) {
            struct iovec iov[64];
            int n = 0;
            std::size_t total = 0;
            for (auto it = s->queue.begin(); it != s->queue.end() && n < 64 && total < 256 * 1024;
                 ++it, ++n) {
                std::size_t skip = n == 0 ? s->front_offset : 0;
                iov[n].iov_base = const_cast<char *>((*it)->data() + skip);
                iov[n].iov_len = (*it)->size() - skip;
                total += iov[n].iov_len;
            }
            ssize_t w = writev(s->fd, iov, n);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    want_out(s, true);
                    return;
                }
                end(s, EndReason::WriteFailed);
                return;
            }
            std::size_t left = static_cast<std::size_t>(w);
            s->bytes_sent += left;
            s->last_write = apr_time_now();
            while (left > 0) {
                std::size_t rest = s->queue.front()->size() - s->front_offset;
                if (left < rest) {
                    s->front_offset += left;
                    break;
                }
                left -= rest;
                if (s->queue.front() != keepalive_comment_)
                    ++s->events_sent;
                s->queued -= s->queue.front()->size();
                s->queue.pop_front();
                s->front_offset = 0;
            }
            if (static_cast<std::size_t>(w) < total) {
                want_out(s, true);
                return;
            }
        }
        want_out(s, false);
    }

    /* Calls the core output filter with no brigade: it writes what it holds, non-blocking. */
    bool write_buffered(SuspendedStream *s)
    {
        apr_status_t rv = s->core->frec->filter_func.out_func(s->core, nullptr);
        if (rv != APR_SUCCESS || s->c->aborted) {
            end(s, EndReason::WriteFailed);
            return false;
        }
        if (s->c->data_in_output_filters)
            want_out(s, true);
        return true;
    }

    void want_out(SuspendedStream *s, bool out)
    {
        if (s->want_out == out)
            return;
        s->want_out = out;
        struct epoll_event ev = {};
        ev.events = EPOLLRDHUP | (out ? static_cast<std::uint32_t>(EPOLLOUT) : 0u);
        ev.data.ptr = s;
        epoll_ctl(epfd_, EPOLL_CTL_MOD, s->fd, &ev);
    }

    /* Ends a stream and releases its connection (see the header for why this sequence). */
    void end(SuspendedStream *s, EndReason why)
    {
        if (s->dead)
            return;
        s->dead = true;
        streams_.erase(s);
        by_serial_.erase(s->sub.serial());
        for (const auto &ch : s->channels) {
            auto it = channels_.find(ch);
            if (it != channels_.end()) {
                it->second.erase(s);
                if (it->second.empty())
                    channels_.erase(it);
            }
        }
        epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd, nullptr);

        request_rec *r = s->r;
        conn_rec *c = s->c;
        apr_socket_t *sock = ap_get_conn_socket(c);
        /* From here on nothing may wait for the socket. */
        apr_socket_timeout_set(sock, 0);
        if (why == EndReason::Stopping && s->direct) {
            /* What is queued is dropped (the client resumes with Last-Event-ID). */
            std::string last;
            encode_retry(s->settings.retry_ms >= 0 ? s->settings.retry_ms : kRestartRetryMs, last);
            if (s->front_offset == 0 && send(s->fd, last.data(), last.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
                s->bytes_sent += last.size();
            c->aborted = 1;
        } else if (why == EndReason::Stopping && !c->aborted) {
            std::string last;
            encode_retry(s->settings.retry_ms >= 0 ? s->settings.retry_ms : kRestartRetryMs, last);
            APR_BRIGADE_INSERT_TAIL(s->bb, apr_bucket_heap_create(last.data(), last.size(),
                                                                  nullptr, c->bucket_alloc));
            APR_BRIGADE_INSERT_TAIL(s->bb, apr_bucket_eos_create(c->bucket_alloc));
            if (ap_pass_brigade(r->output_filters, s->bb) == APR_SUCCESS)
                s->core->frec->filter_func.out_func(s->core, nullptr);
            apr_brigade_cleanup(s->bb);
        } else {
            c->aborted = 1; /* gone, failed, or too far behind: it reconnects and replays */
        }
        apr_table_setn(r->subprocess_env, "SSE_EVENTS",
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, s->events_sent));
        apr_table_setn(r->subprocess_env, "SSE_BYTES",
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, s->bytes_sent));
        apr_table_setn(r->subprocess_env, "SSE_END", reason_name(why));
        s->sub.end(reason_name(why));
        if (s->direct)
            r->bytes_sent = static_cast<apr_off_t>(s->bytes_sent);
        c->keepalive = AP_CONN_CLOSE;
        ap_process_request_after_handler(r); /* logs the request and frees it */
        ap_prep_lingering_close(c);          /* pre-close hooks */
        apr_socket_shutdown(sock, APR_SHUTDOWN_READWRITE);
        apr_socket_close(sock);
        c->cs->state = CONN_STATE_SUSPENDED;
        releasing_.push_back({c, 0});
        graveyard_.push_back(s);
    }

    /* Deletes ended streams and destroys their connections' pools, each once the worker that
     * suspended it is done with it. The event MPM still writes to its connection state, which
     * lives in that pool, after the suspend_connection hooks return (c->sbh = NULL, then
     * cs->suspended = 1), and a client that leaves at once can be ended here before that: the
     * pool goes kReleaseMs after c->sbh was seen cleared. `all`: the workers are joined. */
    void bury(bool all = false)
    {
        for (auto *s : graveyard_)
            delete s;
        graveyard_.clear();
        apr_time_t now = apr_time_now();
        std::size_t kept = 0;
        for (Release &p : releasing_) {
            if (!all) {
                if (!p.worker_done && !__atomic_load_n(&p.c->sbh, __ATOMIC_ACQUIRE))
                    p.worker_done = now;
                if (!p.worker_done || now - p.worker_done < apr_time_from_msec(kReleaseMs)) {
                    releasing_[kept++] = p;
                    continue;
                }
            }
            apr_pool_destroy(p.c->pool);
        }
        releasing_.resize(kept);
    }

    static Bytes missed_notice()
    {
        auto out = std::make_shared<std::string>();
        encode_missed_notice("overrun", {}, *out);
        return out;
    }

    server_rec *s_;
    ModuleState *state_;
    BusReader hub_reader_;
    int epfd_ = -1, wake_fd_ = -1;
    std::thread io_thread_, watcher_;
    std::atomic<bool> stopping_{false}, exiting_{false};
    std::mutex inbox_mu_;
    std::vector<SuspendedStream *> inbox_;
    std::unordered_set<SuspendedStream *> streams_;
    std::unordered_map<std::uint64_t, SuspendedStream *> by_serial_;
    std::unordered_map<std::string, std::unordered_set<SuspendedStream *>> channels_;
    std::vector<SuspendedStream *> graveyard_;
    struct Release {
        conn_rec *c;
        apr_time_t worker_done; /* when c->sbh was first seen cleared; 0: not yet */
    };
    std::vector<Release> releasing_;
    Bytes keepalive_comment_;
};

namespace {

apr_status_t join_hub(void *data)
{
    auto *hub = static_cast<AsyncHub *>(data);
    hub->exit_and_join();
    delete hub;
    return APR_SUCCESS;
}

} // namespace

AsyncHub *start_async_hub(apr_pool_t *pchild, server_rec *s, ModuleState *state)
{
    int async = 0;
    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS || !async)
        return nullptr;
    auto *hub = new AsyncHub(s, state);
    hub->start();
    apr_pool_cleanup_register(pchild, hub, join_hub, apr_pool_cleanup_null);
    return hub;
}

bool can_suspend(request_rec *r, const DirConfig &d, const ModuleState *state)
{
    conn_rec *c = r->connection;
    return d.async && state->hub && !state->child_stopping.load() && c->cs && !c->master &&
           !c->clogging_input_filters && !r->main;
}

void prepare_suspended_stream(request_rec *r, BusReader reader, const StreamSettings &settings,
                              apr_uint64_t events_sent, apr_uint64_t bytes_sent,
                              const std::vector<std::string> &channels,
                              const std::string &client_id, Subscription sub)
{
    conn_rec *c = r->connection;
    auto *s = new SuspendedStream(r, std::move(reader));
    s->channels = channels;
    s->client_id = client_id;
    s->sub = std::move(sub);
    s->settings = settings;
    s->events_sent = events_sent;
    s->bytes_sent = bytes_sent;
    s->last_write = apr_time_now();
    s->bb = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_os_sock_t fd;
    apr_os_sock_get(&fd, ap_get_conn_socket(c));
    s->fd = fd;
    /* mod_ssl's coalescing filter holds small writes until a FLUSH: take it out, so that
     * writes without FLUSH reach the socket. */
    for (ap_filter_t *f = c->output_filters; f;) {
        ap_filter_t *next = f->next;
        if (f->frec && f->frec->name && !strcasecmp(f->frec->name, "SSL/TLS Coalescing Filter")) {
            /* ap_remove_output_filter() unlinks a connection filter from c->output_filters
             * only; the request's chain runs into it too. */
            for (ap_filter_t *p = r->output_filters; p; p = p->next)
                if (p->next == f)
                    p->next = next;
            ap_remove_output_filter(f);
        }
        f = next;
    }
    s->core = c->output_filters;
    while (s->core->next)
        s->core = s->core->next;
    /* Direct writes are exact when the response is not chunked (mod_sse ends the connection
     * with the stream, so HTTP/1.1 sends no chunking), the connection has no filter but the
     * core's (no TLS, no other module rewriting bytes) and the core holds nothing. */
    s->direct = !r->chunked && c->output_filters == s->core && !c->data_in_output_filters;
    ap_set_module_config(c->conn_config, &sse_module, s);
}

void adopt_suspended_stream(conn_rec *c, ModuleState *state)
{
    auto *s = static_cast<SuspendedStream *>(ap_get_module_config(c->conn_config, &sse_module));
    if (!s || !state || !state->hub)
        return;
    ap_set_module_config(c->conn_config, &sse_module, nullptr);
    state->hub->adopt(s);
}

void stop_async_hub(AsyncHub *hub)
{
    if (hub)
        hub->stop();
}

} // namespace sse::httpd
