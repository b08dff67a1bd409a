#!/usr/bin/env bash
# data.num_workers 0 against 1 on the CPU: a 40-step digits tmkt run each, twice, interleaved
# (needs a prepared digits dataset; set DATASET). Prints wall time and samples/s per window.
cd "$(dirname "$0")/.." && DATASET=${DATASET:-prepared/digits-T8-32px}
for w in 0 1 0 1; do
  rm -rf /tmp/perf_runs_w
  start=$(date +%s.%N)
  OMP_NUM_THREADS=1 .venv/bin/tmkt train-tmkt recipes/digits/tmkt.yaml --set paths.dataset=$DATASET --set paths.runs=/tmp/perf_runs_w --set train.max_steps=40 --set train.eval_every_steps=1000 --set data.num_workers=$w --set train.log_every_steps=10 --set train.warmup_steps=5 > /tmp/perf_w_$w.out 2>&1
  end=$(date +%s.%N)
  rates=$(grep '"train"' $(find /tmp/perf_runs_w -name metrics.jsonl) | python3 -c "import sys,json; print([round(json.loads(l)['samples_per_s']) for l in sys.stdin])")
  echo "workers $w wall $(python3 -c "print(round($end-$start,1))") s train samples/s per 10-step window $rates load $(cut -d' ' -f1 /proc/loadavg)"
done
