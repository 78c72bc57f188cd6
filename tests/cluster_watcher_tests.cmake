# cluster-watcher: the durable ClusterState (tier 1) and its gRPC adapter in process (tier 2).
add_executable(cluster_watcher_state_test ${CMAKE_CURRENT_LIST_DIR}/cluster_watcher/state_test.cc)
target_link_libraries(cluster_watcher_state_test PRIVATE
  cluster_watcher_state elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(cluster_watcher_state_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

add_executable(cluster_watcher_service_test ${CMAKE_CURRENT_LIST_DIR}/cluster_watcher/service_test.cc)
target_link_libraries(cluster_watcher_service_test PRIVATE
  cluster_watcher_lib elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(cluster_watcher_service_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)
