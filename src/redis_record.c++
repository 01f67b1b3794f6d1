#include "sse/redis_record.h"

#include "sse/mercure_subscription.h"
#include "sse/mercure_topic.h"
#include "sse/presence.h"

#include <charconv>
#include <cstdint>
#include <limits>

namespace sse {

namespace {

bool parse_decimal(std::string_view s, std::uint64_t *out)
{
    if (s.empty())
        return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && end == s.data() + s.size();
}

std::string join(const std::vector<std::string> &names)
{
    std::string out;
    for (const auto &n : names) {
        if (!out.empty())
            out += ',';
        out += n;
    }
    return out;
}

constexpr const char *kUrlForm =
    "expected redis://[[user]:password@]host[:port][/db] or "
    "unix:/path/to/redis.sock[?[user=U&]password=P[&db=N]]";

/* The database number of a URL ("0" to "1000000"; Redis refuses at SELECT one it lacks). */
std::string parse_db(std::string_view text, RedisUrl *url)
{
    std::uint64_t db = 0;
    if (!parse_decimal(text, &db) || db > 1000000)
        return "database \"" + std::string(text) + "\" is not a number; " + kUrlForm;
    url->db = static_cast<int>(db);
    return {};
}

/* "user=U&password=P&db=N" (each optional, no escapes: a password with '&' cannot be given). */
std::string parse_unix_query(std::string_view query, RedisUrl *url)
{
    while (!query.empty()) {
        const std::size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        const std::size_t eq = pair.find('=');
        const std::string_view name = pair.substr(0, eq);
        const std::string_view value = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
        if (name == "db") {
            if (std::string err = parse_db(value, url); !err.empty())
                return err;
        } else if (name == "user") {
            url->user = std::string(value);
        } else if (name == "password") {
            url->password = std::string(value);
            url->has_password = true;
        } else {
            return "unknown parameter \"" + std::string(name) + "\" after '?'; " + kUrlForm;
        }
    }
    return {};
}

/* "host", "host:port", "[v6]" or "[v6]:port" into url->host and url->port. */
std::string parse_host_port(std::string_view hp, RedisUrl *url)
{
    std::string_view port;
    if (!hp.empty() && hp.front() == '[') {
        std::size_t close = hp.find(']');
        if (close == std::string_view::npos)
            return "an IPv6 address lacks its closing ']'";
        url->host = std::string(hp.substr(1, close - 1));
        std::string_view rest = hp.substr(close + 1);
        if (!rest.empty() && rest.front() != ':')
            return "unexpected \"" + std::string(rest) + "\" after the IPv6 address";
        port = rest.empty() ? rest : rest.substr(1);
        if (!rest.empty() && port.empty())
            return "the port after ':' is empty";
    } else {
        std::size_t colon = hp.find(':');
        url->host = std::string(hp.substr(0, colon));
        if (colon != std::string_view::npos) {
            port = hp.substr(colon + 1);
            if (port.empty())
                return "the port after ':' is empty";
        }
    }
    if (url->host.empty())
        return "no host";
    std::uint64_t p = 0;
    if (!port.empty() && (!parse_decimal(port, &p) || p < 1 || p > 65535))
        return "port \"" + std::string(port) + "\" is not a number from 1 to 65535";
    if (!port.empty())
        url->port = static_cast<int>(p);
    return {};
}

} // namespace

std::string RedisUrl::display() const
{
    if (!socket_path.empty())
        return "unix:" + socket_path + (db ? "?db=" + std::to_string(db) : "");
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return "redis://" + h + ":" + std::to_string(port) + "/" + std::to_string(db);
}

std::string parse_redis_url(std::string_view text, RedisUrl *out)
{
    RedisUrl url;
    constexpr std::string_view kUnix = "unix:", kRedis = "redis://";
    if (text.substr(0, kUnix.size()) == kUnix) {
        std::string_view rest = text.substr(kUnix.size());
        const std::size_t q = rest.find('?');
        url.socket_path = std::string(rest.substr(0, q));
        if (url.socket_path.empty() || url.socket_path.front() != '/')
            return std::string("the socket path after unix: must be absolute; ") + kUrlForm;
        if (q != std::string_view::npos)
            if (std::string err = parse_unix_query(rest.substr(q + 1), &url); !err.empty())
                return err;
        *out = url;
        return {};
    }
    if (text.substr(0, kRedis.size()) != kRedis)
        return std::string("unknown scheme; ") + kUrlForm + " (rediss:// needs TLS, which "
               "Debian 12's hiredis lacks: see docs/redis.md)";
    std::string_view rest = text.substr(kRedis.size());
    std::size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
        std::string_view cred = rest.substr(0, at);
        std::size_t colon = cred.find(':');
        if (colon == std::string_view::npos)
            return std::string("the credentials before '@' need a ':' before the password; ") +
                   kUrlForm;
        url.user = std::string(cred.substr(0, colon));
        url.password = std::string(cred.substr(colon + 1));
        url.has_password = true;
        rest = rest.substr(at + 1);
    }
    std::size_t slash = rest.find('/');
    std::string err = parse_host_port(rest.substr(0, slash), &url);
    if (!err.empty())
        return err + "; " + kUrlForm;
    if (slash != std::string_view::npos && slash + 1 < rest.size())
        if (std::string err = parse_db(rest.substr(slash + 1), &url); !err.empty())
            return err;
    *out = url;
    return {};
}

std::string redis_url_for_log(std::string_view text)
{
    constexpr std::string_view kRedis = "redis://";
    if (text.substr(0, kRedis.size()) == kRedis) {
        const std::size_t at = text.rfind('@');
        if (at != std::string_view::npos)
            return std::string(kRedis) + "(credentials hidden)" + std::string(text.substr(at));
        return std::string(text);
    }
    const std::size_t q = text.find('?');
    return q == std::string_view::npos ? std::string(text)
                                       : std::string(text.substr(0, q)) + "?(parameters hidden)";
}

std::string redis_stream_key(std::string_view prefix) { return std::string(prefix) + "stream"; }

std::string redis_epoch_key(std::string_view prefix) { return std::string(prefix) + "epoch"; }

std::string StreamId::text() const { return std::to_string(ms) + "-" + std::to_string(seq); }

std::int64_t entry_time_us(const StreamId &id, std::int64_t now_us)
{
    const std::uint64_t now_ms = now_us > 0 ? static_cast<std::uint64_t>(now_us / 1000) : 0;
    const std::uint64_t off = id.ms > now_ms ? id.ms - now_ms : now_ms - id.ms;
    if (off > static_cast<std::uint64_t>(kEntryClockSlackMs))
        return now_us;
    return static_cast<std::int64_t>(id.ms) * 1000;
}

bool parse_stream_id(std::string_view text, StreamId *out)
{
    std::size_t dash = text.find('-');
    if (dash == std::string_view::npos)
        return false;
    StreamId id;
    if (!parse_decimal(text.substr(0, dash), &id.ms) || !parse_decimal(text.substr(dash + 1), &id.seq))
        return false;
    *out = id;
    return true;
}

namespace {

/* The fields an event and an update share, in the order of the layout. */
void encode_event_fields(const EventFields &ev, std::vector<std::pair<std::string, std::string>> &f)
{
    if (!ev.id.empty())
        f.emplace_back("id", ev.id);
    if (!ev.event.empty())
        f.emplace_back("event", ev.event);
    if (ev.has_data)
        f.emplace_back("data", ev.data);
    if (ev.retry >= 0)
        f.emplace_back("retry", std::to_string(ev.retry));
}

void encode_update(const StreamRecord &r, std::vector<std::pair<std::string, std::string>> &f)
{
    f.emplace_back("kind", "update");
    f.emplace_back("hub", r.hub);
    std::string topics;
    for (const auto &t : r.update.topics)
        topics.append(t).push_back('\n');
    f.emplace_back("topics", std::move(topics));
    if (r.update.is_private)
        f.emplace_back("private", "1");
    encode_event_fields(r.fields, f);
}

/* "a\nb\n": each topic ends with a newline. Bounded while it is read, as a publish is: an
 * entry anyone with write access to the key wrote must not cost the reader more than an
 * update its hub would take (a value of newlines would otherwise be ~33 times its size in
 * strings, and a reader out of memory reads the same entry again when restarted). */
std::string decode_topics(std::string_view value, std::vector<std::string> &out)
{
    if (!value.empty() && value.back() != '\n')
        return "the topics do not end with a newline";
    for (std::size_t start = 0; start < value.size();) {
        const std::size_t nl = value.find('\n', start);
        if (out.size() == kMaxTopicsPerRequest)
            return "more than " + std::to_string(kMaxTopicsPerRequest) + " topics";
        if (nl - start > kMaxTopicBytes)
            return "a topic longer than " + std::to_string(kMaxTopicBytes) + " bytes";
        out.emplace_back(value.substr(start, nl - start));
        start = nl + 1;
    }
    return {};
}

constexpr std::uint64_t kMaxTimeMs = std::numeric_limits<std::int64_t>::max() / 1000;

/* One field into *r: an error sentence for a value this version cannot take, else empty (a
 * field it does not know is ignored). */
std::string decode_field(std::string_view name, std::string_view value, StreamRecord *r,
                         bool *kind_seen)
{
    if (name == "kind") {
        if (value != "event" && value != "close" && value != "update" && value != "presence")
            return "unknown kind \"" + std::string(value) + "\"";
        r->kind = value == "close"      ? StreamRecord::Kind::Close
                  : value == "update"   ? StreamRecord::Kind::Update
                  : value == "presence" ? StreamRecord::Kind::Presence
                                        : StreamRecord::Kind::Event;
        *kind_seen = true;
    } else if (name == "channels") {
        append_channel_list(value, r->channels);
    } else if (name == "only") {
        Audience::append_list(value, r->audience.only);
    } else if (name == "except") {
        Audience::append_list(value, r->audience.except);
    } else if (name == "id") {
        r->fields.id = std::string(value);
    } else if (name == "event") {
        r->fields.event = std::string(value);
    } else if (name == "data") {
        r->fields.data = std::string(value);
        r->fields.has_data = true;
    } else if (name == "retry") {
        r->fields.retry = parse_retry(value);
        if (r->fields.retry < 0)
            return "retry \"" + std::string(value) + "\" is not a number of milliseconds";
    } else if (name == "hub") {
        r->hub = std::string(value);
    } else if (name == "topics") {
        return decode_topics(value, r->update.topics);
    } else if (name == "private") {
        if (value != "1")
            return "private \"" + std::string(value) + "\" is not 1";
        r->update.is_private = true;
    } else if (name == "server") {
        r->server = std::string(value);
    } else if (name == "token") {
        r->token = std::string(value);
    } else if (name == "time") {
        /* Not a number (or past what µs can hold): left 0, which a presence entry refuses
         * (check_presence_entry) and any other kind ignores, as a field it does not know. */
        std::uint64_t ms = 0;
        if (parse_decimal(value, &ms) && ms <= kMaxTimeMs)
            r->time_ms = static_cast<std::int64_t>(ms);
    } else if (name == "seq") {
        if (!parse_decimal(value, &r->seq))
            r->seq = 0;
    }
    return {};
}

/* What an update entry must hold besides its fields (see the layout). */
std::string check_update_entry(const StreamRecord &r)
{
    const std::string_view prefix = kMercureChannelPrefix;
    if (r.hub.compare(0, prefix.size(), prefix) != 0 || r.hub.size() > kMaxChannelNameBytes)
        return "an update whose hub \"" + r.hub + "\" is no hub's channel";
    if (r.update.topics.empty())
        return "an update without topics";
    /* Only a hub publishes there, and its subscription events stay on its own bus: such an
     * entry could only forge them on every server. */
    for (const std::string &topic : r.update.topics)
        if (addresses_hub_namespace(topic))
            return "an update with a topic in the hub's own namespace (\"" + topic + "\")";
    if (r.fields.id.empty())
        return "an update without id";
    if (!r.channels.empty() || !r.audience.everyone())
        return "an update with channels or clients";
    return {};
}

/* What a presence entry must hold besides its fields (see the layout). */
std::string check_presence_entry(const StreamRecord &r)
{
    if (r.channels.size() != 1)
        return "a presence record without exactly one channel";
    if (!is_presence_event_type(r.fields.event))
        return "a presence record of type \"" + r.fields.event + "\"";
    if (!r.fields.has_data)
        return "a presence record without data";
    if (r.server.empty() || r.token.empty())
        return "a presence record without its server and token";
    if (r.time_ms <= 0 || r.seq == 0)
        return "a presence record without its time and seq (decimal numbers, not 0)";
    if (!r.fields.id.empty() || r.fields.retry >= 0 || !r.audience.everyone())
        return "a presence record with an id, a retry or clients";
    return {};
}

void encode_presence(const StreamRecord &r, std::vector<std::pair<std::string, std::string>> &f)
{
    f.emplace_back("kind", "presence");
    f.emplace_back("channels", join(r.channels));
    f.emplace_back("event", r.fields.event);
    f.emplace_back("data", r.fields.data);
    f.emplace_back("server", r.server);
    f.emplace_back("token", r.token);
    f.emplace_back("time", std::to_string(r.time_ms));
    f.emplace_back("seq", std::to_string(r.seq));
}

} // namespace

std::vector<std::pair<std::string, std::string>> encode_stream_record(const StreamRecord &r)
{
    std::vector<std::pair<std::string, std::string>> f;
    if (r.kind == StreamRecord::Kind::Update) {
        encode_update(r, f);
        return f;
    }
    if (r.kind == StreamRecord::Kind::Presence) {
        encode_presence(r, f);
        return f;
    }
    f.emplace_back("kind", r.kind == StreamRecord::Kind::Close ? "close" : "event");
    f.emplace_back("channels", join(r.channels));
    if (r.kind == StreamRecord::Kind::Close)
        return f;
    if (!r.audience.only.empty())
        f.emplace_back("only", join(r.audience.only));
    if (!r.audience.except.empty())
        f.emplace_back("except", join(r.audience.except));
    encode_event_fields(r.fields, f);
    return f;
}

std::string decode_stream_record(const std::vector<std::pair<std::string_view, std::string_view>> &fields,
                                 StreamRecord *out)
{
    StreamRecord r;
    bool kind_seen = false;
    for (const auto &[name, value] : fields)
        if (std::string error = decode_field(name, value, &r, &kind_seen); !error.empty())
            return error;
    if (!kind_seen)
        return "no kind";
    if (r.kind == StreamRecord::Kind::Update) {
        if (std::string error = check_update_entry(r); !error.empty())
            return error;
    } else if (r.kind == StreamRecord::Kind::Presence) {
        if (std::string error = check_presence_entry(r); !error.empty())
            return error;
    } else if (r.channels.empty()) {
        return "no channels";
    }
    *out = std::move(r);
    return {};
}

} // namespace sse
