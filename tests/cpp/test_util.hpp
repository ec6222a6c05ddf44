// Helpers shared by the C++ tests.
#pragma once

#include <functional>
#include <string>

#include "magmasr/error.hpp"

namespace magmasr::test {

// The message of the ValueError f throws ("no ValueError" when it throws none).
inline std::string value_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no ValueError";
}

inline bool says(const std::string& message, const std::string& part) {
  return message.find(part) != std::string::npos;
}

}  // namespace magmasr::test
