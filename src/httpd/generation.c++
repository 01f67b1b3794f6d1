/* post_config: what each configuration generation sets up (see hooks.h). */
#include "src/httpd/hooks.h"
#include "src/httpd/mpm_sizing.h"
#include "src/httpd/publish_socket.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/shared_segment.h"

#include "http_core.h"
#include "apr_shm.h"

#include <algorithm>
#include <new>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

/* The presence budget's state, shared by this generation's children (a new generation starts
 * a full budget). */
apr_status_t open_presence_budget(apr_pool_t *pconf, server_rec *s, ModuleState *state)
{
    apr_shm_t *shm = nullptr;
    apr_status_t rv = apr_shm_create(&shm, sizeof(PresenceShared), nullptr, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "SSE0157: cannot create shared memory for the presence budget");
        return rv;
    }
    auto *shared = new (apr_shm_baseaddr_get(shm)) PresenceShared();
    state->presence_budget =
        PresenceBudget::for_bus(shared, static_cast<std::size_t>(state->bus.stats().ring_size));
    return APR_SUCCESS;
}

apr_status_t destroy_state(void *data)
{
    static_cast<ModuleState *>(data)->~ModuleState();
    return APR_SUCCESS;
}

} // namespace

int post_config(apr_pool_t *pconf, apr_pool_t *, apr_pool_t *, server_rec *s)
{
    /* The first of httpd's two configuration passes only checks; the bus comes in the second. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    return guarded([&] {
        const ServerConfig *conf = server_config(s);
        void *mem = apr_palloc(pconf, sizeof(ModuleState));
        auto *state = new (mem) ModuleState();
        apr_pool_cleanup_register(pconf, state, destroy_state, apr_pool_cleanup_null);
        state->history.count = conf->history_count;
        state->history.max_age_s = conf->history_seconds;
        if (open_bus(s, conf, &state->bus) != APR_SUCCESS ||
            open_registry(s, conf, &state->registry) != APR_SUCCESS)
            return HTTP_INTERNAL_SERVER_ERROR;
        /* Set at every load (a restart keeps the registry): the default is half the table
         * the registry has, which a restart may not have resized. */
        state->registry.set_max_unpublished(
            conf->max_unpublished ? static_cast<std::uint32_t>(conf->max_unpublished)
                                  : std::max<std::uint32_t>(1, state->registry.max_channels() / 2));
        if (conf->presence_channel) {
            state->presence_channel = conf->presence_channel;
            if (open_presence_budget(pconf, s, state) != APR_SUCCESS)
                return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (conf->redis_url && open_redis(pconf, s, conf, state) != APR_SUCCESS)
            return HTTP_INTERNAL_SERVER_ERROR;
        for (server_rec *vs = s; vs; vs = vs->next)
            server_config(vs)->state = state;
        if (conf->publish_socket.path) {
            auto *d = static_cast<DirConfig *>(
                ap_get_module_config(s->lookup_defaults, &sse_module));
            if (start_publish_socket(pconf, s, &conf->publish_socket, state,
                                     static_cast<apr_size_t>(d->max_message_size)) !=
                APR_SUCCESS)
                return HTTP_INTERNAL_SERVER_ERROR;
        } else {
            retire_publish_socket(s);
            if (state->redis)
                start_socketless_daemon(pconf, s, state);
        }
        warn_if_mpm_cannot_hold(s, conf->max_subscribers);
        return OK;
    }, [&](const char *why) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "SSE0207: post_config failed: %s", why);
        return HTTP_INTERNAL_SERVER_ERROR;
    });
}

} // namespace sse::httpd
