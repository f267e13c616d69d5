// saker_gpu_bench's reports: the lines printed as the benchmark runs, the markdown table printed
// last (gpu_bench.md) and gpu_bench.json. scripts/bench/gpu.sh and docs/gpu-runs.md read this text,
// so its wording and layout stay as they are.
#include <algorithm>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "kernels/logit_summary.h"
#include "scripts/bench/gpu_bench.h"

namespace saker::gpu_bench {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string fmt(double v, int prec) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(prec) << v;
  return o.str();
}

void linear_markdown(const StageReport& r, std::ostream& o);

// --- the device ----------------------------------------------------------------------------------

void DeviceInfo::print(std::ostream& o) const {
  o << "device: " << description << "\n" << std::flush;
}
void DeviceInfo::markdown(std::ostream& o) const {
  o << "| device | " << description << " |\n";
}
void DeviceInfo::to_json(json& j) const {
  j["device"] = description;
}

void BandwidthReport::print(std::ostream& o) const {
  o << "read bandwidth " << fmt(read_gbs, 0) << " GB/s, device copy " << fmt(copy_gbs, 0)
    << " GB/s (read + write), host to device " << fmt(h2d_gbs, 1) << " GB/s\n"
    << std::flush;
}
void BandwidthReport::markdown(std::ostream& o) const {
  o << "| read bandwidth (streaming kernel) | " << fmt(read_gbs, 0) << " GB/s |\n"
    << "| device-to-device copy (read + write) | " << fmt(copy_gbs, 0) << " GB/s |\n"
    << "| host-to-device copy (pinned) | " << fmt(h2d_gbs, 1) << " GB/s |\n";
}
void BandwidthReport::to_json(json& j) const {
  j["read_bandwidth_gbs"] = read_gbs;
  j["copy_bandwidth_gbs"] = copy_gbs;
  j["host_to_device_gbs"] = h2d_gbs;
}

void GemmReport::print(std::ostream& o) const {
  o << "cuBLASLt bf16 GEMM 8192^3: " << fmt(tflops, 1) << " TFLOP/s\n" << std::flush;
}
void GemmReport::markdown(std::ostream& o) const {
  o << "| cuBLASLt bf16 GEMM 8192^3, fp32 accumulate | " << fmt(tflops, 1) << " TFLOP/s |\n";
}
void GemmReport::to_json(json& j) const {
  j["gemm_bf16_tflops"] = tflops;
}

// --- the model: load, prefill, graphs ------------------------------------------------------------

void ModelLoadReport::print(std::ostream& o) const {
  o << "Falcon-7B-shaped model: " << fmt(weight_bytes / 1e9, 2)
    << " GB of bf16 weights made on the device in " << fmt(seconds, 1)
    << " s; a decode step streams " << fmt(step_bytes / 1e9, 2) << " GB\n"
    << std::flush;
}
void ModelLoadReport::markdown(std::ostream& o) const {
  o << "| Falcon-7B shape: weight bytes per decode step | " << fmt(step_bytes / 1e9, 2)
    << " GB |\n";
}
void ModelLoadReport::to_json(json& j) const {
  j["step_weight_bytes"] = step_bytes;
}

void PrefillReport::print(std::ostream& o) const {
  o << "prefill of " << tokens << " tokens: " << fmt(seconds * 1e3, 1) << " ms, "
    << fmt(tokens_per_s(), 0) << " tokens/s, " << fmt(tflops(), 1) << " TFLOP/s ("
    << fmt(100.0 * tflops() / gemm_tflops, 1) << " % of cuBLASLt's bf16 rate)\n"
    << std::flush;
}
void PrefillReport::markdown(std::ostream& o) const {
  o << "| prefill, " << tokens << " tokens | " << fmt(tokens_per_s(), 0) << " tokens/s, "
    << fmt(tflops(), 1) << " TFLOP/s, " << fmt(100.0 * tflops() / gemm_tflops, 1)
    << " % of cuBLASLt's bf16 rate |\n";
}
void PrefillReport::to_json(json& j) const {
  j["prefill_tokens"] = tokens;
  j["prefill_tokens_per_s"] = tokens_per_s();
  j["prefill_tflops"] = tflops();
  j["prefill_percent_of_cublaslt"] = 100.0 * tflops() / gemm_tflops;
}

namespace {
std::string graphs_line(const cuda::GraphStats& g) {
  std::ostringstream o;
  o << "graphs: " << g.captures << " captured, " << g.replays << " replays, " << g.direct
    << " direct steps, " << g.mismatches << " signature changes, " << g.aborts
    << " dropped captures\n";
  return o.str();
}
}  // namespace

void GraphsReport::print(std::ostream& o) const {
  o << graphs_line(stats);
}
void GraphsReport::markdown(std::ostream& o) const {
  o << "\n" << graphs_line(stats);
}
void GraphsReport::to_json(json& j) const {
  j["graphs"] = {{"captures", stats.captures},
                 {"replays", stats.replays},
                 {"direct", stats.direct},
                 {"mismatches", stats.mismatches},
                 {"aborts", stats.aborts}};
}

// --- decode --------------------------------------------------------------------------------------

void DecodeRow::print(std::ostream& o) const {
  if (plain_ms == 0) {  // --quick
    o << "decode batch " << batch << ": " << fmt(step_ms, 2) << " ms/step batch-invariant, "
      << fmt(tuned_ms, 2) << " ms not; " << fmt(pct_of_floor, 1) << "% of the floor ("
      << fmt(floor_ms, 2) << " ms)\n"
      << std::flush;
    return;
  }
  o << "decode batch " << batch << " with the logits hand-off: full rows + host argmax "
    << fmt(rows_argmax_ms, 2) << " ms, full rows + host summary " << fmt(rows_summary_ms, 2)
    << " ms, device summary " << fmt(summary_ms, 2) << " ms\n";
  o << "decode batch " << batch << ", graphs: " << fmt(plain_ms, 2) << " ms plain, "
    << fmt(pdl_only_ms, 2) << " ms with PDL, " << fmt(fuse_only_ms, 2) << " ms with fused kernels, "
    << fmt(both_ms, 2) << " ms with both, " << fmt(step_ms, 2)
    << " ms as by default (batch-invariant), " << fmt(tuned_ms, 2)
    << " ms without batch invariance\n";
  o << "decode batch " << batch << ": " << fmt(step_ms, 2) << " ms/step with graphs ("
    << fmt(direct_ms, 2) << " without), " << fmt(tokens_per_s, 0) << " tokens/s, "
    << fmt(pct_of_floor, 1) << "% of the floor (" << fmt(floor_ms, 2) << " ms)\n"
    << std::flush;
}

json DecodeRow::to_json() const {
  return {{"batch", batch},
          {"step_ms", step_ms},
          {"step_ms_without_graphs", direct_ms},
          {"tokens_per_s", tokens_per_s},
          {"floor_ms", floor_ms},
          {"percent_of_floor", pct_of_floor},
          {"step_ms_rows_host_argmax", rows_argmax_ms},
          {"step_ms_rows_host_summary", rows_summary_ms},
          {"step_ms_device_summary", summary_ms},
          {"step_ms_plain", plain_ms},
          {"step_ms_pdl_only", pdl_only_ms},
          {"step_ms_fuse_only", fuse_only_ms},
          {"step_ms_pdl_fuse", both_ms},
          {"step_ms_not_batch_invariant", tuned_ms}};
}

void DecodeReport::markdown(std::ostream& o) const {
  o << "\nDecode at context " << context << ", KV cache " << dtype_name(kv_dtype) << ":\n";
  if (quick) {
    o << "\n| decode batch | ms/step, batch-invariant (default) | ms/step, not batch-invariant | "
         "tokens/s (default) | floor ms | % of floor: default | not invariant |\n"
      << "|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows)
      o << "| " << r.batch << " | " << fmt(r.step_ms, 2) << " | " << fmt(r.tuned_ms, 2) << " | "
        << fmt(r.tokens_per_s, 0) << " | " << fmt(r.floor_ms, 2) << " | " << fmt(r.pct_of_floor, 1)
        << " | " << fmt(100.0 * r.floor_ms / r.tuned_ms, 1) << " |\n";
    return;
  }
  o << "\n| decode batch | ms/step (graphs) | ms/step (no graphs) | tokens/s | floor ms "
       "(max(weights / read bw, weight FLOPs / cuBLASLt rate)) | % of floor |\n"
    << "|---|---|---|---|---|---|\n";
  for (const auto& r : rows)
    o << "| " << r.batch << " | " << fmt(r.step_ms, 2) << " | " << fmt(r.direct_ms, 2) << " | "
      << fmt(r.tokens_per_s, 0) << " | " << fmt(r.floor_ms, 2) << " | " << fmt(r.pct_of_floor, 1)
      << " |\n";
  o << "\nDecode step (graphs on) by backend setting: programmatic dependent launch (PDL, "
       "here at any number of tokens) and fused kernels (rotary + KV write, the block's adds in "
       "the fc_out GEMV; here at any number of tokens), best of two "
       "turns each; the default uses PDL up to "
    << pdl_max_tokens << " tokens and fused kernels up to " << fuse_max_tokens
    << ":\n\n"
       "| decode batch | plain ms | PDL ms | fused ms | both ms | default ms (batch-invariant) "
       "| not batch-invariant ms | price of invariance | default / plain | % of floor: plain | "
       "default | not invariant |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows)
    o << "| " << r.batch << " | " << fmt(r.plain_ms, 2) << " | " << fmt(r.pdl_only_ms, 2) << " | "
      << fmt(r.fuse_only_ms, 2) << " | " << fmt(r.both_ms, 2) << " | " << fmt(r.step_ms, 2) << " | "
      << fmt(r.tuned_ms, 2) << " | " << fmt(r.step_ms / r.tuned_ms, 3) << "x | "
      << fmt(r.step_ms / r.plain_ms, 3) << " | " << fmt(100.0 * r.floor_ms / r.plain_ms, 1) << " | "
      << fmt(r.pct_of_floor, 1) << " | " << fmt(100.0 * r.floor_ms / r.tuned_ms, 1) << " |\n";
  o << "\nDecode step with the logits hand-off (graphs on): full rows to the host, then a host "
       "argmax or a host summary (argmax, log-sum-exp, top "
    << kSummaryTopK
    << ") per row; or "
       "the summary made on the device (LogitsMode::kSummary), only it copied back:\n\n"
    << "| decode batch | full rows + host argmax ms | full rows + host summary ms | device "
       "summary ms |\n"
    << "|---|---|---|---|\n";
  for (const auto& r : rows)
    o << "| " << r.batch << " | " << fmt(r.rows_argmax_ms, 2) << " | " << fmt(r.rows_summary_ms, 2)
      << " | " << fmt(r.summary_ms, 2) << " |\n";
}

void DecodeReport::to_json(json& j) const {
  j["decode_context"] = context;
  j["kv_cache_dtype"] = std::string(dtype_name(kv_dtype));
  for (const auto& r : rows) j["decode"].push_back(r.to_json());
}

// --- stages --------------------------------------------------------------------------------------

void StageReport::markdown(std::ostream& o) const {
  if (!stages.empty()) {
    o << "\nBatch-1 stages (context " << context
      << "), each call issued back to back on the stream (launch gaps included); GB/s = weight "
         "bytes / time:\n\n"
      << "| stage | us/call | calls/step | us/step | GB/s | % of read bw "
         "|\n|---|---|---|---|---|---|\n";
    double total = 0;
    for (const auto& st : stages) {
      const double gbs = st.bytes > 0 ? st.bytes / (st.us * 1e-6) / 1e9 : 0;
      total += st.us * st.per_step;
      o << "| " << st.name << " | " << fmt(st.us, 1) << " | " << fmt(st.per_step, 0) << " | "
        << fmt(st.us * st.per_step, 0) << " | " << (st.bytes > 0 ? fmt(gbs, 0) : "") << " | "
        << (st.bytes > 0 ? fmt(100.0 * gbs / read_gbs, 1) : "") << " |\n";
    }
    o << "| sum of the batch-1 stages (calls/step > 0) | | | " << fmt(total, 0) << " | | |\n";
  }
  if (!sweep.empty()) {
    o << "\nGEMV kernel variants (bf16, back to back; R rows per warp, U loads per row per "
         "lane, "
         "W warps per block):\n\n| shape: variant | us/call | GB/s | % of read bw "
         "|\n|---|---|---|---|\n";
    for (const auto& st : sweep) {
      const double gbs = st.bytes / (st.us * 1e-6) / 1e9;
      o << "| " << st.name << " | " << fmt(st.us, 1) << " | " << fmt(gbs, 0) << " | "
        << fmt(100.0 * gbs / read_gbs, 1) << " |\n";
    }
  }
  linear_markdown(*this, o);
}

namespace {

// Each path's share of the floor of a call: max(weight bytes / read bandwidth, FLOPs / cuBLASLt's
// bf16 rate), in percent ("" where the path cannot take the call).
std::string pct_of_floor(double us, double floor_us) {
  return us > 0 ? fmt(us, 1) + " (" + fmt(100.0 * floor_us / us, 0) + " %)" : "";
}

}  // namespace

void linear_markdown(const StageReport& r, std::ostream& o) {
  if (r.linear.empty()) return;
  o << "\nLinear layers on each path (bf16, back to back, weights in rotation): us per call and "
       "% of the floor, max(weight bytes / read bandwidth, 2 N K n / cuBLASLt's bf16 rate):\n\n"
    << "| shape | tokens | floor us | GEMV | tensor cores | cuBLASLt "
       "|\n|---|---|---|---|---|---|\n";
  for (const LinearRow& l : r.linear) {
    const double bytes = 2.0 * static_cast<double>(l.rows * l.cols);
    const double flops = 2.0 * static_cast<double>(l.rows * l.cols * l.tokens);
    const double floor_us =
        std::max(bytes / (r.read_gbs * 1e9), r.tflops > 0 ? flops / (r.tflops * 1e12) : 0.0) * 1e6;
    o << "| " << l.shape << " " << l.rows << "x" << l.cols << " | " << l.tokens << " | "
      << fmt(floor_us, 1) << " | " << pct_of_floor(l.us_gemv, floor_us) << " | "
      << pct_of_floor(l.us_mma, floor_us) << " | " << pct_of_floor(l.us_lt, floor_us) << " |\n";
  }
}

void StageReport::to_json(json& j) const {
  for (const LinearRow& l : linear)
    j["linear_paths"].push_back({{"shape", l.shape},
                                 {"rows", l.rows},
                                 {"cols", l.cols},
                                 {"tokens", l.tokens},
                                 {"us_gemv", l.us_gemv},
                                 {"us_mma", l.us_mma},
                                 {"us_cublaslt", l.us_lt}});
  for (const auto& st : sweep)
    j["gemv_variants"].push_back({{"name", st.name}, {"us", st.us}, {"bytes", st.bytes}});
  for (const auto& st : stages)
    j["stages"].push_back(
        {{"name", st.name}, {"us", st.us}, {"bytes", st.bytes}, {"per_step", st.per_step}});
}

// --- all of it -----------------------------------------------------------------------------------

void ModelReport::markdown(std::ostream& o) const {
  load.markdown(o);
  prefill.markdown(o);
  decode.markdown(o);
  graphs.markdown(o);
  stages.markdown(o);
}

void ModelReport::to_json(json& j) const {
  load.to_json(j);
  prefill.to_json(j);
  decode.to_json(j);
  graphs.to_json(j);
  stages.to_json(j);
}

std::string BenchReport::markdown() const {
  std::ostringstream md;
  md << "| measure | value |\n|---|---|\n";
  device.markdown(md);
  bandwidth.markdown(md);
  gemm.markdown(md);
  if (model) model->markdown(md);
  return md.str();
}

json BenchReport::to_json() const {
  json j;
  device.to_json(j);
  bandwidth.to_json(j);
  gemm.to_json(j);
  if (model) model->to_json(j);
  return j;
}

}  // namespace saker::gpu_bench
