/* A stream's registry slot and presence events (see the header). */
#include "src/httpd/subscription.h"

#include "sse/publisher.h"
#include "src/httpd/mercure_hub.h"

#include "http_connection.h"

#include "apr_strings.h"

#include <string_view>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

bool only_presence(const ModuleState *state, const std::vector<std::string> &channels)
{
    for (const auto &c : channels)
        if (c != state->presence_channel)
            return false;
    return true;
}

/* SSE0156 at most this often per process: a storm of skips is one line a minute. */
constexpr std::int64_t kPresenceNoticeEveryUs = 60'000'000;

/* Publishes one presence record, within the bus's presence budget (sse/presence.h): over
 * it, the record is skipped and counted (and logged, SSE0156).
 * A failure is logged, never thrown: presence must not cost a subscriber its stream.
 * With SSERedis too, the record goes on this server's bus only: sse-publishd's forwarder
 * sends it on to the other servers (src/httpd/redis_presence.h), so no stream's opening or
 * ending waits for Redis. */
void announce_presence(ModuleState *state, const char *type, const SubscriberInfo &who,
                       const char *reason)
{
    if (state->presence_channel.empty() || only_presence(state, who.channels))
        return;
    PresenceFacts facts;
    const std::int64_t now = now_us();
    if (!take_presence_budget(state, &facts.skipped))
        return;
    facts.client_id = who.client_id;
    facts.channels = who.channels;
    facts.remote = who.remote;
    facts.time_ms = now / 1000;
    facts.reason = reason;
    EventFields ev;
    ev.event = type;
    ev.has_data = true;
    try {
        ev.data = presence_data(facts);
        PublishAttempt a = publish_event(state->bus, &state->registry, {state->presence_channel},
                                         ev, {}, now);
        if (a.outcome != PublishAttempt::Outcome::Published)
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                         "SSE0600: presence event %s not published: %s", type, a.error.c_str());
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                     "SSE0600: presence event %s not published: %s", type, e.what());
    }
}

/* A stream's `connect`, `reconnect` or `disconnect`: its presence record, and a Mercure
 * subscriber's subscription events (its slot has a note only where SSEMercureSubscriptions
 * is on). */
void announce(ModuleState *state, const char *type, const SubscriberInfo &who,
              const char *reason)
{
    if (!who.note.empty())
        publish_subscription_events(state, who.note, std::string_view(type) != "disconnect");
    announce_presence(state, type, who, reason);
}

} // namespace

bool take_presence_budget(ModuleState *state, std::uint64_t *told)
{
    const std::int64_t tick = monotonic_us(); /* the budget's clock: never steps back */
    if (state->presence_budget.take(tick, told))
        return true;
    std::int64_t last = state->presence_notice_us.load();
    if (tick - last >= kPresenceNoticeEveryUs &&
        state->presence_notice_us.compare_exchange_strong(last, tick))
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, nullptr,
                     "SSE0156: presence records over their budget (%" APR_UINT64_T_FMT
                     " a minute: 1/8 of SSEBusSize) are skipped, %" APR_UINT64_T_FMT
                     " so far; the next one written says how many (\"skipped\")",
                     apr_uint64_t(state->presence_budget.per_minute()),
                     apr_uint64_t(state->presence_budget.skipped()));
    return false;
}

void announce_gone(ModuleState *state, const std::vector<SubscriberInfo> &gone,
                   const char *reason)
{
    for (const auto &who : gone)
        announce(state, "disconnect", who, reason);
}

Subscription &Subscription::operator=(Subscription &&other) noexcept
{
    if (this != &other) {
        end("ended");
        state_ = other.state_;
        slot_ = other.slot_;
        serial_ = other.serial_;
        announced_ = other.announced_;
        other.state_ = nullptr;
    }
    return *this;
}

void Subscription::begin(request_rec *r, ModuleState *state, const Registry::Join &j,
                         const std::string &client_id, const std::vector<std::string> &channels,
                         const std::string &resume_id, const std::string &note)
{
    announce_gone(state, j.reaped, "process-died");
    if (j.outcome != Registry::Join::Outcome::Joined)
        return;
    state_ = state;
    slot_ = j.slot;
    serial_ = j.serial;

    for (const auto &old : j.replaced)
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "SSE0601: client id %s connected again; its older stream (process %d) "
                      "is closed (SSEDuplicateClient replace)",
                      client_id.c_str(), old.pid);
    announce_gone(state, j.replaced, "replaced");

    SubscriberInfo me;
    me.client_id = client_id;
    me.remote = r->useragent_ip ? r->useragent_ip : "";
    me.channels = channels;
    me.note = note;
    /* Whether it resumed, not from where: the id is the requester's alone. */
    announce(state, resume_id.empty() ? "connect" : "reconnect", me, nullptr);
    announced_ = true;
}

void Subscription::end(const char *reason)
{
    if (!state_)
        return;
    ModuleState *state = state_;
    state_ = nullptr;
    SubscriberInfo info;
    try {
        if (state->registry.leave(slot_, serial_, &info) && announced_)
            announce(state, "disconnect", info, reason);
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                     "SSE0602: releasing a stream's registry slot failed: %s", e.what());
    }
}

void note_stream_end(request_rec *r, std::uint64_t events_sent, std::uint64_t bytes_sent,
                     EndReason why)
{
    note_stream_end(r, events_sent, bytes_sent, end_reason_name(why));
}

void note_stream_end(request_rec *r, std::uint64_t events_sent, std::uint64_t bytes_sent,
                     const char *end)
{
    apr_table_setn(r->subprocess_env, "SSE_EVENTS",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, apr_uint64_t(events_sent)));
    apr_table_setn(r->subprocess_env, "SSE_BYTES",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, apr_uint64_t(bytes_sent)));
    apr_table_setn(r->subprocess_env, "SSE_END", end);
}

void reap_gone_processes(ModuleState *state)
{
    try {
        announce_gone(state, state->registry.reap_noted(), "process-died");
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                     "SSE0209: releasing the streams of ended child processes failed: %s", e.what());
    }
}

} // namespace sse::httpd
