# The agent's Kubernetes client: config (in-cluster, kubeconfig), REST calls, informers.
add_library(agent_kube STATIC
  ${CMAKE_CURRENT_LIST_DIR}/config.cc
  ${CMAKE_CURRENT_LIST_DIR}/client.cc
  ${CMAKE_CURRENT_LIST_DIR}/http.cc
  ${CMAKE_CURRENT_LIST_DIR}/informer.cc)
target_link_libraries(agent_kube
  PUBLIC elfdeploy_common nlohmann_json::nlohmann_json simdjson::simdjson absl::status absl::statusor absl::strings
         absl::synchronization absl::time absl::flat_hash_map absl::flat_hash_set
  PRIVATE PkgConfig::CPP_HTTPLIB OpenSSL::SSL OpenSSL::Crypto yaml-cpp elfdeploy_warnings)
