/* src/httpd/shared_segment.h — the shared memory segments that outlive a configuration
 * generation: the event bus (sse/bus.h) and the subscriber registry (sse/registry.h), both
 * opened by one routine, open_segment().
 *
 * Life cycle (the same for both segments)
 * - Who creates: the parent, in post_config of the second configuration pass (the first pass
 *   only checks the configuration and opens nothing). The segment is anonymous apr_shm in the
 *   parent's process pool (s->process->pool), which outlives every generation; the apr_shm_t
 *   pointer is kept there as userdata under the segment's key (an APR type, stable across
 *   module versions: everything else is rebuilt per generation).
 * - Who attaches: the parent, right after creating it or, at a restart, on finding it under the
 *   key. Children and the publish socket's daemon inherit the mapping by fork and attach
 *   nothing themselves.
 * - Graceful or SIGHUP restart: post_config runs again in the same parent; the segment found
 *   under the key is attached as it is, with its contents (the bus keeps every event, the
 *   registry the streams the old generation's children still hold while they finish). If it
 *   does not hold this module's layout (a module of another layout version left it), a new,
 *   empty one is made and kept under the key; the old one stays mapped by the old children
 *   (and by the parent, until it exits).
 * - Size change (SSEBusSize, SSEMaxSubscribers, SSEMaxChannels): a restart keeps the segment
 *   and its size (open_bus and open_registry log that a stop and start is needed); the new
 *   size applies at the next start.
 * - Stop: the parent's process pool is destroyed as httpd exits, which unmaps the segment;
 *   anonymous shared memory is gone once the last child mapping it has exited.
 *
 * Everything here runs in the parent, in post_config, single-threaded.
 */
#ifndef SSE_HTTPD_SHARED_SEGMENT_H
#define SSE_HTTPD_SHARED_SEGMENT_H

#include "src/httpd/module.h"

#include <cstddef>
#include <functional>
#include <string>

namespace sse::httpd {

/* What open_segment needs to know of one segment. */
struct SegmentSpec {
    const char *key;      /* the process pool's userdata key that keeps it across restarts */
    const char *name;     /* for the log lines: "event bus", "subscriber registry" */
    const char *sized_by; /* for the log lines: the directives that set its size */
    std::size_t size;     /* the size this configuration asks for */
    /* Takes [base, base + size) as the layout it holds: false, and why in *err, when it holds
     * no layout of this module's version. */
    std::function<bool(void *base, std::size_t size, std::string *err)> attach;
    /* Lays out new memory for attach(); "" or why it cannot. */
    std::function<std::string(void *base, std::size_t size)> format;
};

/* How open_segment found the segment. */
struct OpenedSegment {
    bool kept = false;    /* an earlier generation's, kept across a restart */
    std::size_t size = 0; /* its size: when kept, it may differ from SegmentSpec::size */
};

/* Attaches the segment kept under spec.key, or creates, formats and attaches a new one of
 * spec.size (see the life cycle above). Logs its own failures (SSE0204, SSE0205, SSE0206) and
 * returns APR_SUCCESS or the error; what a kept or new segment means is the caller's to log. */
apr_status_t open_segment(server_rec *s, const SegmentSpec &spec, OpenedSegment *out);

/* The event bus of SSEBusSize; logs SSE0200 (created), SSE0201 (kept) or SSE0203 (kept, but
 * SSEBusSize asks for another size). */
apr_status_t open_bus(server_rec *s, const ServerConfig *conf, Bus *out);

/* The subscriber registry of SSEMaxSubscribers and SSEMaxChannels; logs SSE0208 when kept
 * with another size than they ask for. */
apr_status_t open_registry(server_rec *s, const ServerConfig *conf, Registry *out);

} // namespace sse::httpd

#endif
