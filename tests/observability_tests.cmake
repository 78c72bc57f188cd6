# Issue 9: deploy/grafana dashboards and deploy/prometheus rules against a real Prometheus
# scraping the whole stack.
add_executable(observability_test integration/observability_test.cc)
target_link_libraries(observability_test PRIVATE
  elfdeploy_test_stack elfdeploy_test_support elfdeploy_test_harness elfdeploy_oci
  elfdeploy_common elfdeploy_proto nlohmann_json::nlohmann_json yaml-cpp GTest::gmock
  GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(observability_test PRIVATE ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(observability_test elfdeploy-orchestrator elfdeploy-builder
  elfdeploy-registry-sync elfdeploy-manifest-publisher elfdeploy-cluster-watcher elfdeploy-agent
  elfdeploy-kubesim)
gtest_discover_tests(observability_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 300)
