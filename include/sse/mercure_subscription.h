/* sse/mercure_subscription.h — Mercure's active subscriptions (the draft's "Active
 * Subscriptions", as the reference hub serves `topic` selectors; docs/mercure.md): what one
 * subscription is, how it is kept with its stream's registry slot, and the JSON-LD documents
 * of its events and of the subscriptions API.
 *
 * A Mercure subscriber has a hub-generated id (an IRI) and one or more topic selectors; each
 * selector is one subscription, whose resource is
 *   /.well-known/mercure/subscriptions/{topic}/{subscriber}
 * (the two values percent-encoded as a whole, RFC 6570 simple expansion: every byte but
 * ALPHA, DIGIT, '-', '.', '_', '~'). The hub publishes that topic, private, with the
 * document {"@context", "id", "type":"Subscription", "topic", "subscriber", "active",
 * "payload"?} when the subscriber connects (active) and when it ends (not active).
 *
 * Cross-process store: the subscriber is encoded into its stream's registry slot note
 * (Registry::join, at most kMaxSlotNoteBytes), so every child lists every child's
 * subscriptions (Registry::noted) and whoever frees a slot (the stream's end, a reap of a dead
 * child, a replacing join) gets it back to announce the end. A subscriber whose note would not
 * fit is refused by the caller (SSE0810).
 *
 * Pure code, no I/O.
 */
#ifndef SSE_MERCURE_SUBSCRIPTION_H
#define SSE_MERCURE_SUBSCRIPTION_H

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

/* The hub's fixed path of the subscriptions (the draft fixes the hub at /.well-known/mercure). */
constexpr std::string_view kSubscriptionsPath = "/.well-known/mercure/subscriptions";

struct MercureSubscriber {
    std::string id;                     /* hub-generated, unique per connection */
    std::string payload;                /* the token's mercure.payload, JSON text; "": none */
    std::vector<std::string> selectors; /* validated: no NUL (validate_mercure_string) */
    std::string hub;                    /* the hub's bus channel (mercure_hub_channel()): its
                                           events go there, and only its API lists it */
};

/* The slot note of `s`; nullopt when it is longer than kMaxSlotNoteBytes. */
std::optional<std::string> encode_subscriber_note(const MercureSubscriber &s);
/* The subscriber a note holds; nullopt when the note is not one (another kind of stream). */
std::optional<MercureSubscriber> decode_subscriber_note(std::string_view note);

/* `s` percent-encoded as a whole (RFC 6570 simple string expansion). */
std::string percent_encode(std::string_view s);

/* Whether an update's topic addresses the hub's reserved namespace (/.well-known/mercure and
 * below), where only the hub publishes (its subscription events): a publish naming one is
 * refused, or a publisher could forge them. As the draft says, the topic is resolved against
 * the hub's URL (https://<host>/.well-known/mercure) and its path compared, after decoding the
 * %XX of unreserved characters and removing dot segments, whatever the scheme and authority:
 * `https://any.host/.well-known/mercure/...`, `/.well-known/%6Dercure/...`,
 * `/x/../.well-known/mercure`, `https:mercure/...` all do; `urn:...`, `?/.well-known/mercure`
 * (a query) do not. One departure from the draft: a relative path without a scheme (`mercure`,
 * `mercure/subscriptions/...`) is a raw string that no selector resolves (this hub matches
 * topics as written, sse/mercure_topic.h), so it is not refused. '\' counts as '/' where the
 * URL Standard says so (http, https, ws, wss, ftp, file and relative references). */
bool addresses_hub_namespace(std::string_view topic);

/* The topic (and id) of subscription `selector` of `subscriber`. */
std::string subscription_topic(std::string_view selector, std::string_view subscriber);

/* The JSON-LD document of subscription `selector` of `s` (with "@context" when standalone:
 * an event, a single-subscription answer; without inside a collection). */
std::string subscription_document(const MercureSubscriber &s, const std::string &selector,
                                  bool active, bool standalone);

/* What a subscriptions API path asks for: the part of the path after kSubscriptionsPath,
 * still percent-encoded ("", "/{topic}" or "/{topic}/{subscriber}"). */
struct SubscriptionsQuery {
    std::optional<std::string> topic;      /* decoded */
    std::optional<std::string> subscriber; /* decoded; only with a topic */
};
/* nullopt: not a subscriptions path (another segment count, an empty or badly encoded
 * segment, bytes or a decoded segment that are not UTF-8). */
std::optional<SubscriptionsQuery> parse_subscriptions_path(std::string_view rest);

/* The collection document of `subscribers`' subscriptions (those whose selector is `*topic`
 * when given), with the request's path as `id` and `last_event_id` as "lastEventID". */
std::string subscriptions_collection(const std::vector<MercureSubscriber> &subscribers,
                                     const std::optional<std::string> &topic, std::string_view id,
                                     const std::string &last_event_id);
/* The document of the subscription `topic` of `subscriber` with "lastEventID"; nullopt when
 * there is none (404). */
std::optional<std::string> subscription_answer(const std::vector<MercureSubscriber> &subscribers,
                                               const std::string &topic,
                                               const std::string &subscriber,
                                               const std::string &last_event_id);

} // namespace sse

#endif
