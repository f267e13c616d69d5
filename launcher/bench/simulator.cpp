#include "launcher/bench/simulator.h"

#include <algorithm>
#include <deque>

#include "kernels/factory.h"
#include "parallel/communicator.h"

namespace saker::cli {

std::vector<BatchResult> drive(Engine& engine, const std::vector<BenchRequest>& reqs,
                               std::int64_t concurrency,
                               const std::function<void(const IterationStats&)>& after_step) {
  const double t0 = engine.now();
  std::vector<BatchResult> results(reqs.size());
  std::vector<std::pair<double, double>> pauses;
  std::size_t next = 0;
  std::int64_t in_flight = 0;
  std::deque<double> freed;  // times slots became free, not yet taken
  RunOptions ro;
  ro.pump = [&] {
    const double now = engine.now() - t0;
    while (next < reqs.size() && reqs[next].arrival <= now &&
           (concurrency <= 0 || in_flight < concurrency)) {
      BatchRequest r;
      r.id = engine.requests().next_id();
      r.prompt = reqs[next].prompt;
      r.max_new_tokens = reqs[next].output;
      r.ignore_eos = true;  // a constraint still ends its request when its structure is complete
      r.constraint = reqs[next].constraint;
      double sent = reqs[next].arrival;
      if (concurrency > 0 && !freed.empty()) {
        sent = std::max(sent, freed.front());
        freed.pop_front();
      }
      r.arrival = t0 + sent;
      const std::size_t i = next;
      engine.submit(std::move(r), [&, i](RequestEvent&& ev) {
        if (ev.finish == FinishReason::kNone || !ev.result) return;
        results[i] = *ev.result;
        if (concurrency > 0) freed.push_back(results[i].finished - t0);
        --in_flight;
      });
      ++in_flight;
      ++next;
    }
    return next < reqs.size();
  };
  if (after_step)
    ro.after_iteration = [&](const IterationStats& it) {
      const double step_end = engine.now();
      after_step(it);
      pauses.emplace_back(step_end, engine.now() - step_end);
    };
  engine.run(ro);
  for (BatchResult& r : results) remove_pauses(r, pauses);
  return results;
}

MachineFloors measure_floors(Engine& engine, Communicator& comm) {
  // Every rank streams its own shard: the floor is all ranks' bytes over the machine's bandwidth,
  // measured with every rank reading at once. Prefill is arithmetic-bound: its floor is the FMA
  // peak, likewise.
  MachineFloors f;
  comm.barrier();
  auto bw = static_cast<float>(backend_read_bandwidth(engine.backend(), std::size_t{512} << 20, 3));
  comm.all_reduce_sum(&bw, 1);
  comm.barrier();
  auto peak = static_cast<float>(backend_fma_peak(engine.backend()).value_or(0.0));
  comm.all_reduce_sum(&peak, 1);
  comm.barrier();
  auto dot = static_cast<float>(backend_dot_peak(engine.backend()).value_or(0.0));
  comm.all_reduce_sum(&dot, 1);
  f.bandwidth = bw;
  f.fma_peak = peak;
  f.dot_peak = dot;
  return f;
}

namespace {

// Records decode-only steps, and when `paired` pairs each step with a measurement of its own
// floor taken right after it.
std::function<void(const IterationStats&)> watch_steps(Engine& engine, bool paired,
                                                       PairedFloors& out, DecodeSteps& decode,
                                                       double prompt_flops, double step_bytes) {
  return [&engine, paired, &out, &decode, prompt_flops, step_bytes](const IterationStats& it) {
    if (it.tokens == it.sequences) {
      decode.seconds.push_back(it.seconds);
      decode.sequences.push_back(static_cast<double>(it.sequences));
    }
    if (!paired) return;
    const auto tokens = static_cast<double>(it.tokens);
    if (it.tokens == it.sequences) {  // decode: one token per sequence
      const double bw_now = backend_weight_read_bandwidth(engine.backend()).value();
      out.decode.push_back(step_bytes / bw_now / it.seconds);
      out.bandwidth_gbps.push_back(bw_now / 1e9);
    } else {
      // FMA chains of as many FLOPs as the step: the rate over as long a stretch of time.
      const double peak_now =
          backend_fma_rate(engine.backend(), tokens * prompt_flops).value_or(0.0);
      if (peak_now > 0) {
        out.prefill.push_back(tokens * prompt_flops / it.seconds / peak_now);
        out.peak_gflops.push_back(peak_now / 1e9);
      }
    }
  };
}

}  // namespace

BenchRun run_bench_phases(Engine& engine, Communicator& comm, const std::vector<BenchRequest>& reqs,
                          std::int64_t concurrency, bool paired, double prompt_flops,
                          double step_bytes) {
  BenchRun run;
  if (engine.is_driver()) {
    // Warm-up: one short request pages the weights in; not counted.
    BatchRequest w;
    w.id = engine.requests().next_id();
    w.prompt = reqs.front().prompt;
    w.max_new_tokens = 2;
    w.ignore_eos = true;
    engine.submit(std::move(w), [](RequestEvent&&) {});
  }
  engine.run();
  run.before = measure_floors(engine, comm);
  if (engine.is_driver()) {
    engine.reset_stats();
    const std::vector<OpTime> ops_before = engine.backend().op_times();
    run.results =
        drive(engine, reqs, concurrency,
              watch_steps(engine, paired, run.paired, run.decode_steps, prompt_flops, step_bytes));
    run.engine = engine.stats();
    run.ops = engine.backend().op_times();
    for (OpTime& op : run.ops)
      for (const OpTime& b : ops_before)
        if (b.name == op.name) {
          op.seconds -= b.seconds;
          op.calls -= b.calls;
        }
  } else {
    engine.run();
  }
  run.after = measure_floors(engine, comm);
  return run;
}

}  // namespace saker::cli
