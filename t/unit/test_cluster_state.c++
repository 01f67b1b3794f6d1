/* SSERedis's cluster-wide figures, their pure part (sse/cluster_state.h): a report's round
 * trip, refused reports, and how a server adds its live figures to the others' reports. */
#include "unit.h"

#include "sse/cluster_state.h"

#include <string>
#include <vector>

using namespace sse;

namespace {

ServerFigures figures(const std::string &server, std::uint64_t subscribers,
                      std::map<std::string, std::uint64_t> channels)
{
    ServerFigures f;
    f.server = server;
    f.time_ms = 1796054767995;
    f.subscribers = subscribers;
    f.socket_clients = 1;
    f.channels = std::move(channels);
    return f;
}

START_TEST(report_round_trip)
{
    ServerFigures f = figures("web1:8080", 3, {{"news", 2}, {"caf\xc3\xa9", 1}});
    f.token = "0123abcd";
    ServerFigures back;
    assert_str(decode_figures(encode_figures(f), &back), "");
    assert_str(back.server, "web1:8080");
    assert_str(back.token, "0123abcd");
    ck_assert(back.time_ms == f.time_ms);
    ck_assert_uint_eq(back.subscribers, 3);
    ck_assert_uint_eq(back.socket_clients, 1);
    ck_assert(back.channels == f.channels);
}
END_TEST

/* A server with more channels than fit: its report stays within the cap, keeps the most-read
 * channels, and says that some were left out. */
START_TEST(report_capped)
{
    std::map<std::string, std::uint64_t> channels;
    for (int i = 0; i < 5000; ++i)
        channels["channel-number-" + std::to_string(i)] = 1;
    channels["zz-most-read"] = 99;
    ServerFigures f = figures("web1:8080", 5099, channels);
    const std::string text = encode_figures(f);
    ck_assert_uint_le(text.size(), kClusterReportMaxBytes);
    ck_assert_uint_gt(text.size(), kClusterReportMaxBytes - 100);
    ServerFigures back;
    assert_str(decode_figures(text, &back), "");
    ck_assert(back.truncated);
    ck_assert_uint_lt(back.channels.size(), channels.size());
    ck_assert_uint_eq(back.channels["zz-most-read"], 99);
    ck_assert_uint_eq(back.subscribers, 5099);
    ck_assert(cluster_totals({back}).truncated);

    ServerFigures small = figures("web1:8080", 1, {{"news", 1}});
    ck_assert(decode_figures(encode_figures(small), &back).empty() && !back.truncated);
    ck_assert(!cluster_totals({back}).truncated);
}
END_TEST

START_TEST(bad_reports)
{
    ServerFigures back;
    ck_assert(!decode_figures("", &back).empty());
    ck_assert(!decode_figures("[1,2]", &back).empty());
    ck_assert(!decode_figures("{\"server\":\"a:1\"}", &back).empty());
    ck_assert(!decode_figures("{\"server\":\"\",\"time_ms\":1,\"subscribers\":0,\"channels\":{}}",
                              &back).empty());
    ck_assert(!decode_figures("{\"server\":\"a:1\",\"time_ms\":1,\"subscribers\":-1,"
                              "\"channels\":{}}", &back).empty());
    ck_assert(!decode_figures("{\"server\":\"a:1\",\"time_ms\":1,\"subscribers\":1,"
                              "\"channels\":{\"x\":\"many\"}}", &back).empty());
}
END_TEST

START_TEST(own_live_figures_replace_its_report)
{
    std::vector<ServerFigures> reported = {figures("web2:80", 5, {{"news", 4}, {"sport", 1}}),
                                           figures("web1:80", 99, {{"news", 99}})};
    std::vector<ServerFigures> all = merge_cluster(figures("web1:80", 2, {{"news", 2}}), reported);
    ck_assert_uint_eq(all.size(), 2);
    assert_str(all[0].server, "web1:80");
    ck_assert_uint_eq(all[0].subscribers, 2); /* live, not the stale 99 */
    assert_str(all[1].server, "web2:80");
    ClusterTotals t = cluster_totals(all);
    ck_assert_uint_eq(t.subscribers, 7);
    ck_assert_uint_eq(t.socket_clients, 2);
    ck_assert_uint_eq(t.channels["news"], 6);
    ck_assert_uint_eq(t.channels["sport"], 1);
    ck_assert_uint_eq(channel_subscribers(all[0], "sport"), 0);
    ck_assert_uint_eq(channel_subscribers(all[1], "sport"), 1);
}
END_TEST

START_TEST(alone_without_reports)
{
    std::vector<ServerFigures> all = merge_cluster(figures("web1:80", 2, {}), {});
    ck_assert_uint_eq(all.size(), 1);
    ck_assert_uint_eq(cluster_totals(all).subscribers, 2);
}
END_TEST

START_TEST(keys_under_the_prefix)
{
    assert_str(cluster_server_key("shop:", "web1:80"), "shop:server:web1:80");
    assert_str(cluster_index_key("shop:"), "shop:servers");
}
END_TEST

} // namespace

Suite *cluster_state_suite()
{
    Suite *s = suite_create("cluster_state");
    TCase *tc = tcase_create("cluster_state");
    tcase_add_test(tc, report_round_trip);
    tcase_add_test(tc, report_capped);
    tcase_add_test(tc, bad_reports);
    tcase_add_test(tc, own_live_figures_replace_its_report);
    tcase_add_test(tc, alone_without_reports);
    tcase_add_test(tc, keys_under_the_prefix);
    suite_add_tcase(s, tc);
    return s;
}
