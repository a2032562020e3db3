// cli/main.cpp — the scanshard executable: subcommands and exit codes.
// Exit codes: 0 ok; 2 bad input or usage (CLI errors, ConfigError); 1 runtime failure; 3 train
// stopped on non-finite values; 4 simulate: the plan does not fit in memory (kExitDoesNotFit).
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "program/plan.hpp"
#include "program/yaml_reader.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "scanshard — plan, simulate and run sharded training of Griffin/Hawk, MQA and RWKV models.\n"
      "Models and clusters are named by preset (see `scanshard models`, `scanshard clusters`) or\n"
      "given as a path to a YAML file."};
  app.set_version_flag("--version", std::string("scanshard ") + SCANSHARD_VERSION);
  app.require_subcommand(1);
  scanshard::register_list_commands(app);
  scanshard::register_plan_command(app);
  scanshard::register_report_command(app);
  scanshard::register_simulate_command(app);
  scanshard::register_train_command(app);
  scanshard::register_calibrate_command(app);
  scanshard::register_validate_command(app);
  scanshard::register_launch_command(app);
  scanshard::register_generate_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const scanshard::ConfigError& e) {
    std::cerr << "scanshard: error: " << e.what() << "\n";
    return 2;
  } catch (const scanshard::PlanError& e) {
    std::cerr << "scanshard: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "scanshard: runtime failure: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
