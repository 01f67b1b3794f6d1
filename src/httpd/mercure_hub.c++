/* The mercure-hub handler: Apache as a Mercure hub (docs/mercure.md).
 *
 * - POST publishes an update (a form with repeatable `topic`, `data`, `private`, `id`,
 *   `type`, `retry`) on the hub's bus channel (hub_channel()) with its topics; the answer
 *   is 200 text/plain with the update's id (urn:uuid:... unless the publisher gave one).
 *   With SSERedis it goes through Redis to every server (submit_update()), and is answered
 *   once Redis accepted it (503 when not). The subscription events stay on the server whose
 *   subscriber they announce (publish_subscription_events(), docs/mercure.md).
 *   It needs a token (SSETokenKey) whose mercure.publish selectors select every topic.
 * - GET subscribes with one or more `topic` selectors: a stream of that channel whose
 *   MercureFilter (the selectors, and the token's mercure.subscribe selectors for private
 *   updates) decides what it gets, everything else as sse-subscribe streams (serve_subscribe:
 *   the registry, replay, the hub or the blocking loop). Anonymous subscribers only with
 *   SSEMercureAnonymous on.
 * Runs on the request's worker.
 */
#include "src/httpd/module.h"

#include "sse/mercure_subscription.h"
#include "sse/mercure_topic.h"
#include "sse/publisher.h"
#include "src/httpd/mercure_hub.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/subscribe.h"
#include "src/httpd/subscription.h"
#include "src/httpd/token_check.h"

#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_core.h"

#include "apr_general.h"
#include "apr_strings.h"

#include <algorithm>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

constexpr Endpoint kHubSubscribe{"mercure subscribe", APLOG_WARNING};
constexpr Endpoint kHubPublish{"mercure publish", APLOG_ERR};
constexpr Endpoint kHubSubscriptions{"mercure subscriptions", APLOG_WARNING};

/* A random (version 4) UUID as an IRI: the id of an update its publisher gave none. */
std::string generated_id()
{
    unsigned char b[16];
    if (apr_generate_random_bytes(b, sizeof b) != APR_SUCCESS)
        throw std::runtime_error("no random bytes for an update's id");
    b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);
    b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);
    static const char hex[] = "0123456789abcdef";
    std::string id = "urn:uuid:";
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            id += '-';
        id += hex[b[i] >> 4];
        id += hex[b[i] & 0x0F];
    }
    return id;
}

/* The bus channel of the hub this request is for: SSEMercureHub's name, else the server's
 * name and the path of the section that configured the location (docs/mercure.md). */
std::string hub_channel(request_rec *r)
{
    const DirConfig &d = dir_config(r);
    if (d.mercure_hub)
        return mercure_hub_channel(d.mercure_hub);
    std::string name = r->server->server_hostname ? r->server->server_hostname : "";
    return mercure_hub_channel(name + (d.section_path ? d.section_path : ""));
}

/* The subscriber's topic selectors (`topic`, at least one, each a valid string), compiled
 * into `compiled` within the limits of what matching may cost; false when answered (400). */
bool read_selectors(request_rec *r, const Params &query, std::vector<std::string> &out,
                    TopicSelectorList &compiled)
{
    out = param_values(query, "topic");
    std::string bad;
    if (out.empty())
        bad = "a subscription needs at least one topic selector (the topic query parameter)";
    else if (out.size() > kMaxTopicsPerRequest)
        bad = "a subscription has at most " + std::to_string(kMaxTopicsPerRequest) +
              " topic selectors";
    for (std::size_t i = 0; bad.empty() && i < out.size(); ++i)
        bad = validate_mercure_string(out[i], "a topic selector");
    if (bad.empty()) {
        compiled = TopicSelectorList(out);
        bad = compiled.limit_error();
    }
    if (bad.empty())
        return true;
    answer_error(r, HTTP_BAD_REQUEST, "SSE0801", kHubSubscribe, bad);
    return false;
}

/* Where the subscriber resumes: the Last-Event-ID header, else lastEventID, else the
 * spellings sse-subscribe takes; `earliest` replays everything the bus holds. The answer
 * has a Last-Event-ID header only when the draft's two were used. False when answered
 * (400). */
bool read_resume(request_rec *r, const Params &query, SubscribeAsk &ask)
{
    const char *header = apr_table_get(r->headers_in, "Last-Event-ID");
    const std::string *param = param_first(query, "lastEventID");
    ask.resume_id = header || !param ? resume_id(header, query) : *param;
    ask.answer_last_event_id = (header || param) && !ask.resume_id.empty();
    std::string bad = ask.resume_id.size() > kMaxEventIdBytes
                          ? "the Last-Event-ID is longer than " +
                                std::to_string(kMaxEventIdBytes) + " bytes"
                          : validate_event_id(ask.resume_id);
    if (!bad.empty()) {
        answer_error(r, HTTP_BAD_REQUEST, "SSE0803", kHubSubscribe, "Last-Event-ID: " + bad);
        return false;
    }
    if (ask.resume_id == "earliest") {
        ask.earliest = true;
        ask.resume_id.clear();
    }
    return true;
}

/* With SSEMercureSubscriptions: the registry slot note that lists this subscriber's
 * subscriptions and announces them (sse/mercure_subscription.h), with a new subscriber id.
 * False when answered (400: too large for the slot). */
bool subscriber_note(request_rec *r, const std::vector<std::string> &selectors,
                     const std::string &payload, std::string &note)
{
    std::optional<std::string> encoded = encode_subscriber_note(
        MercureSubscriber{generated_id(), payload, selectors, hub_channel(r)});
    if (encoded) {
        note = std::move(*encoded);
        return true;
    }
    answer_error(r, HTTP_BAD_REQUEST, "SSE0810", kHubSubscribe,
                 "the subscription's topic selectors and the token's mercure.payload take more "
                 "than the " + std::to_string(kMaxSlotNoteBytes) +
                     " bytes a subscription may have where SSEMercureSubscriptions is on");
    return false;
}

int subscribe(request_rec *r, ModuleState *state)
{
    Params query;
    RequestToken token;
    SubscribeAsk ask;
    std::vector<std::string> selectors;
    TopicSelectorList compiled;
    const DirConfig &d = dir_config(r);
    if (!query_params(r, query, kHubSubscribe) ||
        !token_verified(r, query, TokenUse::Subscribe, token, d.mercure_anonymous != 0))
        return OK;
    /* With a key, token_verified() refused a missing token already (SSE0140) unless
     * anonymous subscribers are allowed. */
    if (!token.required && !d.mercure_anonymous) {
        apr_table_setn(r->headers_out, "WWW-Authenticate", "Bearer realm=\"mod_sse\"");
        return answer_error(r, HTTP_UNAUTHORIZED, "SSE0802", kHubSubscribe,
                            "this hub has no SSETokenKey to verify a token with, and serves no "
                            "anonymous subscriber (SSEMercureAnonymous off)");
    }
    if (!read_selectors(r, query, selectors, compiled) || !read_resume(r, query, ask) ||
        !token_covers(r, token, {}, TokenUse::Subscribe, &ask.token_expires))
        return OK;
    const bool has_claims = token.required && !token.anonymous;
    ask.mercure = std::make_shared<const MercureFilter>(
        std::move(compiled), has_claims ? &token.claims.subscribe : nullptr);
    ask.channels = {hub_channel(r)};
    if (d.mercure_subscriptions &&
        !subscriber_note(r, selectors, has_claims ? token.claims.payload : "", ask.note))
        return OK;
    return serve_subscribe(r, state, ask);
}

/* The update a publish form asks for (a field given twice: its first value, as the reference
 * hub takes it); false when answered (400). */
bool read_update(request_rec *r, const std::string &body, UpdateTopics &topics, EventFields &ev)
{
    Params form;
    std::string bad;
    if (media_type(r) != "application/x-www-form-urlencoded")
        bad = "an update is posted as application/x-www-form-urlencoded";
    else
        bad = parse_form(body, form);
    topics.topics = param_values(form, "topic");
    topics.is_private = std::any_of(form.begin(), form.end(),
                                    [](const auto &kv) { return kv.first == "private"; });
    const std::string *data = param_first(form, "data");
    ev.has_data = true;
    ev.data = data ? *data : "";
    if (const std::string *id = param_first(form, "id"))
        ev.id = *id;
    if (const std::string *type = param_first(form, "type"))
        ev.event = *type;
    const std::string *retry = param_first(form, "retry");
    if (retry && !retry->empty() && (ev.retry = parse_retry(*retry)) < 0 && bad.empty())
        bad = "retry \"" + *retry + "\" is not a number of milliseconds (ASCII digits)";
    if (bad.empty() && topics.topics.empty())
        bad = "an update needs at least one topic (the topic field)";
    if (bad.empty())
        return true;
    answer_error(r, HTTP_BAD_REQUEST, "SSE0805", kHubPublish, bad);
    return false;
}

int publish(request_rec *r, ModuleState *state)
{
    Params query;
    RequestToken token;
    if (!query_params(r, query, kHubPublish) ||
        !token_verified(r, query, TokenUse::Publish, token))
        return OK;
    if (!token.required)
        return answer_error(r, HTTP_FORBIDDEN, "SSE0804", kHubPublish,
                            "this hub has no SSETokenKey: nobody may publish to it");
    const DirConfig &d = dir_config(r);
    std::string body;
    switch (read_body(r, d.max_message_size, body)) {
    case BodyResult::Ok:
        break;
    case BodyResult::TooLarge:
        r->connection->keepalive = AP_CONN_CLOSE;
        return answer_error(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "SSE0808", kHubPublish,
                            "the body is larger than SSEMaxMessageSize (" +
                                std::to_string(d.max_message_size) + " bytes)");
    case BodyResult::ReadError:
        r->connection->keepalive = AP_CONN_CLOSE;
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0805", kHubPublish,
                            "the request body could not be read");
    }
    UpdateTopics topics;
    EventFields ev;
    if (!read_update(r, body, topics, ev))
        return OK;
    for (const std::string &topic : topics.topics)
        if (addresses_hub_namespace(topic))
            return answer_error(r, HTTP_BAD_REQUEST, "SSE0816", kHubPublish,
                                "topic \"" + topic + "\" is in the hub's own namespace "
                                "(/.well-known/mercure/...): only the hub publishes there");
    if (!TopicSelectorList(token.claims.publish).matches_all(topics.topics)) {
        apr_table_setn(r->headers_out, "WWW-Authenticate",
                       "Bearer realm=\"mod_sse\", error=\"insufficient_scope\"");
        return answer_error(r, HTTP_FORBIDDEN, "SSE0806", kHubPublish,
                            "the token's mercure.publish claim does not select every topic of "
                            "the update");
    }
    token_covers(r, token, {}, TokenUse::Publish); /* no channel: names its `sub` the user */
    if (ev.id.empty())
        ev.id = generated_id();
    PublishAttempt a = submit_update(state, r->server, hub_channel(r), topics, ev);
    if (a.outcome == PublishAttempt::Outcome::Unavailable)
        return answer_unavailable(r, kHubPublish.name, a.error);
    if (a.outcome == PublishAttempt::Outcome::TooLarge)
        return answer_error(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "SSE0808", kHubPublish, a.error);
    if (a.outcome != PublishAttempt::Outcome::Published)
        return answer_error(r, HTTP_BAD_REQUEST, "SSE0807", kHubPublish, a.error);
    if (a.result.recovered_lock)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "SSE0202: a process died while publishing; the bus lock was recovered "
                      "and no committed event was lost");
    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rputs(a.result.id.c_str(), r);
    return OK;
}

/* The request's path as the client sent it, percent-encoded (a subscription's topic holds
 * %2F: r->uri has it decoded). */
std::string request_path(request_rec *r)
{
    std::string_view u = r->unparsed_uri ? r->unparsed_uri : "";
    if (!u.empty() && u[0] != '/') { /* absolute form: scheme://authority/path */
        const std::size_t authority = u.find("://");
        const std::size_t slash =
            authority == std::string_view::npos ? authority : u.find('/', authority + 3);
        u = slash == std::string_view::npos ? std::string_view("/") : u.substr(slash);
    }
    return std::string(u.substr(0, u.find_first_of("?#")));
}

bool is_subscriptions_path(std::string_view path)
{
    return path.substr(0, kSubscriptionsPath.size()) == kSubscriptionsPath &&
           (path.size() == kSubscriptionsPath.size() || path[kSubscriptionsPath.size()] == '/');
}

/* Every Mercure subscriber of the hub on `channel`, in every process (the registry's slot
 * notes): another hub's subscribers are not this hub's to list. */
std::vector<MercureSubscriber> active_subscribers(ModuleState *state, const std::string &channel)
{
    std::vector<MercureSubscriber> out;
    for (const SubscriberInfo &who : state->registry.noted())
        if (std::optional<MercureSubscriber> s = decode_subscriber_note(who.note))
            if (s->hub == channel)
                out.push_back(std::move(*s));
    return out;
}

/* The id of the newest update the hub's channel holds ("earliest" when none): the
 * subscriptions API's lastEventID, to reconcile what it listed with what comes next. */
std::string newest_update_id(ModuleState *state, const std::string &channel)
{
    BusReader reader(state->bus, ChannelSet({channel}));
    reader.start_earliest(HistoryLimits{1, 0}, now_us());
    BusEvent e;
    if (reader.next(&e) == BusReader::Next::Event)
        return e.id;
    return "earliest";
}

/* The body of a subscriptions API answer; false when answered (404: no such subscription). */
bool subscriptions_body(request_rec *r, ModuleState *state, const SubscriptionsQuery &q,
                        const std::string &path, std::string &body)
{
    /* Streams of dead children are freed (and their ends announced) first, then the cursor is
     * read, then the list: an event after the cursor may repeat what the list shows, none
     * that changes it is missed. */
    announce_gone(state, state->registry.reap_dead(), "process-died");
    const std::string channel = hub_channel(r);
    const std::string last = newest_update_id(state, channel);
    const std::vector<MercureSubscriber> subscribers = active_subscribers(state, channel);
    if (!q.subscriber) {
        body = subscriptions_collection(subscribers, q.topic, path, last);
        return true;
    }
    std::optional<std::string> one = subscription_answer(subscribers, *q.topic, *q.subscriber, last);
    if (one) {
        body = std::move(*one);
        return true;
    }
    answer_error(r, HTTP_NOT_FOUND, "SSE0815", kHubSubscriptions,
                 "no active subscription has this topic selector and subscriber");
    return false;
}

/* GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]: the active subscriptions,
 * for a token whose mercure.subscribe selectors select the path (as the reference hub). */
int subscriptions_api(request_rec *r, ModuleState *state, const std::string &path)
{
    if (!dir_config(r).mercure_subscriptions)
        return answer_error(r, HTTP_NOT_FOUND, "SSE0814", kHubSubscriptions,
                            "the subscriptions API is off at this hub (SSEMercureSubscriptions)");
    std::optional<SubscriptionsQuery> q =
        parse_subscriptions_path(std::string_view(path).substr(kSubscriptionsPath.size()));
    if (!q)
        return answer_error(r, HTTP_NOT_FOUND, "SSE0814", kHubSubscriptions,
                            "not a subscriptions resource: .../subscriptions, "
                            ".../subscriptions/{topic} or .../subscriptions/{topic}/{subscriber}, "
                            "each part percent-encoded whole");
    Params query;
    RequestToken token;
    if (!query_params(r, query, kHubSubscriptions) ||
        !token_verified(r, query, TokenUse::Subscribe, token))
        return OK;
    if (!token.required)
        return answer_error(r, HTTP_FORBIDDEN, "SSE0812", kHubSubscriptions,
                            "this hub has no SSETokenKey: the subscriptions API needs a token");
    if (!TopicSelectorList(token.claims.subscribe).matches_any({path}))
        return answer_error(r, HTTP_FORBIDDEN, "SSE0813", kHubSubscriptions,
                            "the token's mercure.subscribe claim does not select " + path);
    token_covers(r, token, {}, TokenUse::Subscribe); /* no channel: names its `sub` the user */
    std::string body;
    if (!subscriptions_body(r, state, *q, path, body))
        return OK;
    ap_set_content_type(r, "application/ld+json");
    apr_table_setn(r->headers_out, "Cache-Control", "must-revalidate");
    ap_rputs(body.c_str(), r);
    return OK;
}

} // namespace

void publish_subscription_events(ModuleState *state, const std::string &note, bool active)
{
    std::optional<MercureSubscriber> s = decode_subscriber_note(note);
    if (!s)
        return;
    for (const std::string &selector : s->selectors) {
        UpdateTopics topics;
        topics.topics = {subscription_topic(selector, s->id)};
        topics.is_private = true;
        EventFields ev;
        ev.has_data = true;
        try {
            ev.data = subscription_document(*s, selector, active, true);
            ev.id = generated_id();
            PublishAttempt a =
                publish_update(state->bus, &state->registry, s->hub, topics, ev, now_us());
            if (a.outcome != PublishAttempt::Outcome::Published)
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                             "SSE0811: Mercure subscription event not published: %s",
                             a.error.c_str());
        } catch (const std::exception &e) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                         "SSE0811: Mercure subscription event not published: %s", e.what());
        }
    }
}

int mercure_hub_handler(request_rec *r)
{
    ModuleState *state = module_state(r);
    if (r->method_number == M_GET) {
        const std::string path = request_path(r);
        return is_subscriptions_path(path) ? subscriptions_api(r, state, path)
                                           : subscribe(r, state);
    }
    if (r->method_number == M_POST)
        return publish(r, state);
    if (r->method_number == M_OPTIONS) {
        /* A CORS preflight gets this answer; its Access-Control-* headers come from the
         * configuration (docs/mercure.md). */
        if (int rv = ap_discard_request_body(r); rv != OK)
            return rv;
        ap_allow_methods(r, REPLACE_ALLOW, "GET", "POST", "OPTIONS",
                         static_cast<const char *>(nullptr));
        return ap_send_http_options(r);
    }
    apr_table_setn(r->headers_out, "Allow", "GET, HEAD, POST, OPTIONS");
    return answer_error(r, HTTP_METHOD_NOT_ALLOWED, "SSE0809", kHubPublish,
                        std::string("method ") + r->method +
                            " is not served here; subscribe with GET, publish with POST");
}

} // namespace sse::httpd
