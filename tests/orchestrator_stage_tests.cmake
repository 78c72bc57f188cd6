# orchestrator: the gRPC stage clients against the real builder, registry-sync and
# manifest-publisher, and an in-process fake cluster-watcher.
add_executable(orchestrator_grpc_stages_test
  ${CMAKE_CURRENT_LIST_DIR}/orchestrator/grpc_stages_test.cc)
target_link_libraries(orchestrator_grpc_stages_test PRIVATE
  orchestrator_grpc_stages elfdeploy_test_support elfdeploy_test_harness
  GTest::gmock GTest::gtest_main elfdeploy_warnings)
add_dependencies(orchestrator_grpc_stages_test
  elfdeploy-builder elfdeploy-registry-sync elfdeploy-manifest-publisher)
gtest_discover_tests(orchestrator_grpc_stages_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 300)
