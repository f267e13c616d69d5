// The backend socket a serving frontend drives saker through (`saker serve --ipc unix:PATH` or
// `--ipc stdio`): newline-delimited JSON, many requests in flight per connection, told apart by
// the frontend's own ids. Messages in: {"id", "inputs", "parameters", "stream"} to submit,
// {"cancel": id}, {"health": true}. Messages out, in DJL's jsonlines shapes plus "id": one
// {"id", "token": {...}} per token when streaming, and a last message with "generated_text" and
// "details"; errors as {"id"?, "error", "code"}. Protocol: docs/ipc.md.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "launcher/serve/api.h"

namespace saker::serve {

class IpcServer {
 public:
  IpcServer(boost::asio::io_context& io, ServeContext& ctx);
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
