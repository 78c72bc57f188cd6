# Tests of manifest-publisher's GitOps-tree renderer (services/manifest_publisher/render.cmake).
add_executable(render_test ${CMAKE_CURRENT_LIST_DIR}/common/render_test.cc)
target_link_libraries(render_test PRIVATE
  publisher_render yaml-cpp GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(render_test DISCOVERY_TIMEOUT 60)
