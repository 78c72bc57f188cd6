# Kubernetes / Argo CD JSON -> elfdeploy.v1 messages (convert.h); its tests are in tests/agent_tests.cmake.
add_library(agent_kube_convert STATIC ${CMAKE_CURRENT_LIST_DIR}/convert.cc)
target_link_libraries(agent_kube_convert
  PUBLIC elfdeploy_proto nlohmann_json::nlohmann_json simdjson::simdjson absl::status absl::statusor absl::time
         absl::strings
  PRIVATE elfdeploy_warnings)
