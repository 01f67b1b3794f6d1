/* http_stream.h — one HTTP/1.1 GET over TCP or TLS whose body is read as a stream, for
 * sse-follow.
 *
 * Contract
 * - parse_url() takes http:// and https:// URLs (a host name, an IPv4 address or a [bracketed]
 *   IPv6 address, an optional port, a path and query; no user:password, no fragment kept).
 * - HttpStream::open() connects (every address the name resolves to, in turn), sets up TLS
 *   when the URL says https (the peer's certificate checked against the system's CAs or
 *   TlsOptions::ca_file, and the URL's host, unless TlsOptions::insecure), sends the request
 *   and reads the response head. read() then hands out the body, de-chunked when it is
 *   chunked, up to its Content-Length when it has one, else until the server closes.
 * - Every call takes an absolute deadline and returns Timeout once it passes: nothing blocks
 *   past it. The socket is non-blocking; one HttpStream is used by one thread.
 * - Errors are English sentences for the user, with what failed (resolve, connect, TLS, the
 *   certificate, the response).
 */
#ifndef SSE_TOOLS_HTTP_STREAM_H
#define SSE_TOOLS_HTTP_STREAM_H

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace follow {

using Clock = std::chrono::steady_clock;

struct Url {
    bool tls = false;
    std::string host;   /* without brackets */
    std::string port;   /* digits; 80 or 443 when the URL gives none */
    std::string target; /* path and query, at least "/" */
    std::string text;   /* the URL without its fragment, for messages */
};

/* True when one of `lines` ("Name: value") is header `name` (case-insensitive). */
bool has_header(const std::vector<std::string> &lines, std::string_view name);

/* Returns an error sentence, or "" with `out` set. */
std::string parse_url(std::string_view text, Url &out);

/* A redirect's Location resolved against `base`: an absolute http(s) URL, "//host/..." or a
 * path ("/x" or relative to base's directory). Returns an error sentence, or "". */
std::string resolve_location(const Url &base, std::string_view location, Url &out);

struct TlsOptions {
    std::string ca_file; /* empty: the system's CAs */
    bool insecure = false;
};

struct ResponseHead {
    int status = 0;
    std::string reason;
    std::vector<std::pair<std::string, std::string>> headers; /* names in lower case */
    /* The last value of header `lower_name`, nullptr when absent. */
    const std::string *header(std::string_view lower_name) const;
};

enum class Io { Ok, End, Timeout, Error };

class HttpStream {
public:
    explicit HttpStream(TlsOptions tls);
    ~HttpStream();
    HttpStream(const HttpStream &) = delete;
    HttpStream &operator=(const HttpStream &) = delete;

    /* Connects to `url`, sends GET with the given header lines ("Name: value"; a Host line
     * among them replaces the one made from the URL), reads the
     * response head into `head`. Ok, Timeout, or Error with error() set; `fatal()` then says
     * whether trying again cannot help (the certificate was refused). */
    Io open(const Url &url, const std::vector<std::string> &header_lines, ResponseHead &head,
            Clock::time_point deadline);

    /* Appends body bytes to `out`: Ok (something appended), End (the body is over), Timeout,
     * Error (error() says why). */
    Io read(std::string &out, Clock::time_point deadline);

    void close();
    const std::string &error() const { return error_; }
    bool fatal() const { return fatal_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::string error_;
    bool fatal_ = false;
};

} // namespace follow

#endif
