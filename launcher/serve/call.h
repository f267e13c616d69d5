// What a route hands the transports: an answer now, or a Call whose requests go to the engine
// and whose updates its API formats. Apart from the HTTP server so that the APIs and the backend
// socket need none of the server's machinery.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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

}  // namespace saker::serve
