/* src/httpd/subscribe.h — serving an accepted subscribe, for every handler that holds
 * streams: sse-subscribe (channels) and mercure-hub (topics, on the hub's channel).
 *
 * serve_subscribe() takes a request whose checks passed (token, channels, resume id) and does
 * the rest as sse-subscribe always did: the bus position then the registry slot
 * (sse/stream_open.h), the refusals of a stream that is not opened (204, 409, 503), the
 * stream's headers, its first bytes and replay on the worker, then the hub (event MPM) or the
 * blocking loop until it ends. Runs on the request's worker; returns the handler's status.
 */
#ifndef SSE_HTTPD_SUBSCRIBE_H
#define SSE_HTTPD_SUBSCRIBE_H

#include "src/httpd/module.h"

#include "sse/mercure_topic.h"

#include <memory>
#include <string>
#include <vector>

namespace sse::httpd {

/* What a subscribe asks for, once every check passed. */
struct SubscribeAsk {
    std::vector<std::string> channels;
    apr_time_t token_expires = 0; /* a stream whose token has exp ends then; 0: none */
    std::string resume_id;        /* "" with earliest: live only */
    bool earliest = false;        /* replay everything retained (Mercure's lastEventID=earliest) */
    std::string client_id;
    std::vector<std::string> event_types; /* ?event=; empty: every type */
    std::shared_ptr<const MercureFilter> mercure; /* a Mercure subscriber's selectors */
    std::string note; /* kept with the registry slot: a Mercure subscription's (listed, announced) */
    /* Mercure's reconciliation: answer a `Last-Event-ID` header naming the id just before the
     * first event sent: resume_id when the walk that placed the reader found it, else
     * `earliest`. Only when the subscriber asked for an id (or earliest). */
    bool answer_last_event_id = false;
};

int serve_subscribe(request_rec *r, ModuleState *state, SubscribeAsk &ask);

} // namespace sse::httpd

#endif
