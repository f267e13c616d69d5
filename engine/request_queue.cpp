#include "engine/request_queue.h"

#include <chrono>

namespace saker {

RequestQueue::RequestQueue(std::size_t limit) : limit_(limit) {}

Admit RequestQueue::submit(BatchRequest r, EventSink sink, std::string tag) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_ || health_ != Health::kReady || !limits_) return Admit::kNotReady;
    validate_request(r, *limits_);  // in one place, before anything is queued
    if (waiting_ >= limit_) return Admit::kQueueFull;
    ++waiting_;
    inbox_.push_back({Command::kSubmit, std::move(r), std::move(sink), std::move(tag), 0});
  }
  cv_.notify_one();
  return Admit::kQueued;
}

void RequestQueue::cancel(std::uint64_t id) {
  {
    std::lock_guard lock(mu_);
    inbox_.push_back({Command::kCancel, {}, {}, {}, id});
  }
  cv_.notify_one();
}

void RequestQueue::shutdown(double drain_timeout_s) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
    drain_timeout_s_ = drain_timeout_s;
    if (health_ == Health::kReady) health_ = Health::kDraining;
  }
  cv_.notify_one();
}

Health RequestQueue::health() const {
  const Health h = health_.load();
  return h == Health::kReady && stalled_ && stalled_() ? Health::kFailed : h;
}

std::optional<RequestLimits> RequestQueue::limits() const {
  std::lock_guard lock(mu_);
  return limits_;
}

void RequestQueue::set_limits(const RequestLimits& l) {
  std::lock_guard lock(mu_);
  limits_ = l;
}

std::optional<double> RequestQueue::take(std::deque<Command>& out, double wait_s) {
  std::unique_lock lock(mu_);
  if (inbox_.empty() && !shutdown_ && wait_s > 0)
    cv_.wait_for(lock, std::chrono::duration<double>(wait_s));
  for (Command& c : inbox_) out.push_back(std::move(c));
  inbox_.clear();
  return shutdown_ ? std::optional<double>(drain_timeout_s_) : std::nullopt;
}

void RequestQueue::set_engine_waiting(std::size_t n) {
  std::lock_guard lock(mu_);
  waiting_ = inbox_.size() + n;
}

}  // namespace saker
