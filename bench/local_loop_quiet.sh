#!/usr/bin/env bash
# bench/local_loop_quiet.sh — the local loop (calibrate, then validate) with nothing else able to
# take a core from the ranks: both commands run at SCHED_FIFO 50 with the kernel's RT throttling
# off, under a SCHED_FIFO 90 kill timer (a stuck run cannot hold the machine). On a 2-core VM any
# other runnable thread otherwise preempts one rank and the other waits at the next collective
# (docs/validation.md, 2026-12-07). Root only; restores the throttle on exit. Other processes
# get no CPU for the ~90 s it takes.
# Usage: bench/local_loop_quiet.sh OUTDIR [path/to/scanshard] [seconds-limit]
set -euo pipefail
out=${1:?usage: bench/local_loop_quiet.sh OUTDIR [scanshard] [seconds]}
bin=${2:-$(cd "$(dirname "$0")/.." && pwd)/build/cli/scanshard}
limit=${3:-300}
[ "$(id -u)" = 0 ] || { echo "bench/local_loop_quiet.sh: needs root (chrt -f, /proc/sys/kernel/sched_rt_runtime_us)" >&2; exit 2; }
mkdir -p "$out"
old=$(cat /proc/sys/kernel/sched_rt_runtime_us)
trap 'echo "$old" > /proc/sys/kernel/sched_rt_runtime_us' EXIT
echo -1 > /proc/sys/kernel/sched_rt_runtime_us
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mpi="mpirun --allow-run-as-root --oversubscribe -n 2"
chrt -f 90 timeout -s KILL "$limit" chrt -f 50 sh -c \
  "$mpi '$bin' calibrate --out '$out/cal.yaml' > '$out/cal.log' 2>&1 &&
   $mpi '$bin' validate --cluster '$out/cal.yaml' --out '$out/val' > '$out/val.log' 2>&1"
grep -E "step time over|decode per-token|machine drift" "$out/val.log"
