/* A stream held by a dup of its socket; the httpd 2.4 reliances, numbered, are in the header. */
#include "src/httpd/taken_socket.h"

#include "http_core.h"
#include "http_log.h"
#include "httpd.h"

#include "apr_portable.h"

#include "sse/send_last.h"

#include <fcntl.h>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

bool TakenSocket::possible(const request_rec *r) { return writes_as_is(r); }

std::unique_ptr<TakenSocket> TakenSocket::take(request_rec *r, bool fail_dup)
{
    apr_os_sock_t fd = -1;
    if (fail_dup || apr_os_sock_get(&fd, ap_get_conn_socket(r->connection)) != APR_SUCCESS ||
        fd < 0)
        return nullptr;
    const int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return nullptr;
    return std::unique_ptr<TakenSocket>(new TakenSocket(dup_fd, r));
}

TakenSocket::TakenSocket(int fd, const request_rec *r)
    : fd_(fd), client_(r->useragent_ip ? r->useragent_ip : ""),
      /* Escaped as httpd escapes what it logs of a request: the path is the client's. */
      path_(r->uri ? ap_escape_logitem(r->pool, r->uri) : ""), started_(r->request_time),
      server_(r->server)
{
}

TakenSocket::~TakenSocket() { close_fd(); }

void TakenSocket::close_fd()
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
}

StreamTransport::Wrote TakenSocket::write(Subscriber &s)
{
    if (fd_ < 0)
        return Wrote::Failed;
    return write_direct(fd_, s);
}

std::size_t TakenSocket::end_with(const std::string &last)
{
    /* What is queued is dropped (the client resumes with Last-Event-ID). */
    const std::size_t sent = send_last(fd_, last);
    close_fd();
    return sent;
}

void TakenSocket::abort() { close_fd(); }

apr_pool_t *TakenSocket::release(server_rec *s, std::uint64_t events, std::uint64_t bytes,
                                 EndReason why)
{
    close_fd();
    const apr_time_t held = apr_time_now() - started_;
    /* On the request's server: a virtual host's ErrorLog and LogLevel apply to its streams. */
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, server_ ? server_ : s,
                 "SSE0510: a socket-held stream ended: client %s, path %s, %" APR_UINT64_T_FMT
                 " events, %" APR_UINT64_T_FMT " bytes, %" APR_TIME_T_FMT ".%03" APR_TIME_T_FMT
                 " s, SSE_END %s",
                 client_.c_str(), path_.c_str(), apr_uint64_t(events), apr_uint64_t(bytes),
                 apr_time_sec(held), apr_time_msec(held), end_reason_name(why));
    return nullptr;
}

} // namespace sse::httpd
