// Filters, tests and methods of the subset: what real chat templates call.
#pragma once

#include <string>
#include <vector>

#include "engine/chat_template/value.h"

namespace saker::jinja {

// Each throws ChatTemplateError for an unknown name or a wrong argument.
Value apply_filter(const std::string& name, const Value& v, const std::vector<Value>& args,
                   const Dict& kwargs);
bool apply_test(const std::string& name, const Value& v, const std::vector<Value>& args);
Value call_method(const Value& obj, const std::string& name, const std::vector<Value>& args);
// Python iteration: list items, dict keys, a string's characters; undefined is empty.
List iterate(const Value& v);

}  // namespace saker::jinja
