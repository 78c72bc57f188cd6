# The manifest publisher's git layer against real repositories (file://, git daemon, http-backend).
add_executable(git_publish_test ${CMAKE_CURRENT_LIST_DIR}/integration/git_publish_test.cc)
target_link_libraries(git_publish_test PRIVATE
  publisher_git PkgConfig::LIBGIT2 elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(git_publish_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 600)

# ManifestPublisher (render + git) against a git daemon.
add_executable(manifest_publisher_test ${CMAKE_CURRENT_LIST_DIR}/integration/manifest_publisher_test.cc)
target_link_libraries(manifest_publisher_test PRIVATE
  publisher_core elfdeploy_test_harness GTest::gmock GTest::gtest_main elfdeploy_warnings)
gtest_discover_tests(manifest_publisher_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS integration TIMEOUT 300)
