#include "http_stream.h"

#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace follow {

namespace {

constexpr std::size_t kMaxHeadBytes = 64 * 1024;
constexpr std::size_t kMaxChunkLine = 4096;

std::string lower(std::string_view s)
{
    std::string out(s);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string_view trim(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

bool is_ip_literal(const std::string &host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host.c_str(), addr) == 1 || inet_pton(AF_INET6, host.c_str(), addr) == 1;
}

std::string openssl_error()
{
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (!e)
        return "the connection ended during the handshake";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

int ms_until(Clock::time_point deadline)
{
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return left.count() <= 0 ? 0 : left.count() > 60000 ? 60000 : static_cast<int>(left.count());
}

} // namespace

bool has_header(const std::vector<std::string> &lines, std::string_view name)
{
    const std::string want = lower(name);
    for (const auto &l : lines)
        if (l.size() > want.size() && l[want.size()] == ':' &&
            lower(std::string_view(l).substr(0, want.size())) == want)
            return true;
    return false;
}

std::string parse_url(std::string_view text, Url &out)
{
    out = Url{};
    const std::size_t hash = text.find('#');
    if (hash != std::string_view::npos)
        text = text.substr(0, hash);
    const std::size_t sep = text.find("://");
    if (sep == std::string_view::npos)
        return "not a URL (it should start with http:// or https://)";
    const std::string scheme = lower(text.substr(0, sep));
    if (scheme != "http" && scheme != "https")
        return "the scheme \"" + scheme + "\" is not http or https";
    out.tls = scheme == "https";
    std::string_view rest = text.substr(sep + 3);
    const std::size_t end = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, end);
    std::string_view target = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    if (authority.find('@') != std::string_view::npos)
        return "user:password in the URL is not supported (send -H 'Authorization: ...')";
    std::string_view port;
    if (!authority.empty() && authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos)
            return "the IPv6 address in the URL has no closing ']'";
        out.host.assign(authority.substr(1, close - 1));
        std::string_view after = authority.substr(close + 1);
        if (!after.empty() && after.front() != ':')
            return "unexpected text after the IPv6 address in the URL";
        port = after.empty() ? after : after.substr(1);
    } else {
        const std::size_t colon = authority.find(':');
        out.host.assign(authority.substr(0, colon));
        if (colon != std::string_view::npos)
            port = authority.substr(colon + 1);
    }
    if (out.host.empty())
        return "the URL has no host";
    for (char c : out.host)
        if (!(isalnum(static_cast<unsigned char>(c)) || std::strchr("-._:%", c)))
            return "the host in the URL contains '" + std::string(1, c) + "'";
    if (port.empty()) {
        out.port = out.tls ? "443" : "80";
    } else {
        if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
            std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535)
            return "the port in the URL is not a number from 1 to 65535";
        out.port.assign(port);
    }
    for (char c : target)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F)
            return "the URL contains a space or control character (encode it, e.g. %20)";
    out.target = target.empty() || target.front() == '?' ? "/" + std::string(target)
                                                          : std::string(target);
    out.text.assign(text);
    return {};
}

std::string resolve_location(const Url &base, std::string_view location, Url &out)
{
    const std::string scheme = base.tls ? "https:" : "http:";
    if (location.find("://") != std::string_view::npos)
        return parse_url(location, out);
    if (location.substr(0, 2) == "//")
        return parse_url(scheme + std::string(location), out);
    const std::string host = base.host.find(':') != std::string::npos ? "[" + base.host + "]"
                                                                       : base.host;
    std::string origin = scheme + "//" + host + ":" + base.port;
    if (!location.empty() && location.front() == '/')
        return parse_url(origin + std::string(location), out);
    std::string dir = base.target.substr(0, base.target.find('?'));
    dir.erase(dir.rfind('/') + 1);
    return parse_url(origin + dir + std::string(location), out);
}

const std::string *ResponseHead::header(std::string_view lower_name) const
{
    const std::string *v = nullptr;
    for (const auto &h : headers)
        if (h.first == lower_name)
            v = &h.second;
    return v;
}

struct HttpStream::Impl {
    TlsOptions tls;
    SSL_CTX *ctx = nullptr;
    SSL *ssl = nullptr;
    int fd = -1;
    std::string buf; /* bytes read and not yet handed out */
    enum class Body { UntilClose, Length, Chunked } body = Body::UntilClose;
    enum class Chunk { Size, Data, DataEnd, Trailer, Done } chunk = Chunk::Size;
    unsigned long long left = 0; /* of the Content-Length, or of the current chunk */

    Io wait(short events, Clock::time_point deadline, std::string &error);
    Io raw_read(Clock::time_point deadline, std::string &error);
    Io raw_write(std::string_view data, Clock::time_point deadline, std::string &error);
    Io connect_tcp(const Url &url, Clock::time_point deadline, std::string &error);
    Io handshake(const Url &url, Clock::time_point deadline, std::string &error, bool &fatal);
    bool take_chunked(std::string &out, std::string &error);
};

Io HttpStream::Impl::wait(short events, Clock::time_point deadline, std::string &error)
{
    for (;;) {
        struct pollfd p = {fd, events, 0};
        const int n = poll(&p, 1, ms_until(deadline));
        if (n > 0)
            return Io::Ok;
        if (n == 0 && Clock::now() >= deadline)
            return Io::Timeout;
        if (n < 0 && errno != EINTR) {
            error = std::string("poll: ") + strerror(errno);
            return Io::Error;
        }
    }
}

/* Appends what the connection has to `buf`: Ok, End (closed), Timeout or Error. */
Io HttpStream::Impl::raw_read(Clock::time_point deadline, std::string &error)
{
    char tmp[16384];
    for (;;) {
        if (ssl) {
            const int n = SSL_read(ssl, tmp, sizeof tmp);
            if (n > 0) {
                buf.append(tmp, n);
                return Io::Ok;
            }
            const int e = SSL_get_error(ssl, n);
            Io w = Io::Error;
            if (e == SSL_ERROR_WANT_READ)
                w = wait(POLLIN, deadline, error);
            else if (e == SSL_ERROR_WANT_WRITE)
                w = wait(POLLOUT, deadline, error);
            else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
                return Io::End;
            else
                error = "TLS: " + openssl_error();
            if (w != Io::Ok)
                return w;
            continue;
        }
        const ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            buf.append(tmp, n);
            return Io::Ok;
        }
        if (n == 0)
            return Io::End;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            error = std::string("read: ") + strerror(errno);
            return Io::Error;
        }
        if (Io w = wait(POLLIN, deadline, error); w != Io::Ok)
            return w;
    }
}

Io HttpStream::Impl::raw_write(std::string_view data, Clock::time_point deadline,
                               std::string &error)
{
    while (!data.empty()) {
        short want = POLLOUT;
        if (ssl) {
            const int n = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
            if (n > 0) {
                data.remove_prefix(n);
                continue;
            }
            const int e = SSL_get_error(ssl, n);
            if (e == SSL_ERROR_WANT_READ) {
                want = POLLIN;
            } else if (e != SSL_ERROR_WANT_WRITE) {
                error = "TLS: " + openssl_error();
                return Io::Error;
            }
        } else {
            const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            if (n > 0) {
                data.remove_prefix(n);
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                error = std::string("write: ") + strerror(errno);
                return Io::Error;
            }
        }
        if (Io w = wait(want, deadline, error); w != Io::Ok)
            return w;
    }
    return Io::Ok;
}

/* Tries each address of the host in turn; the first that accepts the connection wins. */
Io HttpStream::Impl::connect_tcp(const Url &url, Clock::time_point deadline, std::string &error)
{
    struct addrinfo hints = {}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &res); rc != 0) {
        error = "cannot resolve " + url.host + ": " + gai_strerror(rc);
        return Io::Error;
    }
    const std::string where = url.host + " port " + url.port;
    error = "cannot connect to " + where;
    Io result = Io::Error;
    for (struct addrinfo *ai = res; ai && result != Io::Ok; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int err = 0;
        if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                std::string ignored;
                result = wait(POLLOUT, deadline, ignored);
                socklen_t len = sizeof err;
                err = result == Io::Ok && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0
                          ? err : ETIMEDOUT;
            }
        }
        result = err == 0 ? Io::Ok : err == ETIMEDOUT ? Io::Timeout : Io::Error;
        if (result != Io::Ok) {
            error = "cannot connect to " + where + ": " + strerror(err);
            ::close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return result;
}

Io HttpStream::Impl::handshake(const Url &url, Clock::time_point deadline, std::string &error,
                               bool &fatal)
{
    if (!ctx) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) {
            error = "TLS: " + openssl_error();
            return Io::Error;
        }
        SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (!tls.insecure) {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
            const bool loaded = tls.ca_file.empty()
                                    ? SSL_CTX_set_default_verify_paths(ctx) == 1
                                    : SSL_CTX_load_verify_locations(ctx, tls.ca_file.c_str(), nullptr) == 1;
            if (!loaded) {
                error = "cannot load the CA certificates" +
                        (tls.ca_file.empty() ? std::string() : " from " + tls.ca_file) + ": " +
                        openssl_error();
                fatal = true;
                return Io::Error;
            }
        }
    }
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (!is_ip_literal(url.host))
        SSL_set_tlsext_host_name(ssl, url.host.c_str());
    if (!tls.insecure) {
        if (is_ip_literal(url.host))
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), url.host.c_str());
        else
            SSL_set1_host(ssl, url.host.c_str());
    }
    for (;;) {
        const int n = SSL_connect(ssl);
        if (n == 1)
            return Io::Ok;
        const int e = SSL_get_error(ssl, n);
        Io w = Io::Error;
        if (e == SSL_ERROR_WANT_READ)
            w = wait(POLLIN, deadline, error);
        else if (e == SSL_ERROR_WANT_WRITE)
            w = wait(POLLOUT, deadline, error);
        else if (const long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
            error = "the certificate of " + url.host + " was refused: " +
                    X509_verify_cert_error_string(v) +
                    " (--cacert FILE trusts another CA; --insecure skips the check)";
            ERR_clear_error();
            fatal = true;
        } else {
            error = "TLS handshake with " + url.host + " failed: " + openssl_error();
        }
        if (w != Io::Ok)
            return w;
    }
}

/* Moves the chunked body's data from `buf` to `out` as far as `buf` goes. False on a
 * malformed chunk. */
bool HttpStream::Impl::take_chunked(std::string &out, std::string &error)
{
    for (;;) {
        if (chunk == Chunk::Data) {
            const std::size_t n = buf.size() < left ? buf.size() : static_cast<std::size_t>(left);
            out.append(buf, 0, n);
            buf.erase(0, n);
            left -= n;
            if (left > 0)
                return true;
            chunk = Chunk::DataEnd;
        }
        if (chunk == Chunk::Done)
            return true;
        const std::size_t lf = buf.find('\n');
        if (lf == std::string::npos) {
            if (buf.size() > kMaxChunkLine) {
                error = "a chunk-size line over 4 KiB";
                return false;
            }
            return true;
        }
        std::string line = std::string(trim(std::string_view(buf).substr(0, lf)));
        buf.erase(0, lf + 1);
        if (chunk == Chunk::DataEnd) {
            if (!line.empty()) {
                error = "no line end after a chunk's data";
                return false;
            }
            chunk = Chunk::Size;
        } else if (chunk == Chunk::Trailer) {
            if (line.empty())
                chunk = Chunk::Done;
        } else {
            line = line.substr(0, line.find(';'));
            if (line.empty() || line.size() > 15 ||
                line.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
                error = "a malformed chunk size";
                return false;
            }
            left = std::stoull(line, nullptr, 16);
            chunk = left ? Chunk::Data : Chunk::Trailer;
        }
    }
}

HttpStream::HttpStream(TlsOptions tls) : impl_(std::make_unique<Impl>())
{
    impl_->tls = std::move(tls);
}

HttpStream::~HttpStream()
{
    close();
    if (impl_->ctx)
        SSL_CTX_free(impl_->ctx);
}

void HttpStream::close()
{
    if (impl_->ssl) {
        SSL_free(impl_->ssl);
        impl_->ssl = nullptr;
    }
    if (impl_->fd >= 0) {
        ::close(impl_->fd);
        impl_->fd = -1;
    }
    impl_->buf.clear();
}

namespace {

/* "HTTP/1.1 200 OK" and the header lines; false when it is no HTTP response. */
bool parse_head(std::string_view text, ResponseHead &head)
{
    head = ResponseHead{};
    const std::size_t eol = text.find("\r\n");
    std::string_view status_line = text.substr(0, eol);
    if (status_line.substr(0, 5) != "HTTP/" || status_line.size() < 12 || status_line[8] != ' ')
        return false;
    std::string_view code = status_line.substr(9, 3);
    if (code.find_first_not_of("0123456789") != std::string_view::npos)
        return false;
    head.status = std::stoi(std::string(code));
    head.reason.assign(trim(status_line.substr(12)));
    for (std::size_t at = eol + 2; at < text.size();) {
        std::size_t end = text.find("\r\n", at);
        if (end == std::string_view::npos)
            end = text.size();
        std::string_view line = text.substr(at, end - at);
        at = end + 2;
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0)
            continue;
        head.headers.emplace_back(lower(line.substr(0, colon)),
                                  std::string(trim(line.substr(colon + 1))));
    }
    return true;
}

} // namespace

Io HttpStream::open(const Url &url, const std::vector<std::string> &header_lines,
                    ResponseHead &head, Clock::time_point deadline)
{
    close();
    error_.clear();
    fatal_ = false;
    Impl &s = *impl_;
    Io r = s.connect_tcp(url, deadline, error_);
    if (r == Io::Ok && url.tls)
        r = s.handshake(url, deadline, error_, fatal_);
    if (r != Io::Ok)
        return r;
    const bool v6 = url.host.find(':') != std::string::npos;
    std::string req = "GET " + url.target + " HTTP/1.1\r\n";
    if (!has_header(header_lines, "host")) {
        req += "Host: " + (v6 ? "[" + url.host + "]" : url.host);
        if (url.port != (url.tls ? "443" : "80"))
            req += ":" + url.port;
        req += "\r\n";
    }
    for (const auto &h : header_lines)
        req += h + "\r\n";
    req += "\r\n";
    if (r = s.raw_write(req, deadline, error_); r != Io::Ok)
        return r;
    std::size_t end;
    while ((end = s.buf.find("\r\n\r\n")) == std::string::npos) {
        if (s.buf.size() > kMaxHeadBytes) {
            error_ = "the response head is over 64 KiB";
            return Io::Error;
        }
        r = s.raw_read(deadline, error_);
        if (r == Io::End) {
            error_ = "the server closed the connection before answering";
            return Io::Error;
        }
        if (r != Io::Ok)
            return r;
    }
    if (!parse_head(std::string_view(s.buf).substr(0, end), head)) {
        error_ = "the answer is not HTTP";
        return Io::Error;
    }
    s.buf.erase(0, end + 4);
    s.chunk = Impl::Chunk::Size;
    const std::string *te = head.header("transfer-encoding");
    const std::string *cl = head.header("content-length");
    if (te && lower(*te).find("chunked") != std::string::npos) {
        s.body = Impl::Body::Chunked;
    } else if (head.status == 204 || head.status == 304 ||
               (cl && !cl->empty() && cl->size() < 19 &&
                cl->find_first_not_of("0123456789") == std::string::npos)) {
        s.body = Impl::Body::Length;
        s.left = head.status == 204 || head.status == 304 ? 0 : std::stoull(*cl);
    } else {
        s.body = Impl::Body::UntilClose;
    }
    return Io::Ok;
}

Io HttpStream::read(std::string &out, Clock::time_point deadline)
{
    Impl &s = *impl_;
    const std::size_t before = out.size();
    for (;;) {
        switch (s.body) {
        case Impl::Body::Chunked:
            if (!s.take_chunked(out, error_))
                return Io::Error;
            if (s.chunk == Impl::Chunk::Done)
                return out.size() > before ? Io::Ok : Io::End;
            break;
        case Impl::Body::Length: {
            const std::size_t n = s.buf.size() < s.left ? s.buf.size() : static_cast<std::size_t>(s.left);
            out.append(s.buf, 0, n);
            s.buf.erase(0, n);
            s.left -= n;
            if (s.left == 0)
                return out.size() > before ? Io::Ok : Io::End;
            break;
        }
        case Impl::Body::UntilClose:
            out += s.buf;
            s.buf.clear();
            break;
        }
        if (out.size() > before)
            return Io::Ok;
        if (Io r = s.raw_read(deadline, error_); r != Io::Ok)
            return r;
    }
}

} // namespace follow
