// cli/commands.hpp — registration of each subcommand on the CLI11 app.
// Each register_* adds a subcommand whose callback does the work and may throw ConfigError
// (input error, exit 2) or any other std::exception (runtime failure, exit 1).
#pragma once
#include <CLI/CLI.hpp>

namespace scanshard {

// `simulate` of one plan that is priced but needs more memory than a plan may use (the report is
// printed in full first). 3 is `train`'s numerical failure.
inline constexpr int kExitDoesNotFit = 4;

void register_list_commands(CLI::App& app);  // models, clusters
void register_simulate_command(CLI::App& app);
void register_plan_command(CLI::App& app);
void register_report_command(CLI::App& app);
void register_train_command(CLI::App& app);  // mpirun -n N scanshard train
void register_calibrate_command(CLI::App& app);  // mpirun -n N scanshard calibrate
void register_validate_command(CLI::App& app);   // mpirun -n 2 scanshard validate
void register_launch_command(CLI::App& app);     // the batch job script for a plan
void register_generate_command(CLI::App& app);   // mpirun -n N scanshard generate

}  // namespace scanshard
