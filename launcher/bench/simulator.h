// saker bench's serving simulation: a workload's requests are released into the engine at their
// arrival times (and while fewer than a concurrency limit are in flight), each step optionally
// paired with a measurement of its own floor, and the machine's floors measured around the run.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/engine.h"
#include "launcher/bench/metrics.h"
#include "launcher/bench/workload.h"

namespace saker::cli {

// Runs the requests through the engine (rank 0), releasing each at its arrival time and while
// fewer than `concurrency` are in flight (0: no limit); a request held back by the limit is sent
// when a slot frees. `after_step`, if set, runs after every iteration that ran, given its seconds
// (a measurement paired with it); the engine's clock is treated as stopped while it runs.
std::vector<BatchResult> drive(Engine& engine, const std::vector<BenchRequest>& reqs,
                               std::int64_t concurrency,
                               const std::function<void(const IterationStats&)>& after_step = {});

// The machine's floors, measured with every rank at once (collective).
struct MachineFloors {
  double bandwidth = 0;  // bytes/s, all ranks reading together
  double fma_peak = 0;   // FLOP/s, all ranks together (0 on a device)
  double dot_peak = 0;   // FLOP/s of the weights' dot-product instruction (backend_dot_peak), or 0
};
MachineFloors measure_floors(Engine& engine, Communicator& comm);

// Each step of a one-request, one-rank run paired with its own floor measured right after it:
// a decode step with a plain read of the same weights, a prefill step with FMA chains of as many
// FLOPs (this host's bandwidth and FMA rate drift from second to second).
struct PairedFloors {
  std::vector<double> decode, prefill;              // step fraction of its floor
  std::vector<double> bandwidth_gbps, peak_gflops;  // the readings themselves
};

// Every decode-only iteration (one token per sequence) of a run: its time and batch, whatever the
// concurrency (mixed iterations, with prompt chunks, are left out).
struct DecodeSteps {
  std::vector<double> seconds, sequences;
};

// What one bench run measured: the results, the engine's counters and the floors.
struct BenchRun {
  std::vector<BatchResult> results;
  EngineSnapshot engine;
  MachineFloors before, after;
  PairedFloors paired;
  DecodeSteps decode_steps;
  std::vector<OpTime> ops;  // rank 0's backend time per operation over the run (op_times)
};

// Warm-up (one short request, not counted), floors, the run, floors again; every rank calls it.
// `prompt_flops`: FLOPs per prompt token, for the paired prefill floor; `step_bytes`: the
// weight bytes all ranks stream per decode step.
BenchRun run_bench_phases(Engine& engine, Communicator& comm, const std::vector<BenchRequest>& reqs,
                          std::int64_t concurrency, bool paired, double prompt_flops,
                          double step_bytes);

}  // namespace saker::cli
