/* The sse-publish handler: POST an event to one or more channels. */
#include "src/httpd/module.h"

#include "sse/publisher.h"

#include "http_protocol.h"
#include "http_request.h"

#include "apr_lib.h"

#include <nlohmann/json.hpp>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

enum class BodyResult { Ok, TooLarge, ReadError };

/* Reads the whole request body (Content-Length or chunked) into `out`, at most `limit`
 * bytes. */
BodyResult read_body(request_rec *r, apr_off_t limit, std::string &out)
{
    if (ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK) != OK)
        return BodyResult::ReadError;
    if (r->remaining > limit)
        return BodyResult::TooLarge;
    if (!ap_should_client_block(r))
        return BodyResult::Ok;
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

/* "Application/JSON; charset=utf-8" gives "application/json". */
std::string media_type(request_rec *r)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    std::string m;
    for (const char *p = ct ? ct : ""; *p && *p != ';'; ++p)
        if (!apr_isspace(*p))
            m += static_cast<char>(apr_tolower(*p));
    return m;
}

} // namespace

int publish_handler(request_rec *r)
{
    ModuleState *state = module_state(r);
    if (r->method_number != M_POST) {
        apr_table_setn(r->headers_out, "Allow", "POST");
        return answer_error(r, HTTP_METHOD_NOT_ALLOWED, "SSE0112", kPublish,
                            std::string("method ") + r->method +
                                " is not served here; publish with POST");
    }
    const DirConfig &d = dir_config(r);
    Params query;
    if (!query_params(r, query, kPublish))
        return OK;

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
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0110", kPublish, err);
    std::vector<std::string> channels;
    if (!request_channels(r, &pub.channels, query, channels, kPublish))
        return OK;

    PublishAttempt a = publish_event(state->bus, channels, pub.fields, now_us());
    if (a.outcome == PublishAttempt::Outcome::TooLarge)
        return answer_error(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "SSE0113", kPublish, a.error);
    if (a.outcome != PublishAttempt::Outcome::Published)
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0110", kPublish, a.error);
    const PublishResult &res = a.result;
    if (res.recovered_lock)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "SSE0202: a process died while publishing; the bus lock was recovered "
                      "and no committed event was lost");

    nlohmann::json answer = {{"id", res.id}, {"channels", channels}};
    return answer_json(r, HTTP_CREATED, answer.dump());
}

} // namespace sse::httpd
