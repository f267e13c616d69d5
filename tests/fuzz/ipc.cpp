// The backend socket (`saker serve --ipc`): the input is what a frontend writes on one
// connection, newline-delimited messages. The server listens on a Unix socket in a scratch
// directory; each input is one connection, written whole and then half-closed. Every line the
// server answers must be a JSON object.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

#include <spdlog/spdlog.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "launcher/serve/ipc_server.h"
#include "tests/fuzz/fuzz_util.h"

using namespace saker;
using namespace saker::serve;
namespace net = boost::asio;
using local = net::local::stream_protocol;

namespace {

struct Rig {
  ServingMetrics metrics;
  RequestQueue queue{1u << 20};
  Tokenizer tok =
      Tokenizer::load(std::string(SAKER_FIXTURES_DIR) + "/tokenizers/small384/tokenizer.json");
  // The context's other fields keep their defaults, however many it grows.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
  ServeContext ctx{.queue = queue,
                   .metrics = metrics,
                   .tokenizer = tok,
                   .vocab_size = tok.id_limit(),
                   .model_name = "demo",
                   .max_context = 2048,
                   .special_ids = {11}};
#pragma GCC diagnostic pop
  net::io_context io;
  IpcServer server{io, ctx};
  fuzz::ScratchDir dir;
  const std::string socket = (dir.path() / "s").string();

  Rig() {
    spdlog::set_level(spdlog::level::off);
    server.open("unix:" + socket);
    queue.set_health(Health::kReady);
    queue.set_limits({tok.id_limit(), 2048, true, nullptr});
  }
  ~Rig() {
    server.close();
  }
};

Rig& rig() {
  static Rig r;
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Rig& r = rig();
  std::string in(reinterpret_cast<const char*>(data), size);
  in += '\n';  // the last line is a message too
  local::socket client(r.io);
  client.connect(local::endpoint(r.socket));
  std::string reply;
  bool done = false;
  net::async_write(client, net::buffer(in), [&](boost::system::error_code, std::size_t) {
    boost::system::error_code ec;
    client.shutdown(local::socket::shutdown_send, ec);
  });
  // Until the server closes the connection, which it does once it has read the end of input.
  net::async_read(client, net::dynamic_buffer(reply),
                  [&](boost::system::error_code, std::size_t) { done = true; });
  r.io.restart();
  while (!done) r.io.run_one();
  // Requests it queued: nothing runs them, so the queue is emptied for the next input.
  std::deque<RequestQueue::Command> taken;
  r.queue.take(taken, 0);
  r.queue.set_engine_waiting(0);
  // Whole lines only: a reply cut by the close has no newline yet.
  for (std::size_t at = 0, nl; (nl = reply.find('\n', at)) != std::string::npos; at = nl + 1) {
    const std::string line = reply.substr(at, nl - at);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) {
      std::fprintf(stderr, "reply is not a JSON object: %s\n", line.c_str());
      std::abort();
    }
  }
  return 0;
}
