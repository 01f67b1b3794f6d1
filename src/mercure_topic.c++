/* Mercure topic selectors (see sse/mercure_topic.h). */
#include "sse/mercure_topic.h"

#include "sse/wire.h"

#include <algorithm>
#include <iterator>

namespace sse {

namespace {

/* Unicode general category Cf (Unicode 15). */
struct CodeRange {
    char32_t lo, hi;
};
constexpr CodeRange kFormatChars[] = {
    {0x00AD, 0x00AD},   {0x0600, 0x0605},   {0x061C, 0x061C},   {0x06DD, 0x06DD},
    {0x070F, 0x070F},   {0x0890, 0x0891},   {0x08E2, 0x08E2},   {0x180E, 0x180E},
    {0x200B, 0x200F},   {0x202A, 0x202E},   {0x2060, 0x2064},   {0x2066, 0x206F},
    {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
    {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
    {0xE0020, 0xE007F},
};

bool is_format_char(char32_t c)
{
    return std::any_of(std::begin(kFormatChars), std::end(kFormatChars),
                       [c](const CodeRange &r) { return c >= r.lo && c <= r.hi; });
}

/* The code point starting at s[i] of well-formed UTF-8; advances i. */
char32_t next_code_point(std::string_view s, std::size_t &i)
{
    const auto b = static_cast<unsigned char>(s[i]);
    const int extra = b < 0x80 ? 0 : b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
    char32_t c = extra == 0 ? b : b & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k)
        c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += 1 + extra;
    return c;
}

bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* RFC 6570 section 2.1: what a literal may not hold (besides controls and space). */
bool forbidden_in_literal(unsigned char c)
{
    return c <= 0x20 || c == 0x7F || std::string_view("\"'<>\\^`{|}").find(static_cast<char>(c)) !=
                                         std::string_view::npos;
}

/* One expression's operator (RFC 6570 section 3.2.1, table of Appendix A). */
struct Operator {
    char first;     /* 0: none */
    char sep;
    bool named;     /* ; ? & */
    bool reserved;  /* + #: reserved characters pass unencoded */
};

bool operator_of(char c, Operator *out)
{
    switch (c) {
    case '+': *out = {0, ',', false, true}; return true;
    case '#': *out = {'#', ',', false, true}; return true;
    case '.': *out = {'.', '.', false, false}; return true;
    case '/': *out = {'/', '/', false, false}; return true;
    case ';': *out = {';', ';', true, false}; return true;
    case '?': *out = {'?', '&', true, false}; return true;
    case '&': *out = {'&', '&', true, false}; return true;
    default: return false;
    }
}

struct VarSpec {
    bool explode = false;
};

} // namespace

std::string validate_mercure_string(std::string_view s, std::string_view what)
{
    if (s.size() > kMaxTopicBytes)
        return std::string(what) + " is longer than " + std::to_string(kMaxTopicBytes) + " bytes";
    if (!is_valid_utf8(s))
        return std::string(what) + " is not valid UTF-8";
    for (std::size_t i = 0; i < s.size();) {
        const char32_t c = next_code_point(s, i);
        if (c <= 0x1F || (c >= 0x7F && c <= 0x9F))
            return std::string(what) + " holds a control character";
        if (is_format_char(c))
            return std::string(what) + " holds a Unicode format character";
    }
    return {};
}

/* Parses an RFC 6570 template and emits its NFA into a TopicSelector. */
class TemplateCompiler {
public:
    explicit TemplateCompiler(TopicSelector &sel) : sel_(sel) {}

    bool compile(std::string_view t)
    {
        bool in_prefix = true;
        std::size_t i = 0;
        while (i < t.size()) {
            const auto c = static_cast<unsigned char>(t[i]);
            if (c == '{') {
                in_prefix = false;
                const std::size_t close = t.find('}', i + 1);
                if (close == std::string_view::npos || !expression(t.substr(i + 1, close - i - 1)))
                    return false;
                i = close + 1;
                continue;
            }
            if (c == '%' && !(i + 2 < t.size() && is_hex(t[i + 1]) && is_hex(t[i + 2])))
                return false;
            if (c < 0x80 && forbidden_in_literal(c))
                return false;
            emit(TopicSelector::Op::Byte, c);
            if (in_prefix)
                sel_.prefix_.push_back(static_cast<char>(c));
            ++i;
        }
        emit(TopicSelector::Op::Match, 0);
        return true;
    }

private:
    using Op = TopicSelector::Op;

    std::uint32_t here() const { return static_cast<std::uint32_t>(sel_.prog_.size()); }
    std::uint32_t emit(Op op, std::uint32_t arg)
    {
        sel_.prog_.push_back({op, arg});
        return here() - 1;
    }
    void patch(std::uint32_t at, std::uint32_t target) { sel_.prog_[at].arg = target; }

    /* Index in sel_.sets_ of the set of characters a value may hold unencoded. */
    std::uint32_t value_set(bool reserved, bool with_equals)
    {
        std::bitset<256> set;
        for (unsigned char c : std::string_view("-._~"))
            set.set(c);
        for (int c = 0; c < 256; ++c)
            if (is_alnum(static_cast<unsigned char>(c)))
                set.set(c);
        set.set(',');
        if (reserved)
            for (unsigned char c : std::string_view("!#$&'()*+,/:;=?@[]"))
                set.set(c);
        if (with_equals)
            set.set('=');
        return set_index(set);
    }
    std::uint32_t set_index(const std::bitset<256> &set)
    {
        auto it = std::find(sel_.sets_.begin(), sel_.sets_.end(), set);
        if (it != sel_.sets_.end())
            return static_cast<std::uint32_t>(it - sel_.sets_.begin());
        sel_.sets_.push_back(set);
        return static_cast<std::uint32_t>(sel_.sets_.size() - 1);
    }
    std::uint32_t hex_set()
    {
        std::bitset<256> set;
        for (int c = 0; c < 256; ++c)
            if (is_hex(static_cast<unsigned char>(c)))
                set.set(c);
        return set_index(set);
    }

    /* ( [set] | %XX )* */
    void value_run(std::uint32_t set)
    {
        const std::uint32_t loop = emit(Op::Split, 0);
        const std::uint32_t fork = emit(Op::Split, 0);
        emit(Op::Set, set);
        emit(Op::Jump, loop);
        patch(fork, here());
        emit(Op::Byte, '%');
        const std::uint32_t hex = hex_set();
        emit(Op::Set, hex);
        emit(Op::Set, hex);
        emit(Op::Jump, loop);
        patch(loop, here());
    }

    /* ( sep value )* when `unbounded`, else at most `max` times. */
    void more_values(char sep, std::uint32_t set, bool unbounded, std::size_t max)
    {
        if (unbounded) {
            const std::uint32_t loop = emit(Op::Split, 0);
            emit(Op::Byte, static_cast<unsigned char>(sep));
            value_run(set);
            emit(Op::Jump, loop);
            patch(loop, here());
            return;
        }
        std::vector<std::uint32_t> exits;
        for (std::size_t k = 0; k < max; ++k) {
            exits.push_back(emit(Op::Split, 0));
            emit(Op::Byte, static_cast<unsigned char>(sep));
            value_run(set);
        }
        for (const std::uint32_t at : exits)
            patch(at, here());
    }

    bool expression(std::string_view body)
    {
        Operator op{0, ',', false, false};
        if (!body.empty() && operator_of(body[0], &op))
            body.remove_prefix(1);
        std::vector<VarSpec> vars;
        if (!var_list(body, vars))
            return false;
        if (vars.size() > kMaxTemplateVariables) {
            sel_.too_many_variables_ = true;
            return false;
        }
        const std::uint32_t start = here();
        const bool explode =
            std::any_of(vars.begin(), vars.end(), [](const VarSpec &v) { return v.explode; });
        /* The expression may expand to nothing at all. */
        const std::uint32_t skip = emit(Op::Split, 0);
        if (op.first)
            emit(Op::Byte, static_cast<unsigned char>(op.first));
        value_run(value_set(op.reserved, op.named || vars[0].explode));
        if (vars.size() > 1 || explode)
            more_values(op.sep, value_set(op.reserved, op.named || explode), explode,
                        vars.size() - 1);
        patch(skip, here());
        sel_.states_ += here() - start;
        return true;
    }

    /* varspec *( "," varspec ), varspec = varname [ ":" 1-4 digits | "*" ]. */
    static bool var_list(std::string_view body, std::vector<VarSpec> &vars)
    {
        std::size_t i = 0;
        for (;;) {
            VarSpec v;
            if (!var_name(body, i))
                return false;
            if (i < body.size() && body[i] == '*') {
                v.explode = true;
                ++i;
            } else if (i < body.size() && body[i] == ':') {
                const std::size_t start = ++i;
                while (i < body.size() && body[i] >= '0' && body[i] <= '9' && i - start < 4)
                    ++i;
                if (i == start || body[start] == '0')
                    return false;
            }
            vars.push_back(v);
            if (i == body.size())
                return true;
            if (body[i] != ',')
                return false;
            ++i;
        }
    }

    /* varchar *( ["."] varchar ), varchar = ALPHA / DIGIT / "_" / pct-encoded. */
    static bool var_name(std::string_view body, std::size_t &i)
    {
        bool need_char = true;
        const std::size_t start = i;
        while (i < body.size()) {
            const auto c = static_cast<unsigned char>(body[i]);
            if (is_alnum(c) || c == '_') {
                ++i;
            } else if (c == '%' && i + 2 < body.size() && is_hex(body[i + 1]) && is_hex(body[i + 2])) {
                i += 3;
            } else if (c == '.' && !need_char) {
                ++i;
                need_char = true;
                continue;
            } else {
                break;
            }
            need_char = false;
        }
        return i > start && !need_char;
    }

    TopicSelector &sel_;
};

TopicSelector TopicSelector::compile(std::string_view selector)
{
    TopicSelector sel;
    sel.text_ = std::string(selector);
    if (selector == "*") {
        sel.kind_ = Kind::Any;
        return sel;
    }
    if (selector.find('{') == std::string_view::npos)
        return sel;
    TemplateCompiler compiler(sel);
    if (!compiler.compile(selector)) {
        sel.prog_.clear();
        sel.sets_.clear();
        sel.prefix_.clear();
        sel.states_ = 0;
        return sel;
    }
    sel.kind_ = Kind::Template;
    sel.current_.reserve(sel.prog_.size());
    sel.next_.reserve(sel.prog_.size());
    sel.mark_.assign(sel.prog_.size(), 0);
    return sel;
}

bool TopicSelector::matches(std::string_view topic) const
{
    switch (kind_) {
    case Kind::Any: return true;
    case Kind::Exact: return topic == text_;
    case Kind::Template: return topic == text_ || template_matches(topic);
    }
    return false;
}

bool TopicSelector::matches_any(const std::vector<std::string> &topics) const
{
    return std::any_of(topics.begin(), topics.end(),
                       [this](const std::string &t) { return matches(t); });
}

/* Adds `pc` and what it reaches through Split and Jump to `list` (each instruction once
 * per generation). The list doubles as the work stack: entries past `done` are followed. */
void TopicSelector::add_state(std::vector<std::uint32_t> &list, std::uint32_t pc,
                              std::uint32_t gen) const
{
    if (mark_[pc] == gen)
        return;
    mark_[pc] = gen;
    std::size_t done = list.size();
    list.push_back(pc);
    while (done < list.size()) {
        const Inst in = prog_[list[done]];
        if (in.op != Op::Split && in.op != Op::Jump) {
            ++done;
            continue;
        }
        /* Replace the fork by its targets (a fork is no state of its own). */
        const std::uint32_t at = list[done];
        list[done] = list.back();
        list.pop_back();
        for (const std::uint32_t to : {in.op == Op::Split ? at + 1 : in.arg, in.arg}) {
            if (mark_[to] != gen) {
                mark_[to] = gen;
                list.push_back(to);
            }
        }
    }
}

bool TopicSelector::template_matches(std::string_view topic) const
{
    if (topic.compare(0, prefix_.size(), prefix_) != 0)
        return false;
    auto next_generation = [this] {
        if (++generation_ == 0) {
            std::fill(mark_.begin(), mark_.end(), 0);
            generation_ = 1;
        }
        return generation_;
    };
    current_.clear();
    add_state(current_, 0, next_generation());
    for (const char ch : topic) {
        const auto c = static_cast<unsigned char>(ch);
        const std::uint32_t gen = next_generation();
        next_.clear();
        for (const std::uint32_t pc : current_) {
            const Inst in = prog_[pc];
            if ((in.op == Op::Set && sets_[in.arg].test(c)) || (in.op == Op::Byte && in.arg == c))
                add_state(next_, pc + 1, gen);
        }
        current_.swap(next_);
        if (current_.empty())
            return false;
    }
    return std::any_of(current_.begin(), current_.end(),
                       [this](std::uint32_t pc) { return prog_[pc].op == Op::Match; });
}

TopicSelectorList::TopicSelectorList(const std::vector<std::string> &selectors)
{
    selectors_.reserve(selectors.size());
    for (const auto &s : selectors) {
        selectors_.push_back(TopicSelector::compile(s));
        any_ = any_ || selectors_.back().kind() == TopicSelector::Kind::Any;
    }
}

std::string TopicSelectorList::limit_error() const
{
    std::size_t states = 0;
    for (const TopicSelector &s : selectors_) {
        if (s.too_many_variables())
            return "a URI template expression names at most " +
                   std::to_string(kMaxTemplateVariables) + " variables";
        states += s.states();
    }
    if (states > kMaxSelectorStates)
        return "the URI templates of a subscription compile to at most " +
               std::to_string(kMaxSelectorStates) + " matching states together (these take " +
               std::to_string(states) + "): use fewer or simpler template expressions";
    return {};
}

bool TopicSelectorList::matches_any(const std::vector<std::string> &topics) const
{
    if (any_)
        return !topics.empty();
    return std::any_of(selectors_.begin(), selectors_.end(),
                       [&](const TopicSelector &s) { return s.matches_any(topics); });
}

bool TopicSelectorList::matches_all(const std::vector<std::string> &topics) const
{
    return std::all_of(topics.begin(), topics.end(), [this](const std::string &t) {
        return any_ || std::any_of(selectors_.begin(), selectors_.end(),
                                   [&](const TopicSelector &s) { return s.matches(t); });
    });
}

std::string mercure_hub_channel(std::string_view hub_name)
{
    std::string channel = kMercureChannelPrefix;
    if (channel.size() + hub_name.size() <= kMaxChannelNameBytes)
        return channel.append(hub_name);
    /* FNV-1a, 64 bits: names come from the configuration, not from clients. */
    std::uint64_t h = 14695981039346656037ULL;
    for (unsigned char c : hub_name)
        h = (h ^ c) * 1099511628211ULL;
    static const char hex[] = "0123456789abcdef";
    std::string tail = "#";
    for (int shift = 60; shift >= 0; shift -= 4)
        tail += hex[(h >> shift) & 0xF];
    const std::size_t room = kMaxChannelNameBytes - channel.size() - tail.size();
    return channel.append(hub_name.substr(0, room)).append(tail);
}

} // namespace sse
