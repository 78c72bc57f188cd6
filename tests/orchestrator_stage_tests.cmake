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

# Deploy end to end: every service real, kubesim as the cluster.
add_executable(deploy_e2e_test integration/deploy_e2e_test.cc)
target_link_libraries(deploy_e2e_test PRIVATE
  elfdeploy_test_stack elfdeploy_test_support elfdeploy_test_harness elfdeploy_oci
  elfdeploy_common elfdeploy_proto nlohmann_json::nlohmann_json GTest::gmock GTest::gtest_main
  elfdeploy_warnings)
target_compile_definitions(deploy_e2e_test PRIVATE ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(deploy_e2e_test elfdeploy-orchestrator elfdeploy-builder elfdeploy-registry-sync
  elfdeploy-manifest-publisher elfdeploy-cluster-watcher elfdeploy-agent elfdeploy-kubesim)
gtest_discover_tests(deploy_e2e_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 300)
