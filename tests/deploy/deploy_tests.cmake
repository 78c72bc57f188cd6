# deploy/k8s renders with `kubectl kustomize` and holds what a cluster needs; deploy/docker's
# Dockerfiles pass the builder's own Dockerfile front end.
add_executable(k8s_manifests_test
  ${CMAKE_CURRENT_LIST_DIR}/k8s_manifests_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/dockerfiles_test.cc)
target_link_libraries(k8s_manifests_test PRIVATE
  builder_frontend yaml-cpp absl::strings GTest::gmock GTest::gtest_main elfdeploy_warnings)
target_compile_definitions(k8s_manifests_test PRIVATE ELFDEPLOY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(k8s_manifests_test DISCOVERY_TIMEOUT 60)
