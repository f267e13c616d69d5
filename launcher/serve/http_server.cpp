#include "launcher/serve/http_server.h"

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <nlohmann/json.hpp>

namespace saker::serve {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

std::string chunk(const std::string& data) {
  char size[20];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, RequestQueue& queue, const Router& router, std::size_t body_limit,
          std::set<Session*>& sessions)
      : stream_(std::move(socket)),
        queue_(queue),
        router_(router),
        body_limit_(body_limit),
        sessions_(sessions) {
    sessions_.insert(this);
  }
  ~Session() { sessions_.erase(this); }

  void start() { read(); }
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }
  // At shutdown: a connection with a response still in flight (a call in the engine, or bytes
  // not yet written) closes once the response is out; an idle one closes now.
  void close_when_idle() {
    closing_ = true;
    if (!call_ && !writing_ && !responding_ && out_.empty()) close();
  }

 private:
  void read() {
    if (closing_) return close();
    parser_.emplace();
    parser_->body_limit(body_limit_);
    stream_.expires_after(std::chrono::seconds(120));  // idle keep-alive connections end
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == net::error::eof)
      return close();
    if (ec) {
      const bool too_big = ec == http::error::body_limit;
      HttpResponse res{too_big ? http::status::payload_too_large : http::status::bad_request, 11};
      res.set(http::field::content_type, "application/json");
      res.body() = nlohmann_error(too_big ? "request body is larger than the limit of " +
                                                std::to_string(body_limit_) + " bytes"
                                          : "malformed HTTP request: " + ec.message());
      res.keep_alive(false);
      return write_now(std::move(res));
    }
    HttpRequest req = parser_->release();
    keep_alive_ = req.keep_alive();
    Routed routed;
    try {
      routed = router_(req);
    } catch (const std::exception& e) {
      HttpResponse res{http::status::internal_server_error, req.version()};
      res.set(http::field::content_type, "application/json");
      res.body() = nlohmann_error(std::string("internal error: ") + e.what());
      routed.response = std::move(res);
    }
    if (routed.response) return write_now(std::move(*routed.response));
    begin_call(std::move(routed.call));
  }

  static std::string nlohmann_error(const std::string& message) {
    return nlohmann::json{{"error", message}}.dump(-1, ' ', false,
                                                   nlohmann::json::error_handler_t::replace);
  }

  void write_now(HttpResponse res) {
    res.keep_alive(keep_alive_ && res.keep_alive());
    res.prepare_payload();
    auto msg = std::make_shared<HttpResponse>(std::move(res));
    stream_.expires_never();
    responding_ = true;
    http::async_write(stream_, *msg,
                      [self = shared_from_this(), msg](beast::error_code ec, std::size_t) {
                        self->responding_ = false;
                        if (ec || !msg->keep_alive()) return self->close();
                        self->read();
                      });
  }

  // --- engine-backed calls ---
  void begin_call(std::unique_ptr<Call> call) {
    call_ = std::move(call);
    results_.assign(call_->requests.size(), nullptr);
    ids_.clear();
    done_ = 0;
    failed_.clear();
    for (std::size_t i = 0; i < call_->requests.size(); ++i) {
      BatchRequest r = std::move(call_->requests[i]);
      r.id = queue_.next_id();
      ids_.push_back(r.id);
      std::weak_ptr<Session> weak = weak_from_this();
      net::any_io_executor ex = stream_.get_executor();
      EventSink sink = [weak, ex, i](RequestEvent&& u) {
        net::post(ex, [weak, i, u = std::move(u)]() mutable {
          if (auto self = weak.lock()) self->on_update(i, std::move(u));
        });
      };
      Admit admit = Admit::kQueued;
      std::string refused;
      try {
        admit = queue_.submit(std::move(r), std::move(sink), call_->route);
      } catch (const RequestError& e) {
        refused = e.what();  // the APIs check first; what they let through is still refused
      }
      if (!refused.empty()) {
        for (std::size_t j = 0; j < i; ++j) queue_.cancel(ids_[j]);
        ids_.clear();
        call_->requests.clear();
        // TGI answers validation errors with 422, the others with 400.
        const bool tgi = call_->route == "/generate" || call_->route == "/generate_stream" ||
                         call_->route == "/";
        auto res = call_->error(
            tgi ? http::status::unprocessable_entity : http::status::bad_request, refused);
        call_.reset();
        return write_now(std::move(res));
      }
      if (admit != Admit::kQueued) {
        for (std::size_t j = 0; j < i; ++j) queue_.cancel(ids_[j]);
        ids_.clear();
        call_->requests.clear();
        const bool full = admit == Admit::kQueueFull;
        auto res = call_->error(
            full ? http::status::too_many_requests : http::status::service_unavailable,
            full ? "the request queue is full (" + std::to_string(queue_.limit()) +
                       " waiting); retry later"
                 : "the model is not ready: it is loading, warming up or shutting down");
        call_.reset();
        return write_now(std::move(res));
      }
    }
    watch_disconnect();
    if (call_->stream) {
      stream_.expires_never();
      enqueue("HTTP/1.1 200 OK\r\nContent-Type: " + call_->stream_content_type() +
              "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: " +
              (keep_alive_ ? "keep-alive" : "close") + "\r\n\r\n");
    }
  }

  // A readable socket with nothing to read means the client went away: cancel at once.
  void watch_disconnect() {
    // The watch belongs to this call only: on a kept-alive connection the next request's bytes
    // also make the socket readable, after this call has ended.
    const std::uint64_t call = ++calls_;
    stream_.socket().async_wait(tcp::socket::wait_read,
                                [self = shared_from_this(), call](beast::error_code ec) {
                                  if (ec || !self->call_ || call != self->calls_) return;
                                  beast::error_code ec2;
                                  if (self->stream_.socket().available(ec2) == 0 || ec2)
                                    self->abandon();
                                  // Otherwise the client sent its next request early (pipelining);
                                  // it is read afterwards.
                                });
  }

  void abandon() {
    if (!call_) return;
    for (std::size_t i = 0; i < ids_.size(); ++i)
      if (!results_[i]) queue_.cancel(ids_[i]);
    gone_ = true;
    close();
  }

  void on_update(std::size_t i, RequestEvent&& u) {
    if (!call_ || gone_) return;
    if (!u.error.empty()) failed_ = u.error;
    if (call_->stream && u.error.empty()) {
      const std::string text = call_->on_update(i, u);
      if (!text.empty()) enqueue(chunk(text));
    }
    if (u.finish == FinishReason::kNone) return;
    results_[i] = u.result ? u.result : std::make_shared<const BatchResult>();
    if (++done_ < results_.size()) return;
    // Every choice has finished.
    std::unique_ptr<Call> call = std::move(call_);
    if (call->stream) {
      if (!failed_.empty()) enqueue(chunk(call->stream_error(failed_)));
      const std::string tail = call->end_stream();
      if (!tail.empty()) enqueue(chunk(tail));
      enqueue("0\r\n\r\n");
      finished_stream_ = true;
      return;
    }
    if (!failed_.empty()) return write_now(call->error(http::status::bad_request, failed_));
    write_now(call->final_response(results_));
  }

  // Stream writes, one at a time in order; the engine never waits for them.
  void enqueue(std::string data) {
    out_.push_back(std::move(data));
    if (!writing_) write_next();
  }
  void write_next() {
    if (out_.empty()) {
      writing_ = false;
      if (finished_stream_) {
        finished_stream_ = false;
        if (keep_alive_) return read();
        return close();
      }
      return;
    }
    writing_ = true;
    net::async_write(stream_, net::buffer(out_.front()),
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return self->abandon();
                       self->out_.pop_front();
                       self->write_next();
                     });
  }

  beast::tcp_stream stream_;
  RequestQueue& queue_;
  const Router& router_;
  std::size_t body_limit_;
  std::set<Session*>& sessions_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  std::unique_ptr<Call> call_;
  std::vector<std::uint64_t> ids_;
  std::vector<std::shared_ptr<const BatchResult>> results_;
  std::size_t done_ = 0;
  std::string failed_;
  bool gone_ = false, writing_ = false, finished_stream_ = false;
  bool responding_ = false, closing_ = false;
  std::uint64_t calls_ = 0;  // calls begun on this connection
  std::deque<std::string> out_;
};

}  // namespace

struct HttpServer::Impl {
  Impl(RequestQueue& q, Router r, std::size_t limit)
      : queue(q), router(std::move(r)), body_limit(limit) {}
  RequestQueue& queue;
  Router router;
  std::size_t body_limit;
  net::io_context io{1};
  tcp::acceptor acceptor{io};
  net::signal_set signals{io, SIGTERM, SIGINT};
  std::set<Session*> sessions;  // io thread only
  std::thread thread;
  std::function<void(int)> on_signal;

  void wait_signal() {
    signals.async_wait([this](beast::error_code e, int sig) {
      if (e) return;
      on_signal(sig);
      wait_signal();  // a second signal is handled too (the first may still be draining)
    });
  }

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // closed
      std::make_shared<Session>(std::move(socket), queue, router, body_limit, sessions)->start();
      accept();
    });
  }
};

HttpServer::HttpServer(RequestQueue& queue, Router router, std::size_t body_limit)
    : impl_(std::make_unique<Impl>(queue, std::move(router), body_limit)) {}

HttpServer::~HttpServer() {
  stop();
}

boost::asio::io_context& HttpServer::io_context() {
  return impl_->io;
}

void HttpServer::start(const std::string& host, unsigned short port,
                       std::function<void(int)> on_signal) {
  beast::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("--host " + host + " is not an IP address: " + ec.message());
  const tcp::endpoint ep(address, port);
  Impl& s = *impl_;
  s.acceptor.open(ep.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                             ec.message());
  port_ = s.acceptor.local_endpoint().port();
  s.on_signal = std::move(on_signal);
  s.wait_signal();
  s.accept();
  s.thread = std::thread([&s] {
    try {
      s.io.run();
    } catch (const std::exception& e) {
      spdlog::error("HTTP server stopped: {}", e.what());
    }
  });
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (!s.thread.joinable()) return;
  // Responses the engine has finished may still be queued or being written: they go out before
  // their connections close (a stream cut here would lose its last tokens), for at most
  // kFlushLimit; idle connections close at once.
  constexpr auto kFlushLimit = std::chrono::seconds(5);
  net::steady_timer timer(s.io);
  const auto deadline = std::chrono::steady_clock::now() + kFlushLimit;
  std::function<void()> poll = [&] {
    if (s.sessions.empty()) return;
    if (std::chrono::steady_clock::now() >= deadline) {
      for (Session* session : std::vector<Session*>(s.sessions.begin(), s.sessions.end()))
        session->close();
      return;
    }
    timer.expires_after(std::chrono::milliseconds(5));
    timer.async_wait([&](beast::error_code ec) {
      if (!ec) poll();
    });
  };
  net::post(s.io, [&] {
    beast::error_code ec;
    s.acceptor.close(ec);
    s.signals.cancel(ec);
    for (Session* session : std::vector<Session*>(s.sessions.begin(), s.sessions.end()))
      session->close_when_idle();
    poll();
  });
  s.thread.join();
}

}  // namespace saker::serve
