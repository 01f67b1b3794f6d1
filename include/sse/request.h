/* sse/request.h — turning the pieces of a subscribe or publish request into channels and an
 * event. Pure functions over strings: no httpd, no I/O; the glue hands in the query string,
 * the rest of the path and the body, and turns an error into an HTTP answer.
 *
 * Every function returns an empty string on success, or a sentence saying what was wrong.
 */
#ifndef SSE_REQUEST_H
#define SSE_REQUEST_H

#include "sse/audience.h"
#include "sse/wire.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sse {

using Params = std::vector<std::pair<std::string, std::string>>;

/* The value of the hexadecimal digit `c`, or -1. */
int hex_digit_value(char c);
/* `s` with every %XX decoded to its byte, and '+' to a space when `plus_is_space` (form
 * encoding; a URI path keeps its '+'). Returns an error sentence when a '%' is not followed by
 * two hexadecimal digits, else empty. The bytes are not checked for UTF-8 here. */
std::string percent_decode(std::string_view s, bool plus_is_space, std::string &out);

/* Decodes application/x-www-form-urlencoded text (a query string or a form body): '&'
 * separates pairs, '+' is a space, %XX a byte. A bad %-escape is an error. A pair without
 * '=' gets an empty value. Decoded values are not checked for UTF-8 here. */
std::string parse_form(std::string_view text, Params &out);

/* All values of `key`, in order. */
std::vector<std::string> param_values(const Params &params, std::string_view key);
/* The last value of `key`; nullptr when absent. */
const std::string *param_last(const Params &params, std::string_view key);
/* The first value of `key` (what Go's url.Values.Get gives: Mercure's fields); nullptr when
 * absent. */
const std::string *param_first(const Params &params, std::string_view key);

/* The channels a request names, validated, duplicates dropped:
 *   1. `configured`, when not null (the SSEChannel expression's value, comma-separated);
 *   2. else every `channel` query parameter (repeatable, each comma-separated), or every
 *      `stream` parameter, its synonym (the r3labs/sse client's ?stream=NAME); a query with
 *      both is an error;
 *   3. else `path_rest`, the path after the Location ("/news,sports" gives news, sports).
 * No channel at all is an error, as is a bad name (the message names it). */
std::string select_channels(const std::string *configured, const Params &query,
                            std::string_view path_rest, std::vector<std::string> &out);

/* The event types a subscribe asks for: every `event` query parameter (repeatable, each
 * comma-separated, websse's ?event=a,b), duplicates dropped; none is no filter (every type).
 * "message" names the untyped event. Each name is checked as a publish checks an event type
 * (validate_event_type(); a type with a comma cannot be named here), at most
 * kMaxEventTypesPerStream of them. */
std::string select_event_types(const Params &query, std::vector<std::string> &out);

/* How deep a JSON publish body may nest arrays and objects, the body object included
 * ({"data": [[1]]} is 3 deep). */
constexpr std::size_t kMaxJsonDepth = 64;

/* Where a subscribe resumes: the Last-Event-ID header when there is one (`header` not null),
 * else the last `lastEventId`, else the last `last_event_id` query parameter; "" when none.
 * Every id on the bus is UTF-8: a header that is not is read as Latin-1 and converted (what
 * fetch()-based clients send for "ü-1" is "\xfc-1"). The length is the caller's to check. */
std::string resume_id(const char *header, const Params &query);

/* What a publish request's body (and query string) asks for. */
struct PublishBody {
    EventFields fields;
    std::vector<std::string> channels; /* from a "channel" field in the body, if any */
    Audience audience;                 /* "only" and "except" (query, JSON or form) */
    bool json_too_deep = false;        /* refused: the JSON nests deeper than kMaxJsonDepth */
};

/* Reads an event from a publish request:
 * - `event`, `id`, `retry` come from the query string, and a JSON or form body overrides them;
 *   `only` and `except` (comma-separated client ids, repeatable) add up from both;
 * - media type application/json: an object with "data" (a string is sent as is, any other
 *   JSON value as its compact serialisation), "event", "id" (string or number), "retry"
 *   (number or digit string), "channel", "only" and "except" (each a string, comma-separated,
 *   or an array of strings);
 *   unknown members are an error, and so is nesting deeper than kMaxJsonDepth (refused while
 *   parsing, with json_too_deep set);
 * - application/x-www-form-urlencoded whose keys are all among data, event, id, retry, channel,
 *   only, except:
 *   those fields;
 * - anything else, including a form-encoded body with other keys (what `curl -d 'hello'`
 *   sends): the body is the data, byte for byte; an empty body means no data.
 * `media_type` is the Content-Type without parameters, lower case.
 * Lists stop being collected once over their cap (NameCollector), so a hostile one costs
 * linear time. The resulting fields are validated with validate_event(), the ids with
 * Audience::validate(). */
std::string parse_publish(std::string_view media_type, std::string_view body,
                          const Params &query, PublishBody &out);

} // namespace sse

#endif
