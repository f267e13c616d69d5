// Speculative sampling's acceptance rule (Leviathan et al. 2023, Chen et al. 2023): a token x
// drawn from the draft's distribution q is kept with probability min(1, p(x) / q(x)), where p is
// the target's; otherwise the token is drawn from the residual max(0, p - q), normalised. The
// token that comes out is distributed exactly as p, whatever q is.
#pragma once

#include <cstdint>
#include <span>

namespace saker {

// The token taken at a position where x was proposed. `p`: the target's distribution (used as
// scratch); `q`: the draft's (same size), or empty when x was proposed deterministically (prompt
// lookup: q is all on x). `u_accept`, `u_residual`: independent uniforms in [0, 1).
std::int32_t speculative_verdict(std::span<float> p, std::span<const float> q, std::int32_t x,
                                 double u_accept, double u_residual);

}  // namespace saker
