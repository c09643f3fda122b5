# The package test (ctest package_find_package), run as `cmake -P` with:
#   MOE_BUILD_DIR   the build tree to install (already built)
#   MOE_SOURCE_DIR  this folder (the outside project)
#   MOE_WORK_DIR    scratch folder: the install prefix and the outside project's build
#   MOE_GENERATOR, MOE_CXX   generator and C++ compiler for the outside project
# Steps: cmake --install into a fresh prefix; configure, build and run the outside project
# with find_package(MoeEngine); compile and run the same program with pkg-config's flags
# (where pkg-config exists); run the installed `moe --help`. Any failure fails the test.
cmake_minimum_required(VERSION 3.25)

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package test: ${what} failed (${rc})\n${out}\n${err}")
  endif()
  message(STATUS "package test: ${what}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${MOE_WORK_DIR}/prefix)
set(build ${MOE_WORK_DIR}/consumer)
file(REMOVE_RECURSE ${MOE_WORK_DIR})

run_step("cmake --install" ${CMAKE_COMMAND} --install ${MOE_BUILD_DIR} --prefix ${prefix})
foreach(file include/moe/moe.h include/moe/checkpoint.h lib/libmoe_engine.a bin/moe
             lib/cmake/MoeEngine/MoeEngineConfig.cmake lib/pkgconfig/moe-engine.pc)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "package test: ${prefix}/${file} was not installed")
  endif()
endforeach()

set(launcher "")
find_program(ccache ccache)
if(ccache)
  set(launcher -DCMAKE_CXX_COMPILER_LAUNCHER=${ccache})
endif()
run_step("configure the outside project" ${CMAKE_COMMAND} -S ${MOE_SOURCE_DIR} -B ${build}
         -G ${MOE_GENERATOR} -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${MOE_CXX}
         -DCMAKE_PREFIX_PATH=${prefix} ${launcher})
run_step("build the outside project" ${CMAKE_COMMAND} --build ${build})
run_step("run the outside project" ${build}/package_consumer)
message(STATUS "${step_output}")

find_program(pkg_config pkg-config)
if(pkg_config)
  set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
  run_step("pkg-config" ${pkg_config} --cflags --libs moe-engine)
  string(STRIP "${step_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run_step("compile with pkg-config's flags" ${MOE_CXX} -std=c++20 -O1
           ${MOE_SOURCE_DIR}/consumer.cc -o ${MOE_WORK_DIR}/consumer_pkgconfig ${flags})
  run_step("run the pkg-config build" ${MOE_WORK_DIR}/consumer_pkgconfig)
endif()

run_step("installed moe --help" ${prefix}/bin/moe --help)
file(REMOVE_RECURSE ${MOE_WORK_DIR})
