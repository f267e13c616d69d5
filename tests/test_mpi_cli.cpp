// saker under mpirun as users run it: tensor-parallel output, info, and what happens when a rank
// fails (every rank must be gone within 10 seconds, the failed rank named, no hung mpirun).
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kernels/cpu/thread_pool.h"
#include "tests/run_command.h"

namespace fs = std::filesystem;
using saker::test::Run;

namespace {

const fs::path kFixtures = SAKER_FIXTURES_DIR;
const fs::path kShared = SAKER_SHARED_DIR;

Run mpirun(int np, const std::string& args, const std::string& env = "") {
  std::string cmd = std::string("'") + SAKER_MPIEXEC +
                    "' --allow-run-as-root --oversubscribe -np " + std::to_string(np);
  if (!env.empty()) cmd += " -x " + env;
  return saker::test::run_command(cmd + " '" + SAKER_BIN + "' " + args + " </dev/null");
}

std::string case_ids(const fs::path& dir, int c, const char* key) {
  std::ifstream in(dir / "reference.json");
  const auto ids = nlohmann::json::parse(in)["cases"][c][key].get<std::vector<int>>();
  std::ostringstream s;
  for (std::size_t i = 0; i < ids.size(); ++i) s << (i ? " " : "") << ids[i];
  return s.str();
}

}  // namespace

TEST_CASE("mpirun -np N saker generate prints transformers' tokens once", "[mpi]") {
  const auto dir = kFixtures / "mqa7-bf16";  // 7 query heads: 4 + 3 at tp 2, 2 + 2 + 2 + 1 at tp 4
  const std::string args = "generate --threads 1 --model '" + dir.string() + "' --prompt-ids '" +
                           case_ids(dir, 1, "prompt_ids") + "' --max-new-tokens 40 --ignore-eos";
  for (int np : {1, 2, 4}) {
    const Run r = mpirun(np, args);
    INFO("np " << np << ": " << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out == case_ids(dir, 1, "greedy_ids") + "\n");  // rank 0 alone prints
  }
}

TEST_CASE("mpirun with --comm mpi or auto runs the CPU backend's collectives; nccl needs CUDA",
          "[mpi]") {
  const auto dir = kFixtures / "mqa7-bf16";
  const std::string args = "generate --threads 1 --device cpu --model '" + dir.string() +
                           "' --prompt-ids '" + case_ids(dir, 1, "prompt_ids") +
                           "' --max-new-tokens 12 --ignore-eos";
  // transformers' first 12 greedy tokens.
  std::istringstream all(case_ids(dir, 1, "greedy_ids"));
  std::string want, id;
  for (int i = 0; i < 12 && all >> id; ++i) want += (i ? " " : "") + id;
  for (const char* comm : {"mpi", "auto"}) {
    const Run r = mpirun(2, args + " --comm " + comm);
    INFO(comm << ": " << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out == want + "\n");
  }
  const Run nccl = mpirun(2, args + " --comm nccl");
  CHECK(nccl.code == 2);
  CHECK_THAT(nccl.err, Catch::Contains("--comm nccl is for the CUDA backend (--device cuda)"));
  const Run bad = mpirun(1, args + " --comm gloo");
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--comm must be auto, nccl or mpi, not 'gloo'"));
}

TEST_CASE("seeded sampling draws the same tokens at tp 1 and tp 2", "[mpi][sampler]") {
  const auto dir = kFixtures / "mqa7-fp32";
  const std::string args = "generate --threads 1 --model '" + dir.string() + "' --prompt-ids '" +
                           case_ids(dir, 2, "prompt_ids") +
                           "' --max-new-tokens 40 --ignore-eos --temperature 1 --seed 11";
  const Run one = mpirun(1, args);
  const Run two = mpirun(2, args);
  REQUIRE(one.code == 0);
  REQUIRE(two.code == 0);
  CHECK(one.out == two.out);
  CHECK(one.out != case_ids(dir, 2, "greedy_ids") + "\n");
}

TEST_CASE("mpirun saker info prints once, and --tp shows the shard plan", "[mpi]") {
  const auto dir40 = kShared / "models/falcon-40b";
  Run r = mpirun(2, "info --model '" + dir40.string() + "'");
  REQUIRE(r.code == 0);
  std::size_t at = 0, count = 0;
  while ((at = r.out.find("layers:", at)) != std::string::npos) ++count, ++at;
  CHECK(count == 1);
  CHECK_THAT(r.out, Catch::Contains("tensor parallel over 2 ranks"));

  // The plan for falcon-40b at tp 8, without MPI: one KV group and 16 heads per rank, and an
  // eighth of the checkpoint each, plus the replicated LayerNorms.
  r = saker::test::run_command(std::string("'") + SAKER_BIN + "' info --json --tp 8 --model '" +
                               dir40.string() + "'");
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["ranks"].size() == 8);
  std::uint64_t sum = 0;
  const auto total = j["weight_bytes"].get<std::uint64_t>();
  for (int rank = 0; rank < 8; ++rank) {
    const auto& s = j["ranks"][rank];
    CHECK(s["heads"] == nlohmann::json::array({16 * rank, 16 * rank + 16}));
    CHECK(s["kv_heads"] == nlohmann::json::array({rank, rank + 1}));
    const auto bytes = s["weight_bytes"].get<std::uint64_t>();
    CHECK(bytes > total / 8);
    CHECK(bytes < total / 8 + total / 1000);
    sum += bytes;
  }
  // Replicated: the 121 LayerNorms (60 layers x 2 + ln_f), weight and bias, 8192 bf16 each.
  CHECK(sum == total + 7 * 121 * 2 * 8192 * 2);
}

TEST_CASE("a rank that throws while loading ends the whole job, named", "[mpi][fault]") {
  const auto dir = kFixtures / "gqa8x2-fp32";
  const Run r =
      mpirun(2, "generate --model '" + dir.string() + "' --prompt-ids '1 2 3' --max-new-tokens 8",
             "SAKER_TEST_FAULT=1:load");
  INFO(r.err);
  CHECK(r.code != 0);
  CHECK_THAT(r.err, Catch::Contains("(rank 1 of 2)") && Catch::Contains("injected fault"));
  CHECK(r.seconds < 10);
}

TEST_CASE("a rank killed mid-generation ends the whole job, named", "[mpi][fault]") {
  const auto dir = kFixtures / "gqa8x2-fp32";
  const Run r = mpirun(2,
                       "generate --model '" + dir.string() +
                           "' --prompt-ids '1 2 3' --max-new-tokens 200 --ignore-eos",
                       "SAKER_TEST_FAULT=1:kill:5");
  INFO(r.err);
  CHECK(r.code != 0);
  // Open MPI's launcher reports which rank died and how.
  CHECK_THAT(r.err, Catch::Contains("rank 1") && Catch::Contains("signal 9"));
  CHECK(r.seconds < 10);
}

TEST_CASE("a layout that cannot work fails on every rank with the numbers", "[mpi][fault]") {
  const auto dir = kFixtures / "gqa8x2-fp32";  // 2 KV heads cannot be shared by 3 ranks
  const Run r =
      mpirun(3, "generate --model '" + dir.string() + "' --prompt-ids '1' --max-new-tokens 2");
  CHECK(r.code != 0);
  CHECK_THAT(r.err, Catch::Contains("cannot split 8 query heads over 2 KV heads across tp = 3"));
  CHECK(r.seconds < 10);
}

TEST_CASE("ranks that may run on the same cores split them by default", "[mpi][threads]") {
  // Unbound (--bind-to none) both ranks see every core of this process: each takes its share
  // (rank 0 the larger one when it does not divide). Bound to a core each, each has one.
  const unsigned cores = saker::available_cpus();
  const std::string model = (kFixtures / "gqa8x2-fp32").string();
  for (const auto& [binding, want] :
       {std::pair<std::string, unsigned>{"none", std::max(1u, cores / 2 + cores % 2)},
        std::pair<std::string, unsigned>{"core", 1u}}) {
    if (binding == "core" && cores < 2) continue;
    const Run r = saker::test::run_command(
        std::string("env -u OMP_NUM_THREADS '") + SAKER_MPIEXEC +
        "' --allow-run-as-root --oversubscribe -np 2 --bind-to " + binding + " '" + SAKER_BIN +
        "' bench --model '" + model + "' --workload fixed:4:2 --num-requests 1 </dev/null");
    INFO("--bind-to " << binding << ", " << cores << " cores\n" << r.out << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("2 rank(s) x " + std::to_string(want) + " threads") != std::string::npos);
  }
}
