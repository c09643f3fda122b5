// Subcommands of the `moe` command. Each registers its options on a CLI11 app and returns
// the function that runs it (exit code).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace moe::cli {

using Command = std::function<int()>;

Command add_run_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_inspect_command(CLI::App& app);
Command add_eplb_command(CLI::App& app);

/// A subcommand registered on a parent command, and its runner.
struct Subcommand {
  CLI::App* app = nullptr;
  Command run;
};
/// `moe eplb layer` (cmd_eplb_layer.cc), on the `eplb` command.
Subcommand add_eplb_layer_command(CLI::App& eplb);

}  // namespace moe::cli
