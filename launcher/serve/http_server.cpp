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
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
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

std::string error_json(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace);
}

// An answer given before any route is looked up (a malformed request, a limit): the connection
// closes after it, since the rest of what the client sent cannot be trusted to frame requests.
HttpResponse plain_error(http::status s, const std::string& message) {
  HttpResponse res{s, 11};
  res.set(http::field::content_type, "application/json");
  res.body() = error_json(message);
  res.keep_alive(false);
  return res;
}

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

// What the server needs of a connection, whatever carries it (TCP, or TLS over TCP).
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void close() = 0;
  virtual void close_when_idle() = 0;
};

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// What every connection shares; touched on the I/O thread only, but for the pool and the router.
struct Shared {
  RequestQueue& queue;
  Router router;  // called on the pool (it is thread-safe: the APIs share nothing mutable)
  ServerLimits limits;
  std::optional<net::ssl::context> tls;  // --ssl-certfile / --ssl-keyfile
  std::set<SessionBase*> sessions;
  net::io_context io{1};
  net::thread_pool pool;
  Shared(RequestQueue& q, Router r, ServerLimits l)
      : queue(q),
        router(std::move(r)),
        limits(l),
        pool(std::max<std::size_t>(1, l.routing_threads)) {}
};

template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  template <class... StreamArgs>
  explicit Session(Shared& shared, StreamArgs&&... args)
      : stream_(std::forward<StreamArgs>(args)...),
        shared_(shared),
        limits_(shared.limits),
        timer_(shared.io) {
    shared_.sessions.insert(this);
  }
  // A session that ends with its call still running (an exception, the server stopping) must not
  // leave sequences generating for nobody.
  ~Session() override {
    cancel_unfinished();
    shared_.sessions.erase(this);
  }

  void start() {
    if constexpr (!kTls) {
      read();
    } else {
      lowest().expires_after(seconds(limits_.idle_timeout_s));
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->close();  // not TLS, or a bad handshake
                                self->read();
                              });
    }
  }
  // Closes the TCP connection under any TLS without a close_notify: every response is framed
  // (Content-Length or a last chunk), so the client cannot mistake a truncation for an end.
  void close() override {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
    timer_.cancel();
  }
  // At shutdown: a connection with a response still in flight (a call in the engine, a body being
  // validated, or bytes not yet written) closes once the response is out; an idle one closes now.
  void close_when_idle() override {
    closing_ = true;
    if (!call_ && !writing_ && !responding_ && !routing_ && out_.empty()) close();
  }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void read() {
    if (closing_) return close();
    if (buffer_.size() > 0 && parse_buffered()) return;
    if (watching_) {
      // The watch's read is still out: it reads the next request's first bytes (or the close)
      // and starts this read then. Until then the idle timeout is this timer's.
      read_after_watch_ = true;
      timer_.expires_after(seconds(limits_.idle_timeout_s));
      timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
        if (!ec && self->read_after_watch_) self->close();
      });
      return;
    }
    new_parser();
    // An idle keep-alive connection ends, and so does one that sends its request too slowly.
    lowest().expires_after(seconds(limits_.idle_timeout_s));
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void new_parser() {
    parser_.emplace();
    parser_->body_limit(limits_.body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(limits_.header_bytes + limits_.url_bytes));
  }

  // A whole request already buffered (pipelined behind the last one, read by the watch) is
  // handled without a read, which could not start while the watch's read is out. False when
  // the buffer holds only part of one: the bytes stay for the read that completes it.
  bool parse_buffered() {
    new_parser();
    parser_->eager(true);
    std::size_t used = 0;
    beast::error_code ec;
    while (!parser_->is_done() && !ec) {
      const std::size_t n = parser_->put(net::buffer(buffer_.data()) + used, ec);
      used += n;
      if (ec == http::error::need_more || (!ec && n == 0)) return false;
    }
    buffer_.consume(used);
    on_read(ec);
    return true;
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == net::error::eof || ec == net::ssl::error::stream_truncated)
      return close();
    if (ec == http::error::body_limit)
      return write_now(plain_error(http::status::payload_too_large,
                                   "request body is larger than the limit of " +
                                       std::to_string(limits_.body_bytes) + " bytes"));
    if (ec == http::error::header_limit)
      return write_now(plain_error(http::status::request_header_fields_too_large,
                                   "the request line and headers are larger than the limit of " +
                                       std::to_string(limits_.url_bytes + limits_.header_bytes) +
                                       " bytes (URL " + std::to_string(limits_.url_bytes) +
                                       " + headers " + std::to_string(limits_.header_bytes) + ")"));
    if (ec)
      return write_now(
          plain_error(http::status::bad_request, "malformed HTTP request: " + ec.message()));
    HttpRequest req = parser_->release();
    keep_alive_ = req.keep_alive();
    if (auto refused = check_head(req)) return write_now(std::move(*refused));
    // Bodies are parsed, validated and tokenized on the pool: a 4 MB prompt must not delay every
    // other client's /health. What comes back is handled here again.
    if (req.method() == http::verb::get || req.method() == http::verb::head)
      return on_routed(route(req));
    routing_ = true;
    net::post(shared_.pool, [self = this->shared_from_this(), req = std::move(req)]() mutable {
      Routed routed = self->route(req);
      auto ex = self->lowest().get_executor();
      net::post(ex, [self = std::move(self), routed = std::move(routed)]() mutable {
        self->routing_ = false;
        self->on_routed(std::move(routed));
      });
    });
  }

  // Limits beast's parser does not check itself: the URL, and the header fields by count and size.
  std::optional<HttpResponse> check_head(const HttpRequest& req) const {
    if (req.target().size() > limits_.url_bytes)
      return plain_error(http::status::uri_too_long,
                         "the URL is " + std::to_string(req.target().size()) +
                             " bytes; the limit is " + std::to_string(limits_.url_bytes));
    std::size_t fields = 0, bytes = 0;
    for (const auto& f : req) {
      ++fields;
      bytes += f.name_string().size() + f.value().size() + 4;  // ": " and CRLF
    }
    if (fields > limits_.header_fields)
      return plain_error(http::status::request_header_fields_too_large,
                         "the request has " + std::to_string(fields) +
                             " header fields; the limit is " +
                             std::to_string(limits_.header_fields));
    if (bytes > limits_.header_bytes)
      return plain_error(http::status::request_header_fields_too_large,
                         "the header fields are " + std::to_string(bytes) +
                             " bytes; the limit is " + std::to_string(limits_.header_bytes));
    return std::nullopt;
  }

  Routed route(const HttpRequest& req) {
    try {
      return shared_.router(req);
    } catch (const std::exception& e) {
      Routed routed;
      HttpResponse res{http::status::internal_server_error, req.version()};
      res.set(http::field::content_type, "application/json");
      res.body() = error_json(std::string("internal error: ") + e.what());
      routed.response = std::move(res);
      return routed;
    }
  }

  void on_routed(Routed routed) {
    if (routed.response) return write_now(std::move(*routed.response));
    begin_call(std::move(routed.call));
  }

  void write_now(HttpResponse res) {
    res.keep_alive(keep_alive_ && res.keep_alive());
    res.prepare_payload();
    auto msg = std::make_shared<HttpResponse>(std::move(res));
    lowest().expires_never();
    responding_ = true;
    http::async_write(stream_, *msg,
                      [self = this->shared_from_this(), msg](beast::error_code ec, std::size_t) {
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
    fail_status_ = http::status::bad_request;
    for (std::size_t i = 0; i < call_->requests.size(); ++i) {
      BatchRequest r = std::move(call_->requests[i]);
      r.id = shared_.queue.next_id();
      ids_.push_back(r.id);
      std::weak_ptr<Session> weak = this->weak_from_this();
      net::any_io_executor ex = lowest().get_executor();
      EventSink sink = [weak, ex, i](RequestEvent&& u) {
        net::post(ex, [weak, i, u = std::move(u)]() mutable {
          if (auto self = weak.lock()) self->on_update(i, std::move(u));
        });
      };
      Admit admit = Admit::kQueued;
      std::string refused;
      try {
        admit = shared_.queue.submit(std::move(r), std::move(sink), call_->route);
      } catch (const RequestError& e) {
        refused = e.what();  // the APIs check first; what they let through is still refused
      }
      if (refused.empty() && admit == Admit::kQueued) continue;
      ids_.pop_back();
      for (const std::uint64_t id : ids_) shared_.queue.cancel(id);
      ids_.clear();
      call_->requests.clear();
      http::status status = http::status::bad_request;
      std::string message = refused;
      if (!refused.empty()) {
        // TGI answers validation errors with 422, the others with 400.
        const bool tgi = call_->route == "/generate" || call_->route == "/generate_stream" ||
                         call_->route == "/";
        if (tgi) status = http::status::unprocessable_entity;
      } else if (admit == Admit::kQueueFull) {
        status = http::status::too_many_requests;
        message = "the request queue is full (" + std::to_string(shared_.queue.limit()) +
                  " waiting); retry later";
      } else {
        status = http::status::service_unavailable;
        message = "the model is not ready: it is loading, warming up or shutting down";
      }
      auto res = call_->error(status, message);
      call_.reset();
      return write_now(std::move(res));
    }
    const std::uint64_t call_no = ++calls_;
    lowest().expires_never();
    if (!watching_) watch_client();
    if (limits_.request_timeout_s > 0) {
      timer_.expires_after(seconds(limits_.request_timeout_s));
      timer_.async_wait([self = this->shared_from_this(), call_no](beast::error_code ec) {
        if (ec || !self->call_ || call_no != self->calls_) return;
        self->failed_ = "the request ran longer than the server's request timeout (" +
                        fmt::format("{:g}", self->limits_.request_timeout_s) + " s)";
        self->fail_status_ = http::status::request_timeout;
        self->cancel_unfinished();
      });
    }
    if (call_->stream) {
      enqueue("HTTP/1.1 200 OK\r\nContent-Type: " + call_->stream_content_type() +
              "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: " +
              (keep_alive_ ? "keep-alive" : "close") + "\r\n\r\n");
    }
  }

  // Watches the client while its call runs, with a read: a client that closes (or resets, or
  // ends its TLS session) is noticed at once and its requests cancelled, streaming or not. Bytes
  // it sends meanwhile (its next request, pipelined) are kept in the buffer the next parse reads
  // first, and the watch goes on, so a client that sends one more byte and then leaves is still
  // noticed; more than one whole request's worth ends the connection. One read at a time: a read
  // wanted after the call waits for this one (read_after_watch_).
  void watch_client() {
    watching_ = true;
    constexpr std::size_t kChunk = 4096;
    stream_.async_read_some(buffer_.prepare(kChunk), [self = this->shared_from_this()](
                                                         beast::error_code ec, std::size_t n) {
      self->watching_ = false;
      if (ec) return self->call_ ? self->abandon() : self->close();
      self->buffer_.commit(n);
      const ServerLimits& l = self->limits_;
      const std::size_t cap = l.header_bytes + l.url_bytes + l.body_bytes;
      if (self->buffer_.size() > cap) {
        spdlog::warn("a client sent more than {} bytes while its request ran; closing it", cap);
        return self->call_ ? self->abandon() : self->close();
      }
      if (self->call_) return self->watch_client();
      if (self->read_after_watch_) {
        self->read_after_watch_ = false;
        self->timer_.cancel();
        self->read();
      }
    });
  }

  void cancel_unfinished() {
    if (!call_) return;
    for (std::size_t i = 0; i < ids_.size(); ++i)
      if (!results_[i]) shared_.queue.cancel(ids_[i]);
  }

  void abandon() {
    if (!call_ || gone_) return;
    cancel_unfinished();
    gone_ = true;
    close();
  }

  void on_update(std::size_t i, RequestEvent&& u) {
    if (!call_ || gone_) return;
    if (!u.error.empty()) failed_ = u.error;
    if (call_->stream && u.error.empty()) {
      const std::string text = call_->on_update(i, u);
      if (!text.empty()) enqueue(chunk(text));
      if (gone_) return;  // it stopped reading: the output bound ended the call
    }
    if (u.finish == FinishReason::kNone) return;
    results_[i] = u.result ? u.result : std::make_shared<const BatchResult>();
    if (++done_ < results_.size()) return;
    // Every choice has finished.
    timer_.cancel();
    std::unique_ptr<Call> call = std::move(call_);
    if (call->stream) {
      if (!failed_.empty()) enqueue(chunk(call->stream_error(failed_)));
      const std::string tail = call->end_stream();
      if (!tail.empty()) enqueue(chunk(tail));
      enqueue("0\r\n\r\n");
      finished_stream_ = true;
      if (!writing_) write_next();
      return;
    }
    if (!failed_.empty()) return write_now(call->error(fail_status_, failed_));
    write_now(call->final_response(results_));
  }

  // Stream writes, one at a time in order; the engine never waits for them. A client that stops
  // reading holds at most limits_.output_bytes here: past that its requests are cancelled, so it
  // cannot keep KV blocks and memory forever.
  void enqueue(std::string data) {
    out_bytes_ += data.size();
    out_.push_back(std::move(data));
    if (call_ && out_bytes_ > limits_.output_bytes) {
      spdlog::warn(
          "a client stopped reading its stream ({} bytes unsent, the limit is {}); its "
          "requests are cancelled",
          out_bytes_, limits_.output_bytes);
      return abandon();
    }
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
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) {
                         self->abandon();
                         return self->close();
                       }
                       self->out_bytes_ -= self->out_.front().size();
                       self->out_.pop_front();
                       self->write_next();
                     });
  }

  Stream stream_;
  Shared& shared_;
  const ServerLimits& limits_;
  net::steady_timer timer_;  // the request timeout; after a call, the idle timeout of its watch
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  std::unique_ptr<Call> call_;
  std::vector<std::uint64_t> ids_;
  std::vector<std::shared_ptr<const BatchResult>> results_;
  std::size_t done_ = 0;
  std::string failed_;
  http::status fail_status_ = http::status::bad_request;
  bool gone_ = false, writing_ = false, finished_stream_ = false;
  bool responding_ = false, closing_ = false, routing_ = false;
  bool watching_ = false, read_after_watch_ = false;
  std::uint64_t calls_ = 0;  // calls begun on this connection
  std::deque<std::string> out_;
  std::size_t out_bytes_ = 0;
};

// Past --max-connections a new connection hears 503 and is closed, without a session.
void refuse_connection(tcp::socket socket, std::size_t limit) {
  auto s = std::make_shared<tcp::socket>(std::move(socket));
  HttpResponse res =
      plain_error(http::status::service_unavailable, "too many open connections (the limit is " +
                                                         std::to_string(limit) + "); retry later");
  res.set(http::field::retry_after, "1");
  res.prepare_payload();
  auto msg = std::make_shared<HttpResponse>(std::move(res));
  http::async_write(*s, *msg, [s, msg](beast::error_code, std::size_t) {
    beast::error_code ec;
    s->shutdown(tcp::socket::shutdown_both, ec);
    s->close(ec);
  });
}

}  // namespace

struct HttpServer::Impl : Shared {
  using Shared::Shared;
  tcp::acceptor acceptor{io};
  net::signal_set signals{io, SIGTERM, SIGINT};
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
      if (sessions.size() >= limits.connections && tls) {
        beast::error_code ignored;  // a plain-text 503 would mean nothing inside TLS
        socket.close(ignored);
      } else if (sessions.size() >= limits.connections)
        refuse_connection(std::move(socket), limits.connections);
      else if (tls)
        std::make_shared<Session<TlsStream>>(*this, std::move(socket), *tls)->start();
      else
        std::make_shared<Session<PlainStream>>(*this, std::move(socket))->start();
      accept();
    });
  }
};

HttpServer::HttpServer(RequestQueue& queue, Router router, ServerLimits limits)
    : impl_(std::make_unique<Impl>(queue, std::move(router), limits)) {}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::use_tls(const std::string& certfile, const std::string& keyfile) {
  net::ssl::context ctx(net::ssl::context::tls_server);
  // TLS 1.2 and later only; the library's default ciphers.
  ctx.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                  net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                  net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
  beast::error_code ec;
  ctx.use_certificate_chain_file(certfile, ec);
  if (ec)
    throw std::runtime_error("--ssl-certfile " + certfile +
                             ": not a readable PEM certificate chain (" + ec.message() + ")");
  ctx.use_private_key_file(keyfile, net::ssl::context::pem, ec);
  if (ec)
    throw std::runtime_error("--ssl-keyfile " + keyfile + ": not a readable PEM private key (" +
                             ec.message() + ")");
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    throw std::runtime_error("--ssl-keyfile " + keyfile + " does not match the certificate in " +
                             certfile);
  impl_->tls.emplace(std::move(ctx));
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
    // A handler that throws ends only its own connection (its session's destructor cancels what
    // it had running); the thread goes on serving everyone else.
    for (;;) {
      try {
        s.io.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("HTTP server: a connection failed ({}); serving on", e.what());
      }
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
      for (SessionBase* session : std::vector(s.sessions.begin(), s.sessions.end()))
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
    for (SessionBase* session : std::vector(s.sessions.begin(), s.sessions.end()))
      session->close_when_idle();
    poll();
  });
  s.thread.join();
  s.pool.join();
}

}  // namespace saker::serve
