/* One subscriber's delivery rules (see sse/delivery.h). */
#include "sse/delivery.h"

#include <algorithm>

namespace sse {

const char *end_reason_name(EndReason why)
{
    switch (why) {
    case EndReason::ClientClosed: return "client-closed";
    case EndReason::WriteFailed: return "write-failed";
    case EndReason::FellBehind: return "fell-behind";
    case EndReason::ServerRestart: return "server-restart";
    case EndReason::ChannelClosed: return "channel-closed";
    case EndReason::Replaced: return "replaced";
    case EndReason::HubFailed: return "hub-failed";
    case EndReason::TokenExpired: return "token-expired";
    }
    return "unknown";
}

bool comes_back(EndReason why)
{
    return why == EndReason::ServerRestart || why == EndReason::HubFailed;
}

bool event_type_listed(const std::vector<std::string> &types, std::string_view type)
{
    if (types.empty())
        return true;
    /* The browser dispatches "event: message" and an untyped event alike. */
    if (type.empty())
        type = "message";
    return std::find(types.begin(), types.end(), type) != types.end();
}

Delivery::Delivery(const DeliverySettings &settings, std::int64_t now_us)
    : settings_(settings), filtered_(!settings.event_types.empty() || settings.mercure),
      last_write_us_(now_us)
{
}

void Delivery::opening(std::int64_t retry_ms, bool resume_found, std::string_view resume_id,
                       std::string &out)
{
    encode_comment("ok", out);
    if (retry_ms >= 0)
        encode_retry(retry_ms, out);
    if (!resume_found)
        encode_missed_notice("unknown-last-event-id", resume_id, out);
}

RecordAction Delivery::on_channel_record(RecordKind kind)
{
    switch (kind) {
    case RecordKind::Event:
        return {RecordAction::Kind::SendEvent, EndReason::ClientClosed};
    case RecordKind::CloseChannels:
        return {RecordAction::Kind::SendAndEnd, EndReason::ChannelClosed};
    case RecordKind::Gap:
        return {RecordAction::Kind::SendNotice, EndReason::ClientClosed};
    case RecordKind::EndStream:
        break;
    }
    return {};
}

RecordAction Delivery::on_record(const BusEvent &e) const
{
    if (e.kind == RecordKind::Event && !wants(e))
        return {};
    if (e.kind != RecordKind::EndStream)
        return on_channel_record(e.kind);
    /* Serial 0 is no stream's (a socket subscriber has no slot). */
    if (settings_.serial != 0 && names_stream(e, settings_.serial))
        return {RecordAction::Kind::SendAndEnd, EndReason::Replaced};
    return {};
}

void Delivery::overrun_notice(std::string &out) { encode_missed_notice("overrun", {}, out); }

void Delivery::gap_notice(std::string &out) { encode_missed_notice("lost", {}, out); }

void Delivery::keepalive_bytes(std::string &out) { encode_comment("keepalive", out); }

std::int64_t Delivery::restart_retry_ms() const
{
    return settings_.retry_ms >= 0 ? settings_.retry_ms : kRestartRetryMs;
}

void Delivery::restart_bytes(std::string &out) const { encode_retry(restart_retry_ms(), out); }

bool Delivery::keepalive_due(std::int64_t now_us) const
{
    return settings_.keepalive_us > 0 && now_us - last_write_us_ >= settings_.keepalive_us;
}

bool Delivery::token_expired(std::int64_t now_us) const
{
    return settings_.token_expires_us != 0 && now_us >= settings_.token_expires_us;
}

std::int64_t Delivery::next_wake_us(std::int64_t now_us) const
{
    std::int64_t until = -1;
    if (settings_.keepalive_us > 0)
        until = std::max<std::int64_t>(0, last_write_us_ + settings_.keepalive_us - now_us);
    if (settings_.token_expires_us != 0) {
        const std::int64_t left = std::max<std::int64_t>(0, settings_.token_expires_us - now_us);
        until = until < 0 ? left : std::min(until, left);
    }
    return until;
}

} // namespace sse
