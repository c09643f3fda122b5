// The exchange timeout (communication.h): set_comm_timeout_seconds(), else the
// MOE_COMM_TIMEOUT_S environment variable, else kDefaultTimeoutS.
#include <atomic>
#include <cstdlib>
#include <string>

#include "comm/communication.h"
#include "moe/errors.h"

namespace moe {
namespace {

constexpr double kDefaultTimeoutS = 300.0;

/// 0 means "not set by the program": read the environment.
std::atomic<double>& override_s() {
  static std::atomic<double> seconds{0.0};
  return seconds;
}

double from_environment() {
  const char* text = std::getenv("MOE_COMM_TIMEOUT_S");
  if (text == nullptr || *text == '\0') return kDefaultTimeoutS;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  MOE_CHECK(end != text && *end == '\0' && seconds > 0, "MOE_COMM_TIMEOUT_S='", text,
            "' is not a positive number of seconds");
  return seconds;
}

}  // namespace

double comm_timeout_seconds() {
  const double set = override_s().load();
  return set > 0 ? set : from_environment();
}

void set_comm_timeout_seconds(double seconds) {
  MOE_CHECK(seconds > 0, "set_comm_timeout_seconds: the timeout must be positive, got ", seconds);
  override_s().store(seconds);
}

}  // namespace moe
