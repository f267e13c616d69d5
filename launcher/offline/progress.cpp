#include "launcher/offline/progress.h"

#include <unistd.h>

#include <cstdio>
#include <string>

namespace saker::cli {

Progress::Progress(std::int64_t total, double interval_s)
    : total_(total),
      interval_s_(interval_s),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

void Progress::update(std::int64_t done, std::uint64_t tokens, bool final) {
  const auto now = std::chrono::steady_clock::now();
  const double since_last = std::chrono::duration<double>(now - last_).count();
  // A terminal is redrawn often; a log file gets a line every interval.
  if (!final && since_last < (tty_ ? 0.2 : interval_s_)) return;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double tps = elapsed > 0 ? static_cast<double>(tokens) / elapsed : 0.0;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
    std::string bar(static_cast<std::size_t>(filled), '=');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "\r[%s] %lld/%lld requests, %.1f tokens/s, %.0f s%s", bar.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), tps, elapsed,
                 final ? "\n" : "");
  } else {
    std::fprintf(
        stderr, "progress: %lld/%lld requests done, %llu tokens generated, %.1f tokens/s, %.0f s\n",
        static_cast<long long>(done), static_cast<long long>(total_),
        static_cast<unsigned long long>(tokens), tps, elapsed);
  }
  std::fflush(stderr);
}

}  // namespace saker::cli
