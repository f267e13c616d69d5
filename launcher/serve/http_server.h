// The HTTP/1.1 server on rank 0: Boost.Beast on one Asio thread, every connection asynchronous
// (keep-alive, many concurrent streams, no thread per connection). Requests with a body are
// parsed, validated and tokenized on a small pool, so a large prompt never holds the thread that
// answers every other client. Routes answer at once or hand back a Call, whose requests go to the
// engine loop and whose updates come back posted to the connection; a client that goes away, or
// stops reading its stream, cancels its requests.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "engine/request_queue.h"
#include "launcher/serve/call.h"

namespace saker::serve {

// What one client may cost the server (docs/security.md lists them with their defaults).
struct ServerLimits {
  std::size_t body_bytes = 4 << 20;
  std::size_t header_bytes = 16 << 10;  // the header fields together
  std::size_t header_fields = 100;
  std::size_t url_bytes = 8 << 10;
  std::size_t connections = 1024;      // open at once; more are answered 503 and closed
  std::size_t output_bytes = 4 << 20;  // a stream's bytes waiting for a client that stopped reading
  double idle_timeout_s = 60;          // keep-alive wait, and the time to send a whole request
  double request_timeout_s = 0;        // a generation's whole life (0: none)
  std::size_t routing_threads = 2;     // parse, validate, tokenize
};

class HttpServer {
 public:
  HttpServer(RequestQueue& queue, Router router, ServerLimits limits);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves HTTPS from then on: a PEM certificate chain and its private key (throws naming the file
  // that cannot be read or does not match). Before start().
  void use_tls(const std::string& certfile, const std::string& keyfile);
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
