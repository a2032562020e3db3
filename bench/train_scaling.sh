#!/usr/bin/env bash
# bench/train_scaling.sh — tokens/s of `scanshard train` for griffin-tiny at 1 and 2 ranks, one
# plan per mesh family. Strong scaling: the same global batch; weak scaling: twice the work on
# twice the ranks (data=2 with twice the batch, sequence=2 with twice the sequence), where the
# ideal is 2x the 1-rank tokens/s. Median over the steps after the first, as a ratio to the
# 1-rank runs measured in the same invocation.
# Usage: bench/train_scaling.sh [path/to/scanshard] [steps]   (this machine: 2 cores, noisy)
set -euo pipefail
bin=${1:-$(cd "$(dirname "$0")/.." && pwd)/build/cli/scanshard}
steps=${2:-8}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mpi=(mpirun --oversubscribe -n 2)
[ "$(id -u)" = 0 ] && mpi=(mpirun --allow-run-as-root --oversubscribe -n 2)
plan() {  # name mesh-yaml [global_batch] [seq_len]
  cat > "$dir/$1.yaml" <<YAML
model: griffin-tiny
mesh: $2
global_batch: ${3:-8}
micro_batch: 2
seq_len: ${4:-256}
dtypes: {params: fp32, activations: fp32, scan_state: fp32}
YAML
}
median_tps() {  # prints the median tokens/s of steps 2..
  grep -o 'tokens/s [0-9.]*' | awk 'NR>1{print $2}' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
plan one "{data: 1}"
base=$("$bin" train --plan "$dir/one.yaml" --steps "$steps" | median_tps)
printf '%-28s %10s %8s\n' "plan" "tokens/s" "vs 1 rank"
printf '%-28s %10.0f %8.2f\n' "1 rank" "$base" 1
for m in "data=2:{data: 2}" "fsdp=2 zero3:{fsdp: 2}" "tensor=2:{tensor: 2}" "sequence=2 ring:{sequence: 2}"; do
  name=${m%%:*}; mesh=${m#*:}
  plan p "$mesh"
  [ "$name" = "fsdp=2 zero3" ] && echo "zero_stage: 3" >> "$dir/p.yaml"
  tps=$("${mpi[@]}" "$bin" train --plan "$dir/p.yaml" --steps "$steps" | median_tps)
  printf '%-28s %10.0f %8.2f\n' "$name" "$tps" "$(awk -v a="$tps" -v b="$base" 'BEGIN{print a/b}')"
done
echo
printf '%-28s %10s %8s %10s\n' "weak scaling" "tokens/s" "vs 1 rank" "efficiency"
for m in "data=2, batch 16|{data: 2}|16|256|8|256" "sequence=2, 512 tokens|{sequence: 2}|8|512|8|256"; do
  IFS="|" read -r name mesh g2 t2 g1 t1 <<< "$m"
  plan w1 "{data: 1}" "$g1" "$t1"
  one=$("$bin" train --plan "$dir/w1.yaml" --steps "$steps" | median_tps)
  plan w2 "$mesh" "$g2" "$t2"
  two=$("${mpi[@]}" "$bin" train --plan "$dir/w2.yaml" --steps "$steps" | median_tps)
  printf '%-28s %10.0f %8.2f %10.2f\n' "$name" "$two" "$(awk -v a="$two" -v b="$one" 'BEGIN{print a/b}')" \
    "$(awk -v a="$two" -v b="$one" 'BEGIN{print a/b/2}')"
done
