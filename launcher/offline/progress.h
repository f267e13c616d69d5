// Progress of an offline job on stderr: a bar redrawn in place on a terminal, plain periodic
// lines otherwise (cluster job logs).
#pragma once

#include <chrono>
#include <cstdint>

namespace saker::cli {

class Progress {
 public:
  Progress(std::int64_t total, double interval_s);
  // Redraws (terminal) or prints a line when interval_s has passed since the last one.
  void update(std::int64_t done, std::uint64_t tokens, bool final = false);

 private:
  std::int64_t total_;
  double interval_s_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace saker::cli
