# scanshard_add_mpi_test(NAME name TARGET target [RANKS 1 2 3 4] [ARGS arg...] [ENV VAR=value...])
# Registers one ctest per rank count: MPI.<name>.np<N>, run under mpirun with --oversubscribe
# (the machine has 2 cores) and, when configured as root, OpenMPI's root flags. Threads are
# pinned to one per rank so tests do not fight over cores.
execute_process(COMMAND id -u OUTPUT_VARIABLE SCANSHARD_UID OUTPUT_STRIP_TRAILING_WHITESPACE)
set(SCANSHARD_MPIEXEC_FLAGS --oversubscribe)
if(SCANSHARD_UID STREQUAL "0")
  list(APPEND SCANSHARD_MPIEXEC_FLAGS --allow-run-as-root)
endif()

function(scanshard_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;TARGET" "RANKS;ARGS;ENV" ${ARGN})
  if(NOT T_RANKS)
    set(T_RANKS 1 2 3 4)
  endif()
  set(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ${T_ENV})
  foreach(n IN LISTS T_RANKS)
    add_test(NAME MPI.${T_NAME}.np${n}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} ${SCANSHARD_MPIEXEC_FLAGS}
                     ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${T_TARGET}> ${MPIEXEC_POSTFLAGS} ${T_ARGS})
    set_tests_properties(MPI.${T_NAME}.np${n} PROPERTIES
      PROCESSORS ${n} TIMEOUT ${SCANSHARD_MPI_TIMEOUT}
      ENVIRONMENT "${env}")
  endforeach()
endfunction()
