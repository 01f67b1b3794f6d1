/* The sse-publish handler: POST an event to one or more channels, GET a channel's figures,
 * DELETE (close) channels. */
#include "src/httpd/module.h"

#include "sse/publisher.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/redis_cluster_state.h"
#include "src/httpd/subscription.h"
#include "src/httpd/token_check.h"

#include "http_protocol.h"
#include "http_request.h"

#include "apr_lib.h"
#include "apr_strings.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

BodyResult read_body(request_rec *r, apr_off_t limit, std::string &out)
{
    if (ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK) != OK)
        return BodyResult::ReadError;
    if (r->remaining > limit)
        return BodyResult::TooLarge;
    if (!ap_should_client_block(r))
        return BodyResult::Ok;
    /* One allocation for the usual body, from its Content-Length; capped, so that a client
     * that announces a large body and sends nothing does not hold that much per worker. */
    constexpr apr_off_t kReserveMax = 64 * 1024;
    if (r->remaining > 0)
        out.reserve(static_cast<std::size_t>(std::min(r->remaining, kReserveMax)));
    char buf[8192];
    for (;;) {
        long n = ap_get_client_block(r, buf, sizeof buf);
        if (n == 0)
            return BodyResult::Ok;
        if (n < 0)
            return BodyResult::ReadError;
        if (static_cast<apr_off_t>(out.size()) + n > limit)
            return BodyResult::TooLarge;
        out.append(buf, static_cast<std::size_t>(n));
    }
}

std::string media_type(request_rec *r)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    std::string m(ct ? ct : "", ct ? strcspn(ct, ";") : 0); /* one copy, not a byte at a time */
    std::size_t kept = 0;
    for (char c : m)
        if (!apr_isspace(c))
            m[kept++] = static_cast<char>(apr_tolower(c));
    m.resize(kept);
    return m;
}

int answer_unavailable(request_rec *r, const char *endpoint, const std::string &why)
{
    apr_table_setn(r->headers_out, "Retry-After",
                   apr_itoa(r->pool, kRedisRetryAfterSeconds));
    return answer_error(r, HTTP_SERVICE_UNAVAILABLE, "SSE0708", Endpoint{endpoint, APLOG_INFO},
                        why);
}

namespace {

/* The 201 answer, {"channels":[...],"id":"..."}: what nlohmann::json's dump() writes for it
 * (keys sorted), without building a json DOM on every publish: that took a fifth of the
 * instructions httpd spends on a publish (docs/benchmarks.md, "What a publish costs"). The
 * channel names and the id were validated (UTF-8, as append_json_string requires). */
std::string published_answer(const std::string &id, const std::vector<std::string> &channels)
{
    std::size_t bytes = 24 + id.size();
    for (const std::string &c : channels)
        bytes += c.size() + 3;
    std::string out;
    out.reserve(bytes); /* escapes aside (channel names and ids have few), one allocation */
    out = "{\"channels\":[";
    for (std::size_t i = 0; i < channels.size(); ++i) {
        if (i)
            out += ',';
        append_json_string(channels[i], out);
    }
    out += "],\"id\":";
    append_json_string(id, out);
    out += '}';
    return out;
}

/* GET: one channel's figures, across every process. */
int answer_channel_stats(request_rec *r, ModuleState *state, const std::vector<std::string> &channels)
{
    if (channels.size() != 1)
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0115", kPublish,
                            "GET gives the figures of one channel; name exactly one");
    announce_gone(state, state->registry.reap_dead(), "process-died");
    ChannelInfo info;
    if (!state->registry.channel(channels[0], &info))
        return answer_error(r, HTTP_NOT_FOUND, "SSE0116", kPublishQuiet,
                            "no channel \"" + channels[0] +
                                "\": nobody subscribed or published to it (or it was "
                                "forgotten to make room, see SSEMaxChannels)");
    Bus::ChannelHistory h = state->bus.channel_history(info.name);
    nlohmann::json j = {
        {"channel", info.name},
        {"subscribers", info.subscribers},
        {"events_retained", h.retained},
        {"last_event_id", h.last_id.empty() ? nlohmann::json() : nlohmann::json(h.last_id)},
        {"events_published", info.published},
        {"closed", info.closed},
        {"retry", info.retry_ms >= 0 ? nlohmann::json(info.retry_ms) : nlohmann::json()},
    };
    if (state->redis) /* every server's subscribers of it: only with SSERedis */
        j["cluster"] = cluster_channel_json(r, state, info.name, info.subscribers);
    return answer_json(r, HTTP_OK, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

/* DELETE: every subscriber of the channels gets an sse-close notice and its stream ends;
 * their history is dropped; reconnects are answered 204 until the next publish. With
 * SSERedis the close goes to every server through Redis, and each closes the channels it
 * knows when its reader reaches it; the answer gives this server's figures. */
int close_channels(request_rec *r, ModuleState *state, const std::vector<std::string> &channels)
{
    std::vector<std::string> existed;
    std::uint64_t subscribers = 0;
    for (const auto &c : channels) {
        ChannelInfo info;
        if (state->registry.channel(c, &info)) {
            existed.push_back(c);
            subscribers += info.subscribers;
        }
    }
    if (existed.empty())
        return answer_error(r, HTTP_NOT_FOUND, "SSE0116", kPublishQuiet,
                            "no such channel: nobody subscribed or published to it");
    nlohmann::json answer = {{"closed", existed}, {"subscribers", subscribers}};
    if (state->redis) {
        PublishAttempt a = submit_close(state, r->server, channels);
        if (a.outcome != PublishAttempt::Outcome::Published)
            return answer_unavailable(r, kPublishQuiet.name, a.error);
        answer["id"] = a.result.id;
    } else {
        answer["seq"] = sse::close_channels(state->bus, state->registry, existed, now_us()).result.seq;
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "SSE0117: closed %s (%" APR_UINT64_T_FMT
                  " subscribers)", apr_pstrdup(r->pool, nlohmann::json(existed).dump().c_str()),
                  subscribers);
    return answer_json(r, HTTP_OK, answer.dump());
}

/* A POST or DELETE over HTTP naming the presence channel: refused 403 (SSE0158), since its
 * readers trust its records to be mod_sse's own (who connected, from where): any location
 * allowed to publish could otherwise forge them or close the channel. Its figures (GET) stay
 * readable; the publish socket is trusted and never comes here. */
bool writes_presence(request_rec *r, const ModuleState *state,
                     const std::vector<std::string> &channels)
{
    if (state->presence_channel.empty() || r->method_number == M_GET)
        return false;
    for (const std::string &c : channels)
        if (c == state->presence_channel) {
            answer_error(r, HTTP_FORBIDDEN, "SSE0158", kPublish,
                         "the presence channel \"" + c + "\" is written by mod_sse only: it "
                         "cannot be published to or closed over HTTP",
                         &c);
            return true;
        }
    return false;
}

} // namespace

int publish_handler(request_rec *r)
{
    ModuleState *state = module_state(r);
    if (r->method_number != M_POST && r->method_number != M_GET &&
        r->method_number != M_DELETE) {
        apr_table_setn(r->headers_out, "Allow", "POST, GET, HEAD, DELETE");
        return answer_error(r, HTTP_METHOD_NOT_ALLOWED, "SSE0112", kPublish,
                            std::string("method ") + r->method +
                                " is not served here; publish with POST, read a channel's "
                                "figures with GET, close channels with DELETE");
    }
    const DirConfig &d = dir_config(r);
    Params query;
    RequestToken token;
    if (!query_params(r, query, kPublish) || !token_verified(r, query, TokenUse::Publish, token))
        return OK;
    if (r->method_number != M_POST) {
        std::vector<std::string> channels;
        if (!request_channels(r, nullptr, query, channels, kPublish) ||
            writes_presence(r, state, channels))
            return OK;
        if (!token_covers(r, token, channels, TokenUse::Publish))
            return OK;
        return r->method_number == M_GET ? answer_channel_stats(r, state, channels)
                                         : close_channels(r, state, channels);
    }

    std::string body;
    switch (read_body(r, d.max_message_size, body)) {
    case BodyResult::Ok:
        break;
    case BodyResult::TooLarge:
        /* The rest of the body is not read: end the connection after the answer. */
        r->connection->keepalive = AP_CONN_CLOSE;
        return answer_error(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "SSE0111", kPublish,
                            "the body is larger than SSEMaxMessageSize (" +
                                std::to_string(d.max_message_size) + " bytes)");
    case BodyResult::ReadError:
        r->connection->keepalive = AP_CONN_CLOSE;
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0114", kPublish,
                            "the request body could not be read");
    }

    PublishBody pub;
    std::string err = parse_publish(media_type(r), body, query, pub);
    if (!err.empty())
        return answer_error(r, HTTP_BAD_REQUEST, pub.json_too_deep ? "SSE0125" : "SSE0110",
                            kPublish, err);
    std::vector<std::string> channels;
    if (!request_channels(r, &pub.channels, query, channels, kPublish) ||
        writes_presence(r, state, channels))
        return OK;
    if (!token_covers(r, token, channels, TokenUse::Publish))
        return OK;
    /* After the access rules: one they refuse learns nothing of the location's types. A
     * retry-only publish (no data, no type) is no event a subscriber could filter. */
    if ((pub.fields.has_data || !pub.fields.event.empty()) &&
        !event_types_allowed(r, {pub.fields.event}, kPublish))
        return OK;

    PublishAttempt a = submit_event(state, r->server, channels, pub.fields, pub.audience);
    if (a.outcome == PublishAttempt::Outcome::Unavailable)
        return answer_unavailable(r, kPublishQuiet.name, a.error);
    if (a.outcome == PublishAttempt::Outcome::TooLarge)
        return answer_error(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "SSE0113", kPublish, a.error);
    if (a.outcome != PublishAttempt::Outcome::Published)
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0110", kPublish, a.error);
    const PublishResult &res = a.result;
    if (res.recovered_lock)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "SSE0202: a process died while publishing; the bus lock was recovered "
                      "and no committed event was lost");

    return answer_json(r, HTTP_CREATED, published_answer(res.id, channels));
}

} // namespace sse::httpd
