/* sse/guard.h — the one guard at every place C code (httpd, APR, a thread's start) calls into
 * mod_sse's C++.
 *
 * A C++ exception must never unwind into C: httpd and APR cannot clean up after it, and out of
 * a thread's entry it ends the process (std::terminate). Every hook, directive handler,
 * ap_expr function, pool cleanup, other-child callback and thread entry runs its body through
 * guarded(); the httpd glue adds the logging (src/httpd/module.h). No httpd, no APR.
 */
#ifndef SSE_GUARD_H
#define SSE_GUARD_H

#include <exception>

namespace sse {

/* Runs `body` and returns its result. If it throws anything, calls `on_error` with the
 * exception's message (kNotStdException for what is not a std::exception) and returns what
 * `on_error` returns: the caller logs there and answers its C caller with a proper status.
 * `on_error` must not throw (noexcept: it would end the process). */
constexpr const char *kNotStdException = "an exception that is not a std::exception";

template <typename Body, typename OnError>
auto guarded(Body &&body, OnError &&on_error) noexcept -> decltype(body())
{
    try {
        return body();
    } catch (const std::exception &e) {
        return on_error(e.what());
    } catch (...) {
        return on_error(kNotStdException);
    }
}

} // namespace sse

#endif
