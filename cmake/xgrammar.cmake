# XGrammar (Apache-2.0, github.com/mlc-ai/xgrammar): the structured-output engine vLLM, SGLang and
# TensorRT-LLM use. Its C++ core comes from the PyPI source release (a pinned version, checked by
# hash), patched for one bug (cmake/xgrammar_patch.cmake), and is built here as a static
# library with our compiler; its own CMakeLists is not used,
# as it forces -Werror and LTO on whoever includes it. Offline: configure with
# -DFETCHCONTENT_SOURCE_DIR_XGRAMMAR=/path/to/xgrammar-0.2.9 (an unpacked copy).
include(FetchContent)
FetchContent_Declare(xgrammar
  URL https://files.pythonhosted.org/packages/3a/2f/5bf8e8fa6619cff534932f79b0abc81a417d354bc5093252c1a6081d0a93/xgrammar-0.2.9.tar.gz
  URL_HASH SHA256=87b466bca2475e29bb0323abc62c6c33cbcbcff47e5fb800a3e2099ac9620b90
  DOWNLOAD_EXTRACT_TIMESTAMP TRUE
  PATCH_COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=<SOURCE_DIR> -P
                ${CMAKE_CURRENT_LIST_DIR}/xgrammar_patch.cmake)
FetchContent_GetProperties(xgrammar)
if(NOT xgrammar_POPULATED)
  FetchContent_Populate(xgrammar)
endif()
file(GLOB_RECURSE SAKER_XGRAMMAR_SOURCES CONFIGURE_DEPENDS "${xgrammar_SOURCE_DIR}/cpp/*.cc")
list(FILTER SAKER_XGRAMMAR_SOURCES EXCLUDE REGEX "/cpp/tvm_ffi/")
add_library(xgrammar STATIC ${SAKER_XGRAMMAR_SOURCES})
set_target_properties(xgrammar PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(xgrammar PUBLIC "${xgrammar_SOURCE_DIR}/include")
target_include_directories(xgrammar SYSTEM PUBLIC "${xgrammar_SOURCE_DIR}/3rdparty/picojson"
  "${xgrammar_SOURCE_DIR}/3rdparty/dlpack/include")
target_compile_definitions(xgrammar PUBLIC XGRAMMAR_ENABLE_CPPTRACE=0
  XGRAMMAR_ENABLE_INTERNAL_CHECK=0)
# Not our code: its warnings are its maintainers' business, not this build's.
target_compile_options(xgrammar PRIVATE -w -O2)
target_link_libraries(xgrammar PUBLIC Threads::Threads)
