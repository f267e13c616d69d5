// How speculative decoding is configured on rank 0's batch engine (BatchEngine::set_speculation).
#pragma once

#include <cstdint>

namespace saker {

enum class SpecMethod {
  kNone,
  kNgram,  // prompt lookup (engine/speculative/ngram.h), no model cost
  kDraft,  // a small Falcon with the same vocabulary (StepRunner::attach_draft)
};

enum class SpecAcceptance {
  // A proposal stands exactly when the target's own choice at its position (greedy, or its draw
  // with the request's seed) equals it: the output is the same tokens as without speculation.
  kExact,
  // Standard speculative sampling (Leviathan et al., Chen et al.): accept with probability
  // min(1, p/q), else draw from the residual max(0, p - q). The same distribution, not the same
  // tokens, and more proposals accepted when sampling. Greedy requests are exact either way.
  kRejection,
};

struct SpeculationConfig {
  SpecMethod method = SpecMethod::kNone;
  int num_tokens = 3;  // K: the most tokens a sequence proposes per step
  int ngram_max = 4;   // kNgram: the longest suffix looked up
  SpecAcceptance acceptance = SpecAcceptance::kExact;
  // Decide per step and per sequence from measured step times and acceptance whether (and how
  // far) to propose (engine/speculative/adaptive.h); off: always propose up to K.
  bool adaptive = false;
};

}  // namespace saker
