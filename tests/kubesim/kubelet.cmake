# kubesim's deployment and replicaset controllers, kubelet (images resolved against the real
# registry) and churn mode.
add_library(elfdeploy_kubesim_kubelet STATIC
  ${CMAKE_CURRENT_LIST_DIR}/kubelet.cc
  ${CMAKE_CURRENT_LIST_DIR}/churn.cc)
target_link_libraries(elfdeploy_kubesim_kubelet
  PUBLIC elfdeploy_kubesim elfdeploy_oci elfdeploy_common nlohmann_json::nlohmann_json
         absl::status absl::statusor absl::strings absl::str_format absl::synchronization
         absl::time Threads::Threads
  PRIVATE elfdeploy_warnings)

add_executable(kubesim_kubelet_test ${CMAKE_CURRENT_LIST_DIR}/kubelet_test.cc)
target_link_libraries(kubesim_kubelet_test PRIVATE
  elfdeploy_kubesim_kubelet elfdeploy_test_images elfdeploy_test_harness GTest::gmock
  GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(kubesim_kubelet_test TEST_PREFIX "kubesim." DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 180)
target_link_libraries(elfdeploy-kubesim PRIVATE elfdeploy_kubesim_kubelet)

# The binary end to end: Argo CD on a git daemon, the kubelet on a registry.
add_executable(kubesim_e2e_test ${CMAKE_CURRENT_LIST_DIR}/e2e_test.cc)
target_link_libraries(kubesim_e2e_test PRIVATE
  elfdeploy_oci elfdeploy_common elfdeploy_test_images elfdeploy_test_harness
  nlohmann_json::nlohmann_json GTest::gmock GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(kubesim_e2e_test PRIVATE
  KUBESIM_BINARY="$<TARGET_FILE:elfdeploy-kubesim>")
add_dependencies(kubesim_e2e_test elfdeploy-kubesim)
gtest_discover_tests(kubesim_e2e_test TEST_PREFIX "kubesim." DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 180)
