# kubesim's simulation of Argo CD (git sources, kustomize, automated sync).
add_library(elfdeploy_kubesim_sim STATIC
  ${CMAKE_CURRENT_LIST_DIR}/git_source.cc
  ${CMAKE_CURRENT_LIST_DIR}/source_render.cc
  ${CMAKE_CURRENT_LIST_DIR}/argocd.cc)
target_link_libraries(elfdeploy_kubesim_sim
  PUBLIC elfdeploy_kubesim elfdeploy_common nlohmann_json::nlohmann_json absl::status
         absl::statusor absl::strings absl::synchronization absl::time Threads::Threads
  PRIVATE PkgConfig::LIBGIT2 elfdeploy_warnings)

add_executable(kubesim_argocd_test argocd_test.cc)
target_link_libraries(kubesim_argocd_test PRIVATE
  elfdeploy_kubesim_sim elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(kubesim_argocd_test TEST_PREFIX "kubesim." DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 180)

target_link_libraries(elfdeploy-kubesim PRIVATE elfdeploy_kubesim_sim)
