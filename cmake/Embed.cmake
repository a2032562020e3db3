# scanshard_embed_files(OUTPUT out.cpp BASE dir FILES a.yaml b.yaml ...)
# Generates a C++ source that defines scanshard::embedded_files(): every listed file's text under
# its path relative to BASE. Used to ship the presets inside the binary (nothing is read from the
# source tree at run time). Regenerated whenever a listed file changes.
function(scanshard_embed_files)
  cmake_parse_arguments(E "" "OUTPUT;BASE" "FILES" ${ARGN})
  set(abs_files)
  foreach(f IN LISTS E_FILES)
    list(APPEND abs_files "${E_BASE}/${f}")
  endforeach()
  string(REPLACE ";" "|" files_arg "${E_FILES}")
  add_custom_command(
    OUTPUT "${E_OUTPUT}"
    COMMAND ${CMAKE_COMMAND} "-DOUTPUT=${E_OUTPUT}" "-DBASE=${E_BASE}" "-DFILES=${files_arg}"
            -P "${PROJECT_SOURCE_DIR}/cmake/EmbedScript.cmake"
    DEPENDS ${abs_files} "${PROJECT_SOURCE_DIR}/cmake/EmbedScript.cmake"
    COMMENT "Embedding ${E_BASE} presets"
    VERBATIM)
endfunction()
