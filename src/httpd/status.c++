/* The sse-status handler (JSON for the whole server) and mod_sse's section of mod_status's
 * server-status page. Both read the bus and the registry only; they first release the streams
 * of processes that no longer exist, so the counts they show are those of open streams. */
#include "src/httpd/module.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/redis_cluster_state.h"
#include "src/httpd/subscription.h"

#include "http_protocol.h"
#include "mod_status.h"

#include <nlohmann/json.hpp>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

struct Snapshot {
    BusStats bus;
    RegistryTotals totals;
    std::vector<ChannelInfo> channels;
};

Snapshot take_snapshot(ModuleState *state)
{
    announce_gone(state, state->registry.reap_dead(), "process-died");
    return {state->bus.stats(), state->registry.totals(), state->registry.channels()};
}

/* SSERedis's state, or null when it is not set. */
nlohmann::json redis_json(const ModuleState *state)
{
    RedisStatus rs;
    if (!redis_status(state, &rs))
        return nullptr;
    return {{"url", rs.url},
            {"stream", rs.stream},
            {"publishing", rs.publishes_refused ? "refused" : "ok"},
            {"reader", rs.reader_lost ? "lost" : "ok"},
            {"last_entry", rs.last_entry.empty() ? nlohmann::json() : nlohmann::json(rs.last_entry)},
            /* So a reader that died or hangs shows: it reads at least once a second. */
            {"last_read_age_ms", rs.last_read_ms ? nlohmann::json(std::max<std::int64_t>(
                                                       0, now_us() / 1000 - rs.last_read_ms))
                                                 : nlohmann::json()}};
}

} // namespace

int status_handler(request_rec *r)
{
    ModuleState *state = module_state(r);
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        return answer_error(r, HTTP_METHOD_NOT_ALLOWED, "SSE0118", kSubscribe,
                            std::string("method ") + r->method + " is not served here; use GET");
    }
    Snapshot snap = take_snapshot(state);
    nlohmann::json channels = nlohmann::json::array();
    for (const auto &c : snap.channels)
        channels.push_back({{"channel", c.name},
                            {"subscribers", c.subscribers},
                            {"events_published", c.published},
                            {"closed", c.closed}});
    nlohmann::json processes = nlohmann::json::array();
    for (const auto &p : snap.totals.processes)
        processes.push_back({{"pid", p.pid}, {"subscribers", p.subscribers}});
    nlohmann::json j = {
        {"subscribers", snap.totals.subscribers},
        {"max_subscribers", snap.totals.max_subscribers},
        {"channels_known", snap.totals.channels},
        {"max_channels", snap.totals.max_channels},
        {"channels_forgotten", snap.totals.dropped_channels},
        {"channels_unpublished", snap.totals.unpublished_channels},
        {"max_unpublished_channels", snap.totals.max_unpublished_channels},
        {"subscribes_refused_unpublished", snap.totals.refused_unpublished},
        {"events_published", snap.bus.published},
        {"events_evicted", snap.bus.evicted},
        {"events_retained", snap.bus.next_seq - snap.bus.oldest_seq},
        {"bus_bytes_used", snap.bus.bytes_used},
        {"bus_bytes", snap.bus.ring_size},
        {"bus_lock_recoveries", snap.bus.lock_recoveries},
        {"bus_sleepers", snap.bus.waiters},
        {"hubs_asleep", snap.bus.interest_asleep},
        {"hub_wakeups", snap.bus.interest_woken},
        {"hub_wakeups_spared", snap.bus.interest_spared},
        {"socket_clients", snap.totals.socket_clients},
        {"presence_skipped", state->presence_budget.skipped()},
        {"redis", redis_json(state)},
        {"processes", processes},
        {"channels", channels},
    };
    if (state->redis) /* the group's figures: only with SSERedis */
        j["cluster"] = cluster_status_json(r, state);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    return answer_json(r, HTTP_OK, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

int status_page_section(request_rec *r, int flags)
{
    ModuleState *state = module_state(r);
    if (!state || !state->registry.valid() || !(flags & AP_STATUS_EXTENDED))
        return OK;
    Snapshot snap = take_snapshot(state);
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "SSESubscribers: %" APR_UINT64_T_FMT "\n", apr_uint64_t(snap.totals.subscribers));
        ap_rprintf(r, "SSEChannels: %" APR_UINT64_T_FMT "\n", apr_uint64_t(snap.totals.channels));
        ap_rprintf(r, "SSEEventsPublished: %" APR_UINT64_T_FMT "\n", apr_uint64_t(snap.bus.published));
        ap_rprintf(r, "SSEBusBytesUsed: %" APR_UINT64_T_FMT "\n", apr_uint64_t(snap.bus.bytes_used));
        return OK;
    }
    ap_rputs("<hr />\n<h2>mod_sse</h2>\n<dl>\n", r);
    ap_rprintf(r, "<dt>Open streams: %" APR_UINT64_T_FMT " of %" APR_UINT64_T_FMT
                  " (SSEMaxSubscribers)</dt>\n",
               apr_uint64_t(snap.totals.subscribers), apr_uint64_t(snap.totals.max_subscribers));
    ap_rprintf(r, "<dt>Channels known: %" APR_UINT64_T_FMT " of %" APR_UINT64_T_FMT "</dt>\n",
               apr_uint64_t(snap.totals.channels), apr_uint64_t(snap.totals.max_channels));
    ap_rprintf(r, "<dt>Events published: %" APR_UINT64_T_FMT ", evicted: %" APR_UINT64_T_FMT
                  ", bus: %" APR_UINT64_T_FMT " of %" APR_UINT64_T_FMT " bytes used</dt>\n",
               apr_uint64_t(snap.bus.published), apr_uint64_t(snap.bus.evicted),
               apr_uint64_t(snap.bus.bytes_used), apr_uint64_t(snap.bus.ring_size));
    ap_rprintf(r, "<dt>Publish socket clients: %" APR_UINT64_T_FMT "</dt>\n</dl>\n",
               apr_uint64_t(snap.totals.socket_clients));
    ap_rputs("<table border=\"0\"><tr><th>PID</th><th>Streams</th></tr>\n", r);
    for (const auto &p : snap.totals.processes)
        ap_rprintf(r, "<tr><td>%d</td><td>%" APR_UINT64_T_FMT "</td></tr>\n", p.pid,
                   apr_uint64_t(p.subscribers));
    ap_rputs("</table>\n<table border=\"0\"><tr><th>Channel</th><th>Subscribers</th>"
             "<th>Published</th></tr>\n", r);
    for (const auto &c : snap.channels)
        ap_rprintf(r, "<tr><td>%s</td><td>%" APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT
                      "</td></tr>\n",
                   ap_escape_html(r->pool, c.name.c_str()), apr_uint64_t(c.subscribers),
                   apr_uint64_t(c.published));
    ap_rputs("</table>\n", r);
    return OK;
}

} // namespace sse::httpd
