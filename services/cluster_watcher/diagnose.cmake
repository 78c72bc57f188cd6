# Diagnose (gRPC-free): findings with evidence from a cluster snapshot. Needs only state.h's
# Snapshot struct, not the state library.
add_library(cluster_watcher_diagnose STATIC ${CMAKE_CURRENT_LIST_DIR}/diagnose.cc)
target_link_libraries(cluster_watcher_diagnose
  PUBLIC elfdeploy_proto elfdeploy_common absl::status absl::statusor absl::strings absl::time
  PRIVATE elfdeploy_warnings)
