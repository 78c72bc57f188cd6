add_library(builder_scaffold STATIC ${CMAKE_CURRENT_LIST_DIR}/scaffold.cc)
target_link_libraries(builder_scaffold
  PUBLIC absl::status absl::statusor absl::strings absl::str_format yaml-cpp
  PRIVATE elfdeploy_warnings)
