// saker info: the effective structure of a model, from its config (weights optional).
#include <iostream>

#include "engine/model_info.h"
#include "launcher/app/cli.h"
#include "parallel/world.h"

namespace saker::cli {

int run_info(const std::vector<std::string>& args) {
  std::string model_dir;
  int tp = 0;
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("model", po::value(&model_dir)->required(),
                                                 "model directory (config.json; weights optional)")(
      "tp", po::value(&tp)->default_value(0),
      "print the shard plan for this tensor-parallel degree (default: the MPI world's size)")(
      "json", po::bool_switch(), "print JSON");
  po::variables_map vm;
  if (!parse(args, desc, vm, "usage: [mpirun -np N] saker info --model DIR [--tp N] [--json]"))
    return 0;
  if (tp < 0) throw UsageError("--tp must be positive");
  if (tp == 0) tp = world().size();

  const ModelReport report = model_report(model_dir, tp);
  // Under mpirun every rank computes this; rank 0 alone prints it.
  if (world().rank() != 0) return 0;
  if (vm["json"].as<bool>())
    std::cout << report.json.dump(2) << "\n";
  else
    std::cout << report.text;
  return 0;
}

}  // namespace saker::cli
