#include "launcher/serve/ipc_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <filesystem>
#include <map>
#include <set>

#include <spdlog/spdlog.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include "engine/bounded_json.h"

namespace saker::serve {
namespace {

namespace net = boost::asio;
using error_code = boost::system::error_code;
using local = net::local::stream_protocol;

// Where a connection's lines come from and go to: one socket, or stdin and stdout.
class Channel {
 public:
  virtual ~Channel() = default;
  virtual void read_line(net::streambuf& buf, std::function<void(error_code, std::size_t)> h) = 0;
  virtual void write(const std::string& data, std::function<void(error_code, std::size_t)> h) = 0;
  virtual void close() = 0;
};

class SocketChannel final : public Channel {
 public:
  explicit SocketChannel(local::socket s) : socket_(std::move(s)) {}
  void read_line(net::streambuf& buf, std::function<void(error_code, std::size_t)> h) override {
    net::async_read_until(socket_, buf, '\n', std::move(h));
  }
  void write(const std::string& data, std::function<void(error_code, std::size_t)> h) override {
    net::async_write(socket_, net::buffer(data), std::move(h));
  }
  void close() override {
    error_code ec;
    socket_.close(ec);
  }

 private:
  local::socket socket_;
};

class StdioChannel final : public Channel {
 public:
  explicit StdioChannel(net::io_context& io)
      : in_(io, ::dup(STDIN_FILENO)), out_(io, ::dup(STDOUT_FILENO)) {}
  void read_line(net::streambuf& buf, std::function<void(error_code, std::size_t)> h) override {
    net::async_read_until(in_, buf, '\n', std::move(h));
  }
  void write(const std::string& data, std::function<void(error_code, std::size_t)> h) override {
    net::async_write(out_, net::buffer(data), std::move(h));
  }
  void close() override {
    error_code ec;
    in_.close(ec);
    out_.close(ec);
  }

 private:
  net::posix::stream_descriptor in_, out_;
};

json token_json(const RequestEvent& u) {
  return {{"id", u.token}, {"text", u.text}, {"log_prob", u.logprob}};
}

json details(const BatchResult& r) {
  return {{"finish_reason", finish_reason_name(r.finish)},
          {"generated_tokens", r.tokens.size()},
          {"prompt_tokens", r.prompt_tokens}};
}

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::unique_ptr<Channel> ch, ServeContext& ctx, const IpcLimits& limits)
      : ch_(std::move(ch)), ctx_(ctx), limits_(limits), buf_(limits.line_bytes) {}
  ~Connection() { abandon(); }
  void start() { read(); }
  void close() {
    abandon();
    ch_->close();
  }

 private:
  struct Pending {
    json client_id;
    bool stream = false;
  };

  void read() {
    ch_->read_line(buf_, [self = shared_from_this()](error_code ec, std::size_t n) {
      if (ec == net::error::not_found) {  // no newline within the limit: the framing is lost
        self->send({{"error", "a message is longer than the limit of " +
                                  std::to_string(self->limits_.line_bytes) +
                                  " bytes; closing the connection"},
                    {"code", 413}});
        self->close_after_write_ = true;
        return;
      }
      if (ec) return self->close();  // the frontend went away: its requests are cancelled
      std::string line(net::buffers_begin(self->buf_.data()),
                       net::buffers_begin(self->buf_.data()) + static_cast<std::ptrdiff_t>(n));
      self->buf_.consume(n);
      try {
        self->handle(line);
      } catch (const std::exception& e) {
        // One bad message must not stop the thread every connection and HTTP share.
        self->send({{"error", std::string("internal error: ") + e.what()}, {"code", 500}});
      }
      self->read();
    });
  }

  void send(const json& j) {
    out_.push_back(dump(j) + "\n");
    out_bytes_ += out_.back().size();
    if (out_bytes_ > limits_.output_bytes) {
      spdlog::warn(
          "a backend-socket client stopped reading ({} bytes unsent, the limit is {}); "
          "closing it and cancelling its requests",
          out_bytes_, limits_.output_bytes);
      return close();
    }
    if (out_.size() == 1) write_next();
  }
  void write_next() {
    ch_->write(out_.front(), [self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) return self->close();
      self->out_bytes_ -= self->out_.front().size();
      self->out_.pop_front();
      if (!self->out_.empty()) return self->write_next();
      if (self->close_after_write_) self->close();
    });
  }

  void handle(const std::string& line) {
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) return;
    json msg;
    try {
      msg = parse_bounded_json<json>(line, ctx_.max_json_depth);
    } catch (const JsonTooDeep& e) {
      return send({{"error", std::string("malformed message: ") + e.what()}, {"code", 400}});
    } catch (const json::exception& e) {
      return send(
          {{"error", std::string("malformed message (not JSON): ") + e.what()}, {"code", 400}});
    }
    if (!msg.is_object())
      return send({{"error", "malformed message: expected a JSON object"}, {"code", 400}});
    if (msg.contains("health")) {
      const Health h = ctx_.queue.health();
      const char* state = h == Health::kReady     ? "ready"
                          : h == Health::kLoading ? "loading"
                                                  : "unavailable";
      return send({{"health", state}, {"ok", h == Health::kReady}});
    }
    if (msg.contains("cancel")) {
      for (const auto& [engine_id, p] : live_)
        if (p.client_id == msg["cancel"]) {
          ctx_.queue.cancel(engine_id);
          return;
        }
      return send(
          {{"id", msg["cancel"]}, {"error", "no request in flight with this id"}, {"code", 404}});
    }
    if (!msg.contains("id") || !(msg["id"].is_string() || msg["id"].is_number_integer()))
      return send(
          {{"error", "a request needs an `id` (string or integer), its own among those in flight"},
           {"code", 400}});
    const json id = msg["id"];
    for (const auto& [engine_id, p] : live_)
      if (p.client_id == id)
        return send(
            {{"id", id}, {"error", "id " + dump(id) + " is already in flight"}, {"code", 400}});
    std::unique_ptr<Call> call;
    try {
      if (msg.contains("inputs") && !msg["inputs"].is_string())
        throw ApiError(ErrorKind::kValidation, "`inputs` must be a string (one input per message)");
      call = djl_invocations(ctx_, msg, false);
    } catch (const ApiError& e) {
      return send({{"id", id}, {"error", e.what()}, {"code", 400}});
    } catch (const json::exception& e) {
      return send({{"id", id},
                   {"error", std::string("a field has the wrong type: ") + e.what()},
                   {"code", 400}});
    }
    BatchRequest r = std::move(call->requests.at(0));
    r.id = ctx_.queue.next_id();
    const std::uint64_t engine_id = r.id;
    std::weak_ptr<Connection> weak = weak_from_this();
    net::any_io_executor ex = executor_;
    EventSink sink = [weak, ex](RequestEvent&& u) {
      net::post(ex, [weak, u = std::move(u)]() mutable {
        if (auto self = weak.lock()) self->on_update(std::move(u));
      });
    };
    Admit admit = Admit::kQueued;
    try {
      admit = ctx_.queue.submit(std::move(r), std::move(sink), "ipc");
    } catch (const RequestError& e) {
      return send({{"id", id}, {"error", e.what()}, {"code", 400}});
    }
    if (admit != Admit::kQueued) {
      const bool full = admit == Admit::kQueueFull;
      return send(
          {{"id", id},
           {"error", full ? "the request queue is full; retry later" : "the model is not ready"},
           {"code", full ? 429 : 503}});
    }
    live_[engine_id] = {id, call->stream};
  }

  void on_update(RequestEvent&& u) {
    auto it = live_.find(u.id);
    if (it == live_.end()) return;
    const Pending& p = it->second;
    if (!u.error.empty()) {
      send({{"id", p.client_id}, {"error", u.error}, {"code", 400}});
      live_.erase(it);
      return;
    }
    const bool last = u.finish != FinishReason::kNone;
    if (p.stream && (u.token >= 0 || last)) {
      json line = {{"id", p.client_id}};
      if (u.token >= 0) line["token"] = token_json(u);
      if (last && u.result) {
        line["generated_text"] = u.result->text;
        line["details"] = details(*u.result);
      }
      send(line);
    } else if (last && u.result) {
      send({{"id", p.client_id},
            {"generated_text", u.result->text},
            {"details", details(*u.result)}});
    }
    if (last) live_.erase(it);
  }

  void abandon() {
    for (const auto& [engine_id, p] : live_) ctx_.queue.cancel(engine_id);
    live_.clear();
  }

 public:
  net::any_io_executor executor_;

 private:
  std::unique_ptr<Channel> ch_;
  ServeContext& ctx_;
  const IpcLimits limits_;
  net::streambuf buf_;  // holds at most one message of limits_.line_bytes
  std::deque<std::string> out_;
  std::size_t out_bytes_ = 0;
  bool close_after_write_ = false;
  std::map<std::uint64_t, Pending> live_;
};

}  // namespace

struct IpcServer::Impl {
  Impl(net::io_context& i, ServeContext& c, IpcLimits l) : io(i), ctx(c), limits(l), acceptor(i) {}
  net::io_context& io;
  ServeContext& ctx;
  IpcLimits limits;
  local::acceptor acceptor;
  std::string path;
  std::vector<std::weak_ptr<Connection>> connections;  // closed ones are pruned at each accept

  void start(std::unique_ptr<Channel> ch) {
    auto c = std::make_shared<Connection>(std::move(ch), ctx, limits);
    c->executor_ = io.get_executor();
    connections.push_back(c);
    c->start();
  }
  void accept() {
    acceptor.async_accept([this](error_code ec, local::socket s) {
      if (ec) return;
      std::erase_if(connections, [](const std::weak_ptr<Connection>& w) { return w.expired(); });
      if (connections.size() >= limits.connections) {
        spdlog::warn("backend socket: {} connections are open (the limit); refusing another",
                     connections.size());
        error_code ignored;
        s.close(ignored);
      } else {
        start(std::make_unique<SocketChannel>(std::move(s)));
      }
      accept();
    });
  }
};

IpcServer::IpcServer(net::io_context& io, ServeContext& ctx, IpcLimits limits)
    : impl_(std::make_shared<Impl>(io, ctx, limits)) {}

IpcServer::~IpcServer() = default;

void IpcServer::open(const std::string& endpoint) {
  Impl& s = *impl_;
  if (endpoint == "stdio") {
    s.start(std::make_unique<StdioChannel>(s.io));
    return;
  }
  if (!endpoint.starts_with("unix:") || endpoint.size() == 5)
    throw std::runtime_error("--ipc must be unix:PATH or stdio, got '" + endpoint + "'");
  s.path = endpoint.substr(5);
  std::error_code fs_ec;
  if (std::filesystem::is_socket(s.path, fs_ec)) std::filesystem::remove(s.path, fs_ec);
  error_code ec;
  s.acceptor.open(local(), ec);
  if (!ec) {
    // The socket file is created with the mode asked for, never briefly wider: whoever can
    // connect can submit work, bypassing the HTTP port's API key. (No other thread runs yet.)
    const mode_t old_mask = ::umask(0777 & ~s.limits.socket_mode);
    s.acceptor.bind(local::endpoint(s.path), ec);
    ::umask(old_mask);
  }
  if (!ec && ::chmod(s.path.c_str(), s.limits.socket_mode) != 0)
    ec = error_code(errno, boost::system::system_category());
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + endpoint + ": " + ec.message());
  s.accept();
}

void IpcServer::close() {
  Impl& s = *impl_;
  error_code ec;
  s.acceptor.close(ec);
  for (auto& w : s.connections)
    if (auto c = w.lock()) c->close();
  if (!s.path.empty()) {
    std::error_code fs_ec;
    std::filesystem::remove(s.path, fs_ec);
  }
}

}  // namespace saker::serve
