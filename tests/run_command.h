// Runs a shell command for the command-line tests, capturing stdout, stderr, the exit status and
// the wall time.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace saker::test {

struct Run {
  int code = -1;  // exit status, or 128 + signal
  std::string out, err;
  double seconds = 0;
};

inline Run run_command(const std::string& cmd) {
  static int counter = 0;
  const auto err_file =
      std::filesystem::temp_directory_path() /
      ("saker_test_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const auto t0 = std::chrono::steady_clock::now();
  Run r;
  FILE* p = ::popen((cmd + " 2>'" + err_file.string() + "'").c_str(), "r");
  if (!p) throw std::runtime_error("popen failed for: " + cmd);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  std::filesystem::remove(err_file);
  return r;
}

}  // namespace saker::test
