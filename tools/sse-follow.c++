/* sse-follow — follow an HTTP(S) event stream from a shell, as a browser's EventSource does.
 *
 *   sse-follow [-j] [-n COUNT] [-t SECONDS] [-k SECONDS] [-r MS] [-L ID] [-H 'Name: value']...
 *              [--cacert FILE | --insecure] [-c SECONDS] [-v] URL
 *
 * Reads the stream with the project's WHATWG reader (sse/event_stream.h) and prints every event
 * as event-stream text (default) or as a JSON line {"id":..,"event":..,"data":..} (-j). With the
 * browser's semantics (HTML standard, "Server-sent events"): sends Accept: text/event-stream and,
 * once the stream gave an id, Last-Event-ID; when a connection ends or cannot be made it waits
 * the reconnection time (the stream's last `retry:`, else -r) and connects again; 204 stops it
 * (exit 0); any other answer than 200 (after redirects), or a Content-Type other than
 * text/event-stream, fails it (exit 1). A connection silent for -k seconds counts as ended.
 * A certificate that is refused fails it too (a browser would retry; a script wants to know).
 *
 * Exit status: 0 stopped by -n, -t or a 204; 1 the stream failed (the reason on stderr);
 * 2 usage.
 * docs/sse-follow.md is the reference.
 */
#include "http_stream.h"

#include "sse/event_stream.h"
#include "sse/wire.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <getopt.h>
#include <string>
#include <thread>
#include <vector>

namespace {

using follow::Clock;
using follow::Io;

const char *const kUsage =
    "usage: sse-follow [options] URL\n"
    "\n"
    "Follows the event stream at URL (http:// or https://) as a browser's EventSource does:\n"
    "prints each event, reconnects when the connection ends (sending Last-Event-ID, waiting\n"
    "the stream's retry: time), stops on 204 No Content, fails on any other answer than 200\n"
    "or a Content-Type other than text/event-stream.\n"
    "\n"
    "  -j, --json                 print each event as a JSON line {\"id\",\"event\",\"data\"}\n"
    "                             (default: event-stream text)\n"
    "  -n, --count COUNT          exit after COUNT events\n"
    "  -t, --time SECONDS         exit after SECONDS\n"
    "  -k, --keepalive-timeout SECONDS\n"
    "                             a connection silent this long is dropped and made again\n"
    "                             (default: none; set it above the server's keep-alive)\n"
    "  -r, --retry MS             reconnection time until the stream sets one (default 3000)\n"
    "  -L, --last-event-id ID     resume after ID (sent as Last-Event-ID on the first request)\n"
    "  -H, --header 'Name: value' send this header too (repeatable; e.g. Authorization);\n"
    "                             it replaces Host, Accept, User-Agent or Cache-Control\n"
    "  -c, --connect-timeout SECONDS\n"
    "                             give up a connection attempt after SECONDS (default 10)\n"
    "      --cacert FILE          trust the CA certificates in FILE (PEM) for https\n"
    "      --insecure             do not check the server's certificate\n"
    "  -v, --verbose              say on stderr when a connection opens and ends\n"
    "  -h, --help                 this text\n"
    "\n"
    "Exit status: 0 stopped by -n, -t or a 204 answer; 1 the stream failed; 2 usage.\n";

struct Options {
    bool json = false, verbose = false;
    long long count = 0;   /* 0: no limit */
    double seconds = 0;    /* 0: no limit */
    double keepalive = 0;  /* 0: none */
    double connect_timeout = 10;
    long long retry_ms = 3000;
    std::string last_event_id;
    std::vector<std::string> headers;
    follow::TlsOptions tls;
    follow::Url url;
};

[[noreturn]] void usage_error(const std::string &msg)
{
    std::fprintf(stderr, "sse-follow: %s\n(sse-follow --help for the options)\n", msg.c_str());
    std::exit(2);
}

double seconds_arg(const char *opt, const char *text)
{
    char *end = nullptr;
    errno = 0;
    const double v = std::strtod(text, &end);
    if (errno || end == text || *end || !(v > 0) || v > 1e9)
        usage_error(std::string(opt) + ": not a positive number of seconds: " + text);
    return v;
}

long long count_arg(const char *opt, const char *text, long long min)
{
    char *end = nullptr;
    errno = 0;
    const long long v = std::strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min)
        usage_error(std::string(opt) + ": not a whole number from " + std::to_string(min) + ": " +
                    text);
    return v;
}

/* "Name: value", the name an HTTP token, nothing that would end the line. */
std::string header_arg(const char *text)
{
    const std::string h = text;
    const std::size_t colon = h.find(':');
    const char *token = "!#$%&'*+-.^_`|~";
    bool ok = colon != std::string::npos && colon > 0 &&
              h.find_first_of(std::string("\r\n\0", 3)) == std::string::npos;
    for (std::size_t i = 0; ok && i < colon; ++i)
        ok = std::isalnum(static_cast<unsigned char>(h[i])) || std::strchr(token, h[i]);
    if (!ok)
        usage_error(std::string("-H: not a header line 'Name: value': ") + text);
    return h;
}

Options parse_options(int argc, char **argv)
{
    static const struct option longs[] = {
        {"json", no_argument, nullptr, 'j'},        {"count", required_argument, nullptr, 'n'},
        {"time", required_argument, nullptr, 't'},  {"keepalive-timeout", required_argument, nullptr, 'k'},
        {"retry", required_argument, nullptr, 'r'}, {"last-event-id", required_argument, nullptr, 'L'},
        {"header", required_argument, nullptr, 'H'}, {"connect-timeout", required_argument, nullptr, 'c'},
        {"cacert", required_argument, nullptr, 'C'}, {"insecure", no_argument, nullptr, 'I'},
        {"verbose", no_argument, nullptr, 'v'},     {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0}};
    Options o;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":jn:t:k:r:L:H:c:vh", longs, nullptr)) != -1) {
        switch (c) {
        case 'j': o.json = true; break;
        case 'n': o.count = count_arg("-n", optarg, 1); break;
        case 't': o.seconds = seconds_arg("-t", optarg); break;
        case 'k': o.keepalive = seconds_arg("-k", optarg); break;
        case 'c': o.connect_timeout = seconds_arg("-c", optarg); break;
        case 'r': o.retry_ms = count_arg("-r", optarg, 0); break;
        case 'L':
            o.last_event_id = optarg;
            if (o.last_event_id.find_first_of("\r\n") != std::string::npos)
                usage_error("-L: an event id holds no CR or LF");
            break;
        case 'H': o.headers.push_back(header_arg(optarg)); break;
        case 'C': o.tls.ca_file = optarg; break;
        case 'I': o.tls.insecure = true; break;
        case 'v': o.verbose = true; break;
        case 'h': std::fputs(kUsage, stdout); std::exit(0);
        case ':': usage_error(std::string(argv[optind - 1]) + " needs a value");
        default: usage_error(std::string("unknown option ") + argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        usage_error(optind == argc ? "no URL given" : "one URL only");
    if (!o.tls.ca_file.empty() && o.tls.insecure)
        usage_error("--cacert and --insecure exclude each other");
    if (std::string err = follow::parse_url(argv[optind], o.url); !err.empty())
        usage_error(std::string(argv[optind]) + ": " + err);
    return o;
}

/* One run: the options, the reader, what was printed, when to stop. */
struct Follower {
    Options o;
    sse::EventStreamParser parser;
    follow::HttpStream http;
    long long printed = 0;
    Clock::time_point end = Clock::time_point::max(); /* -t */

    explicit Follower(Options opts)
        : o(std::move(opts)), parser(o.last_event_id, 64u << 20), http(o.tls)
    {
        if (o.seconds > 0)
            end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(o.seconds));
    }

    enum class Outcome { Ended, Stop, Failed, Done };
    Outcome connect(follow::ResponseHead &head);
    Outcome connection();
    bool print(const sse::StreamEvent &e);
    void note(const std::string &msg) const
    {
        std::fprintf(stderr, "sse-follow: %s\n", msg.c_str());
    }
    Clock::time_point within(double seconds) const
    {
        if (seconds > 1e9) /* a retry: of years reads as "not before the end" */
            seconds = 1e9;
        const auto t = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(seconds));
        return t < end ? t : end;
    }
};

/* One event on standard output; false once the count is reached. A reader that went away
 * (sse-follow ... | head -1) ends the run quietly. */
bool Follower::print(const sse::StreamEvent &e)
{
    std::string out;
    if (o.json) {
        nlohmann::ordered_json j = {{"id", e.last_event_id}, {"event", e.type}, {"data", e.data}};
        out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    } else {
        sse::EventFields f;
        f.id = e.last_event_id;
        f.event = e.type == "message" ? std::string() : e.type;
        f.has_data = true;
        f.data = e.data;
        sse::encode_event(f, out);
    }
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
        if (errno == EPIPE)
            std::exit(0);
        note(std::string("cannot write the output: ") + strerror(errno));
        std::exit(1);
    }
    return o.count == 0 || ++printed < o.count;
}

/* The text of an error answer's body for the message: mod_sse's JSON "error", else the
 * first 300 bytes with the white space folded. */
std::string body_excerpt(follow::HttpStream &http, Clock::time_point deadline)
{
    std::string body;
    while (body.size() < 2048 && http.read(body, deadline) == Io::Ok) {
    }
    const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string())
        return j["error"].get<std::string>();
    std::string folded;
    for (char c : body.substr(0, 300))
        if (!(std::isspace(static_cast<unsigned char>(c)) && (folded.empty() || folded.back() == ' ')))
            folded += std::isspace(static_cast<unsigned char>(c)) ? ' ' : c;
    if (!folded.empty() && folded.back() == ' ')
        folded.pop_back();
    return folded;
}

/* Whether a Content-Type value is text/event-stream (case-insensitive, parameters ignored). */
bool is_event_stream(const std::string *content_type)
{
    std::string essence = content_type ? content_type->substr(0, content_type->find(';')) : "";
    while (!essence.empty() && (essence.back() == ' ' || essence.back() == '\t'))
        essence.pop_back();
    for (char &c : essence)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return essence == "text/event-stream";
}

/* Opens the stream, following up to 10 redirects; Ended when it could not be made and another
 * try may work. */
Follower::Outcome Follower::connect(follow::ResponseHead &head)
{
    /* The user's -H lines replace ours of the same name; they go only to the URL's own origin
     * (scheme, host, port): a redirect elsewhere gets ours alone, so that a token or cookie
     * given for one server is not sent to another (as curl does). */
    const auto request_lines = [&](bool with_user) {
        std::vector<std::string> lines;
        if (with_user)
            lines = o.headers;
        for (const char *ours : {"Accept: text/event-stream", "Cache-Control: no-cache",
                                 "User-Agent: sse-follow"})
            if (!follow::has_header(lines,
                                    std::string_view(ours).substr(0, std::strchr(ours, ':') - ours)))
                lines.push_back(ours);
        if (!parser.last_event_id().empty())
            lines.push_back("Last-Event-ID: " + parser.last_event_id());
        return lines;
    };
    std::vector<std::string> lines = request_lines(true);
    follow::Url url = o.url;
    for (int redirects = 0;; ++redirects) {
        const Io r = http.open(url, lines, head, within(o.connect_timeout));
        if (r != Io::Ok) {
            if (Clock::now() >= end)
                return Outcome::Done;
            note(url.text + ": " + (r == Io::Timeout ? "no answer within the connect timeout"
                                                      : http.error()));
            return http.fatal() ? Outcome::Failed : Outcome::Ended;
        }
        const std::string *location = head.header("location");
        const bool redirect = head.status == 301 || head.status == 302 || head.status == 303 ||
                              head.status == 307 || head.status == 308;
        if (!redirect || !location)
            break;
        if (redirects == 10) {
            note(o.url.text + ": more than 10 redirects");
            return Outcome::Failed;
        }
        follow::Url next;
        if (std::string err = follow::resolve_location(url, *location, next); !err.empty()) {
            note(url.text + ": redirect to " + *location + ": " + err);
            return Outcome::Failed;
        }
        if (url.tls && !next.tls) {
            note(url.text + ": redirect to " + next.text + " refused: it leaves https for http");
            return Outcome::Failed;
        }
        if (next.tls != o.url.tls || next.host != o.url.host || next.port != o.url.port)
            lines = request_lines(false);
        url = next;
    }
    const std::string what = url.text + ": HTTP " + std::to_string(head.status) + " " + head.reason;
    if (head.status == 204) {
        if (o.verbose)
            note(what + ": the server ends the stream");
        return Outcome::Stop;
    }
    if (head.status != 200) {
        const std::string body = body_excerpt(http, within(2));
        note(what + (body.empty() ? "" : ": " + body));
        return Outcome::Failed;
    }
    const std::string *type = head.header("content-type");
    if (!is_event_stream(type)) {
        note(url.text + ": the answer is not an event stream (Content-Type: " +
             (type ? *type : "none") + ")");
        return Outcome::Failed;
    }
    if (o.verbose)
        note(what + ": connected" +
             (parser.last_event_id().empty() ? "" : ", after id " + parser.last_event_id()));
    return Outcome::Ended; /* connected: the caller reads */
}

/* One connection: opened, read until it ends, is silent for -k, or the run is over. */
Follower::Outcome Follower::connection()
{
    follow::ResponseHead head;
    parser.start_connection();
    if (Outcome out = connect(head); out != Outcome::Ended || head.status != 200)
        return out;
    std::string bytes;
    std::vector<sse::StreamEvent> events;
    for (;;) {
        bytes.clear();
        const Io r = http.read(bytes, o.keepalive > 0 ? within(o.keepalive) : end);
        if (r == Io::Timeout && Clock::now() >= end)
            return Outcome::Done;
        if (r != Io::Ok) {
            if (r == Io::Timeout)
                note(o.url.text + ": nothing received for " + std::to_string(o.keepalive) +
                     " s (-k): connecting again");
            else if (r == Io::Error)
                note(o.url.text + ": " + http.error());
            else if (o.verbose)
                note(o.url.text + ": the connection ended");
            return Outcome::Ended;
        }
        events.clear();
        const bool within_limit = parser.feed(bytes, events);
        for (const auto &e : events)
            if (!print(e))
                return Outcome::Done;
        if (!within_limit) {
            note(o.url.text + ": an event over 64 MiB: connecting again");
            return Outcome::Ended;
        }
    }
}

} // namespace

int main(int argc, char **argv)
{
    std::signal(SIGPIPE, SIG_IGN); /* a closed socket or output is an error return, not a kill */
    Follower f(parse_options(argc, argv));
    for (;;) {
        switch (f.connection()) {
        case Follower::Outcome::Stop:
        case Follower::Outcome::Done:
            return 0;
        case Follower::Outcome::Failed:
            return 1;
        case Follower::Outcome::Ended:
            break;
        }
        f.http.close();
        const long long ms = f.parser.retry_ms() >= 0 ? f.parser.retry_ms() : f.o.retry_ms;
        const auto wake = f.within(ms / 1000.0);
        if (f.o.verbose)
            f.note("connecting again in " + std::to_string(ms) + " ms");
        std::this_thread::sleep_until(wake);
        if (Clock::now() >= f.end)
            return 0;
    }
}
