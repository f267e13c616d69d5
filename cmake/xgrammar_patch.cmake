# Applied to the XGrammar 0.2.9 sources after download (cmake/xgrammar.cmake). A JSON-schema
# string with minLength/maxLength is built from a character class that leaves out only `"`, `\`,
# CR and LF, so it lets the other control characters U+0000-U+001F through raw, which no JSON
# parser accepts (found by tests/test_structured_engine.cpp). The unbounded string rule already
# excludes all of U+0000-U+001F; this makes the bounded one do the same.
set(file "${SOURCE_DIR}/cpp/json_schema_converter.cc")
file(READ "${file}" text)
set(bad [=[builder_.AddCharacterClass({{'"', '"'}, {'\\', '\\'}, {'\r', '\r'}, {'\n', '\n'}}, true);]=])
set(good [=[builder_.AddCharacterClass({{0, 0x1f}, {'"', '"'}, {'\\', '\\'}}, true);]=])
string(FIND "${text}" "${bad}" at)
if(at EQUAL -1)
  string(FIND "${text}" "${good}" done)
  if(done EQUAL -1)
    message(FATAL_ERROR "xgrammar_patch.cmake: the bounded-string character class was not found")
  endif()
else()
  string(REPLACE "${bad}" "${good}" text "${text}")
  file(WRITE "${file}" "${text}")
endif()
