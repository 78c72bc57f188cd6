# Tests of the builder's Dockerfile front end (services/builder/frontend.cmake).
add_executable(dockerfile_test
  ${CMAKE_CURRENT_LIST_DIR}/common/dockerfile_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/common/dockerignore_test.cc)
target_link_libraries(dockerfile_test PRIVATE
  builder_frontend GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(dockerfile_test DISCOVERY_TIMEOUT 60)
