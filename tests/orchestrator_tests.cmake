# orchestrator: the durable rollout store (tier 1). The test also opens the database directly.
find_package(SQLite3 REQUIRED)
add_executable(orchestrator_store_test ${CMAKE_CURRENT_LIST_DIR}/orchestrator/rollout_store_test.cc)
target_link_libraries(orchestrator_store_test PRIVATE
  orchestrator_store SQLite::SQLite3 GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(orchestrator_store_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

# The runner over fakes of the services and a real store.
add_executable(orchestrator_runner_test ${CMAKE_CURRENT_LIST_DIR}/orchestrator/runner_test.cc)
target_link_libraries(orchestrator_runner_test PRIVATE
  orchestrator_runner elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(orchestrator_runner_test PRIVATE
  ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(orchestrator_runner_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

add_executable(orchestrator_core_test ${CMAKE_CURRENT_LIST_DIR}/orchestrator/orchestrator_test.cc)
target_link_libraries(orchestrator_core_test PRIVATE
  orchestrator_core elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(orchestrator_core_test PRIVATE
  ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(orchestrator_core_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

add_executable(orchestrator_service_test ${CMAKE_CURRENT_LIST_DIR}/orchestrator/service_test.cc)
target_link_libraries(orchestrator_service_test PRIVATE
  orchestrator_lib elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(orchestrator_service_test PRIVATE
  ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(orchestrator_service_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)
