# Dockerfile front end of the builder: Dockerfile parsing, shell-word expansion, .dockerignore.
add_library(builder_frontend STATIC
  ${CMAKE_CURRENT_LIST_DIR}/dockerfile.cc
  ${CMAKE_CURRENT_LIST_DIR}/dockerignore.cc
  ${CMAKE_CURRENT_LIST_DIR}/path_util.cc)
target_link_libraries(builder_frontend
  PUBLIC absl::status absl::statusor absl::strings absl::str_format
  PRIVATE nlohmann_json::nlohmann_json elfdeploy_warnings)
