#include "unit.h"

#include <cstdlib>

int main()
{
    SRunner *sr = srunner_create(wire_suite());
    srunner_add_suite(sr, bus_suite());
    srunner_add_suite(sr, request_suite());
    srunner_add_suite(sr, protocol_suite());
    srunner_add_suite(sr, registry_suite());
    srunner_add_suite(sr, channel_table_suite());
    srunner_add_suite(sr, guard_suite());
    srunner_add_suite(sr, resume_cost_suite());
    srunner_add_suite(sr, presence_suite());
    srunner_add_suite(sr, token_suite());
    srunner_add_suite(sr, fanout_suite());
    srunner_add_suite(sr, event_stream_suite());
    srunner_add_suite(sr, mercure_topic_suite());
    srunner_add_suite(sr, mercure_subscription_suite());
    srunner_add_suite(sr, redis_record_suite());
    srunner_add_suite(sr, cluster_state_suite());
    srunner_add_suite(sr, redis_replay_suite());
    srunner_add_suite(sr, send_last_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
