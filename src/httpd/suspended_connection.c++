/* A suspended connection as the hub drives it; the httpd 2.4 reliances, numbered, are in the
 * header. */
#include "src/httpd/suspended_connection.h"
#include "src/httpd/subscription.h"

#include "http_connection.h"
#include "http_core.h"
#include "http_request.h"

#include "ap_release.h"
#include "apr_portable.h"

#include "sse/send_last.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace sse::httpd {

namespace {

/* Most plaintext handed to the output filters at once (TLS): see write_budget(). */
constexpr std::size_t kWriteChunk = 16 * 1024;
constexpr std::size_t kMinBudget = 1024;
/* What mod_ssl may add to each piece (record header, IV, MAC or tag, padding), counted
 * generously. */
constexpr std::size_t kRecordSlack = 128;

/* (5) Takes mod_ssl's coalescing filter out of the connection's and the request's chains. */
void remove_coalescing_filter(request_rec *r)
{
    conn_rec *c = r->connection;
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
}

/* (8) The head of APR 1.7's apr_allocator_t (memory/unix/apr_pools.c, private), in units of
 * 4 KB: the highest index of its free lists holding a node (0: none below 80 KB), its max
 * free, and what it may still keep. */
struct AllocatorHead {
    apr_size_t max_index;
    apr_size_t max_free_index;
    apr_size_t current_free_index;
};

/* Nodes taken out of an allocator's cache at most: MaxMemFree's default, 2 MB, in 8 KB nodes. */
constexpr int kMaxCachedNodes = 256;

/* (8) From now on every node the connection's allocator frees goes back to the system, and
 * what it keeps is freed now. APR has no call to empty an allocator's cache: taking its
 * smallest node while it keeps any takes them all (APR hands out a larger cached node when
 * it keeps none of the size asked), and freeing them under the new limit gives them back.
 * Whether it keeps any is read in the allocator's head, only if the limit just set reads
 * back there (else the cache stays). Nodes over 80 KB (kept apart) stay. */
void release_cached_blocks(apr_pool_t *pool)
{
    apr_allocator_t *allocator = apr_pool_allocator_get(pool);
    if (!allocator)
        return;
    apr_allocator_max_free_set(allocator, 1); /* one 4 KB unit: less than any node */
    const auto *head = reinterpret_cast<const AllocatorHead *>(allocator);
    if (head->max_free_index != 1 || head->current_free_index > 1)
        return;
    apr_memnode_t *taken = nullptr;
    for (int i = 0; head->max_index > 0 && i < kMaxCachedNodes; ++i) {
        apr_memnode_t *node = apr_allocator_alloc(allocator, 1);
        if (!node)
            break;
        node->next = taken;
        taken = node;
    }
    if (taken)
        apr_allocator_free(allocator, taken);
}

/* (9) The head of the core output filter's private context in 2.4.x (server/core_filters.c,
 * struct core_output_filter_ctx): the brigade it sets data aside in, then the pool that data
 * is set aside in. */
struct CoreOutputContextHead {
    apr_bucket_brigade *buffered_bb;
    apr_pool_t *deferred_write_pool;
};

/* (9) A direct() stream's connection does not go through the core output filter again until
 * close(); the pool it once set the response headers aside in (one 8 KB node kept for its
 * 160 bytes) is destroyed, and made again by the core if it ever sets data aside. Done only
 * when the context still looks like 2.4.x's: its brigade is the connection's and empty, its
 * pool a subpool of the connection's. */
void drop_deferred_write_pool(ap_filter_t *core)
{
#if AP_SERVER_MAJORVERSION_NUMBER == 2 && AP_SERVER_MINORVERSION_NUMBER == 4 && \
    AP_SERVER_PATCHLEVEL_NUMBER >= 47
    conn_rec *c = core->c;
    auto *ctx = reinterpret_cast<CoreOutputContextHead *>(
        static_cast<core_net_rec *>(core->ctx)->out_ctx);
    if (!ctx || !ctx->buffered_bb || ctx->buffered_bb->p != c->pool ||
        ctx->buffered_bb->bucket_alloc != c->bucket_alloc ||
        !APR_BRIGADE_EMPTY(ctx->buffered_bb) || !ctx->deferred_write_pool ||
        apr_pool_parent_get(ctx->deferred_write_pool) != c->pool)
        return;
    apr_pool_destroy(ctx->deferred_write_pool);
    ctx->deferred_write_pool = nullptr;
#else
    (void)core; /* another layout (2.4.46 and older had tmp_flush_bb second): the 4 KB stay */
#endif
}

} // namespace

SuspendedConnection::SuspendedConnection(request_rec *r) : r_(r), c_(r->connection)
{
    release_cached_blocks(c_->pool);
    bb_ = apr_brigade_create(c_->pool, c_->bucket_alloc);
    apr_os_sock_t fd;
    apr_os_sock_get(&fd, ap_get_conn_socket(c_));
    fd_ = fd;
    remove_coalescing_filter(r);
    core_ = c_->output_filters;
    while (core_->next)
        core_ = core_->next;
    direct_ = writes_as_is(r);
    if (direct_)
        drop_deferred_write_pool(core_);
}

bool SuspendedConnection::suspendable(const request_rec *r)
{
    const conn_rec *c = r->connection;
    /* An internal redirect (r->prev: RewriteRule in a directory, ErrorDocument, Action) or a
     * subrequest (r->main) does not end in CONN_STATE_SUSPENDED: the MPM goes on with the
     * connection, so the stream stays on its worker. */
    return c->cs && !c->master && !c->clogging_input_filters && !r->main && !r->prev;
}

bool SuspendedConnection::handed_over(const conn_rec *c)
{
    return c->cs->state == CONN_STATE_SUSPENDED;
}

static core_net_rec *core_net(ap_filter_t *core)
{
    return static_cast<core_net_rec *>(core->ctx);
}

void SuspendedConnection::adopted()
{
    apr_socket_t *sock = ap_get_conn_socket(c_);
    apr_socket_timeout_set(sock, 0);
    apr_os_sock_t fd = -1;
    apr_os_sock_get(&fd, sock);
    mpm_fd_ = fd_ = fd;
    if (fd < 0)
        return;
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return;
    fd_ = dup_fd;
    if (!direct_) {
        apr_os_sock_t own = dup_fd;
        apr_os_sock_put(&own_sock_, &own, c_->pool);
        apr_socket_timeout_set(own_sock_, 0);
        core_net(core_)->client_socket = own_sock_;
    }
}

bool SuspendedConnection::worker_left_by(apr_time_t now)
{
    if (!worker_left_ && !__atomic_load_n(&c_->sbh, __ATOMIC_ACQUIRE))
        worker_left_ = now;
    return worker_left_ && now - worker_left_ >= apr_time_from_msec(kReleaseMs);
}

int SuspendedConnection::settled_fd() const
{
    if (!on_dup())
        return fd_;
    return mpm_socket_open() ? mpm_fd_ : -1;
}

bool SuspendedConnection::mpm_socket_open() const
{
    apr_os_sock_t fd = -1;
    apr_os_sock_get(&fd, ap_get_conn_socket(c_));
    return fd == mpm_fd_;
}

void SuspendedConnection::settle()
{
    settled_ = true;
    if (!on_dup())
        return;
    if (own_sock_)
        core_net(core_)->client_socket = ap_get_conn_socket(c_);
    ::close(fd_);
    fd_ = mpm_fd_;
}

/* Plaintext handed to the output filters at once (TLS): with what mod_ssl adds per record
 * (the hub counts kRecordSlack per piece, and half the threshold to spare) it stays under the
 * core's FlushMaxThreshold, above which the core output filter would wait for the socket.
 * A FlushMaxThreshold under 2 KiB cannot be honoured: a slow stream may then be ended
 * (write-failed) instead of held; it is never waited for. */
std::size_t SuspendedConnection::write_budget() const
{
    auto *conf = static_cast<core_server_config *>(
        ap_get_core_module_config(c_->base_server->module_config));
    std::size_t half = conf->flush_max_threshold / 2;
    return std::max<std::size_t>(kMinBudget, std::min(half, kWriteChunk));
}

void SuspendedConnection::add(const char *data, std::size_t len)
{
    APR_BRIGADE_INSERT_TAIL(bb_, apr_bucket_transient_create(data, len, c_->bucket_alloc));
}

bool SuspendedConnection::pass()
{
    /* No FLUSH bucket: the core filter then writes without waiting. */
    apr_status_t rv = ap_pass_brigade(r_->output_filters, bb_);
    apr_brigade_cleanup(bb_);
    return rv == APR_SUCCESS && !c_->aborted;
}

bool SuspendedConnection::write_held()
{
    apr_status_t rv = core_->frec->filter_func.out_func(core_, nullptr);
    return rv == APR_SUCCESS && !c_->aborted;
}

StreamTransport::Wrote SuspendedConnection::write(Subscriber &s)
{
    if (direct_)
        return write_direct(fd_, s);
    if (holds_data() && !write_held())
        return Wrote::Failed;
    const std::size_t budget = write_budget();
    while (!holds_data() && !s.queue_empty()) {
        std::vector<SharedBytes> inflight; /* what the brigade points into, until pass() */
        std::size_t charged = 0, plain = 0, skip = s.front_offset();
        for (auto it = s.queue().begin();
             it != s.queue().end() && charged + kRecordSlack < budget; ++it, skip = 0) {
            const std::string &b = **it;
            const std::size_t len = std::min(b.size() - skip, budget - charged - kRecordSlack);
            add(b.data() + skip, len);
            charged += len + kRecordSlack;
            plain += len;
            inflight.push_back(*it);
        }
        s.consumed(plain);
        if (!pass())
            return Wrote::Failed;
        s.wrote(plain, apr_time_now());
        if (!write_held())
            return Wrote::Failed;
    }
    return holds_data() ? Wrote::WantOut : Wrote::All;
}

std::size_t SuspendedConnection::end_with(const std::string &last)
{
    if (direct_) {
        /* What is queued is dropped (the client resumes with Last-Event-ID). */
        const std::size_t sent = send_last(fd_, last);
        c_->aborted = 1;
        return sent;
    }
    if (c_->aborted)
        return 0;
    if (!last.empty())
        APR_BRIGADE_INSERT_TAIL(bb_, apr_bucket_heap_create(last.data(), last.size(), nullptr,
                                                            c_->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb_, apr_bucket_eos_create(c_->bucket_alloc));
    if (ap_pass_brigade(r_->output_filters, bb_) == APR_SUCCESS)
        core_->frec->filter_func.out_func(core_, nullptr);
    apr_brigade_cleanup(bb_);
    return 0;
}

apr_pool_t *SuspendedConnection::release(server_rec *, std::uint64_t events,
                                         std::uint64_t bytes, EndReason why)
{
    note_stream_end(r_, events, bytes, why);
    return close(bytes);
}

apr_pool_t *SuspendedConnection::close(apr_uint64_t direct_bytes)
{
    if (direct_)
        r_->bytes_sent = static_cast<apr_off_t>(direct_bytes);
    c_->keepalive = AP_CONN_CLOSE;
    apr_socket_t *sock = ap_get_conn_socket(c_);
    ap_process_request_after_handler(r_); /* logs the request and frees it */
    ap_prep_lingering_close(c_);          /* pre-close hooks */
    apr_socket_shutdown(sock, APR_SHUTDOWN_READWRITE);
    apr_socket_close(sock);
    c_->cs->state = CONN_STATE_SUSPENDED;
    return c_->pool;
}

} // namespace sse::httpd
