/* Mercure's active subscriptions (sse/mercure_subscription.h): the slot note, the topics, the
 * documents of events and of the API, the API's paths. */
#include <nlohmann/json.hpp> /* before check.h, whose macros clash with <iostream> */

#include "unit.h"

#include "sse/mercure_subscription.h"
#include "sse/registry.h"

using namespace sse;
using nlohmann::json;

namespace {

MercureSubscriber alice()
{
    return MercureSubscriber{"urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6", R"({"foo":"bar"})",
                             {"https://example.com/{selector}", "https://example.com/a b"},
                             "#mercure:example.com/.well-known/mercure"};
}

} // namespace

START_TEST(notes_round_trip_and_are_bounded)
{
    MercureSubscriber s = alice();
    auto note = encode_subscriber_note(s);
    ck_assert(note.has_value());
    auto back = decode_subscriber_note(*note);
    ck_assert(back.has_value());
    assert_str(back->id, s.id);
    assert_str(back->hub, s.hub);
    assert_str(back->payload, s.payload);
    ck_assert(back->selectors == s.selectors);
    /* No payload: an empty field, still one selector. */
    s.payload.clear();
    s.selectors = {"x"};
    back = decode_subscriber_note(*encode_subscriber_note(s));
    ck_assert(back && back->payload.empty() && back->selectors.size() == 1);
    /* Another kind of note is no subscriber. */
    ck_assert(!decode_subscriber_note(""));
    ck_assert(!decode_subscriber_note("some other note"));
    /* Over the slot's room: refused. */
    s.selectors = {std::string(kMaxSlotNoteBytes, 't')};
    ck_assert(!encode_subscriber_note(s));
}
END_TEST

START_TEST(topics_encode_each_part_whole)
{
    assert_str(percent_encode("https://example.com/{selector}"),
               "https%3A%2F%2Fexample.com%2F%7Bselector%7D");
    assert_str(percent_encode("a-b.c_d~e%20"), "a-b.c_d~e%2520"); /* '%' is encoded too */
    assert_str(subscription_topic("https://example.com/{selector}",
                                  "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6"),
               "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bselector%7D/"
               "urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6");
}
END_TEST

START_TEST(event_documents_as_the_draft_gives_them)
{
    MercureSubscriber s = alice();
    json d = json::parse(subscription_document(s, s.selectors[0], true, true));
    assert_str(d["@context"].get<std::string>(), "https://mercure.rocks/");
    assert_str(d["id"].get<std::string>(), subscription_topic(s.selectors[0], s.id));
    assert_str(d["type"].get<std::string>(), "Subscription");
    assert_str(d["topic"].get<std::string>(), s.selectors[0]);
    assert_str(d["subscriber"].get<std::string>(), s.id);
    ck_assert(d["active"] == true);
    ck_assert(d["payload"] == json::parse(s.payload));
    s.payload.clear();
    d = json::parse(subscription_document(s, s.selectors[1], false, false));
    ck_assert(d["active"] == false && !d.contains("payload") && !d.contains("@context"));
}
END_TEST

START_TEST(collections_and_single_answers)
{
    MercureSubscriber bob{"urn:uuid:b0b", "", {"https://example.com/{selector}"}, "#mercure:h"};
    std::vector<MercureSubscriber> all{alice(), bob};
    json c = json::parse(
        subscriptions_collection(all, std::nullopt, "/.well-known/mercure/subscriptions", "e1"));
    assert_str(c["type"].get<std::string>(), "Subscriptions");
    assert_str(c["id"].get<std::string>(), "/.well-known/mercure/subscriptions");
    assert_str(c["lastEventID"].get<std::string>(), "e1");
    ck_assert_int_eq(c["subscriptions"].size(), 3);
    ck_assert(!c["subscriptions"][0].contains("@context"));
    c = json::parse(subscriptions_collection(all, std::string("https://example.com/{selector}"),
                                             "/x", "earliest"));
    ck_assert_int_eq(c["subscriptions"].size(), 2);
    assert_str(c["subscriptions"][1]["subscriber"].get<std::string>(), "urn:uuid:b0b");
    c = json::parse(subscriptions_collection(all, std::string("nobody's"), "/x", "e"));
    ck_assert(c["subscriptions"].is_array() && c["subscriptions"].empty());
    auto one = subscription_answer(all, "https://example.com/a b", alice().id, "e2");
    ck_assert(one.has_value());
    json d = json::parse(*one);
    assert_str(d["topic"].get<std::string>(), "https://example.com/a b");
    assert_str(d["lastEventID"].get<std::string>(), "e2");
    ck_assert(!subscription_answer(all, "https://example.com/a b", "urn:uuid:b0b", "e"));
}
END_TEST

START_TEST(api_paths)
{
    auto q = parse_subscriptions_path("");
    ck_assert(q && !q->topic && !q->subscriber);
    q = parse_subscriptions_path("/https%3A%2F%2Fexample.com%2F%7Bselector%7D");
    ck_assert(q && *q->topic == "https://example.com/{selector}" && !q->subscriber);
    q = parse_subscriptions_path("/a%2fb/urn%3Auuid%3A1");
    ck_assert(q && *q->topic == "a/b" && *q->subscriber == "urn:uuid:1");
    ck_assert(!parse_subscriptions_path("x"));         /* .../subscriptionsx */
    ck_assert(!parse_subscriptions_path("/"));         /* an empty topic */
    ck_assert(!parse_subscriptions_path("/a/"));       /* an empty subscriber */
    ck_assert(!parse_subscriptions_path("/a/b/c"));    /* one segment too many */
    ck_assert(!parse_subscriptions_path("/a%2"));      /* a truncated escape */
    ck_assert(!parse_subscriptions_path("/a%zz"));
    ck_assert(!parse_subscriptions_path("/a%FF"));     /* decodes to a byte that is not UTF-8 */
    ck_assert(!parse_subscriptions_path("/a\xff/b"));  /* a raw byte that is not UTF-8 */
    q = parse_subscriptions_path("/%C3%A9t%C3%A9");     /* UTF-8: taken */
    ck_assert(q && *q->topic == "\xc3\xa9t\xc3\xa9");
}
END_TEST

START_TEST(the_hub_namespace_is_found_however_spelled)
{
    for (const char *t : {"/.well-known/mercure", "/.well-known/mercure/subscriptions/a/b",
                          "https://hub.example.com/.well-known/mercure/subscriptions/x",
                          "HTTP://h/.well-known/mercure", "//h/.well-known/mercure/x",
                          "/.well-known/%6Dercure/x", "/.well-known/%6dercure", "/%2E%2e/.well-known/mercure",
                          "/.well-known/mercure/../mercure/x", "/a/../.well-known/mercure",
                          "/.well-known/./mercure/.",
                          "https:mercure/x", "https:\\\\h\\.well-known\\mercure\\x",
                          "ws:/h/.well-known/mercure", "mailto:/.well-known/mercure/x",
                          "https://h/.well-known/mercure?x", "/.well-known/mercure#f"})
        ck_assert_msg(addresses_hub_namespace(t), "%s addresses the hub's namespace", t);
    for (const char *t : {"https://example.com/books/1", "urn:uuid:1", "/.well-known/mercurex",
                          "/.well-known/mercure%2Fx", "https://h/a?/.well-known/mercure/",
                          "/a#/.well-known/mercure", "raw string", "foo:.well-known/mercure",
                          "/.well-known/mercure/../x", "/.well-known/%00mercure",
                          "mercure", "mercure/subscriptions/x" /* raw strings */})
        ck_assert_msg(!addresses_hub_namespace(t), "%s does not", t);
}
END_TEST

Suite *mercure_subscription_suite()
{
    Suite *s = suite_create("mercure_subscription");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, notes_round_trip_and_are_bounded);
    tcase_add_test(tc, topics_encode_each_part_whole);
    tcase_add_test(tc, event_documents_as_the_draft_gives_them);
    tcase_add_test(tc, collections_and_single_answers);
    tcase_add_test(tc, api_paths);
    tcase_add_test(tc, the_hub_namespace_is_found_however_spelled);
    suite_add_tcase(s, tc);
    return s;
}
