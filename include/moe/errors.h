// MoE Engine error vocabulary.
//
// Every failure the library reports is a moe::Error whose message names what went wrong
// and where (file:line). The macro family:
//   MOE_THROW(parts...)                       throw with a message built from parts
//   MOE_CHECK(cond, parts...)                 throw unless cond
//   MOE_CHECK_GEN(expr, ok, to_string, ...)   status-code check; the CUDA, cuBLAS and NCCL
//                                             variants (MOE_CUDA_CHECK, ...) are built on it
//                                             in src/core/cuda_check.h
//   MOE_UNREACHABLE(parts...)                 a branch that must never run
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moe {

/// The one exception type of the library. what() is "message [file:line]".
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, const char* file, int line);

  /// The message without the location.
  const std::string& message() const { return message_; }
  /// "file:line" of the check that failed.
  const std::string& location() const { return location_; }

 private:
  std::string message_;
  std::string location_;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace detail
}  // namespace moe

#define MOE_THROW(...) \
  ::moe::detail::throw_error(__FILE__, __LINE__, ::moe::detail::concat(__VA_ARGS__))

#define MOE_CHECK(cond, ...)    \
  do {                          \
    if (!(cond)) [[unlikely]] { \
      MOE_THROW(__VA_ARGS__);   \
    }                           \
  } while (0)

/// Generic status check: `expr` must equal `ok`; `to_string(status)` describes a failure.
#define MOE_CHECK_GEN(expr, ok, to_string, ...)                                              \
  do {                                                                                       \
    const auto moe_status_ = (expr);                                                         \
    if (moe_status_ != (ok)) [[unlikely]] {                                                  \
      MOE_THROW(#expr " failed: ", to_string(moe_status_) __VA_OPT__(, ": ", ) __VA_ARGS__); \
    }                                                                                        \
  } while (0)

#define MOE_UNREACHABLE(...) MOE_THROW("internal error, unreachable: " __VA_OPT__(, ) __VA_ARGS__)
