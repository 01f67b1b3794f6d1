/* No file system for mod_sse's locations (see hooks.h): pre_translate_name, translate_name
 * and map_to_storage. */
#include "src/httpd/hooks.h"

#include "http_request.h"
#include "apr_strings.h"

#include <cstring>
#include <strings.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {
namespace {

/* What translate_name leaves in r->request_config for map_to_storage (its address). */
constexpr char kSseLocation[] = "sse-location";

/* True when this request's location sections (<Location>, <LocationMatch>, <If>) set one of
 * mod_sse's handlers with SetHandler. Valid from pre_translate_name on: httpd has walked those
 * sections by then, while SetHandler itself applies only in fixups. */
bool sse_location(request_rec *r)
{
    const char *h = configured_handler(r);
    return h && (strcasecmp(h, "sse-subscribe") == 0 || strcasecmp(h, "sse-publish") == 0 ||
                 strcasecmp(h, "sse-status") == 0);
}

} // namespace

/* pre_translate_name: core answers a path with %00 in it 404 (HTML) when it decodes the path,
 * before any handler. On mod_sse's locations the path names channels, so such a path is left
 * undecoded (DONE) and reaches the handler, which refuses the channel name "a%00b" with its
 * 400 (JSON, SSE0100): '%' is not a channel character. Nothing else is skipped for it. */
int pre_translate_name(request_rec *r)
{
    return r->uri && strstr(r->uri, "%00") && sse_location(r) ? DONE : DECLINED;
}

/* translate_name: a request for one of mod_sse's locations is not mapped to a file, as
 * mod_proxy does for its requests: core's translation would turn the path into a file name
 * under DocumentRoot, refusing a long one with an HTML 403 (AH00127, ENAMETOOLONG: a subscribe
 * naming many channels) before mod_sse sees it, and would then walk the directories of a file
 * that never exists. Runs after mod_rewrite, mod_alias and mod_proxy (a location they
 * translate keeps its usual mapping). SetHandler in a <Directory> or .htaccess is not seen
 * here: such locations are mapped as before. */
/* The URI httpd walked the location sections for, noted before any translate_name hook runs
 * (mod_rewrite's [PT] changes r->uri and leaves the walk of the old one in r->per_dir_config). */
constexpr char kWalkedUriNote[] = "sse-walked-uri";

int note_walked_uri(request_rec *r)
{
    apr_table_setn(r->notes, kWalkedUriNote, r->uri);
    return DECLINED;
}

int translate_name(request_rec *r)
{
    /* A URI rewritten on its way here ([PT]) is no longer the one whose location sections
     * said "mod_sse": it keeps its usual mapping (httpd walks its own sections later). */
    const char *walked = apr_table_get(r->notes, kWalkedUriNote);
    if (!walked || !r->uri || strcmp(walked, r->uri) != 0 || !sse_location(r))
        return DECLINED;
    r->filename = apr_pstrcat(r->pool, "sse:", r->uri, nullptr);
    ap_set_module_config(r->request_config, &sse_module, const_cast<char *>(kSseLocation));
    return OK;
}

/* map_to_storage: no directory walk for what translate_name marked, so <Directory> sections
 * and .htaccess files do not apply to mod_sse's locations; <Location> sections (Require,
 * SSE* directives) do, as httpd walks them again after this hook. */
int map_to_storage(request_rec *r)
{
    return ap_get_module_config(r->request_config, &sse_module) == kSseLocation
               ? OK
               : DECLINED;
}

} // namespace sse::httpd
