# AgentLinkService (the agents' streams) over the watcher's ClusterState.
add_library(cluster_watcher_link STATIC ${CMAKE_CURRENT_LIST_DIR}/agent_link_service.cc)
target_link_libraries(cluster_watcher_link
  PUBLIC elfdeploy_proto elfdeploy_common gRPC::grpc++ absl::synchronization absl::time
  PRIVATE elfdeploy_server elfdeploy_warnings)
