# deploy/local/examples and broken/: the demo's apps parse and render.
add_executable(examples_test examples/examples_test.cc)
target_link_libraries(examples_test PRIVATE
  builder_frontend publisher_render elfdeploy_test_harness GTest::gmock GTest::gtest_main
  elfdeploy_warnings)
target_compile_definitions(examples_test PRIVATE ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(examples_test DISCOVERY_TIMEOUT 60)

# The orchestrator's app discovery, on the examples and on temp trees.
add_executable(orchestrator_discovery_test orchestrator/discovery_test.cc)
target_link_libraries(orchestrator_discovery_test PRIVATE
  orchestrator_discovery elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(orchestrator_discovery_test PRIVATE
  ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(orchestrator_discovery_test DISCOVERY_TIMEOUT 60)
