# The stage interfaces of stages.h over gRPC: clients of builder, registry-sync,
# manifest-publisher and cluster-watcher.
add_library(orchestrator_grpc_stages STATIC ${CMAKE_CURRENT_LIST_DIR}/grpc_stages.cc)
target_link_libraries(orchestrator_grpc_stages
  PUBLIC orchestrator_discovery elfdeploy_proto gRPC::grpc++ absl::status absl::statusor
  PRIVATE elfdeploy_server elfdeploy_warnings)
