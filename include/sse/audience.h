/* sse/audience.h — client ids and who an event is meant for.
 *
 * A subscriber may carry a client id (SSEClientId); an anonymous one has the empty id. A
 * publisher may address an event to `only` some client ids, or to everyone `except` some, or
 * both (only those listed in `only` and not in `except`). The bus stores the lists with the
 * event, so replay honours them as live delivery does.
 *
 * Pure code, no I/O; any thread.
 */
#ifndef SSE_AUDIENCE_H
#define SSE_AUDIENCE_H

#include "sse/wire.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace sse {

constexpr std::size_t kMaxClientIdBytes = 128;
constexpr std::size_t kMaxTargetsPerEvent = 1000;

/* A client id: 1 to 128 bytes of valid UTF-8 without control characters, spaces or commas
 * (commas separate ids in `only`/`except` lists). Empty string when acceptable, else why not. */
std::string validate_client_id(std::string_view id);

struct Audience {
    /* empty: no restriction. In an EndStream record: the serials of the streams it ends
     * (sse/bus.h: stream_target, ended_streams). */
    std::vector<std::string> only;
    std::vector<std::string> except;

    bool everyone() const { return only.empty() && except.empty(); }

    /* Whether a subscriber with `client_id` ("" when anonymous) gets the event. An anonymous
     * subscriber is never among `only`, and never excluded by `except`. */
    bool admits(std::string_view client_id) const;

    /* Adds the comma-separated ids of `list` to `only` or `except` (spaces around an id,
     * empty items and repeats dropped): a NameCollector with the cap kMaxTargetsPerEvent, so
     * a list over the cap is not split further. For many pieces of one request keep one
     * collector (collector()) instead. */
    static void append_list(std::string_view list, std::vector<std::string> &out);
    /* The collector append_list() uses, for `out` (only or except). */
    static NameCollector collector(std::vector<std::string> &out);

    /* Checks every id and the total count; empty string when acceptable. */
    std::string validate() const;
};

/* Audience::admits() for many subscribers of one event: the lists are indexed once, so a
 * hub checking thousands of streams against an event addressed to hundreds of ids does not
 * scan the lists per stream. Borrows `a`, which must outlive it. */
class AudienceMatcher {
public:
    explicit AudienceMatcher(const Audience &a);
    bool admits(std::string_view client_id) const;

private:
    const Audience &a_;
    bool indexed_;
    std::unordered_set<std::string_view> only_, except_;
};

} // namespace sse

#endif
