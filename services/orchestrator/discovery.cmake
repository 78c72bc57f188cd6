# Which apps a Deploy request means (source_dir scan or explicit apps), gRPC-free.
add_library(orchestrator_discovery STATIC ${CMAKE_CURRENT_LIST_DIR}/discovery.cc)
target_link_libraries(orchestrator_discovery
  PUBLIC elfdeploy_proto absl::status absl::statusor absl::strings
  PRIVATE elfdeploy_warnings)
