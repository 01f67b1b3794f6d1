#include "sse/cluster_state.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <stdexcept>

namespace sse {

std::string encode_figures(const ServerFigures &f)
{
    constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
    nlohmann::json j = {{"server", f.server},
                        {"token", f.token},
                        {"time_ms", f.time_ms},
                        {"subscribers", f.subscribers},
                        {"socket_clients", f.socket_clients},
                        {"channels", nlohmann::json::object()},
                        {"truncated", false}};
    /* The most-read channels first, while the report stays within its cap. */
    std::vector<std::pair<std::string, std::uint64_t>> by_count(f.channels.begin(),
                                                                f.channels.end());
    std::stable_sort(by_count.begin(), by_count.end(),
                     [](const auto &a, const auto &b) { return a.second > b.second; });
    std::size_t size = j.dump(-1, ' ', false, kReplace).size();
    bool truncated = f.truncated;
    for (const auto &[name, n] : by_count) {
        const std::size_t cost = nlohmann::json(name).dump(-1, ' ', false, kReplace).size() +
                                 std::to_string(n).size() + 2; /* ':' and ',' */
        if (size + cost > kClusterReportMaxBytes) {
            truncated = true;
            break;
        }
        size += cost;
        j["channels"][name] = n;
    }
    j["truncated"] = truncated;
    return j.dump(-1, ' ', false, kReplace);
}

std::string decode_figures(std::string_view text, ServerFigures *out)
{
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
        return "a report that is not a JSON object";
    /* get<std::uint64_t>() would take -1 as 2^64-1: counts must be counts. */
    const auto count = [](const nlohmann::json &v) {
        if (!v.is_number_unsigned())
            throw std::invalid_argument("a count that is not a number from 0");
        return v.get<std::uint64_t>();
    };
    try {
        out->server = j.at("server").get<std::string>();
        out->time_ms = j.at("time_ms").get<std::int64_t>();
        out->subscribers = count(j.at("subscribers"));
        out->socket_clients = count(j.at("socket_clients"));
        out->channels.clear();
        for (const auto &[name, n] : j.at("channels").items())
            out->channels[name] = count(n);
        /* Both absent from the reports of the version before. */
        out->truncated = j.value("truncated", false);
        out->token = j.value("token", std::string());
    } catch (const std::exception &e) {
        return std::string("a report without its figures: ") + e.what();
    }
    if (out->server.empty())
        return "a report without its server";
    return std::string();
}

std::vector<ServerFigures> merge_cluster(ServerFigures own, std::vector<ServerFigures> reported)
{
    reported.erase(std::remove_if(reported.begin(), reported.end(),
                                  [&](const ServerFigures &f) { return f.server == own.server; }),
                   reported.end());
    reported.push_back(std::move(own));
    std::sort(reported.begin(), reported.end(),
              [](const ServerFigures &a, const ServerFigures &b) { return a.server < b.server; });
    return reported;
}

ClusterTotals cluster_totals(const std::vector<ServerFigures> &servers)
{
    ClusterTotals t;
    for (const ServerFigures &f : servers) {
        t.subscribers += f.subscribers;
        t.socket_clients += f.socket_clients;
        t.truncated = t.truncated || f.truncated;
        for (const auto &[name, n] : f.channels)
            t.channels[name] += n;
    }
    return t;
}

std::uint64_t channel_subscribers(const ServerFigures &f, const std::string &channel)
{
    auto it = f.channels.find(channel);
    return it == f.channels.end() ? 0 : it->second;
}

std::string cluster_server_key(const std::string &prefix, const std::string &server)
{
    return prefix + "server:" + server;
}

std::string cluster_index_key(const std::string &prefix) { return prefix + "servers"; }

} // namespace sse
