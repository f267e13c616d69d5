// Log-probabilities of the model's own distribution (the raw logits, before penalties and
// temperature: what vLLM returns by default), for the tokens a request asks about.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"

namespace saker {

// Returns log_softmax(logits)[chosen] and fills `top` with the n most likely tokens, best first
// (lower id first on ties). `order` is scratch space.
float log_probabilities(std::span<const float> logits, std::int32_t chosen, std::int32_t n,
                        std::vector<TokenLogprob>& top, std::vector<std::int32_t>& order);

}  // namespace saker
