# CUDA: kernels under kernels/ are plain CUDA (no torch). They are compiled whenever nvcc is found, so
# that CI (no GPU) fails on a kernel that does not compile for sm_80 / sm_90. The binding under
# src/attnlab/ops/cuda/ is built only when torch itself has CUDA (the GPU machine).
set(ATTNLAB_HAS_CUDA_KERNELS OFF)
if(ATTNLAB_CUDA_KERNELS)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    file(GLOB_RECURSE ATTNLAB_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/*.cu)
    list(APPEND ATTNLAB_CUDA_SOURCES ${PROJECT_SOURCE_DIR}/kernels/common/device_info.cu)
    list(REMOVE_DUPLICATES ATTNLAB_CUDA_SOURCES)
    if(ATTNLAB_CUDA_SOURCES)
      add_library(attnlab_kernels STATIC ${ATTNLAB_CUDA_SOURCES})
      target_include_directories(attnlab_kernels PUBLIC ${PROJECT_SOURCE_DIR})
      target_compile_options(attnlab_kernels PRIVATE
        $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo -Xptxas=-warn-spills>)
      set_target_properties(attnlab_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                       CUDA_SEPARABLE_COMPILATION OFF)
      # A CUDA-enabled find_package(Torch) sets CMAKE_CUDA_ARCHITECTURES to OFF and passes the arch it chose
      # as -gencode in CMAKE_CUDA_FLAGS; the list asked for on the command line is still in the cache.
      set(ATTNLAB_CUDA_ARCH_LIST "${CMAKE_CUDA_ARCHITECTURES}")
      if(NOT ATTNLAB_CUDA_ARCH_LIST OR ATTNLAB_CUDA_ARCH_LIST STREQUAL "OFF")
        set(ATTNLAB_CUDA_ARCH_LIST "$CACHE{CMAKE_CUDA_ARCHITECTURES}")
      endif()
      message(STATUS "attnlab: kernels for CUDA archs '${ATTNLAB_CUDA_ARCH_LIST}' (flags: ${CMAKE_CUDA_FLAGS})")
      if("90a" IN_LIST ATTNLAB_CUDA_ARCH_LIST)
        # wgmma code paths (kernels/common/wgmma.cuh) exist only in sm_90a builds.
        target_compile_definitions(attnlab_kernels PRIVATE ATTNLAB_SM90A=1)
      endif()
      set(ATTNLAB_HAS_CUDA_KERNELS ON)
    endif()
  else()
    message(STATUS "attnlab: no CUDA compiler found; kernels/ not compiled")
  endif()
endif()

# The binding (src/attnlab/ops/cuda/) is compiled whenever the kernels are, also against a CPU-only
# libtorch: it uses only the tensor API and the CUDA runtime, so CI compiles and links it too; at run time
# it is used only when torch::cuda::is_available().
if(ATTNLAB_HAS_CUDA_KERNELS)
  find_package(CUDAToolkit REQUIRED)
  file(GLOB ATTNLAB_BINDING_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/attnlab/ops/cuda/*.cpp)
  target_sources(attnlab_obj PRIVATE ${ATTNLAB_BINDING_SOURCES})
  target_link_libraries(attnlab_obj PUBLIC attnlab_kernels CUDA::cudart)
  target_compile_definitions(attnlab_obj PUBLIC ATTNLAB_WITH_CUDA=1)
  message(STATUS "attnlab: CUDA kernels and their binding are built")
endif()
