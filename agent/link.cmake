# The agent's event buffer and its link to cluster-watcher (AgentLinkService.Connect client).
add_library(agent_link STATIC
  ${CMAKE_CURRENT_LIST_DIR}/event_buffer.cc
  ${CMAKE_CURRENT_LIST_DIR}/link.cc)
target_link_libraries(agent_link
  PUBLIC elfdeploy_proto elfdeploy_common gRPC::grpc++ absl::synchronization absl::time
  PRIVATE elfdeploy_server elfdeploy_warnings)
