// cli/launch_command.cpp — `scanshard launch --plan P --nodes N --ranks-per-node R
// [--scheduler slurm|pbs|none] [--out job.sh]`: the batch job that runs a plan on a cluster.
//
// The script:
//   - a scheduler header (Slurm #SBATCH or PBS Pro #PBS: nodes, tasks per node, CPUs per task,
//     wall time, requeue; none: no header, run it on a host or under an existing allocation);
//   - OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = the CPUs per rank;
//   - the checkpoint directory, and resume from its latest complete checkpoint (step-<N>.h5 with
//     the highest N, zero-padded or not — train/checkpoint_dir.hpp: checkpoints are renamed into
//     place whole, so every such file is complete), keeping the newest --keep-last of them,
//     running only the steps left of --steps in total;
//   - mpirun with --map-by ppr:R:node (consecutive ranks fill a node): the runner numbers ranks
//     tensor innermost, then sequence, fsdp, data, pipeline, so a tensor group of size t stays
//     inside one node when t divides R — the launch refuses a plan whose tensor group would span
//     nodes (its all-reduces would cross the network the simulator priced as NVLink/ICI);
//   - on Slurm, requeue on preemption or the time limit: the batch shell traps USR1 (sent
//     --signal seconds before the end), passes it to mpirun (which forwards USR1 to every rank;
//     the run finishes its step, checkpoints and exits 0) and requeues the job, which resumes from
//     that checkpoint.
// Extra mpirun flags (a hostfile, --allow-run-as-root) come from $SCANSHARD_MPIRUN_FLAGS at run
// time. The script's paths are absolute, so it runs from any directory.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <regex>
#include <string>
#include <sys/stat.h>

#include "cli/commands.hpp"
#include "program/output_file.hpp"
#include "program/plan.hpp"
#include "program/yaml_reader.hpp"
#include "train/optimizer.hpp"

namespace scanshard {
namespace {

struct LaunchOptions {
  std::string plan_file, scheduler = "slurm", out, time = "01:00:00", checkpoint_dir = "checkpoints", data, optimizer,
              job_name = "scanshard",
              partition, account;
  std::int64_t nodes = 0, ranks_per_node = 0, cpus_per_rank = 1, steps = 1000, checkpoint_every = 100, signal_seconds = 120,
               keep_last = 0;
};

std::string absolute(const std::string& p) { return std::filesystem::absolute(p).lexically_normal().string(); }

// Single-quoted for bash: every character literal.
std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string self_path() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("scanshard") : p.string();
}

void check(const LaunchOptions& o, const Plan& p) {
  if (o.scheduler != "slurm" && o.scheduler != "pbs" && o.scheduler != "none")
    throw ConfigError("--scheduler: one of slurm, pbs, none (got '" + o.scheduler + "')");
  if (o.nodes < 1) throw ConfigError("--nodes: must be at least 1");
  if (o.ranks_per_node < 1) throw ConfigError("--ranks-per-node: must be at least 1");
  if (o.cpus_per_rank < 1) throw ConfigError("--cpus-per-rank: must be at least 1");
  if (o.steps < 1) throw ConfigError("--steps: must be at least 1");
  if (o.checkpoint_every < 1) throw ConfigError("--checkpoint-every: must be at least 1 (a job must be able to resume)");
  if (o.keep_last < 0) throw ConfigError("--keep-last: must be 0 (keep every checkpoint) or positive");
  if (!std::regex_match(o.time, std::regex(R"(([0-9]+-)?[0-9]{1,3}:[0-5][0-9]:[0-5][0-9])")))
    throw ConfigError("--time: expected [D-]HH:MM:SS, got '" + o.time + "'");
  for (const auto& [flag, v] : {std::pair{"--job-name", o.job_name}, {"--partition", o.partition}, {"--account", o.account}})
    if (!std::regex_match(v, std::regex(flag == std::string("--job-name") ? "[A-Za-z0-9._-]+" : "[A-Za-z0-9._-]*")))
      throw ConfigError(std::string(flag) + ": letters, digits, '.', '_' and '-' only (it goes into the scheduler header), got '" + v + "'");
  const std::int64_t ranks = o.nodes * o.ranks_per_node, devices = p.mesh.devices();
  if (ranks != devices)
    throw ConfigError(o.plan_file + ": mesh: the plan's mesh (" + p.mesh.describe() + ") has " + std::to_string(devices) +
                      " devices, but --nodes " + std::to_string(o.nodes) + " × --ranks-per-node " + std::to_string(o.ranks_per_node) +
                      " = " + std::to_string(ranks) + " ranks");
  const std::int64_t t = p.mesh[Axis::tensor];
  if (o.ranks_per_node % t != 0)
    throw ConfigError(o.plan_file + ": mesh.tensor: a tensor group of " + std::to_string(t) + " ranks would span nodes of " +
                      std::to_string(o.ranks_per_node) + " ranks (ranks are numbered tensor innermost; give --ranks-per-node a multiple of " +
                      std::to_string(t) + ")");
}

std::string header(const LaunchOptions& o) {
  const std::string name = o.job_name;
  std::string h;
  if (o.scheduler == "slurm") {
    // sbatch(1): long options as `#SBATCH --option=value`, before the first command
    h += "#SBATCH --job-name=" + name + "\n";
    h += "#SBATCH --nodes=" + std::to_string(o.nodes) + "\n";
    h += "#SBATCH --ntasks-per-node=" + std::to_string(o.ranks_per_node) + "\n";
    h += "#SBATCH --cpus-per-task=" + std::to_string(o.cpus_per_rank) + "\n";
    h += "#SBATCH --time=" + o.time + "\n";
    if (!o.partition.empty()) h += "#SBATCH --partition=" + o.partition + "\n";
    if (!o.account.empty()) h += "#SBATCH --account=" + o.account + "\n";
    h += "#SBATCH --requeue\n";
    h += "#SBATCH --signal=B:USR1@" + std::to_string(o.signal_seconds) + "\n";
    h += "#SBATCH --open-mode=append\n";
    h += "#SBATCH --output=" + name + "-%j.out\n";
  } else if (o.scheduler == "pbs") {
    // PBS Professional qsub(1): `#PBS -l select=<chunks>:ncpus=..:mpiprocs=..:ompthreads=..`
    h += "#PBS -N " + name + "\n";
    h += "#PBS -l select=" + std::to_string(o.nodes) + ":ncpus=" + std::to_string(o.ranks_per_node * o.cpus_per_rank) +
         ":mpiprocs=" + std::to_string(o.ranks_per_node) + ":ompthreads=" + std::to_string(o.cpus_per_rank) + "\n";
    h += "#PBS -l place=scatter:excl\n";
    h += "#PBS -l walltime=" + o.time + "\n";
    if (!o.partition.empty()) h += "#PBS -q " + o.partition + "\n";
    if (!o.account.empty()) h += "#PBS -A " + o.account + "\n";
    h += "#PBS -r y\n";
    h += "#PBS -j oe\n";
  }
  return h;
}

std::string job_script(const LaunchOptions& o, const Plan& p) {
  const std::int64_t ranks = o.nodes * o.ranks_per_node;
  std::string s = "#!/usr/bin/env bash\n" + header(o);
  s += "# Written by `scanshard launch` for " + absolute(o.plan_file) + ": mesh " + p.mesh.describe() + ", " + std::to_string(o.nodes) +
       " node(s) x " + std::to_string(o.ranks_per_node) + " rank(s), " + std::to_string(o.cpus_per_rank) + " CPU(s) per rank.\n";
  s += "# Resumes from the newest checkpoint in CKPT_DIR and runs the steps left of TOTAL_STEPS.\n";
  s += "set -euo pipefail\n";
  s += "export OMP_NUM_THREADS=" + std::to_string(o.cpus_per_rank) + " OPENBLAS_NUM_THREADS=" + std::to_string(o.cpus_per_rank) + "\n";
  s += "SCANSHARD=" + quoted(self_path()) + "\n";
  s += "PLAN=" + quoted(absolute(o.plan_file)) + "\n";
  s += "CKPT_DIR=" + quoted(absolute(o.checkpoint_dir)) + "\n";
  s += "TOTAL_STEPS=" + std::to_string(o.steps) + "\n";
  s += "DATA=(" + (o.data.empty() ? std::string() : "--data " + quoted(absolute(o.data))) + ")\n";
  s += "OPTIMIZER=(" + (o.optimizer.empty() ? std::string() : "--optimizer " + quoted(absolute(o.optimizer))) + ")\n";
  s += "mkdir -p \"$CKPT_DIR\"\n";
  s += "# newest complete checkpoint: step-<N>.h5 with the highest N (written to a temporary name, renamed whole)\n";
  s += "done_steps=0; latest=\n";
  s += "for f in \"$CKPT_DIR\"/step-*.h5; do\n"
       "  [ -f \"$f\" ] || continue\n"
       "  n=${f##*/step-}; n=${n%.h5}\n"
       "  case $n in ''|*[!0-9]*) continue ;; esac\n"
       "  n=$((10#$n))  # zero-padded: decimal, not octal\n"
       "  if [ \"$n\" -gt \"$done_steps\" ]; then done_steps=$n; latest=$f; fi\n"
       "done\n";
  s += "left=$((TOTAL_STEPS - done_steps))\n";
  s += "if [ \"$left\" -le 0 ]; then echo \"scanshard launch: all $TOTAL_STEPS steps done ($latest)\"; exit 0; fi\n";
  s += "resume=(); if [ -n \"$latest\" ]; then resume=(--resume \"$latest\"); echo \"scanshard launch: resuming from step $done_steps "
       "($latest), $left step(s) left\"; fi\n";
  s += "# the runner numbers ranks tensor innermost: ppr:" + std::to_string(o.ranks_per_node) +
       ":node keeps each tensor group of " + std::to_string(p.mesh[Axis::tensor]) + " inside a node\n";
  std::string map = "--map-by ppr:" + std::to_string(o.ranks_per_node) + ":node";
  if (o.scheduler != "none") map += ":PE=" + std::to_string(o.cpus_per_rank) + " --bind-to core";
  s += "mpirun -n " + std::to_string(ranks) + " " + map + " ${SCANSHARD_MPIRUN_FLAGS:-} \\\n"
       "  \"$SCANSHARD\" train --plan \"$PLAN\" \"${DATA[@]}\" \"${OPTIMIZER[@]}\" --steps \"$left\" \\\n"
       "  --checkpoint-dir \"$CKPT_DIR\" --checkpoint-every " + std::to_string(o.checkpoint_every) +
       (o.keep_last > 0 ? " --keep-last " + std::to_string(o.keep_last) : std::string()) + " \"${resume[@]}\" &\n";
  s += "run=$!\n";
  if (o.scheduler == "slurm")
    s += "# preemption or the time limit: Slurm sends USR1 to this shell; pass it to mpirun, which forwards it to every rank\n"
         "# (mpirun's own TERM would kill them): they finish the step and checkpoint; then requeue (it resumes)\n"
         "trap 'echo \"scanshard launch: USR1, checkpointing and requeueing $SLURM_JOB_ID\"; kill -USR1 \"$run\" 2>/dev/null; "
         "wait \"$run\" || true; scontrol requeue \"$SLURM_JOB_ID\"; exit 0' USR1\n";
  else if (o.scheduler == "pbs")
    s += "# preemption: PBS sends TERM before it kills a rerunnable (-r y) job, which is queued again and resumes\n"
         "# (USR1 to mpirun reaches every rank: they finish the step and checkpoint)\n"
         "trap 'kill -USR1 \"$run\" 2>/dev/null; wait \"$run\" || true; exit 143' TERM\n";
  s += "wait \"$run\"\n";
  return s;
}

void run_launch(const LaunchOptions& o) {
  const Plan p = load_plan(o.plan_file);
  check(o, p);
  if (!o.data.empty() && !std::filesystem::is_regular_file(o.data)) throw ConfigError("--data: '" + o.data + "' is not a regular file");
  if (!o.optimizer.empty()) train::load_optimizer(o.optimizer);  // a bad file is refused now, not on the cluster
  const std::string script = job_script(o, p);
  if (o.out.empty()) {
    std::cout << script;
    return;
  }
  write_output_file(o.out, script);
  ::chmod(o.out.c_str(), 0755);
  std::cout << "wrote " << o.out << " (" << o.scheduler << ", " << o.nodes << " x " << o.ranks_per_node << " ranks)\n";
}

}  // namespace

void register_launch_command(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  auto* cmd = app.add_subcommand("launch", "write the batch job that runs a plan: scheduler header, mpirun placement, resume, requeue");
  cmd->add_option("--plan", o->plan_file, "plan YAML file")->required();
  cmd->add_option("--nodes", o->nodes, "nodes")->required();
  cmd->add_option("--ranks-per-node", o->ranks_per_node, "MPI ranks per node (devices of the plan's mesh per node)")->required();
  cmd->add_option("--scheduler", o->scheduler, "slurm | pbs | none")->capture_default_str();
  cmd->add_option("--out", o->out, "write the script here (default: print it)");
  cmd->add_option("--cpus-per-rank", o->cpus_per_rank, "CPU cores per rank (OMP/OpenBLAS threads)")->capture_default_str();
  cmd->add_option("--time", o->time, "wall time limit, [D-]HH:MM:SS")->capture_default_str();
  cmd->add_option("--steps", o->steps, "training steps in total (a resumed job runs the ones left)")->capture_default_str();
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir, "checkpoint directory (resume source)")->capture_default_str();
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "checkpoint every N steps")->capture_default_str();
  cmd->add_option("--keep-last", o->keep_last, "keep only the newest N checkpoints (0: all)")->capture_default_str();
  cmd->add_option("--data", o->data, "training data file (default: the runner's default corpus)");
  cmd->add_option("--optimizer", o->optimizer, "train config with an optimizer: section (train --optimizer)");
  cmd->add_option("--job-name", o->job_name, "job name")->capture_default_str();
  cmd->add_option("--partition", o->partition, "Slurm partition / PBS queue");
  cmd->add_option("--account", o->account, "account to charge");
  cmd->add_option("--signal-seconds", o->signal_seconds, "Slurm: USR1 this many seconds before the time limit")->capture_default_str();
  cmd->callback([o] { run_launch(*o); });
}

}  // namespace scanshard
