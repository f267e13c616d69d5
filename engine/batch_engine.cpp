#include "engine/batch_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "engine/logprobs.h"

namespace saker {
namespace {

bool contains(const auto& v, std::int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

BatchEngine::BatchEngine(StepRunner& runner, SchedulerConfig config,
                         std::vector<std::int64_t> eos_token_ids, const Tokenizer* tokenizer,
                         std::shared_ptr<const ConstraintCompiler> constraints)
    : runner_(runner),
      blocks_(static_cast<std::int32_t>(runner.cache().num_blocks()),
              static_cast<std::int32_t>(runner.cache().block_size())),
      scheduler_(config, blocks_),
      sampler_(runner.model().shape().vocab_size),
      eos_(std::move(eos_token_ids)),
      tokenizer_(tokenizer),
      constraints_(std::move(constraints)),
      summaries_(!runner.model().logits_on_host()) {
  if (tokenizer_ && !constraints_)
    constraints_ =
        std::make_shared<ConstraintCompiler>(*tokenizer_, runner.model().shape().vocab_size, eos_);
  if (config.max_tokens_per_step > runner.model().options().max_tokens ||
      config.max_batch_size > runner.model().options().max_logit_rows)
    throw std::invalid_argument("the scheduler's limits exceed what the model was sized for");
  const auto start = std::chrono::steady_clock::now();
  clock_ = [start] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
}

RequestLimits BatchEngine::limits() const {
  return {runner_.model().shape().vocab_size, runner_.model().options().max_context,
          tokenizer_ != nullptr, constraints_};
}

void BatchEngine::add(BatchRequest r) {
  validate_request(r, limits());
  if (live_.count(r.id) || results_.count(r.id))
    throw RequestError(RequestError::Kind::kInvalid, "id",
                       "request id " + std::to_string(r.id) + " is in use");
  if (r.arrival < 0) r.arrival = clock_();
  scheduler_.add(r.id, r.prompt, r.max_new_tokens, r.arrival, r.cache_salt);
  Live& live = live_[r.id];
  if (tokenizer_) live.detok.emplace(*tokenizer_, true);
  live.stop = StopMatcher(r.stop);
  if (r.constraint.active()) live.constraint.emplace(constraints_->compile(r.constraint));
  live.result.prompt_tokens = static_cast<std::int64_t>(r.prompt.size());
  live.result.arrival = r.arrival;
  live.req = std::move(r);
  stats_.prompt_tokens += static_cast<std::uint64_t>(live.result.prompt_tokens);
}

bool BatchEngine::cancel(std::uint64_t id) {
  auto it = live_.find(id);
  if (it == live_.end()) return false;
  scheduler_.cancel(id);
  BatchResult& res = it->second.result;
  res.finish = FinishReason::kCancelled;
  res.finished = clock_();
  if (listener_) {
    TokenEvent ev;
    ev.id = id;
    ev.token = -1;
    ev.index = static_cast<std::int64_t>(res.tokens.size());
    ev.finish = FinishReason::kCancelled;
    listener_(ev);
  }
  results_[id] = std::move(res);
  live_.erase(it);
  ++stats_.cancelled;
  if (controller_) controller_->forget(id);
  return true;
}

std::optional<BatchResult> BatchEngine::take_result(std::uint64_t id) {
  auto it = results_.find(id);
  if (it == results_.end()) return std::nullopt;
  BatchResult r = std::move(it->second);
  results_.erase(it);
  return r;
}

std::int32_t BatchEngine::choose(const ScheduledSequence& r, Live& live,
                                 std::span<const float> row) {
  const BatchRequest& req = live.req;
  const SequenceState& s = scheduler_.sequence(r.id);
  // What has been emitted, including proposals accepted earlier in this step (the scheduler
  // hears of those only after the step).
  const std::span<const std::int32_t> generated = live.result.tokens;
  const auto produced = static_cast<std::int64_t>(generated.size());
  // Before min_new_tokens nothing may end the sequence: eos and stop ids are masked out (unless
  // a constraint's automaton allows nothing else: the structure wins).
  const bool mask = produced < req.min_new_tokens;
  if (req.sampling.plain_greedy() && !mask && !live.constraint) return argmax(row);
  scratch_.assign(row.begin(), row.end());
  // The constraint first: temperature, top-k/p and penalties then work on the allowed tokens.
  if (live.constraint && live.constraint->mask(scratch_, req.max_new_tokens - produced) == 0)
    throw std::logic_error("a constraint allowed no token for request " + std::to_string(r.id));
  if (mask) {
    std::vector<float> keep;
    if (live.constraint) keep = scratch_;
    mask_ends(req, scratch_);
    const float none = -std::numeric_limits<float>::infinity();
    if (live.constraint &&
        std::none_of(scratch_.begin(), scratch_.end(), [none](float x) { return x != none; }))
      scratch_ = std::move(keep);
  }
  if (req.sampling.plain_greedy()) return argmax(scratch_);
  const auto prompt = std::span(s.tokens).first(static_cast<std::size_t>(s.prompt_len));
  return sampler_.sample(scratch_, req.sampling, prompt, generated, r.start + r.count);
}

void BatchEngine::mask_ends(const BatchRequest& req, std::span<float> logits) const {
  const float none = -std::numeric_limits<float>::infinity();
  if (!req.ignore_eos)
    for (const std::int64_t e : eos_) logits[static_cast<std::size_t>(e)] = none;
  for (const std::int32_t e : req.stop_token_ids) logits[static_cast<std::size_t>(e)] = none;
}

bool BatchEngine::summary_serves(const ScheduledSequence& /*r*/, const Live& live) const {
  const BatchRequest& req = live.req;
  // min_new_tokens masks ids out of the row, which may reach into (or below) the top list; a
  // constraint may allow none of the top list: both need the whole row.
  if (live.constraint || std::ssize(live.result.tokens) < req.min_new_tokens) return false;
  const SamplingParams& p = req.sampling;
  if (p.plain_greedy()) return true;
  // Without penalties the sampler only ever looks at the top_k best logits (sampler.h).
  return p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f && p.top_k >= 1 && p.top_k <= kSummaryTopK;
}

std::int32_t BatchEngine::choose(const ScheduledSequence& r, const Live& live,
                                 const LogitSummary& s) {
  const SamplingParams& p = live.req.sampling;
  if (p.plain_greedy()) return s.argmax;
  const auto n = static_cast<std::size_t>(s.count);
  return sampler_.sample_top({s.top_ids, n}, {s.top_logits, n}, p, r.start + r.count);
}

FinishReason BatchEngine::finish_of(const Live& live, std::int32_t token, std::int64_t generated) {
  const BatchRequest& req = live.req;
  // The automaton took an end token: the structure is complete (whatever ignore_eos says).
  if (live.constraint && live.constraint->terminated()) return FinishReason::kEosToken;
  if (generated >= req.min_new_tokens) {
    if (!req.ignore_eos && contains(eos_, token)) return FinishReason::kEosToken;
    if (contains(req.stop_token_ids, token)) return FinishReason::kEosToken;
  }
  return FinishReason::kNone;
}

void BatchEngine::emit(Live& live, std::int32_t token, FinishReason finish, double t) {
  BatchResult& res = live.result;
  const std::int64_t index = static_cast<std::int64_t>(res.tokens.size());
  text_.clear();
  if (live.detok) {
    const std::string piece = live.detok->push(token);
    const bool checked = index + 1 > live.req.min_new_tokens;
    text_ = checked ? live.stop.push(piece) : live.stop.push_unchecked(piece);
    if (live.stop.matched()) finish = FinishReason::kStopSequence;
  }
  if (finish == FinishReason::kNone && index + 1 >= live.req.max_new_tokens)
    finish = FinishReason::kLength;
  if (live.detok && finish != FinishReason::kNone && finish != FinishReason::kStopSequence) {
    // The sequence ends: an unfinished character and any held-back text are released, unless
    // they complete a stop string after all.
    text_ += live.stop.push(live.detok->flush());
    if (live.stop.matched())
      finish = FinishReason::kStopSequence;
    else
      text_ += live.stop.flush();
  }
  res.tokens.push_back(token);
  res.text += text_;
  res.token_times.push_back(t);
  if (index == 0) res.first_token = t;
  TokenEvent ev;
  ev.id = live.req.id;
  ev.token = token;
  ev.index = index;
  ev.text = text_;
  if (live.req.logprobs >= 0) {
    ev.logprob = res.logprobs.back();
    ev.top = res.top_logprobs.back();
  }
  ev.finish = finish;
  res.finish = finish;
  if (finish != FinishReason::kNone) res.finished = t;
  ++stats_.generated_tokens;
  if (listener_) listener_(ev);
}

std::int32_t BatchEngine::decide(const ScheduledSequence& r, Live& live, std::span<const float> row,
                                 std::int64_t position, double t, std::int32_t chosen) {
  if (observer_) observer_(r.id, position, row);
  ScheduledSequence at = r;  // choose() samples for position at.start + at.count
  at.start = position - r.count;
  std::int32_t next = chosen >= 0 ? chosen : choose(at, live, row);
  if (live.constraint) {
    // The budget rule may take the planned closing's token instead of the sampled one.
    const std::int32_t chosen = next;
    const std::int64_t left =
        live.req.max_new_tokens - static_cast<std::int64_t>(live.result.tokens.size());
    next = live.constraint->advance(chosen, left);
    if (next < 0)
      throw std::logic_error("request " + std::to_string(r.id) + " chose token " +
                             std::to_string(chosen) + ", which its constraint does not allow");
  }
  if (live.req.logprobs >= 0) {
    live.result.logprobs.push_back(log_probabilities(row, next, live.req.logprobs, top_, order_));
    live.result.top_logprobs.push_back(top_);
  }
  const std::int64_t generated = static_cast<std::int64_t>(live.result.tokens.size());
  emit(live, next, finish_of(live, next, generated), t);
  return next;
}

std::int32_t BatchEngine::decide(const ScheduledSequence& r, Live& live, const LogitSummary& s,
                                 std::int64_t position, double t) {
  ScheduledSequence at = r;
  at.start = position - r.count;
  const std::int32_t next = choose(at, live, s);
  if (live.req.logprobs >= 0) {
    // The chosen token is among the top ids: summary_serves() admits no other choice.
    const auto* hit = std::find(s.top_ids, s.top_ids + s.count, next);
    if (hit == s.top_ids + s.count)
      throw std::logic_error("a summarised row chose a token outside its top list");
    live.result.logprobs.push_back(
        log_probabilities(s, s.top_logits[hit - s.top_ids], live.req.logprobs, top_));
    live.result.top_logprobs.push_back(top_);
  }
  const std::int64_t generated = static_cast<std::int64_t>(live.result.tokens.size());
  emit(live, next, finish_of(live, next, generated), t);
  return next;
}

bool BatchEngine::step() {
  const double t0 = clock_();
  Schedule sched = scheduler_.schedule(t0);
  if (sched.run.empty()) return false;
  propose(sched);
  steps_.clear();
  std::int64_t tokens = 0;
  const double started = clock_();
  stats_.schedule_seconds += started - t0;
  for (const ScheduledSequence& r : sched.run) {
    const SequenceState& s = scheduler_.sequence(r.id);
    if (!r.padding) {
      BatchResult& res = live_.at(r.id).result;
      if (res.scheduled < 0) {  // queue time ends at the first chunk (after any cached prefix)
        res.scheduled = started;
        res.cached_tokens = std::max<std::int64_t>(s.cached_tokens, 0);
      }
    }
    // A row with proposals runs its known tokens and then them, with a logit row for each.
    const auto& guess = proposed_[&r - sched.run.data()];
    steps_.push_back({r.draft > 0 ? std::span<const std::int32_t>(guess)
                                  : std::span(s.tokens).subspan(static_cast<std::size_t>(r.start),
                                                                static_cast<std::size_t>(r.count)),
                      static_cast<std::int32_t>(r.start), s.blocks, r.draft > 0, r.id});
    tokens += r.count + r.draft;
  }
  ++stats_.iterations;
  stats_.batch_sequences += sched.run.size();
  stats_.batch_tokens += static_cast<std::uint64_t>(tokens);
  stats_.kv_blocks_used += static_cast<std::uint64_t>(blocks_.used_blocks());
  stats_.max_kv_blocks_used = std::max(stats_.max_kv_blocks_used, blocks_.used_blocks());

  // Only a few numbers per row leave the model when every sampling row can do with them.
  bool summary = summaries_ && !observer_ && !force_full_;
  for (const ScheduledSequence& r : sched.run)
    if (summary && r.samples && !r.padding) {
      const Live& live = live_.at(r.id);
      summary = summary_serves(r, live) && !(r.draft > 0 && rejection_applies(live));
    }
  const double f0 = clock_();
  const auto logits = runner_.step(steps_, summary ? LogitsMode::kSummary : LogitsMode::kRows);
  const auto summaries = runner_.model().summaries();
  const double t = clock_();
  stats_.forward_seconds += t - f0;
  if (summary) ++stats_.summary_iterations;
  const auto V = static_cast<std::size_t>(runner_.model().shape().vocab_size);
  sampled_.assign(sched.run.size(), -1);
  finished_.assign(sched.run.size(), 0);
  accepted_.resize(sched.run.size());
  std::size_t first = 0;  // run[i]'s first logit row
  for (std::size_t i = 0; i < sched.run.size(); ++i) {
    const ScheduledSequence& r = sched.run[i];
    const std::size_t row0 = first;
    first += r.draft > 0 ? static_cast<std::size_t>(r.count + r.draft) : 1;
    accepted_[i].clear();
    if (!r.samples || r.padding) continue;
    Live& live = live_.at(r.id);
    // Row j predicts position start + count + j; a proposal stands while the target's choice
    // there equals it, and the first other choice (or the one after the last proposal) is the
    // step's last token.
    const auto& guess = proposed_[i];
    if (r.draft > 0) {
      ++stats_.spec_drafts;
      stats_.spec_draft_tokens += static_cast<std::uint64_t>(r.draft);
    }
    std::int32_t next = 0;
    for (std::int64_t j = 0;; ++j) {
      const std::size_t index = row0 + static_cast<std::size_t>(r.draft > 0 ? r.count - 1 + j : 0);
      const std::int64_t position = r.start + r.count + j;
      if (summary) {
        next = decide(r, live, summaries[index], position, t);
      } else {
        const auto row = logits.subspan(index * V, V);
        const bool sampled_check = j < r.draft && rejection_applies(live);
        next = decide(r, live, row, position, t,
                      sampled_check ? rejection_choice(r, live, row, i, j, position) : -1);
      }
      const bool kept = j < r.draft && next == guess[static_cast<std::size_t>(r.count + j)];
      if (kept) ++stats_.spec_accepted_tokens;
      if (!kept || live.result.finish != FinishReason::kNone) break;
      accepted_[i].push_back(next);
    }
    sampled_[i] = next;
    finished_[i] = live.result.finish != FinishReason::kNone;
  }
  settle_speculation(sched);
  const double sampled = clock_();
  stats_.sample_seconds += sampled - t;
  if (controller_) {
    // Measured: decode-only iterations, whole (draft steps and rejected proposals included).
    bool decode_only = true;
    for (const ScheduledSequence& r : sched.run)
      if (!r.padding) decode_only = decode_only && r.samples && r.count == 1;
    controller_->observe_iteration(decode_only, clock_() - t0);
  }
  for (SequenceState& done : scheduler_.complete(sched, sampled_, finished_, accepted_)) {
    auto it = live_.find(done.id);
    results_[done.id] = std::move(it->second.result);
    live_.erase(it);
    ++stats_.finished;
    if (controller_) controller_->forget(done.id);
  }
  const double end = clock_();
  stats_.complete_seconds += end - sampled;
  stats_.step_seconds += end - t0;
  return true;
}

}  // namespace saker
