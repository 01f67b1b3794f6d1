/* sse::guarded(), the guard at every C-to-C++ boundary: whatever the body throws becomes the
 * on_error result, and nothing escapes (the hooks, directive handlers, cleanups and thread
 * entries of the httpd glue rely on it; t/hub-fault.t exercises the hub's threads). */
#include "unit.h"

#include "sse/guard.h"

#include <new>
#include <stdexcept>
#include <string>

namespace {

struct NotStd {};

START_TEST(returns_the_body_result)
{
    int calls = 0;
    int r = sse::guarded([] { return 7; }, [&](const char *) { ++calls; return -1; });
    ck_assert_int_eq(r, 7);
    ck_assert_int_eq(calls, 0);
}
END_TEST

START_TEST(std_exception_becomes_on_error)
{
    std::string seen;
    int r = sse::guarded([]() -> int { throw std::runtime_error("boom"); },
                         [&](const char *why) { seen = why; return 500; });
    ck_assert_int_eq(r, 500);
    assert_str(seen, "boom");
    r = sse::guarded([]() -> int { throw std::bad_alloc(); },
                     [&](const char *why) { seen = why; return 500; });
    ck_assert_int_eq(r, 500);
    ck_assert(!seen.empty());
}
END_TEST

START_TEST(anything_else_becomes_on_error)
{
    std::string seen;
    const char *r = sse::guarded([]() -> const char * { throw NotStd{}; },
                                 [&](const char *why) { seen = why; return "failed"; });
    assert_str(r, "failed");
    assert_str(seen, sse::kNotStdException);
    bool called = false;
    sse::guarded([] { throw 42; }, [&](const char *) { called = true; });
    ck_assert(called);
}
END_TEST

void throws() { throw 1; }
void logs(const char *) {}
static_assert(noexcept(sse::guarded(throws, logs)), "guarded() never lets an exception out");

} // namespace

Suite *guard_suite()
{
    Suite *s = suite_create("guard");
    TCase *tc = tcase_create("boundaries");
    tcase_add_test(tc, returns_the_body_result);
    tcase_add_test(tc, std_exception_becomes_on_error);
    tcase_add_test(tc, anything_else_becomes_on_error);
    suite_add_tcase(s, tc);
    return s;
}
