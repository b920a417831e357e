#!/usr/bin/env bash
# One rung of the CPU ladder: ladder.sh NAME CORE AGENT [KEY=VALUE ...]
# Resumes by rerunning the same line (train continues its checkpoint).
set -euo pipefail
name=$1 core=$2 agent=$3; shift 3
out=/work/runs/cpu-ladder/$name/$agent
mkdir -p "$out"
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
echo "session start $(date -u +%FT%TZ) commit $(git -C /work/ladder rev-parse HEAD)" >> "$out/cputime.log"
cd /work/ladder
taskset -c "$core" /usr/bin/time -a -o "$out/cputime.log" \
  .venv/bin/qam-lite train scene-play-singletask-task1-v0 --agent "$agent" \
  --dataset-dir /work/data --out "$out" --no-progress \
  --set eval_episodes=50 --set eval_interval=10000 --set checkpoint_interval=5000 \
  --set log_interval=1000 --set updates_per_call=500 --set offline_steps=50000 "${sets[@]}" &
pid=$!
nice -n 19 /work/main/.venv/bin/python /work/main/benchmarks/cpu_trace.py "$pid" "$out" --every 30 &
wait "$pid"
