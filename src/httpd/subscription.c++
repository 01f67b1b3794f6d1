/* A stream's registry slot and presence events (see the header). */
#include "src/httpd/subscription.h"

#include "sse/publisher.h"

#include "http_connection.h"

#include <nlohmann/json.hpp>
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

/* Publishes one presence event. A failure is logged, never thrown: presence must not cost
 * a subscriber its stream. */
void announce(ModuleState *state, const char *type, const SubscriberInfo &who,
              const nlohmann::json &extra)
{
    if (state->presence_channel.empty() || only_presence(state, who.channels))
        return;
    nlohmann::json body = {
        {"client", who.client_id.empty() ? nlohmann::json() : nlohmann::json(who.client_id)},
        {"channels", who.channels},
        {"remote", who.remote},
        {"time", now_us() / 1000},
    };
    body.update(extra);
    EventFields ev;
    ev.event = type;
    ev.has_data = true;
    ev.data = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    try {
        PublishAttempt a = publish_event(state->bus, &state->registry, {state->presence_channel},
                                         ev, {}, now_us());
        if (a.outcome != PublishAttempt::Outcome::Published)
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                         "SSE0600: presence event %s not published: %s", type, a.error.c_str());
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                     "SSE0600: presence event %s not published: %s", type, e.what());
    }
}

} // namespace

void announce_gone(ModuleState *state, const std::vector<SubscriberInfo> &gone,
                   const char *reason)
{
    for (const auto &who : gone)
        announce(state, "disconnect", who, {{"reason", reason}});
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
                         const std::string &resume_id)
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
    if (resume_id.empty())
        announce(state, "connect", me, nlohmann::json::object());
    else
        announce(state, "reconnect", me, {{"lastEventId", resume_id}});
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
            announce(state, "disconnect", info, {{"reason", reason}});
    } catch (const std::exception &e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, nullptr,
                     "SSE0602: releasing a stream's registry slot failed: %s", e.what());
    }
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
