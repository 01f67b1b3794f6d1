/* Query strings, channel selection and publish bodies (JSON, form, raw). */
#include "unit.h"

#include "sse/request.h"

#include <string>

using namespace sse;

START_TEST(form_decoding)
{
    Params p;
    ck_assert(parse_form("a=1&b=x+y&c=%41%62&&d&e=", p).empty());
    ck_assert_int_eq(p.size(), 5);
    assert_str(p[1].second, "x y");
    assert_str(p[2].second, "Ab");
    assert_str(p[3].first, "d");
    assert_str(p[3].second, "");
    Params bad;
    ck_assert(!parse_form("a=%zz", bad).empty());
    ck_assert(!parse_form("a=%4", bad).empty());
    ck_assert(!parse_form("a=%", bad).empty());
    Params twice;
    ck_assert(parse_form("k=1&x=0&k=2", twice).empty());
    assert_str(*param_first(twice, "k"), "1");
    assert_str(*param_last(twice, "k"), "2");
    ck_assert(!param_first(twice, "y"));
}
END_TEST

START_TEST(channel_selection)
{
    std::vector<std::string> out;
    Params none;
    ck_assert(select_channels(nullptr, none, "/news", out).empty());
    ck_assert_int_eq(out.size(), 1);
    assert_str(out[0], "news");
    ck_assert(select_channels(nullptr, none, "/news,sports/", out).empty());
    ck_assert_int_eq(out.size(), 2);
    ck_assert(select_channels(nullptr, none, "/a/b", out).empty());
    assert_str(out[0], "a/b");

    Params q;
    parse_form("channel=x,y&channel=z", q);
    ck_assert(select_channels(nullptr, q, "/ignored", out).empty());
    ck_assert_int_eq(out.size(), 3);

    /* `stream` is `channel`'s synonym (r3labs/sse); both at once is refused. */
    Params sq;
    parse_form("stream=x,y&stream=z", sq);
    ck_assert(select_channels(nullptr, sq, "/ignored", out).empty());
    ck_assert_int_eq(out.size(), 3);
    assert_str(out[2], "z");
    auto query = [](const char *text) {
        Params p;
        parse_form(text, p);
        return p;
    };
    ck_assert(select_channels(nullptr, query("stream=bad%20name"), "", out).find("bad name") !=
              std::string::npos);
    assert_str(select_channels(nullptr, query("stream="), "/path", out),
               "the stream parameter names no channel");
    sq = query("channel=a&stream=b");
    ck_assert(select_channels(nullptr, sq, "", out).find("both channel and stream") !=
              std::string::npos);

    std::string conf = "fixed";
    ck_assert(select_channels(&conf, sq, "/ignored", out).empty()); /* SSEChannel decides */
    ck_assert(select_channels(&conf, q, "/ignored", out).empty());
    ck_assert_int_eq(out.size(), 1);
    assert_str(out[0], "fixed");

    ck_assert(select_channels(nullptr, none, "/", out).find("no channel") != std::string::npos);
    Params badq;
    parse_form("channel=bad%20name", badq);
    ck_assert(select_channels(nullptr, badq, "", out).find("bad name") != std::string::npos);
    std::string many;
    for (int i = 0; i < 65; ++i)
        many += "c" + std::to_string(i) + ",";
    ck_assert(select_channels(&many, none, "", out).find("too many") != std::string::npos);
}
END_TEST

/* ?event=: repeatable, comma lists, repeats and empty items dropped; none is no filter;
 * names checked as a publish's event type; a cap on the count. */
START_TEST(event_type_selection)
{
    std::vector<std::string> out;
    auto query = [](const std::string &text) {
        Params p;
        ck_assert(parse_form(text, p).empty());
        return p;
    };
    ck_assert(select_event_types(query("channel=c"), out).empty());
    ck_assert(out.empty());
    ck_assert(select_event_types(query("event=a,b&event=c&event=a,,message"), out).empty());
    ck_assert_int_eq(out.size(), 4);
    assert_str(out[0], "a");
    assert_str(out[2], "c");
    assert_str(out[3], "message");
    ck_assert(select_event_types(query("event=ok&event=bad%0Aline"), out)
                  .find("must not contain CR, LF or NUL") != std::string::npos);
    std::string many = "event=";
    for (std::size_t i = 0; i <= kMaxEventTypesPerStream; ++i)
        many += "t" + std::to_string(i) + ",";
    ck_assert(select_event_types(query(many), out).find("more than") != std::string::npos);
}
END_TEST

START_TEST(raw_bodies)
{
    Params q;
    parse_form("event=update&id=42&retry=1500", q);
    PublishBody b;
    ck_assert(parse_publish("text/plain", "line1\nline2", q, b).empty());
    assert_str(b.fields.data, "line1\nline2");
    assert_str(b.fields.event, "update");
    assert_str(b.fields.id, "42");
    ck_assert_int_eq(b.fields.retry, 1500);

    /* what curl -d sends: form-encoded content type, but not our fields */
    PublishBody c;
    ck_assert(parse_publish("application/x-www-form-urlencoded", "hello", Params(), c).empty());
    assert_str(c.fields.data, "hello");
    PublishBody d;
    ck_assert(parse_publish("application/x-www-form-urlencoded", "a=b&c", Params(), d).empty());
    assert_str(d.fields.data, "a=b&c");

    PublishBody e;
    ck_assert(parse_publish("", "", Params(), e).find("nothing to publish") != std::string::npos);
    PublishBody f;
    Params badretry;
    parse_form("retry=soon", badretry);
    ck_assert(parse_publish("", "x", badretry, f).find("retry") != std::string::npos);
    PublishBody g;
    ck_assert(parse_publish("text/plain", "\xC3\x28", Params(), g).find("UTF-8") !=
              std::string::npos);
    PublishBody h;
    Params badid;
    parse_form("id=a%0Ab", badid);
    ck_assert(parse_publish("", "x", badid, h).find("event id") != std::string::npos);
}
END_TEST

START_TEST(form_bodies)
{
    PublishBody b;
    ck_assert(parse_publish("application/x-www-form-urlencoded",
                            "data=a%0Ab+c&event=e&id=i1&retry=10&channel=x,y", Params(), b)
                  .empty());
    assert_str(b.fields.data, "a\nb c");
    assert_str(b.fields.event, "e");
    assert_str(b.fields.id, "i1");
    ck_assert_int_eq(b.fields.retry, 10);
    ck_assert_int_eq(b.channels.size(), 2);

    PublishBody bad;
    std::string err = parse_publish("application/x-www-form-urlencoded", "data=%zz", Params(), bad);
    ck_assert_msg(err.find("malformed form data") != std::string::npos, "%s", err.c_str());
    PublishBody nodata;
    ck_assert(parse_publish("application/x-www-form-urlencoded", "event=x", Params(), nodata)
                  .find("nothing to publish") != std::string::npos);
}
END_TEST

START_TEST(json_bodies)
{
    PublishBody b;
    ck_assert(parse_publish("application/json",
                            R"({"data":"h\u00e9","event":"e","id":7,"retry":"20","channel":["a","b,c"]})",
                            Params(), b)
                  .empty());
    assert_str(b.fields.data, "h\xC3\xA9");
    assert_str(b.fields.id, "7");
    ck_assert_int_eq(b.fields.retry, 20);
    ck_assert_int_eq(b.channels.size(), 3);

    PublishBody obj;
    ck_assert(parse_publish("application/json", R"({"data":{"x":[1,2]}})", Params(), obj).empty());
    assert_str(obj.fields.data, R"({"x":[1,2]})");

    const char *bad[][2] = {
        {"{", "malformed JSON"},
        {"[1]", "must be an object"},
        {R"({"data":"x","evnt":"y"})", "unknown member \"evnt\""},
        {R"({"data":"x","event":5})", "\"event\" must be a string"},
        {R"({"data":"x","id":1.5})", "\"id\""},
        {R"({"data":"x","retry":-1})", "\"retry\""},
        {R"({"data":"x","retry":"1s"})", "retry"},
        {R"({"data":"x","channel":3})", "\"channel\""},
        {R"({"data":"x","channel":[]})", "names no channel"},
        {R"({"data":"x","event":"a\nb"})", "event type"},
        {R"({"data":"x","id":"a\u0000b"})", "event id"},
        {"{\"data\":\"\xFF\"}", "malformed JSON"},
        {R"({"data":1e400})", "malformed JSON"}, /* out_of_range, not parse_error (fuzz) */
        {R"({"event":"x"})", "nothing to publish"},
    };
    for (auto &c : bad) {
        PublishBody p;
        std::string err = parse_publish("application/json", c[0], Params(), p);
        ck_assert_msg(err.find(c[1]) != std::string::npos, "%s: got \"%s\"", c[0], err.c_str());
    }
}
END_TEST

START_TEST(resume_ids)
{
    Params q;
    parse_form("last_event_id=b&lastEventId=a&lastEventId=c", q);
    assert_str(resume_id(nullptr, q), "c");
    assert_str(resume_id(nullptr, Params()), "");
    assert_str(resume_id("\xc3\xbc-1", q), "\xc3\xbc-1"); /* UTF-8 header: as sent */
    assert_str(resume_id("\xfc-1", q), "\xc3\xbc-1");      /* Latin-1 (fetch()): converted */
}
END_TEST

/* Security finding 4: a deeply nested body crashed the child (dump() of "data" recursed).
 * The limit applies while parsing: 64 levels pass, 65 and 70,000 are refused. */
START_TEST(json_depth_limit)
{
    auto nested = [](std::size_t levels) {
        /* {"data": ...} is one level; the arrays make up the rest. */
        return "{\"data\":" + std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}";
    };
    PublishBody ok;
    ck_assert(parse_publish("application/json", nested(kMaxJsonDepth), Params(), ok).empty());
    ck_assert(!ok.json_too_deep);
    assert_str(ok.fields.data, std::string(kMaxJsonDepth - 1, '[') +
                                   std::string(kMaxJsonDepth - 1, ']'));
    for (std::size_t levels : {kMaxJsonDepth + 1, std::size_t(70000)}) {
        PublishBody deep;
        std::string err = parse_publish("application/json", nested(levels), Params(), deep);
        ck_assert_msg(err.find("more than 64 deep") != std::string::npos, "got \"%s\"",
                      err.c_str());
        ck_assert(deep.json_too_deep);
    }
}
END_TEST

/* Security finding 8: 65,000 only ids (and 65,000 channels) are refused with the cap's
 * message, and collecting them stops at the cap: the lists never hold more than cap + 1
 * names (before, all 65,000 were de-duplicated pairwise, 4 s of CPU, then refused). */
START_TEST(hostile_lists_stop_at_the_cap)
{
    std::string ids, form;
    for (int i = 0; i < 65000; ++i) {
        ids += (i ? "," : "") + std::to_string(i);
        form += "only=" + std::to_string(i) + "&";
    }
    const Params none;
    for (const auto &[type, body] :
         {std::pair<const char *, std::string>{"text/plain", ""},
          {"application/json", "{\"data\":\"x\",\"only\":\"" + ids + "\"}"},
          {"application/x-www-form-urlencoded", form + "data=x"}}) {
        Params query;
        if (!*body.c_str())
            query.emplace_back("only", ids);
        PublishBody b;
        std::string err = parse_publish(type, body.empty() ? "x" : body, query, b);
        ck_assert_msg(err.find("too many client ids in only/except: more than 1000") == 0,
                      "%s: got \"%s\"", type, err.substr(0, 80).c_str());
        ck_assert_int_le(b.audience.only.size(), kMaxTargetsPerEvent + 1);
    }
    std::vector<std::string> only;
    Audience::append_list(ids, only);
    ck_assert_int_eq(only.size(), kMaxTargetsPerEvent + 1);

    std::vector<std::string> channels;
    std::string err = select_channels(&ids, none, "", channels);
    ck_assert_msg(err.find("too many channels: more than 64") == 0, "got \"%s\"", err.c_str());
    ck_assert_int_eq(channels.size(), kMaxChannelsPerEvent + 1);

    /* Repeats are dropped, however many, and do not count toward the cap. */
    std::vector<std::string> twice;
    NameCollector names(twice, 3);
    for (int i = 0; i < 65000; ++i)
        names.add("a,b, c");
    ck_assert_int_eq(twice.size(), 3);
    assert_str(twice[2], " c");

    /* Repeats found alike before and after the collector moves to its hash set (16 names),
     * names already in `out` counting as seen. */
    std::vector<std::string> many = {"n0", "n5"};
    NameCollector more(many, 100);
    for (int round = 0; round < 2; ++round)
        for (int i = 0; i < 40; ++i)
            more.add("n" + std::to_string(i) + ",n" + std::to_string(i % 7));
    ck_assert_int_eq(many.size(), 40);
    assert_str(many[0], "n0");
    assert_str(many[1], "n5");
    assert_str(many[2], "n1");
    assert_str(many[39], "n39");
}
END_TEST

Suite *request_suite()
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("parsing");
    tcase_add_test(tc, form_decoding);
    tcase_add_test(tc, channel_selection);
    tcase_add_test(tc, event_type_selection);
    tcase_add_test(tc, raw_bodies);
    tcase_add_test(tc, form_bodies);
    tcase_add_test(tc, json_bodies);
    tcase_add_test(tc, resume_ids);
    tcase_add_test(tc, json_depth_limit);
    tcase_add_test(tc, hostile_lists_stop_at_the_cap);
    suite_add_tcase(s, tc);
    return s;
}
