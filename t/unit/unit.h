/* Unit tests (Check). Each t/unit/test_*.c++ provides one suite; main.c++ runs them all. */
#ifndef SSE_T_UNIT_H
#define SSE_T_UNIT_H

#include <check.h>

Suite *wire_suite();
Suite *bus_suite();
Suite *request_suite();
Suite *protocol_suite();
Suite *registry_suite();
Suite *channel_table_suite();
Suite *guard_suite();
Suite *resume_cost_suite();
Suite *presence_suite();
Suite *token_suite();
Suite *fanout_suite();
Suite *event_stream_suite();
Suite *mercure_topic_suite();
Suite *mercure_subscription_suite();
Suite *redis_record_suite();
Suite *cluster_state_suite();
Suite *redis_replay_suite();
Suite *send_last_suite();

/* While true, the unit tests' global operator new (test_resume_cost.c++) throws
 * std::bad_alloc: an allocation failure injected where a test wants it. */
extern bool unit_fail_allocations;

/* Check's ck_assert_str_eq wants C strings; these compare std::string-likes. */
#define assert_str(a, b)                                                                       \
    ck_assert_msg(std::string(a) == std::string(b), "%s:%d: \"%s\" != \"%s\"", __FILE__,        \
                  __LINE__, std::string(a).c_str(), std::string(b).c_str())

#endif
