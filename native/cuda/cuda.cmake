# The CUDA backend: included by CMakeLists.txt when native/cuda has sources and KILN_CUDA is not OFF.
# Finds the toolkit (nvcc, cudart), cuBLAS/cuBLASLt and (optionally) NCCL through the standard search paths
# (CMAKE_LIBRARY_PATH / CMAKE_INCLUDE_PATH), so link-time stubs work on machines without a GPU.
include(CheckLanguage)
check_language(CUDA)
find_package(CUDAToolkit QUIET)
find_library(KILN_CUBLAS_LIB NAMES cublas HINTS ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES stubs)
find_library(KILN_CUBLASLT_LIB NAMES cublasLt HINTS ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES stubs)
find_path(KILN_CUBLAS_INCLUDE cublasLt.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
# NCCL is optional: without it the build has no NCCL process group (make_nccl_group throws).
find_library(KILN_NCCL_LIB NAMES nccl HINTS ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES stubs)
find_path(KILN_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})

if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND KILN_CUBLAS_LIB AND KILN_CUBLASLT_LIB AND KILN_CUBLAS_INCLUDE)
  # sm_80 and sm_90 by default; KILN_CUDA_ARCHS (e.g. "90") overrides.
  if(DEFINED ENV{KILN_CUDA_ARCHS})
    set(KILN_CUDA_ARCHS "$ENV{KILN_CUDA_ARCHS}")
  else()
    set(KILN_CUDA_ARCHS "80;90")
  endif()
  enable_language(CUDA)
  set_target_properties(${PROJECT_NAME} PROPERTIES CUDA_ARCHITECTURES "${KILN_CUDA_ARCHS}")
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  target_sources(${PROJECT_NAME} PRIVATE ${KILN_CUDA_SOURCES})
  set_source_files_properties(${KILN_CUDA_SOURCES} PROPERTIES LANGUAGE CUDA)
  target_compile_definitions(${PROJECT_NAME} PRIVATE KILN_CUDA)
  target_compile_options(${PROJECT_NAME} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr -Xcompiler=-fPIC,-fopenmp>)
  target_include_directories(${PROJECT_NAME} PRIVATE ${CUDAToolkit_INCLUDE_DIRS} ${KILN_CUBLAS_INCLUDE})
  target_link_libraries(${PROJECT_NAME} PRIVATE CUDA::cudart ${KILN_CUBLAS_LIB} ${KILN_CUBLASLT_LIB})
  string(REPLACE ";" "," _archs "${KILN_CUDA_ARCHS}")
  list(APPEND KILN_ENABLED "cuda(sm ${_archs})")
  if(KILN_NCCL_LIB AND KILN_NCCL_INCLUDE)
    # Target-wide, so native/dist/process_group.cc (C++) leaves make_nccl_group to nccl_group.cc.
    target_compile_definitions(${PROJECT_NAME} PRIVATE KILN_NCCL)
    target_include_directories(${PROJECT_NAME} PRIVATE ${KILN_NCCL_INCLUDE})
    target_link_libraries(${PROJECT_NAME} PRIVATE ${KILN_NCCL_LIB})
    list(APPEND KILN_ENABLED "nccl")
  endif()
elseif(KILN_CUDA STREQUAL "ON")
  message(FATAL_ERROR "kiln: KILN_CUDA=ON but no CUDA toolkit with cuBLAS/cuBLASLt was found "
    "(nvcc: ${CMAKE_CUDA_COMPILER}, cublas: ${KILN_CUBLAS_LIB}, cublasLt: ${KILN_CUBLASLT_LIB}). "
    "On a machine without the libraries: source ../shared/cuda-sdk/env.sh")
else()
  list(APPEND KILN_ENABLED "no-cuda")
endif()
