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

}  // namespace moe::cli
