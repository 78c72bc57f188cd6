add_executable(scaffold_test ${CMAKE_CURRENT_LIST_DIR}/common/scaffold_test.cc)
target_link_libraries(scaffold_test PRIVATE
  builder_scaffold GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(scaffold_test DISCOVERY_TIMEOUT 60)
