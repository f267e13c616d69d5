// The backend socket a serving frontend drives saker through (`saker serve --ipc unix:PATH` or
// `--ipc stdio`): newline-delimited JSON, many requests in flight per connection, told apart by
// the frontend's own ids. Messages in: {"id", "inputs", "parameters", "stream"} to submit,
// {"cancel": id}, {"health": true}. Messages out, in DJL's jsonlines shapes plus "id": one
// {"id", "token": {...}} per token when streaming, and a last message with "generated_text" and
// "details"; errors as {"id"?, "error", "code"}. Protocol: docs/ipc.md.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "launcher/serve/api.h"

namespace saker::serve {

// What one frontend connection may cost (docs/security.md).
struct IpcLimits {
  std::size_t line_bytes = 16 << 20;    // one message
  std::size_t output_bytes = 16 << 20;  // messages waiting for a frontend that stopped reading
  std::size_t connections = 64;         // open at once on the Unix socket
  unsigned socket_mode = 0600;          // the socket file: its owner only, unless widened
};

class IpcServer {
 public:
  IpcServer(boost::asio::io_context& io, ServeContext& ctx, IpcLimits limits = {});
  ~IpcServer();
  // "unix:PATH" (a stale socket file at PATH is replaced) or "stdio" (stdin and stdout; logs go
  // to stderr). Throws naming the endpoint when it cannot be opened.
  void open(const std::string& endpoint);
  // Closes the listener and every connection (io thread).
  void close();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace saker::serve
