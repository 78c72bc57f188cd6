# elfctl: argument parsing and rendering (tier 1), and the real binary against in-process fakes
# of the orchestrator and cluster-watcher.
add_executable(elfctl_format_test ${CMAKE_CURRENT_LIST_DIR}/elfctl_format_test.cc)
target_link_libraries(elfctl_format_test PRIVATE
  elfctl_lib elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(elfctl_format_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

add_executable(elfctl_cli_test ${CMAKE_CURRENT_LIST_DIR}/elfctl_cli_test.cc)
target_link_libraries(elfctl_cli_test PRIVATE
  elfdeploy_test_support elfdeploy_test_harness gRPC::grpc++ absl::synchronization util
  GTest::gmock GTest::gtest_main elfdeploy_warnings)
add_dependencies(elfctl_cli_test elfctl)
gtest_discover_tests(elfctl_cli_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)
