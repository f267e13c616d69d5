// The HTTP/1.1 server on rank 0: Boost.Beast on one Asio thread, every connection asynchronous
// (keep-alive, many concurrent streams, no thread per connection). Routes answer at once or hand
// back a Call, whose requests go to the engine loop and whose updates come back posted to the
// connection; a client that goes away cancels its requests.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "engine/request_queue.h"
#include "launcher/serve/call.h"

namespace saker::serve {

class HttpServer {
 public:
  HttpServer(RequestQueue& queue, Router router, std::size_t body_limit);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws naming host:port), then serves on a thread of its own. on_signal
  // runs on that thread for SIGTERM and SIGINT.
  void start(const std::string& host, unsigned short port, std::function<void(int)> on_signal);
  // Stops accepting, closes every connection and joins the thread.
  void stop();
  unsigned short port() const { return port_; }
  // The one Asio context every connection runs on (the backend socket joins it too).
  boost::asio::io_context& io_context();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  unsigned short port_ = 0;
};

}  // namespace saker::serve
