# Durable rollout records (SQLite, WAL): gRPC-free, used by orchestrator_lib.
find_package(SQLite3 REQUIRED)
add_library(orchestrator_store STATIC ${CMAKE_CURRENT_LIST_DIR}/rollout_store.cc)
target_link_libraries(orchestrator_store
  PUBLIC elfdeploy_proto absl::status absl::statusor absl::time absl::synchronization absl::strings
  PRIVATE SQLite::SQLite3 elfdeploy_warnings)
