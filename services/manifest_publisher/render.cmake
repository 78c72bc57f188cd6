# GitOps-tree renderer of manifest-publisher (render.h): in-place YAML edits and generated files.
add_library(publisher_render STATIC ${CMAKE_CURRENT_LIST_DIR}/render.cc
                                   ${CMAKE_CURRENT_LIST_DIR}/yaml_tree.cc)
target_link_libraries(publisher_render
  PUBLIC absl::status absl::statusor absl::strings absl::str_format
         nlohmann_json::nlohmann_json
  PRIVATE PkgConfig::LIBYAML Threads::Threads elfdeploy_warnings)
