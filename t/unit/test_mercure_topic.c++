/* Mercure topic selectors: `*`, exact topics, URI templates as the reference hub matches
 * them (a template compiled to an expression over what it can expand to), and the string
 * rules topics and selectors obey. */
#include "unit.h"

#include "sse/mercure_topic.h"
#include "sse/wire.h"

#include <string>
#include <vector>

using namespace sse;

namespace {

bool selects(const char *selector, const std::string &topic)
{
    return TopicSelector::compile(selector).matches(topic);
}

} // namespace

START_TEST(star_selects_everything)
{
    const TopicSelector any = TopicSelector::compile("*");
    ck_assert(any.kind() == TopicSelector::Kind::Any);
    ck_assert(any.matches("https://example.com/books/1"));
    ck_assert(any.matches("raw string"));
    ck_assert(any.matches(""));
}
END_TEST

START_TEST(exact_topics_compare_bytes)
{
    const TopicSelector s = TopicSelector::compile("https://example.com/foo");
    ck_assert(s.kind() == TopicSelector::Kind::Exact);
    ck_assert(s.matches("https://example.com/foo"));
    ck_assert(!s.matches("https://example.com/foo/"));
    ck_assert(!s.matches("https://example.com/Foo"));
    ck_assert(!s.matches("https://EXAMPLE.com/foo")); /* no normalisation */
    ck_assert(!s.matches("https://example.com/fo"));
    ck_assert(selects("raw string with spaces", "raw string with spaces"));
    /* %-escapes are bytes like any other: not decoded. */
    ck_assert(selects("https://example.com/a%20b", "https://example.com/a%20b"));
    ck_assert(!selects("https://example.com/a%20b", "https://example.com/a b"));
    /* Unicode, compared as UTF-8 bytes, NFC and NFD differ. */
    ck_assert(selects("https://example.com/caf\xc3\xa9", "https://example.com/caf\xc3\xa9"));
    ck_assert(!selects("https://example.com/caf\xc3\xa9", "https://example.com/cafe\xcc\x81"));
    /* A selector that is not a template though it has braces is exact. */
    const TopicSelector braces = TopicSelector::compile("{not a template}");
    ck_assert(braces.kind() == TopicSelector::Kind::Exact);
    ck_assert(braces.matches("{not a template}"));
    ck_assert(!braces.matches("anything"));
}
END_TEST

START_TEST(long_topics)
{
    std::string topic = "https://example.com/";
    topic.append(10000, 'x');
    ck_assert(selects(topic.c_str(), topic));
    ck_assert(!selects(topic.c_str(), topic + "x"));
    ck_assert(selects("https://example.com/{id}", topic));
    ck_assert(!selects("https://example.com/{id}", topic + "/"));
    ck_assert(selects("https://example.com/{+path}", topic + "/a/b?c=d"));
}
END_TEST

START_TEST(simple_expansion)
{
    const char *tpl = "https://example.com/books/{id}";
    ck_assert(TopicSelector::compile(tpl).kind() == TopicSelector::Kind::Template);
    ck_assert(selects(tpl, "https://example.com/books/1"));
    ck_assert(selects(tpl, "https://example.com/books/some-book_1.0~"));
    ck_assert(selects(tpl, "https://example.com/books/"));          /* an empty value */
    ck_assert(selects(tpl, "https://example.com/books/a%2Fb"));     /* an escaped slash */
    ck_assert(selects(tpl, "https://example.com/books/a,b"));       /* a list value */
    ck_assert(selects(tpl, tpl));                                   /* the selector itself */
    ck_assert(!selects(tpl, "https://example.com/books/1/reviews")); /* / is reserved */
    ck_assert(!selects(tpl, "https://example.com/books/1?x"));
    ck_assert(!selects(tpl, "https://example.com/books/a%2"));      /* a broken escape */
    ck_assert(!selects(tpl, "https://example.com/authors/1"));
    ck_assert(!selects(tpl, "http://example.com/books/1"));
    ck_assert(!selects(tpl, "https://example.com/books/caf\xc3\xa9")); /* unencoded unicode */
    ck_assert(selects(tpl, "https://example.com/books/caf%C3%A9"));
    ck_assert(selects("https://example.com/books/{id}/reviews/{review}",
                      "https://example.com/books/1/reviews/22"));
    ck_assert(!selects("https://example.com/books/{id}/reviews/{review}",
                       "https://example.com/books/1/reviews"));
    ck_assert(selects("{a}:{b}", "x:y"));
    ck_assert(selects("{a,b}", "x,y"));
    ck_assert(!selects("{a,b}", "x/y"));
}
END_TEST

START_TEST(reserved_and_fragment_expansion)
{
    ck_assert(selects("https://example.com/{+path}", "https://example.com/a/b/c"));
    ck_assert(selects("https://example.com/{+path}", "https://example.com/a?b=c&d#e"));
    ck_assert(!selects("https://example.com/{+path}", "https://example.com/a b"));
    ck_assert(selects("https://example.com/page{#section}", "https://example.com/page"));
    ck_assert(selects("https://example.com/page{#section}", "https://example.com/page#top/x"));
    ck_assert(!selects("https://example.com/page{#section}", "https://example.com/pagex"));
}
END_TEST

START_TEST(level_3_and_4_expansions)
{
    ck_assert(selects("https://example.com{/seg}", "https://example.com/a"));
    ck_assert(selects("https://example.com{/seg}", "https://example.com"));
    ck_assert(!selects("https://example.com{/seg}", "https://example.com/a/b"));
    ck_assert(selects("https://example.com{/seg*}", "https://example.com/a/b/c"));
    ck_assert(selects("https://example.com{/a,b}", "https://example.com/x/y"));
    ck_assert(!selects("https://example.com{/a,b}", "https://example.com/x/y/z"));
    ck_assert(selects("https://example.com/f{.ext}", "https://example.com/f.json"));
    ck_assert(selects("https://example.com/f{.ext*}", "https://example.com/f.tar.gz"));
    ck_assert(selects("https://example.com/m{;x,y}", "https://example.com/m;x=1;y=2"));
    ck_assert(selects("https://example.com/s{?q,page}", "https://example.com/s?q=a&page=2"));
    ck_assert(selects("https://example.com/s{?q,page}", "https://example.com/s"));
    ck_assert(!selects("https://example.com/s{?q,page}", "https://example.com/s?q=a&p=2&x=3"));
    ck_assert(selects("https://example.com/s?fixed=1{&x}", "https://example.com/s?fixed=1&x=9"));
    ck_assert(selects("https://example.com/books/{id:3}", "https://example.com/books/12345"));
}
END_TEST

START_TEST(templates_that_do_not_parse_are_exact)
{
    for (const char *s : {"https://example.com/{", "https://example.com/{}", "https://x/{=a}",
                          "https://x/{a b}", "https://x/{a:0}", "https://x/{a:12345}",
                          "https://x/{.a.}", "https://x/{a}|{b}", "https://x/%zz{a}"}) {
        const TopicSelector sel = TopicSelector::compile(s);
        ck_assert_msg(sel.kind() == TopicSelector::Kind::Exact, "%s", s);
        ck_assert(sel.matches(s));
        ck_assert(!sel.matches("https://x/1"));
    }
    /* A literal may hold unicode and escapes. */
    ck_assert(selects("https://example.com/caf\xc3\xa9/{id}", "https://example.com/caf\xc3\xa9/1"));
    ck_assert(selects("https://example.com/a%20b/{id}", "https://example.com/a%20b/1"));
}
END_TEST

START_TEST(lists_of_selectors)
{
    const TopicSelectorList list({"https://example.com/foo", "https://example.com/books/{id}"});
    ck_assert(list.matches_any({"https://example.com/foo"}));
    ck_assert(list.matches_any({"other", "https://example.com/books/3"}));
    ck_assert(!list.matches_any({"other", "https://example.com/books/3/x"}));
    ck_assert(!list.matches_any({}));
    ck_assert(TopicSelectorList({"a", "*"}).matches_any({"anything"}));
    ck_assert(!TopicSelectorList().matches_any({"anything"}));
    /* A publisher's claims must cover every topic of its update. */
    ck_assert(list.matches_all({"https://example.com/foo", "https://example.com/books/3"}));
    ck_assert(!list.matches_all({"https://example.com/foo", "other"}));
    ck_assert(TopicSelectorList({"*"}).matches_all({"a", "b"}));
}
END_TEST

/* Compiled once; matching allocates nothing (the global operator new fails while
 * unit_fail_allocations is set), and a selector matches many topics in a row. */
START_TEST(matching_does_not_allocate)
{
    const TopicSelector tpl = TopicSelector::compile("https://example.com/{+path}{?q*}");
    const TopicSelector exact = TopicSelector::compile("https://example.com/x");
    const std::string yes = "https://example.com/a/b?q=1&r=2", no = "https://other.example/a";
    unit_fail_allocations = true;
    bool ok = true;
    for (int k = 0; k < 1000; ++k)
        ok = ok && tpl.matches(yes) && !tpl.matches(no) && !exact.matches(yes);
    unit_fail_allocations = false;
    ck_assert(ok);
}
END_TEST

START_TEST(strings_a_topic_may_be)
{
    ck_assert(validate_mercure_string("https://example.com/caf\xc3\xa9", "topic").empty());
    ck_assert(validate_mercure_string("urn:uuid:1e7b1c5e-7c5e-4f3c-9d57-6a7c1d3a8b00", "id").empty());
    ck_assert(!validate_mercure_string("a\nb", "topic").empty());
    ck_assert(!validate_mercure_string(std::string("a\0b", 3), "topic").empty());
    ck_assert(!validate_mercure_string("a\x7f", "topic").empty());
    ck_assert(!validate_mercure_string("a\xc2\x85", "topic").empty());     /* C1 NEL */
    ck_assert(!validate_mercure_string("a\xe2\x80\xae" "b", "topic").empty()); /* RLO */
    ck_assert(!validate_mercure_string("a\xe2\x80\x8b" "b", "topic").empty()); /* ZWSP */
    ck_assert(!validate_mercure_string("\xef\xbb\xbf" "a", "topic").empty());  /* BOM */
    ck_assert(!validate_mercure_string("\xff", "topic").empty());
    ck_assert(!validate_mercure_string(std::string(kMaxTopicBytes + 1, 'a'), "topic").empty());
    assert_str(validate_mercure_string("a\tb", "topic"), "topic holds a control character");
}
END_TEST

/* Each hub its own bus channel, whatever the length of its name. */
START_TEST(hub_channels)
{
    const std::string plain = mercure_hub_channel("example.com/.well-known/mercure");
    ck_assert_str_eq(plain.c_str(), "#mercure:example.com/.well-known/mercure");
    ck_assert(mercure_hub_channel("a") != mercure_hub_channel("b"));
    const std::string host(300, 'h');
    const std::string a = mercure_hub_channel(host + "/hub-a"), b = mercure_hub_channel(host + "/hub-b");
    ck_assert_uint_eq(a.size(), kMaxChannelNameBytes);
    ck_assert_uint_eq(b.size(), kMaxChannelNameBytes);
    ck_assert(a != b);
    ck_assert(a.rfind(kMercureChannelPrefix, 0) == 0);
    ck_assert(a == mercure_hub_channel(host + "/hub-a"));
}
END_TEST

/* What a subscriber's selectors may cost: variables per expression, states together. */
START_TEST(selector_limits)
{
    auto vars = [](std::size_t n) {
        std::string e = "https://example.com/{";
        for (std::size_t i = 0; i < n; ++i)
            e += (i ? ",v" : "v") + std::to_string(i);
        return e + "}";
    };
    ck_assert(TopicSelectorList({vars(kMaxTemplateVariables)}).limit_error().empty());
    ck_assert(selects(vars(kMaxTemplateVariables).c_str(), "https://example.com/a,b"));
    const std::string over = TopicSelectorList({vars(kMaxTemplateVariables + 1)}).limit_error();
    ck_assert_msg(over.find("at most 16 variables") != std::string::npos, "%s", over.c_str());
    ck_assert(TopicSelector::compile(vars(kMaxTemplateVariables + 1)).too_many_variables());

    const TopicSelector one = TopicSelector::compile("https://example.com/books/{id}");
    ck_assert_uint_gt(one.states(), 0);
    ck_assert_uint_eq(TopicSelector::compile(std::string(10000, 'x') + "{id}").states(),
                      one.states()); /* literal text costs no state */
    ck_assert_uint_eq(TopicSelector::compile("https://example.com/books/1").states(), 0);
    std::vector<std::string> many(kMaxSelectorStates / one.states(), one.text());
    ck_assert(TopicSelectorList(many).limit_error().empty());
    many.push_back(one.text());
    const std::string total = TopicSelectorList(many).limit_error();
    ck_assert_msg(total.find("at most 1024 matching states") != std::string::npos, "%s",
                  total.c_str());
    /* The reviewer's case: one long expression list. */
    ck_assert(!TopicSelectorList({vars(2000)}).limit_error().empty());
}
END_TEST

Suite *mercure_topic_suite()
{
    Suite *s = suite_create("mercure_topic");
    TCase *tc = tcase_create("mercure_topic");
    tcase_add_test(tc, star_selects_everything);
    tcase_add_test(tc, exact_topics_compare_bytes);
    tcase_add_test(tc, long_topics);
    tcase_add_test(tc, simple_expansion);
    tcase_add_test(tc, reserved_and_fragment_expansion);
    tcase_add_test(tc, level_3_and_4_expansions);
    tcase_add_test(tc, templates_that_do_not_parse_are_exact);
    tcase_add_test(tc, lists_of_selectors);
    tcase_add_test(tc, matching_does_not_allocate);
    tcase_add_test(tc, strings_a_topic_may_be);
    tcase_add_test(tc, hub_channels);
    tcase_add_test(tc, selector_limits);
    suite_add_tcase(s, tc);
    return s;
}
