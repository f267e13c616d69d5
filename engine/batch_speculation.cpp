// BatchEngine's speculative decoding: who proposes what each step (prompt lookup or the draft
// model), the draft model's own steps, speculative sampling's acceptance, and what the draft's
// KV cache and the adaptive rule learn after each step. The verification itself is step().
#include <algorithm>
#include <stdexcept>

#include "engine/batch_engine.h"
#include "engine/speculative/ngram.h"
#include "engine/speculative/rejection.h"

namespace saker {
namespace {

// Independent streams of the request's seeded randomness at a position (the plain draw uses the
// seed itself): the draft's draw, the acceptance test and the residual's draw.
constexpr std::uint64_t kDraftStream = 0x9e3779b97f4a7c15ull;
constexpr std::uint64_t kAcceptStream = 0xc2b2ae3d27d4eb4full;
constexpr std::uint64_t kResidualStream = 0x165667b19e3779f9ull;

}  // namespace

void BatchEngine::set_speculation(const SpeculationConfig& c) {
  if (c.method == SpecMethod::kDraft) {
    const Model* draft = runner_.draft_model();
    if (!draft) throw std::invalid_argument("draft-model speculation needs a draft model attached");
    if (draft->shape().vocab_size != runner_.model().shape().vocab_size)
      throw std::invalid_argument("the draft model's vocabulary differs from the target's");
  }
  spec_ = c;
  controller_.reset();
  if (c.method != SpecMethod::kNone && c.adaptive) controller_.emplace(c.num_tokens);
}

bool BatchEngine::may_speculate(const Live& live) const {
  // Exact acceptance checks each position with everything a one-token step would use (the
  // tokens emitted before it feed penalties, min_new_tokens and the constraint's automaton), so
  // every row may speculate. Speculative sampling compares distributions without penalties,
  // masks or constraints: rows with any of those do not speculate there.
  if (!rejection_applies(live)) return true;
  const SamplingParams& p = live.req.sampling;
  return !live.constraint && p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f && std::ssize(live.result.tokens) >= live.req.min_new_tokens;
}

void BatchEngine::propose(Schedule& sched) {
  const std::size_t n = sched.run.size();
  proposed_.resize(n);
  for (auto& p : proposed_) p.clear();
  draft_written_.assign(n, -1);
  first_proposal_.assign(n, 0);
  if (spec_.method == SpecMethod::kNone || spec_.num_tokens <= 0 || observer_) return;
  spec_rows_.clear();
  spec_ids_.clear();
  bool decode_only = true;
  for (std::size_t i = 0; i < n; ++i) {
    const ScheduledSequence& r = sched.run[i];
    if (!r.padding) decode_only = decode_only && r.samples && r.count == 1;
    if (!r.samples || r.padding || r.count != 1 || !may_speculate(live_.at(r.id))) continue;
    spec_rows_.push_back(i);
    spec_ids_.push_back(r.id);
  }
  if (spec_rows_.empty()) return;
  if (controller_)
    controller_->plan(spec_ids_, decode_only, spec_k_);
  else
    spec_k_.assign(spec_rows_.size(), spec_.num_tokens);
  if (spec_.method == SpecMethod::kDraft) {
    propose_draft(sched, spec_rows_, spec_k_);
    return;
  }
  // Every sequence has at least one logit row; a checked proposal adds one.
  auto rows = static_cast<std::int64_t>(n);
  const std::int64_t max_rows = runner_.model().options().max_logit_rows;
  for (std::size_t c = 0; c < spec_rows_.size() && rows < max_rows; ++c) {
    if (spec_k_[c] == 0) continue;
    const std::size_t i = spec_rows_[c];
    const ScheduledSequence& r = sched.run[i];
    const SequenceState& s = scheduler_.sequence(r.id);
    const auto guess = propose_ngram(s.tokens, {spec_k_[c], spec_.ngram_max, 1});
    const std::int64_t k = scheduler_.speculate(
        sched, i, std::min(static_cast<std::int64_t>(guess.size()), max_rows - rows));
    if (k == 0) continue;
    rows += k;
    proposed_[i].assign(1, s.tokens[static_cast<std::size_t>(r.start)]);
    proposed_[i].insert(proposed_[i].end(), guess.begin(), guess.begin() + k);
  }
}

void BatchEngine::propose_draft(Schedule& sched, std::span<const std::size_t> rows,
                                std::span<const int> want) {
  Model& draft = *runner_.draft_model();
  const auto V = static_cast<std::size_t>(draft.shape().vocab_size);
  const std::int64_t max_rows = runner_.model().options().max_logit_rows;
  const std::int64_t draft_rows = draft.options().max_logit_rows;
  const std::int64_t draft_context = draft.options().max_context;
  auto logit_rows = static_cast<std::int64_t>(sched.run.size());
  // The first draft step brings each row's draft KV up to date (its whole prompt after a
  // prefill or a preemption) and proposes; the catch-up is bounded by the draft's step size.
  std::int64_t budget = draft.options().max_tokens;
  draft_steps_.clear();
  draft_rows_.clear();
  std::int64_t steps = 0;  // draft steps this iteration: the most proposals of any row
  std::vector<std::int64_t>& ks = draft_k_;  // per row: its proposals this step
  ks.assign(sched.run.size(), 0);
  for (std::size_t c = 0; c < rows.size(); ++c) {
    const std::size_t i = rows[c];
    const ScheduledSequence& r = sched.run[i];
    const SequenceState& s = scheduler_.sequence(r.id);
    const std::int64_t n = r.start + 1;  // tokens known; the last one is this step's input
    const std::int64_t done = std::min(s.draft_computed, n - 1);
    const std::int64_t behind = n - done;
    if (want[c] == 0 || budget <= 0 || static_cast<std::int64_t>(draft_steps_.size()) >= draft_rows)
      continue;
    if (behind > budget) {  // only a catch-up chunk this step: no proposal yet
      draft_steps_.push_back({std::span(s.tokens).subspan(static_cast<std::size_t>(done),
                                                          static_cast<std::size_t>(budget)),
                              static_cast<std::int32_t>(done), s.blocks, false, r.id});
      draft_rows_.push_back(i);
      draft_written_[i] = done + budget;
      budget = 0;
      continue;
    }
    const std::int64_t k = scheduler_.speculate(
        sched, i, std::min({std::int64_t{want[c]}, max_rows - logit_rows, draft_context - n}));
    if (k <= 0) continue;
    logit_rows += k;
    budget -= behind;
    ks[i] = k;
    steps = std::max(steps, k);
    proposed_[i].assign(1, s.tokens[static_cast<std::size_t>(r.start)]);
    draft_steps_.push_back({std::span(s.tokens).subspan(static_cast<std::size_t>(done),
                                                        static_cast<std::size_t>(behind)),
                            static_cast<std::int32_t>(done), s.blocks, false, r.id});
    draft_rows_.push_back(i);
    draft_written_[i] = n + k - 1;
  }
  if (steps == 0 && draft_steps_.empty()) return;
  const bool rejection = spec_.acceptance == SpecAcceptance::kRejection;
  if (rejection) draft_q_.resize(sched.run.size() * static_cast<std::size_t>(spec_.num_tokens) * V);
  for (std::int64_t j = 0; j < std::max<std::int64_t>(steps, 1); ++j) {
    bool summary = summaries_ && !force_full_;
    for (const std::size_t i : draft_rows_) {
      const Live& live = live_.at(sched.run[i].id);
      if (ks[i] > j)
        summary = summary && summary_serves(sched.run[i], live) && !rejection_applies(live);
    }
    const auto logits =
        runner_.draft_step(draft_steps_, summary ? LogitsMode::kSummary : LogitsMode::kRows);
    const auto summaries = draft.summaries();
    // The next step: each row still proposing runs its newest proposal.
    std::size_t out = 0;
    for (std::size_t e = 0; e < draft_rows_.size(); ++e) {
      const std::size_t i = draft_rows_[e];
      if (ks[i] <= j) continue;
      const ScheduledSequence& r = sched.run[i];
      Live& live = live_.at(r.id);
      const std::int64_t position = r.start + 1 + j;  // the position this proposal takes
      float* q = rejection ? draft_q_.data() + (i * static_cast<std::size_t>(spec_.num_tokens) +
                                                static_cast<std::size_t>(j)) *
                                                   V
                           : nullptr;
      const auto row = summary ? std::span<const float>{} : logits.subspan(e * V, V);
      const auto earlier = std::span<const std::int32_t>(proposed_[i]).subspan(1);
      const std::int32_t next =
          draft_choice(r, live, row, summary ? &summaries[e] : nullptr, earlier, position, q);
      proposed_[i].push_back(next);
      if (ks[i] > j + 1) {
        draft_steps_[out] = {std::span(proposed_[i]).subspan(static_cast<std::size_t>(j + 1), 1),
                             static_cast<std::int32_t>(position), scheduler_.sequence(r.id).blocks,
                             false, r.id};
        draft_rows_[out++] = i;
      }
    }
    draft_steps_.resize(out);
    draft_rows_.resize(out);
    if (draft_steps_.empty()) break;
  }
  for (std::size_t i = 0; i < sched.run.size(); ++i) first_proposal_[i] = sched.run[i].start + 1;
}

std::int32_t BatchEngine::draft_choice(const ScheduledSequence& r, Live& live,
                                       std::span<const float> row, const LogitSummary* summary,
                                       std::span<const std::int32_t> proposals,
                                       std::int64_t position, float* q) {
  ScheduledSequence at = r;  // choose() draws for position at.start + at.count
  at.start = position - r.count;
  if (summary) return choose(at, live, *summary);
  const BatchRequest& req = live.req;
  if (q && rejection_applies(live)) {
    // Speculative sampling: the draft draws from its own distribution q on a stream of its own.
    const auto V = row.size();
    sampler_.distribution(row, req.sampling, {q, V});
    return draw({q, V}, uniform_at(req.sampling.seed ^ kDraftStream, position));
  }
  // Exact acceptance: the draft makes the choice the target will make at this position (the
  // same seeded draw, penalties over the tokens before it, proposals included, and
  // min_new_tokens' mask), so where the two models agree closely, so do the choices; a draft
  // equal to the target has them all accepted. A constraint is left to the target: its automaton
  // stands at the last emitted token, not here, and any proposal is safe.
  const auto before = std::ssize(live.result.tokens) + std::ssize(proposals);
  const bool mask = before < req.min_new_tokens;
  if (req.sampling.plain_greedy() && !mask) return argmax(row);
  scratch_.assign(row.begin(), row.end());
  if (mask) mask_ends(req, scratch_);
  if (req.sampling.plain_greedy()) return argmax(scratch_);
  draft_generated_.assign(live.result.tokens.begin(), live.result.tokens.end());
  draft_generated_.insert(draft_generated_.end(), proposals.begin(), proposals.end());
  const SequenceState& s = scheduler_.sequence(r.id);
  return sampler_.sample(scratch_, req.sampling,
                         std::span(s.tokens).first(static_cast<std::size_t>(s.prompt_len)),
                         draft_generated_, position);
}

std::int32_t BatchEngine::rejection_choice(const ScheduledSequence& r, const Live& live,
                                           std::span<const float> row, std::size_t row_index,
                                           std::int64_t j, std::int64_t position) {
  const auto V = row.size();
  p_.resize(V);
  sampler_.distribution(row, live.req.sampling, p_);
  const std::int32_t x = proposed_[row_index][static_cast<std::size_t>(r.count + j)];
  const std::uint64_t seed = live.req.sampling.seed;
  // Prompt lookup proposes deterministically: q is all on x.
  std::span<const float> q;
  if (spec_.method == SpecMethod::kDraft)
    q = {draft_q_.data() + (row_index * static_cast<std::size_t>(spec_.num_tokens) +
                            static_cast<std::size_t>(j)) *
                               V,
         V};
  return speculative_verdict(p_, q, x, uniform_at(seed ^ kAcceptStream, position),
                             uniform_at(seed ^ kResidualStream, position));
}

void BatchEngine::settle_speculation(const Schedule& sched) {
  for (std::size_t i = 0; i < sched.run.size(); ++i) {
    const ScheduledSequence& r = sched.run[i];
    const auto a = static_cast<std::int64_t>(accepted_[i].size());
    if (controller_ && r.draft > 0)
      controller_->observe_acceptance(r.id, static_cast<int>(r.draft), static_cast<int>(a));
    if (draft_written_[i] >= 0)
      // Draft KV past the accepted proposals belongs to rejected guesses.
      scheduler_.set_draft_computed(r.id, std::min(draft_written_[i], first_proposal_[i] + a));
  }
}

}  // namespace saker
