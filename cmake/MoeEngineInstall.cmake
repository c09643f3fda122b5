# Install rules of MoE Engine: headers, the library, the `moe` command, the CMake package
# (find_package(MoeEngine) -> MoeEngine::moe) and a pkg-config file (moe-engine.pc).
#
# Layout under the prefix:
#   include/moe/*.h                          the public API
#   lib/libmoe_engine.a                      the library (static, position independent)
#   bin/moe                                  the command
#   lib/cmake/MoeEngine/MoeEngine*.cmake     the package: config, version, exported target
#   lib/pkgconfig/moe-engine.pc              for pkg-config users
#
# The static library's link interface names what a program linking it needs: Threads, and
# with CUDA the toolkit's cudart, cuBLAS and cuBLASLt (find_dependency(CUDAToolkit)), NCCL
# (found again by the package, as MoeEngine::nccl) and MPI (find_dependency(MPI)). Build-only
# targets (warning flags, the header-only JSON library used inside the library) are kept out
# of the installed interface.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Rewrites `target`'s INTERFACE_LINK_LIBRARIES so that the installed package references only
# targets a consumer can find: build-only items are wrapped in $<BUILD_INTERFACE:...>, the
# in-tree NCCL target is replaced by MoeEngine::nccl when installed.
function(moe_install_link_interface target)
  get_target_property(libs ${target} INTERFACE_LINK_LIBRARIES)
  if(NOT libs)
    return()
  endif()
  set(rewritten)
  foreach(lib IN LISTS libs)
    if(lib MATCHES "moe_build_flags|nlohmann_json")
      list(APPEND rewritten "$<BUILD_INTERFACE:${lib}>")
    elseif(lib STREQUAL "moe_nccl")
      list(APPEND rewritten "$<BUILD_INTERFACE:moe_nccl>" "$<INSTALL_INTERFACE:MoeEngine::nccl>")
    else()
      list(APPEND rewritten "${lib}")
    endif()
  endforeach()
  set_property(TARGET ${target} PROPERTY INTERFACE_LINK_LIBRARIES "${rewritten}")
endfunction()

# pkg-config's Libs/Cflags for what the static library needs (absolute paths of this build
# machine's CUDA, NCCL and MPI).
function(moe_pkgconfig_flags out_libs out_cflags)
  set(libs "")
  set(cflags "")
  get_target_property(defs moe_engine INTERFACE_COMPILE_DEFINITIONS)
  foreach(def IN LISTS defs)
    if(def AND NOT def MATCHES "\\$<")
      string(APPEND cflags " -D${def}")
    endif()
  endforeach()
  if(MOE_HAVE_CUDA)
    string(APPEND cflags " -I${CUDAToolkit_INCLUDE_DIRS}")
    string(APPEND libs " -L${CUDAToolkit_LIBRARY_DIR} -Wl,-rpath,${CUDAToolkit_LIBRARY_DIR}"
           " -lcublasLt -lcublas -lcudart -lcudart_static -lcudadevrt -lrt -ldl")
    if(MOE_HAVE_NCCL)
      get_filename_component(nccl_dir ${MOE_NCCL_LIBRARY} DIRECTORY)
      string(APPEND libs " -L${nccl_dir} -Wl,-rpath,${nccl_dir} -lnccl")
    endif()
  endif()
  if(MPI_CXX_FOUND)
    foreach(dir IN LISTS MPI_CXX_INCLUDE_DIRS)
      string(APPEND cflags " -I${dir}")
    endforeach()
    foreach(lib IN LISTS MPI_CXX_LIBRARIES)
      string(APPEND libs " ${lib}")
    endforeach()
  endif()
  string(APPEND libs " -pthread")
  set(${out_libs} "${libs}" PARENT_SCOPE)
  set(${out_cflags} "${cflags}" PARENT_SCOPE)
endfunction()

function(moe_install_package)
  set(cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/MoeEngine)
  moe_install_link_interface(moe_engine)
  set_target_properties(moe_engine PROPERTIES EXPORT_NAME moe)

  install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/moe
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev FILES_MATCHING PATTERN "*.h")
  install(TARGETS moe_engine EXPORT MoeEngineTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(TARGETS moe RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT bin)
  install(EXPORT MoeEngineTargets NAMESPACE MoeEngine:: DESTINATION ${cmake_dir} COMPONENT dev)

  # What the package must find again on the consumer's machine (MoeEngineConfig.cmake.in).
  set(MOE_PACKAGE_CUDA ${MOE_HAVE_CUDA})
  set(MOE_PACKAGE_NCCL ${MOE_HAVE_NCCL})
  set(MOE_PACKAGE_MPI ${MPI_CXX_FOUND})
  set(MOE_PACKAGE_NCCL_HINT "")
  if(MOE_HAVE_NCCL)
    get_filename_component(MOE_PACKAGE_NCCL_HINT ${MOE_NCCL_LIBRARY} DIRECTORY)
  endif()
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/MoeEngineConfig.cmake.in
                                ${PROJECT_BINARY_DIR}/MoeEngineConfig.cmake
                                INSTALL_DESTINATION ${cmake_dir})
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/MoeEngineConfigVersion.cmake
                                   VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/MoeEngineConfig.cmake
                ${PROJECT_BINARY_DIR}/MoeEngineConfigVersion.cmake
          DESTINATION ${cmake_dir} COMPONENT dev)

  moe_pkgconfig_flags(MOE_PC_LIBS MOE_PC_CFLAGS)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/moe-engine.pc.in
                 ${PROJECT_BINARY_DIR}/moe-engine.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/moe-engine.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endfunction()
