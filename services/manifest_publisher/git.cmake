# The manifest publisher's git layer (libgit2).
add_library(publisher_git STATIC ${CMAKE_CURRENT_LIST_DIR}/git_publish.cc
  ${CMAKE_CURRENT_LIST_DIR}/git_stream.cc ${CMAKE_CURRENT_LIST_DIR}/git_transport.cc)
target_link_libraries(publisher_git
  PUBLIC elfdeploy_common absl::status absl::statusor absl::strings absl::time
         absl::synchronization
  PRIVATE PkgConfig::LIBGIT2 OpenSSL::Crypto absl::str_format elfdeploy_warnings)
