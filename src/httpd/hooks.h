/* src/httpd/hooks.h — the hooks mod_sse.c++ registers that live in a file of their own (a
 * hook of a few lines stays in mod_sse.c++). Each runs under guarded() where it can fail.
 */
#ifndef SSE_HTTPD_HOOKS_H
#define SSE_HTTPD_HOOKS_H

#include "src/httpd/module.h"

namespace sse::httpd {

/* generation.c++ — post_config, in the parent, once per configuration generation (the first,
 * checking pass does nothing): makes the generation's ModuleState (in pconf) with the bus and
 * the registry (shared_segment.h: kept across restarts), the presence budget (new each
 * generation) and the publish socket (started, kept or retired); says when the MPM cannot hold
 * SSEMaxSubscribers streams (mpm_sizing.h). */
int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);

/* location_mapping.c++ — no file system for mod_sse's locations: a request whose location
 * sections SetHandler one of mod_sse's handlers is not mapped to a file (no DocumentRoot
 * translation, no directory walk), and a path with %00 reaches the handler undecoded.
 * Registered in this order: note_walked_uri first of translate_name, translate_name last,
 * map_to_storage first. */
int pre_translate_name(request_rec *r);
int note_walked_uri(request_rec *r);
int translate_name(request_rec *r);
int map_to_storage(request_rec *r);

/* query_param_expr.c++ — the expr_lookup hook: %{query_param:name} for the ap_expr strings of
 * SSEChannel and SSEClientId; DECLINED for any other name. */
int expr_lookup(ap_expr_lookup_parms *parms);

} // namespace sse::httpd

#endif
