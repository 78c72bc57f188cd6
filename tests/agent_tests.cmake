# The agent's Kubernetes client against kubesim's API server in process.
add_executable(agent_kube_test ${PROJECT_SOURCE_DIR}/agent/kube/kube_test.cc)
target_link_libraries(agent_kube_test PRIVATE
  agent_kube elfdeploy_kubesim elfdeploy_test_harness PkgConfig::CPP_HTTPLIB GTest::gmock
  GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(agent_kube_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 180)

# Kubernetes / Argo CD JSON -> elfdeploy.v1 messages.
add_executable(agent_convert_test ${PROJECT_SOURCE_DIR}/agent/kube/convert_test.cc)
target_link_libraries(agent_convert_test PRIVATE
  agent_kube_convert GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(agent_convert_test DISCOVERY_TIMEOUT 60)

# The agent link (event buffer, AgentLink <-> AgentLinkService) in process.
add_executable(agent_link_test agent/link_test.cc)
target_link_libraries(agent_link_test PRIVATE
  agent_link cluster_watcher_link GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(agent_link_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 180)

# Agent, cluster-watcher and kubesim as real binaries: TLS, token, requests, kill -9 of the watcher.
add_executable(agent_watcher_test integration/agent_watcher_test.cc)
target_link_libraries(agent_watcher_test PRIVATE
  elfdeploy_test_support elfdeploy_common elfdeploy_proto nlohmann_json::nlohmann_json
  GTest::gmock GTest::gtest_main elfdeploy_warnings)
add_dependencies(agent_watcher_test elfdeploy-agent elfdeploy-cluster-watcher elfdeploy-kubesim)
gtest_discover_tests(agent_watcher_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 300)

# Diagnose end to end: kubesim, two registries, git, registry-sync, cluster-watcher, agent.
add_executable(diagnose_e2e_test integration/diagnose_e2e_test.cc)
target_link_libraries(diagnose_e2e_test PRIVATE
  elfdeploy_test_support elfdeploy_test_images elfdeploy_test_harness elfdeploy_oci
  elfdeploy_common elfdeploy_proto nlohmann_json::nlohmann_json GTest::gmock GTest::gtest_main
  elfdeploy_warnings)
add_dependencies(diagnose_e2e_test elfdeploy-agent elfdeploy-cluster-watcher elfdeploy-kubesim
  elfdeploy-registry-sync)
gtest_discover_tests(diagnose_e2e_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 300)
