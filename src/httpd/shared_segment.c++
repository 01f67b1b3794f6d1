/* The segments that outlive a generation: see shared_segment.h for their life cycle. */
#include "src/httpd/shared_segment.h"

#include "apr_shm.h"

APLOG_USE_MODULE(sse);

namespace sse::httpd {

apr_status_t open_segment(server_rec *s, const SegmentSpec &spec, OpenedSegment *out)
{
    apr_pool_t *proc_pool = s->process->pool;
    void *data = nullptr;
    apr_pool_userdata_get(&data, spec.key, proc_pool);
    auto *shm = static_cast<apr_shm_t *>(data);
    std::string err;
    if (shm) {
        if (spec.attach(apr_shm_baseaddr_get(shm), apr_shm_size_get(shm), &err)) {
            *out = {true, apr_shm_size_get(shm)};
            return APR_SUCCESS;
        }
        /* A module of another layout version left it: start afresh (what it held is lost). */
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "SSE0204: cannot reuse the %s (%s); creating a new, empty one", spec.name,
                     err.c_str());
    }
    apr_status_t rv = apr_shm_create(&shm, spec.size, nullptr, proc_pool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "SSE0205: cannot create %" APR_SIZE_T_FMT " bytes of anonymous shared "
                     "memory for the %s (%s)",
                     spec.size, spec.name, spec.sized_by);
        return rv;
    }
    err = spec.format(apr_shm_baseaddr_get(shm), apr_shm_size_get(shm));
    if (!err.empty() || !spec.attach(apr_shm_baseaddr_get(shm), apr_shm_size_get(shm), &err)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0206: cannot set up the %s: %s",
                     spec.name, err.c_str());
        return APR_EGENERAL;
    }
    apr_pool_userdata_set(shm, spec.key, apr_pool_cleanup_null, proc_pool);
    *out = {false, apr_shm_size_get(shm)};
    return APR_SUCCESS;
}

apr_status_t open_bus(server_rec *s, const ServerConfig *conf, Bus *out)
{
    SegmentSpec spec{"mod_sse_bus_segment", "event bus", "SSEBusSize",
                     static_cast<std::size_t>(conf->bus_size),
                     [&](void *base, std::size_t size, std::string *err) {
                         *out = Bus::attach(base, size, err);
                         return out->valid();
                     },
                     [](void *base, std::size_t size) {
                         return Bus::format(base, size, now_us());
                     }};
    OpenedSegment opened;
    if (apr_status_t rv = open_segment(s, spec, &opened); rv != APR_SUCCESS)
        return rv;
    if (!opened.kept)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "SSE0200: event bus created: %" APR_SIZE_T_FMT " bytes of shared memory",
                     opened.size);
    else if (opened.size != conf->bus_size)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "SSE0203: SSEBusSize changed to %" APR_UINT64_T_FMT
                     " bytes, but a restart keeps the bus of %" APR_SIZE_T_FMT
                     " bytes and its events; stop and start httpd to resize it",
                     conf->bus_size, opened.size);
    else
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "SSE0201: restart keeps the event bus (%" APR_SIZE_T_FMT " bytes)",
                     opened.size);
    return APR_SUCCESS;
}

apr_status_t open_registry(server_rec *s, const ServerConfig *conf, Registry *out)
{
    const auto subs = static_cast<std::uint32_t>(conf->max_subscribers);
    const auto chans = static_cast<std::uint32_t>(conf->max_channels);
    SegmentSpec spec{"mod_sse_registry_segment", "subscriber registry",
                     "SSEMaxSubscribers, SSEMaxChannels", Registry::bytes_needed(subs, chans),
                     [&](void *base, std::size_t size, std::string *err) {
                         *out = Registry::attach(base, size, err);
                         return out->valid();
                     },
                     [&](void *base, std::size_t size) {
                         return Registry::format(base, size, subs, chans);
                     }};
    OpenedSegment opened;
    if (apr_status_t rv = open_segment(s, spec, &opened); rv != APR_SUCCESS)
        return rv;
    if (opened.kept && opened.size != spec.size)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "SSE0208: SSEMaxSubscribers or SSEMaxChannels changed, but a restart keeps "
                     "the registry of the streams still open; stop and start httpd to resize it");
    return APR_SUCCESS;
}

} // namespace sse::httpd
