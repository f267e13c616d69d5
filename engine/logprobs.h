// Log-probabilities of the model's own distribution (the raw logits, before penalties and
// temperature: what vLLM returns by default), for the tokens a request asks about.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"
#include "kernels/logit_summary.h"

namespace saker {

// Returns log_softmax(logits)[chosen] and fills `top` with the n most likely tokens, best first
// (lower id first on ties). `order` is scratch space.
float log_probabilities(std::span<const float> logits, std::int32_t chosen, std::int32_t n,
                        std::vector<TokenLogprob>& top, std::vector<std::int32_t>& order);

// The same from a row's summary, for n <= s.count and a chosen token whose logit is known (it is
// in the summary's top list): equal, bit for bit, to the full row's answer.
float log_probabilities(const LogitSummary& s, float chosen_logit, std::int32_t n,
                        std::vector<TokenLogprob>& top);

}  // namespace saker
