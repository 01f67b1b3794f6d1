#include "sse/socket_protocol.h"

namespace sse {

FrameParser::FrameParser(std::size_t max_event_bytes)
    : max_event_bytes_(max_event_bytes), channels_(current_.channels, kMaxChannelsPerEvent),
      subscribe_channels_(current_.subscribe_channels, kMaxChannelsPerEvent),
      only_(Audience::collector(current_.audience.only)),
      except_(Audience::collector(current_.audience.except)),
      event_types_(current_.event_types, kMaxEventTypesPerStream)
{
}

void FrameParser::feed(std::string_view bytes, std::vector<ClientBlock> &out)
{
    while (!bytes.empty()) {
        std::size_t lf = bytes.find('\n');
        std::string_view part = bytes.substr(0, lf == std::string_view::npos ? bytes.size() : lf);
        /* Keep at most one byte more of a line than an event may take: enough to know it is
         * too long, without buffering a flood. */
        if (line_.size() <= max_event_bytes_)
            line_.append(part.substr(0, max_event_bytes_ + 1 - line_.size()));
        if (lf == std::string_view::npos)
            return;
        bytes.remove_prefix(lf + 1);
        std::string text;
        text.swap(line_);
        if (!text.empty() && text.back() == '\r')
            text.pop_back();
        line(text, out);
    }
}

void FrameParser::line(std::string_view text, std::vector<ClientBlock> &out)
{
    if (text.empty()) {
        if (started_)
            finish(out);
        return;
    }
    started_ = true;
    event_bytes_ += text.size() + 1;
    if (event_bytes_ > max_event_bytes_)
        too_large_ = true;
    if (too_large_ || !current_.error.empty())
        return; /* skip the rest of a refused event */
    if (text[0] == ':')
        return;
    std::size_t colon = text.find(':');
    if (colon == std::string_view::npos) {
        current_.error = "line without a colon: \"" + std::string(text.substr(0, 40)) +
                         "\" (expected \"field: value\")";
        return;
    }
    std::string_view field = text.substr(0, colon);
    std::string_view value = text.substr(colon + 1);
    if (!value.empty() && value[0] == ' ')
        value.remove_prefix(1);
    EventFields &ev = current_.fields;
    if (field == "subscribe") {
        current_.subscribe = true;
        subscribe_channels_.add(value);
        return;
    }
    if (field == "last-event-id") {
        current_.subscribe = true;
        current_.last_event_id.assign(value);
        /* No published id holds CR (a bare CR does not end a line here), NUL or bad UTF-8,
         * or is over the id limit: such an id is refused, as on HTTP (found by the fuzzer). */
        std::string why = validate_event_id(current_.last_event_id);
        if (!why.empty() && current_.error.empty())
            current_.error = "last-event-id: " + why;
        return;
    }
    if (field == "event-types") {
        current_.subscribe = true;
        event_types_.add(value);
        return;
    }
    publish_fields_ = true;
    if (field == "channel") {
        channels_.add(value);
    } else if (field == "data") {
        if (data_lines_++ > 0)
            ev.data += '\n';
        ev.data.append(value);
        ev.has_data = true;
    } else if (field == "event") {
        ev.event.assign(value);
    } else if (field == "id") {
        ev.id.assign(value);
    } else if (field == "retry") {
        ev.retry = parse_retry(value);
        if (ev.retry < 0)
            current_.error = "retry must be a number of milliseconds (digits only, at most " +
                             std::to_string(kMaxRetryMs) + ")";
    } else if (field == "only") {
        only_.add(value);
    } else if (field == "except") {
        except_.add(value);
    } else {
        current_.error = "unknown field \"" + std::string(field.substr(0, 40)) +
                         "\"; known are channel, event, id, retry, data, only, except "
                         "(and subscribe, last-event-id, event-types to read)";
    }
}

void FrameParser::finish(std::vector<ClientBlock> &out)
{
    if (too_large_)
        current_.error = "event larger than " + std::to_string(max_event_bytes_) + " bytes";
    else if (!current_.error.empty())
        ;
    else if (current_.subscribe && publish_fields_)
        current_.error = "a subscribe block takes only \"subscribe:\", \"last-event-id:\" and "
                         "\"event-types:\" lines (publish and subscribe on separate connections)";
    else if (current_.subscribe && current_.subscribe_channels.empty())
        current_.error = "no channel to subscribe to: give a \"subscribe:\" line";
    else if (!current_.subscribe && current_.channels.empty())
        current_.error = "no channel: give a \"channel:\" line";
    else if (current_.subscribe)
        current_.error = validate_event_type_filter(current_.event_types,
                                                    event_types_.over_cap(), "event-types");
    out.push_back(std::move(current_));
    current_ = ClientBlock();
    for (NameCollector *c : {&channels_, &subscribe_channels_, &only_, &except_, &event_types_})
        c->restart();
    started_ = false;
    too_large_ = false;
    event_bytes_ = 0;
    data_lines_ = 0;
    publish_fields_ = false;
}

void encode_frame(const std::vector<std::string> &channels, const EventFields &ev,
                  std::string &out, const Audience &audience)
{
    out += "channel: ";
    for (std::size_t i = 0; i < channels.size(); ++i) {
        if (i)
            out += ',';
        out += channels[i];
    }
    out += '\n';
    if (!ev.event.empty())
        out += "event: " + ev.event + "\n";
    if (!ev.id.empty())
        out += "id: " + ev.id + "\n";
    if (ev.retry >= 0)
        out += "retry: " + std::to_string(ev.retry) + "\n";
    for (const auto &[field, ids] : {std::pair{"only", &audience.only}, {"except", &audience.except}}) {
        if (ids->empty())
            continue;
        out += field;
        out += ": ";
        for (std::size_t i = 0; i < ids->size(); ++i)
            out += (i ? "," : "") + (*ids)[i];
        out += '\n';
    }
    if (ev.has_data) {
        for (std::string_view l : split_lines(ev.data)) {
            out += "data: ";
            out += l;
            out += '\n';
        }
    }
    out += '\n';
}

void encode_subscribe_block(const std::vector<std::string> &channels,
                            std::string_view last_event_id, std::string &out,
                            const std::vector<std::string> &event_types)
{
    out += "subscribe: ";
    for (std::size_t i = 0; i < channels.size(); ++i)
        out += (i ? "," : "") + channels[i];
    out += '\n';
    if (!last_event_id.empty()) {
        out += "last-event-id: ";
        out += last_event_id;
        out += '\n';
    }
    if (!event_types.empty()) {
        out += "event-types: ";
        for (std::size_t i = 0; i < event_types.size(); ++i)
            out += (i ? "," : "") + event_types[i];
        out += '\n';
    }
    out += '\n';
}

std::string ok_line(std::string_view id) { return "ok " + std::string(id) + "\n"; }

std::string error_line(std::string_view reason)
{
    std::string out = "error ";
    for (char c : reason)
        out += (c == '\r' || c == '\n') ? ' ' : c;
    out += '\n';
    return out;
}

std::string refusal(std::string_view kind, std::string_view detail)
{
    std::string reason(kind);
    reason += ": ";
    reason += detail;
    return reason;
}

bool is_refusal(std::string_view reason, std::string_view kind)
{
    return reason.size() > kind.size() && reason.compare(0, kind.size(), kind) == 0 &&
           reason[kind.size()] == ':';
}

} // namespace sse
