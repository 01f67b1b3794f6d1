/* src/httpd/mercure_hub.h — what the mercure-hub handler (mercure_hub.c++, docs/mercure.md)
 * gives the rest of the glue: the subscription events a Mercure subscriber's stream
 * publishes when it begins and ends (Subscription, src/httpd/subscription.h). */
#ifndef SSE_HTTPD_MERCURE_HUB_H
#define SSE_HTTPD_MERCURE_HUB_H

#include "src/httpd/module.h"

#include <string>

namespace sse::httpd {

/* Publishes one private update per selector of the subscriber a registry slot's `note` holds
 * (sse/mercure_subscription.h), on topic /.well-known/mercure/subscriptions/{topic}/{subscriber},
 * with `active`, on this server's bus only, also with SSERedis: the subscriptions API lists
 * this server's subscribers, and a server that dies whole announces no ends, so they stay per
 * server (docs/redis.md, "Mercure updates"). A note of another kind publishes nothing. Takes
 * the bus's and the registry's locks (never from the hub's I/O thread); logs failures
 * (SSE0811), never throws. */
void publish_subscription_events(ModuleState *state, const std::string &note, bool active);

} // namespace sse::httpd

#endif
