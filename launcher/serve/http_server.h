// The HTTP/1.1 server on rank 0: Boost.Beast on one Asio thread, every connection asynchronous
// (keep-alive, many concurrent streams, no thread per connection). Routes answer at once or hand
// back a Call, whose requests go to the engine loop and whose updates come back posted to the
// connection; a client that goes away cancels its requests.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>

#include "engine/request_queue.h"

namespace saker::serve {

namespace http = boost::beast::http;
using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

// One engine-backed call: its requests (n choices) and how its API formats what comes back.
class Call {
 public:
  virtual ~Call() = default;
  std::vector<BatchRequest> requests;
  bool stream = false;
  std::string route;
  virtual std::string stream_content_type() const { return "text/event-stream"; }
  // Stream text for one update of choice i ("" for nothing).
  virtual std::string on_update(std::size_t choice, const RequestEvent& u) = 0;
  // Stream text after every choice has finished.
  virtual std::string end_stream() { return ""; }
  // The whole response of a call that does not stream.
  virtual HttpResponse final_response(const std::vector<std::shared_ptr<const BatchResult>>& r) = 0;
  // The API's error shape, before anything was sent and (as stream text) mid-stream.
  virtual HttpResponse error(http::status s, const std::string& message) = 0;
  virtual std::string stream_error(const std::string& message) = 0;
};

struct Routed {
  std::optional<HttpResponse> response;  // answered now
  std::unique_ptr<Call> call;            // or through the engine
};
using Router = std::function<Routed(const HttpRequest&)>;

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
