# cluster-watcher Diagnose: findings from hand-built snapshots with fake registry and logs.
add_executable(cluster_watcher_diagnose_test
  ${CMAKE_CURRENT_LIST_DIR}/cluster_watcher/diagnose_test.cc)
target_link_libraries(cluster_watcher_diagnose_test PRIVATE
  cluster_watcher_diagnose GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(cluster_watcher_diagnose_test DISCOVERY_TIMEOUT 60)
