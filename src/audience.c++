#include "sse/audience.h"

#include "sse/wire.h"

#include <algorithm>

namespace sse {

std::string validate_client_id(std::string_view id)
{
    if (id.empty())
        return "a client id must not be empty";
    if (id.size() > kMaxClientIdBytes)
        return "client id \"" + std::string(id.substr(0, 32)) + "...\" is longer than " +
               std::to_string(kMaxClientIdBytes) + " bytes";
    for (unsigned char c : id)
        if (c <= 0x20 || c == 0x7f || c == ',')
            return "client id \"" + std::string(id.substr(0, 64)) +
                   "\" holds a space, comma or control character";
    if (!is_valid_utf8(id))
        return "client id is not valid UTF-8";
    return {};
}

bool Audience::admits(std::string_view client_id) const
{
    if (!only.empty() &&
        (client_id.empty() || std::find(only.begin(), only.end(), client_id) == only.end()))
        return false;
    if (!except.empty() && !client_id.empty() &&
        std::find(except.begin(), except.end(), client_id) != except.end())
        return false;
    return true;
}

void Audience::append_list(std::string_view list, std::vector<std::string> &out)
{
    collector(out).add(list);
}

NameCollector Audience::collector(std::vector<std::string> &out)
{
    return NameCollector(out, kMaxTargetsPerEvent, true);
}

namespace {
/* Below this many ids a linear scan is as fast as hashing. */
constexpr std::size_t kIndexFrom = 16;
} // namespace

AudienceMatcher::AudienceMatcher(const Audience &a)
    : a_(a), indexed_(a.only.size() + a.except.size() >= kIndexFrom)
{
    if (!indexed_)
        return;
    only_.insert(a.only.begin(), a.only.end());
    except_.insert(a.except.begin(), a.except.end());
}

bool AudienceMatcher::admits(std::string_view client_id) const
{
    if (!indexed_)
        return a_.admits(client_id);
    if (!a_.only.empty() && (client_id.empty() || !only_.count(client_id)))
        return false;
    return client_id.empty() || !except_.count(client_id);
}

std::string Audience::validate() const
{
    if (only.size() + except.size() > kMaxTargetsPerEvent)
        return "too many client ids in only/except: more than " +
               std::to_string(kMaxTargetsPerEvent);
    for (const auto *list : {&only, &except})
        for (const auto &id : *list) {
            std::string err = validate_client_id(id);
            if (!err.empty())
                return err;
        }
    return {};
}

} // namespace sse
