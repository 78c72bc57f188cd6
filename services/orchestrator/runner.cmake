# The rollout runner: stages over the Builder/Registry/Publisher/Cluster interfaces, gRPC-free.
add_library(orchestrator_runner STATIC ${CMAKE_CURRENT_LIST_DIR}/runner.cc
  ${CMAKE_CURRENT_LIST_DIR}/progress_board.cc)
target_link_libraries(orchestrator_runner
  PUBLIC orchestrator_store orchestrator_discovery elfdeploy_proto absl::status absl::statusor
         absl::synchronization absl::time
  PRIVATE yaml-cpp elfdeploy_warnings)

# Rollouts without gRPC: Deploy/Get/List/Cancel and resuming unfinished rollouts.
add_library(orchestrator_core STATIC ${CMAKE_CURRENT_LIST_DIR}/orchestrator.cc)
target_link_libraries(orchestrator_core
  PUBLIC orchestrator_runner orchestrator_store orchestrator_discovery elfdeploy_common
  PRIVATE elfdeploy_oci elfdeploy_warnings)
