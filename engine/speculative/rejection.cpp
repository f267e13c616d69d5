#include "engine/speculative/rejection.h"

#include <algorithm>
#include <stdexcept>

#include "engine/sampler.h"

namespace saker {

std::int32_t speculative_verdict(std::span<float> p, std::span<const float> q, std::int32_t x,
                                 double u_accept, double u_residual) {
  const auto ix = static_cast<std::size_t>(x);
  const double qx = q.empty() ? 1.0 : q[ix];
  if (u_accept * qx < p[ix]) return x;
  // Rejected: the residual has no mass on x (p(x) < q(x) here).
  if (q.empty())
    p[ix] = 0;
  else
    for (std::size_t v = 0; v < p.size(); ++v) p[v] = std::max(p[v] - q[v], 0.0f);
  const std::int32_t y = draw(p, u_residual);
  if (y < 0) throw std::logic_error("speculative sampling rejected a token that took all the mass");
  return y;
}

}  // namespace saker
