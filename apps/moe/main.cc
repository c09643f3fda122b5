// `moe`: run, inspect and benchmark MoE layers. Errors are one line on stderr, exit code 1.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "moe/commands.h"
#include "moe/errors.h"
#include "moe/mpi_launch.h"

int main(int argc, char** argv) {
  // MPI when launched by mpirun (one rank per process), before anything reads argv.
  moe::cli::MpiLaunch launch(argc, argv);
  CLI::App app{
      "MoE Engine: the Mixture-of-Experts layer of LLMs (routing, expert compute on\n"
      "interchangeable backends, quantized weights, expert parallelism).\n"};
  app.name("moe");
  app.require_subcommand(1);
  app.set_version_flag("--version", "moe 0.1.0");
  app.footer("Run `moe SUBCOMMAND --help` for a subcommand's options.");

  moe::cli::Command run = moe::cli::add_run_command(app);
  moe::cli::Command bench = moe::cli::add_bench_command(app);
  moe::cli::Command inspect = moe::cli::add_inspect_command(app);
  moe::cli::Command eplb = moe::cli::add_eplb_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.got_subcommand("run")) return run();
    if (app.got_subcommand("bench")) return bench();
    if (app.got_subcommand("inspect")) return inspect();
    if (app.got_subcommand("eplb")) return eplb();
  } catch (const moe::Error& e) {
    std::cerr << "error"
              << (launch.distributed() ? " on rank " + std::to_string(launch.rank()) : "") << ": "
              << e.message() << "\n";
    if (std::getenv("MOE_DEBUG")) std::cerr << "  at " << e.location() << "\n";
    if (launch.distributed()) launch.abort(1);  // the peers would wait for this rank
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
