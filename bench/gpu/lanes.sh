#!/usr/bin/env bash
# Run two stage lists of bench/gpu/run.sh side by side, one per GPU, after one shared setup; on a 1-GPU machine
# run them one after the other (inference on fewer items). Usage: bash bench/gpu/lanes.sh "STAGES0" "STAGES1"
set -uo pipefail
OUT=${OUT:-/tmp/bench_out}; W=${W:-/tmp/bench}
export T0=$(date +%s) OUT W
bash bench/gpu/run.sh                                   # setup only: wheels, model, data (no stages)
NGPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
if [ "$NGPU" -ge 2 ]; then
  GPU=0 SKIP_SETUP=1 NOFINISH=1 bash bench/gpu/run.sh $1 > "$W/logs/lane0.log" 2>&1 &
  GPU=1 SKIP_SETUP=1 NOFINISH=1 bash bench/gpu/run.sh $2 > "$W/logs/lane1.log" 2>&1 &
  wait
  cat "$W/logs/lane0.log" "$W/logs/lane1.log" | grep -E "^\[" | cut -c1-700
else
  GPU=0 SKIP_SETUP=1 NINFER=${NINFER:-500} bash bench/gpu/run.sh $1 $2
  exit
fi
SKIP_SETUP=1 bash bench/gpu/run.sh                      # summary table + logs.tgz
