/* sse/mercure_topic.h — Mercure topic selectors: which updates a subscriber (or a JWT
 * claim) selects by their topics.
 *
 * A Mercure update carries one or more topics (IRIs, or any string: opaque, compared byte
 * for byte, never normalised). A selector is one of:
 * - `*`: every topic;
 * - an exact topic: byte-for-byte equal;
 * - a URI template (RFC 6570, levels 1 to 4): a topic matches when some values of the
 *   template's variables expand to it. This is how the reference hub matches its `topic`
 *   selectors (Mercure up to draft 8 and the hub's `topic=` parameter today): a selector
 *   equal to the topic matches first; a selector holding `{` that parses as a template is
 *   compiled to an expression that accepts what the template can expand to:
 *     {var}  {+var}  {#var}  {.var}  {/var}  {;var}  {?var}  {&var}, lists and explodes,
 *   each expression optional as a whole, each value a run of the characters its operator
 *   leaves unencoded (unreserved, plus reserved for + and #, plus `,` between values and
 *   `=` after a name) and %XX escapes. A selector with `{` that does not parse is an exact
 *   selector only. A value's prefix modifier (`:3`) is accepted and does not bound the
 *   match (as in the reference hub).
 *
 * Cost: a selector is compiled once (compile()); matching a topic walks it once with a
 * set of NFA states (linear in topic length times the template's size, never
 * backtracking) in scratch memory the selector owns: no allocation per match.
 *
 * Threads: a compiled selector is immutable except for its matching scratch: one thread
 * at a time may call matches() (the thread that serves the subscription). Copying one
 * copies its scratch.
 * Pure code: no httpd, no APR, no I/O.
 */
#ifndef SSE_MERCURE_TOPIC_H
#define SSE_MERCURE_TOPIC_H

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sse {

/* Limits on what a request may name (a subscriber's selectors, a publisher's topics, a
 * claim's selectors): larger is refused with 400 (or the token as invalid). */
constexpr std::size_t kMaxTopicBytes = 16384;
constexpr std::size_t kMaxTopicsPerRequest = 64;

/* Limits on what a subscriber's selectors may cost to match (anyone may subscribe where
 * anonymous subscribers are allowed, and every update is matched against every selector on
 * the hub's I/O thread): a template expression names at most kMaxTemplateVariables
 * variables, and the template expressions of one subscription's selectors compile to at most
 * kMaxSelectorStates NFA instructions together. Matching a topic costs at most its length
 * times that many steps (literal text outside expressions costs one step per byte whatever
 * its length). TopicSelectorList::limit_error() says when a list is over. */
constexpr std::size_t kMaxTemplateVariables = 16;
constexpr std::size_t kMaxSelectorStates = 1024;

/* A topic, a selector, a Mercure id or type: valid UTF-8 without C0 or C1 control
 * characters, DEL, or Unicode format characters (category Cf: bidirectional and zero-width
 * controls), at most kMaxTopicBytes. Returns an error sentence naming `what`, or empty. */
std::string validate_mercure_string(std::string_view s, std::string_view what);

class TopicSelector {
public:
    enum class Kind : std::uint8_t { Any, Exact, Template };

    /* Any string compiles: `*`, else a template when it holds `{` and parses, else exact. */
    static TopicSelector compile(std::string_view selector);

    /* Whether `topic` is selected. Uses the selector's scratch: one thread at a time. */
    bool matches(std::string_view topic) const;
    /* Whether any of `topics` is. */
    bool matches_any(const std::vector<std::string> &topics) const;

    Kind kind() const { return kind_; }
    const std::string &text() const { return text_; }
    /* NFA instructions of its template expressions (0 unless a template): what matching a
     * topic costs per byte at most. */
    std::size_t states() const { return states_; }
    /* Whether an expression names more than kMaxTemplateVariables variables (the selector
     * is then compiled as exact text, and must be refused where a client sent it). */
    bool too_many_variables() const { return too_many_variables_; }

private:
    /* One NFA instruction: a byte in a set (sets_[arg]), a literal byte (arg), a fork to
     * the next instruction and `arg`, a jump to `arg`, or the end of the template. */
    enum class Op : std::uint8_t { Set, Byte, Split, Jump, Match };
    struct Inst {
        Op op;
        std::uint32_t arg;
    };
    friend class TemplateCompiler;

    bool template_matches(std::string_view topic) const;
    void add_state(std::vector<std::uint32_t> &list, std::uint32_t pc, std::uint32_t gen) const;

    Kind kind_ = Kind::Exact;
    std::string text_;
    std::string prefix_;            /* the template's leading literal: a quick reject */
    std::size_t states_ = 0;
    bool too_many_variables_ = false;
    std::vector<Inst> prog_;
    std::vector<std::bitset<256>> sets_;
    /* Matching scratch, sized once at compile: two state lists and a mark per instruction
     * (the generation that last added it, so a list is emptied without clearing). */
    mutable std::vector<std::uint32_t> current_, next_, mark_;
    mutable std::uint32_t generation_ = 0;
};

/* A subscription's selectors (or a claim's): selects a topic when one of them does. */
class TopicSelectorList {
public:
    TopicSelectorList() = default;
    explicit TopicSelectorList(const std::vector<std::string> &selectors);

    bool matches_any(const std::vector<std::string> &topics) const;
    /* Whether every one of `topics` is selected (a publisher's claims must cover each topic
     * of its update). */
    bool matches_all(const std::vector<std::string> &topics) const;
    bool empty() const { return selectors_.empty(); }
    /* Why a client may not subscribe with these selectors (kMaxTemplateVariables,
     * kMaxSelectorStates), naming the limit; empty when within them. */
    std::string limit_error() const;
    std::size_t size() const { return selectors_.size(); }
    const std::vector<TopicSelector> &selectors() const { return selectors_; }

private:
    std::vector<TopicSelector> selectors_;
    bool any_ = false; /* one of them is `*` */
};

/* The bus channel of one hub (sse/bus.h: UpdateTopics): every update published to the hub
 * named `hub_name` travels on it, and only that hub's subscribers read it, so two hubs (two
 * locations, two virtual hosts, two keys) never see each other's updates. It is
 * kMercureChannelPrefix + the name; a name too long for a channel is cut and ends with a
 * hash of the whole name, so two long names stay apart. '#' is no character of a channel
 * name (validate_channel_name), so no native publish or subscribe can name it: Mercure
 * topics and mod_sse channels are two separate namespaces. */
constexpr const char *kMercureChannelPrefix = "#mercure:";
std::string mercure_hub_channel(std::string_view hub_name);

/* Which updates one Mercure subscriber gets: those with a topic its selectors select, and
 * of the private ones only those with a topic its token's mercure.subscribe selectors
 * select (none without a token). Compiled once per subscription; matches() as above (one
 * thread at a time). */
class MercureFilter {
public:
    MercureFilter(const std::vector<std::string> &selectors,
                  const std::vector<std::string> *claims)
        : MercureFilter(TopicSelectorList(selectors), claims)
    {
    }
    /* With the selectors compiled already (checked with limit_error()). */
    MercureFilter(TopicSelectorList selectors, const std::vector<std::string> *claims)
        : selectors_(std::move(selectors)),
          claims_(claims ? TopicSelectorList(*claims) : TopicSelectorList())
    {
    }

    bool admits(const std::vector<std::string> &topics, bool is_private) const
    {
        return selectors_.matches_any(topics) && (!is_private || claims_.matches_any(topics));
    }

private:
    TopicSelectorList selectors_;
    TopicSelectorList claims_; /* empty: no private update */
};

} // namespace sse

#endif
