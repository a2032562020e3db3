# Script mode: Catch2's CatchAddTests.cmake (the test discovery catch_discover_tests runs after each
# build of a test binary) with short ctest names. Each TEST_CASE still runs under its full Catch2
# name (the description stays in the test and in its output); the ctest name is the prefix and the
# first words of that name, lower case, joined by '_', at most 48 characters ("Serial.relative_model_
# cluster_and_chip_paths_in_a_yaml_file"), with _2, _3 ... on a clash. Long names padded every ctest
# result line to the longest one. tests/CMakeLists.txt points catch_discover_tests here.
cmake_policy(VERSION 3.16...3.25)  # script mode starts with no policies set: IN_LIST, while() conditions
set(prefix "${TEST_PREFIX}")
set(suffix "${TEST_SUFFIX}")
set(spec ${TEST_SPEC})
set(extra_args ${TEST_EXTRA_ARGS})
set(properties ${TEST_PROPERTIES})
set(script)
set(tests)
set(max_length 48)

function(add_command NAME)
  set(_args "")
  math(EXPR _last_arg ${ARGC}-1)
  foreach(_n RANGE 1 ${_last_arg})
    set(_arg "${ARGV${_n}}")
    if(_arg MATCHES "[^-./:a-zA-Z0-9_]")
      set(_args "${_args} [==[${_arg}]==]")
    else()
      set(_args "${_args} ${_arg}")
    endif()
  endforeach()
  set(script "${script}${NAME}(${_args})\n" PARENT_SCOPE)
endfunction()

# The short name of one Catch2 test name: words, lower case, '_'-joined, cut at a word boundary.
function(short_name full out_var)
  string(TOLOWER "${full}" s)
  string(REGEX REPLACE "[^a-z0-9]+" "_" s "${s}")
  string(REGEX REPLACE "^_+|_+$" "" s "${s}")
  string(LENGTH "${s}" n)
  if(n GREATER max_length)
    string(SUBSTRING "${s}" 0 ${max_length} cut)
    string(FIND "${cut}" "_" last REVERSE)
    if(last GREATER 0)
      string(SUBSTRING "${cut}" 0 ${last} cut)
    endif()
    set(s "${cut}")
  endif()
  set(${out_var} "${s}" PARENT_SCOPE)
endfunction()

if(NOT EXISTS "${TEST_EXECUTABLE}")
  message(FATAL_ERROR "Specified test executable '${TEST_EXECUTABLE}' does not exist")
endif()
execute_process(
  COMMAND ${TEST_EXECUTOR} "${TEST_EXECUTABLE}" ${spec} --list-test-names-only
  OUTPUT_VARIABLE output
  RESULT_VARIABLE result
  WORKING_DIRECTORY "${TEST_WORKING_DIR}")
if(${result} LESS 0)
  message(FATAL_ERROR "Error running test executable '${TEST_EXECUTABLE}':\n  Result: ${result}\n  Output: ${output}\n")
endif()
string(REPLACE "\n" ";" output "${output}")

set(used)
foreach(line ${output})
  set(test ${line})
  # Catch2 reads , [ ] in a test spec as syntax: escape them in the name passed to the binary
  set(test_name ${test})
  foreach(char , [ ])
    string(REPLACE ${char} "\\${char}" test_name ${test_name})
  endforeach(char)
  short_name("${test}" short)
  set(name "${prefix}${short}${suffix}")
  set(k 2)
  while("${name}" IN_LIST used)
    set(name "${prefix}${short}_${k}${suffix}")
    math(EXPR k "${k} + 1")
  endwhile()
  list(APPEND used "${name}")
  add_command(add_test "${name}" ${TEST_EXECUTOR} "${TEST_EXECUTABLE}" "${test_name}" ${extra_args})
  add_command(set_tests_properties "${name}" PROPERTIES WORKING_DIRECTORY "${TEST_WORKING_DIR}" ${properties})
  list(APPEND tests "${name}")
endforeach()

add_command(set ${TEST_LIST} ${tests})
file(WRITE "${CTEST_FILE}" "${script}")
