/* Presence from every server with SSERedis (see the header). */
#include "src/httpd/redis_presence.h"
#include "src/httpd/redis_bus.h"
#include "src/httpd/redis_cluster_state.h"
#include "src/httpd/subscription.h"

#include "sse/event_stream.h"
#include "sse/publisher.h"

#include <algorithm>
#include <limits>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

constexpr int kBackoffFirstMs = 100;
constexpr int kBackoffMaxMs = 2000;
constexpr std::int64_t kStaleNoticeEveryUs = 60'000'000;

/* The data of a record as its publisher gave it: read back from the encoded event as an
 * EventSource reads it (a presence record's data is one line of JSON, valid UTF-8). */
std::string record_data(const BusEvent &e)
{
    EventStreamParser parser;
    std::vector<StreamEvent> events;
    parser.feed(e.wire, events);
    return events.empty() ? std::string() : std::move(events.front().data);
}

class PresenceForwarder {
public:
    PresenceForwarder(server_rec *s, ModuleState *state, const volatile sig_atomic_t *stop)
        : s_(s), state_(state), stop_(stop), server_(cluster_server_id(s)),
          token_(cluster_start_token(s)),
          reader_(state->bus, ChannelSet({state->presence_channel})) {}

    void run()
    {
        /* Every presence record the bus holds, those already sent skipped by seq: where the
         * last daemon stopped may be anywhere in the ring. */
        reader_.start_earliest(HistoryLimits{std::numeric_limits<std::uint64_t>::max(), 0},
                               now_us());
        BusEvent e;
        while (!*stop_) {
            switch (reader_.next(&e)) {
            case BusReader::Next::None:
                usleep(kForwardPollMs * 1000);
                break;
            case BusReader::Next::Overrun:
                note_overrun();
                break;
            case BusReader::Next::Event:
                if (e.seq < presence_next_seq(state_))
                    break;
                if (made_here(e) && !send(e))
                    return; /* the daemon is ending: the next one sends it */
                note_presence_next_seq(state_, e.seq + 1);
                break;
            }
        }
    }

private:
    bool made_here(const BusEvent &e) const
    {
        return e.kind == RecordKind::Event && e.id == std::to_string(e.seq) &&
               is_presence_event_type(e.event) &&
               !presence_too_old(e.event, e.time_us / 1000, now_us() / 1000);
    }

    /* XADDs the record, trying again until Redis takes it; false when the daemon is ending. */
    bool send(const BusEvent &e)
    {
        StreamRecord rec;
        rec.kind = StreamRecord::Kind::Presence;
        rec.channels = {state_->presence_channel};
        rec.fields.event = e.event;
        rec.fields.data = record_data(e);
        rec.fields.has_data = true;
        rec.server = server_;
        rec.token = token_;
        rec.time_ms = e.time_us / 1000;
        rec.seq = e.seq;
        int backoff = kBackoffFirstMs;
        for (;;) {
            RedisWriter::Added added = add_presence_record(state_, rec);
            if (added.ok) {
                note_up();
                return true;
            }
            note_down(added.error);
            for (int waited = 0; waited < backoff; waited += kForwardPollMs) {
                if (*stop_)
                    return false;
                usleep(kForwardPollMs * 1000);
            }
            backoff = std::min(backoff * 2, kBackoffMaxMs);
        }
    }

    void note_down(const std::string &why)
    {
        if (!down_)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s_,
                         "SSE0740: cannot send this server's presence records to Redis (%s); "
                         "its own presence subscribers still get them, the other servers' "
                         "once Redis takes them (trying again every %d s at most)",
                         why.c_str(), kBackoffMaxMs / 1000);
        down_ = true;
    }

    void note_up()
    {
        if (down_)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s_,
                         "SSE0741: sending this server's presence records to Redis again");
        down_ = false;
        overrun_said_ = false;
    }

    void note_overrun()
    {
        if (!overrun_said_)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s_,
                         "SSE0742: presence records of this server were overwritten on its "
                         "bus before they could be sent to Redis: the other servers miss them");
        overrun_said_ = true;
    }

    server_rec *s_;
    ModuleState *state_;
    const volatile sig_atomic_t *stop_;
    std::string server_, token_;
    BusReader reader_;
    bool down_ = false;
    bool overrun_said_ = false; /* SSE0742 said since the last record sent */
};

} // namespace

RemotePresence::RemotePresence(server_rec *s, ModuleState *state)
    : s_(s), state_(state), server_(cluster_server_id(s)), token_(cluster_start_token(s))
{
}

bool RemotePresence::first_time(const StreamRecord &r)
{
    std::string origin = r.server + '\n' + r.token;
    auto it = last_seq_.find(origin);
    if (it != last_seq_.end()) {
        if (r.seq <= it->second)
            return false;
        it->second = r.seq;
        return true;
    }
    if (last_seq_.size() >= kMaxOrigins) /* many starts of many servers: forget them all */
        last_seq_.clear();
    last_seq_.emplace(std::move(origin), r.seq);
    return true;
}

std::string RemotePresence::apply(const StreamEntry &e, std::int64_t time_us)
{
    const StreamRecord &r = e.record;
    if ((r.server == server_ && r.token == token_) || state_->presence_channel.empty() ||
        r.channels.front() != state_->presence_channel)
        return {}; /* this server's own (on its bus already), or not for this server */
    if (!first_time(r))
        return {}; /* sent again after an XADD whose answer timed out */
    if (presence_too_old(r.fields.event, r.time_ms, now_us() / 1000)) {
        ++stale_;
        const std::int64_t tick = monotonic_us();
        if (tick - stale_said_us_ >= kStaleNoticeEveryUs) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s_,
                         "SSE0743: %" APR_UINT64_T_FMT " presence connects of other servers "
                         "dropped as older than %d s (the last: entry %s, from %s)",
                         apr_uint64_t(stale_), int(kPresenceMaxAgeMs / 1000),
                         e.id.text().c_str(), r.server.c_str());
            stale_ = 0;
            stale_said_us_ = tick;
        }
        return {};
    }
    if (!take_presence_budget(state_, nullptr))
        return {};
    EventFields ev = r.fields;
    ev.id = e.id.text();
    if (std::string error = check_publish(r.channels, ev, {}); !error.empty())
        return error;
    return append_event(state_->bus, &state_->registry, r.channels, ev, {}, time_us).error;
}

void start_presence_forwarder(server_rec *s, ModuleState *state,
                              const volatile sig_atomic_t *stop)
{
    /* Without it the other servers miss this one's presence: on a failure the daemon exits
     * and the parent starts a new one (SSE0402), which goes on from the kept place. */
    start_daemon_thread(s, "SSE0744: the presence forwarder failed",
                        [s, state, stop] { PresenceForwarder(s, state, stop).run(); });
}

} // namespace sse::httpd
