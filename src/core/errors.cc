#include "moe/errors.h"

#include <cstring>

namespace moe {
namespace {

// Shortens an absolute path to the part below the repository's src/, include/, apps/ or tests/.
std::string short_path(const char* file) {
  std::string_view path(file);
  for (std::string_view root : {"/src/", "/include/", "/apps/", "/tests/"}) {
    if (auto pos = path.rfind(root); pos != std::string_view::npos) {
      return std::string(path.substr(pos + 1));
    }
  }
  return std::string(path);
}

}  // namespace

Error::Error(const std::string& message, const char* file, int line)
    : std::runtime_error(message + " [" + short_path(file) + ":" + std::to_string(line) + "]"),
      message_(message),
      location_(short_path(file) + ":" + std::to_string(line)) {}

namespace detail {
void throw_error(const char* file, int line, const std::string& message) {
  throw Error(message, file, line);
}
}  // namespace detail
}  // namespace moe
