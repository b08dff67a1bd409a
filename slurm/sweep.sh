#!/bin/bash
# Submit a sweep that `tmkt sweep --slurm` planned, as SLURM job arrays. Run that, not this:
#
#   tmkt sweep recipes/digits --methods event_only kt tmkt --fractions 0.01 0.05 1.0 \
#              --seeds 42 1024 90210 --runs runs/sweep --slurm [--set key=value ...]
#   GPUS=0 CPUS=1 MEM=2G TIME=30 MAX_PARALLEL=2 tmkt sweep recipes/digits --seeds 42 --slurm
#
# tmkt sweep checks every recipe and override, writes the task files (one tmkt command a line,
# which is also the record of what ran: <runs>/sweep-<time>.tasks for the trainings, beside it
# -prepare, -teachers (ckd) and -eval) and calls
#
#   slurm/sweep.sh RUNS PREPARE TEACHERS|- TASKS EVALS|-
#
# which submits each file as one job array of slurm/stage.sbatch --tasks FILE:
#   prepare -> teachers (afterok) -> trainings (afterok) -> evals (aftercorr: eval task N after
#   training task N succeeded) -> report (afterany: a failed task does not hide the others)
# Resources come from the environment, with the defaults of slurm/resources.sh (GPUS, TASKS,
# CPUS, MEM, TIME, SIGNAL_LEAD, PREP_CPUS, PREP_TIME, EVAL_TIME), shared with
# slurm/pipeline.sh; MAX_PARALLEL caps the tasks of an array running at once (--array=...%N).
# Tasks are preempted, requeued and resumed like any stage.sbatch job.
#
# Nothing is submitted unless every resource variable matches its pattern (slurm/resources.sh;
# MAX_PARALLEL empty or a count) and every task file is one: a tmkt stage a line, its seed a
# non-negative integer and its event fraction in (0, 1]. Otherwise one line and exit code 2.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=slurm/resources.sh
. "$HERE/resources.sh"
if [ $# -ne 5 ]; then
  tmkt_refuse "called by 'tmkt sweep RECIPE_FOLDER ... --slurm', which writes its task" \
              "files (tmkt sweep --help)"
fi
RUNS=$1 PREPARE=$2 TEACHERS=$3 TRAININGS=$4 EVALS=$5
VENV=${TMKT_VENV:-.venv}
MAX_PARALLEL=${MAX_PARALLEL-}
tmkt_check MAX_PARALLEL "|$TMKT_POSITIVE" 'a number of tasks of an array running at once, or empty'
ONE_GPU=$([ "$GPUS" -gt 0 ] && echo 1 || echo 0)
[ -d "$RUNS" ] || tmkt_refuse "$(printf %q "$RUNS"): not a folder (the sweep's --runs)"

check_task_file() {  # check_task_file FILE: refuse a file that is not a task file of tmkt sweep
  local file=$1 line n=0 word
  [ -f "$file" ] || tmkt_refuse "$(printf %q "$file"): no such task file"
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    read -ra words <<<"$line"
    [[ ${words[0]:-} =~ ^(prepare|pretrain-ann|distill|train-tmkt|eval|cam)$ ]] ||
      tmkt_refuse "$file line $n: expected a tmkt stage first"
    for word in "${words[@]}"; do
      case $word in
        seed=*) [[ ${word#seed=} =~ ^[0-9]{1,19}$ ]] ||
          tmkt_refuse "$file line $n: seed: expected a non-negative integer" ;;
        data.event_fraction=*) [[ ${word#*=} =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] ||
          tmkt_refuse "$file line $n: data.event_fraction: expected a fraction in (0, 1]" ;;
      esac
    done
  done <"$file"
  [ "$n" -gt 0 ] || tmkt_refuse "$file: an empty task file"
}
for file in "$PREPARE" "$TRAININGS"; do check_task_file "$file"; done
for file in "$TEACHERS" "$EVALS"; do [ "$file" = - ] || check_task_file "$file"; done

quote() {  # a POSIX shell word for sbatch --wrap, which sh runs: 'text', quotes escaped
  printf "'%s'" "${1//\'/\'\\\'\'}"
}

resources=(--mem="$MEM" --signal="B:USR1@$SIGNAL_LEAD" --kill-on-invalid-dep=yes)
train=(--nodes=1 --gpus-per-node="$GPUS" --ntasks-per-node="$TASKS" --cpus-per-task="$CPUS"
       --time="$TIME")
array() {  # array NAME FILE DEPENDENCY [sbatch options]: one task per line of FILE; prints the id
  local name=$1 file=$2 dep=$3; shift 3
  local n; n=$(wc -l <"$file")
  sbatch --parsable --job-name="$name" --array="0-$((n - 1))${MAX_PARALLEL:+%$MAX_PARALLEL}" \
         ${dep:+--dependency="$dep"} "${resources[@]}" "$@" \
         "$HERE/stage.sbatch" --tasks "$(realpath "$file")"
}

prep=$(array tmkt-sweep-prepare "$PREPARE" "" --nodes=1 --gpus-per-node=0 \
       --ntasks-per-node=1 --cpus-per-task="$PREP_CPUS" --time="$PREP_TIME")
echo "prepare  job $prep ($(wc -l <"$PREPARE") task(s): $PREPARE)"
after=$prep
if [ "$TEACHERS" != - ]; then  # CKD's teachers (images only), one per seed
  teacher=$(array tmkt-sweep-teachers "$TEACHERS" "afterok:$prep" "${train[@]}")
  echo "teachers job $teacher ($(wc -l <"$TEACHERS") tasks: $TEACHERS)"
  after=$after:$teacher
fi
runs=$(array tmkt-sweep "$TRAININGS" "afterok:$after" "${train[@]}")
echo "array    job $runs ($(wc -l <"$TRAININGS") tasks: $TRAININGS)"
last=$runs
if [ "$EVALS" != - ]; then
  ev=$(array tmkt-sweep-eval "$EVALS" "aftercorr:$runs" --nodes=1 --gpus-per-node="$ONE_GPU" \
       --ntasks-per-node=1 --cpus-per-task="$CPUS" --time="$EVAL_TIME")
  echo "eval     job $ev (task N evaluates training task N: $EVALS)"
  last=$last:$ev
fi
# Every folder under RUNS but logs/, report/ and teacher/ (tmkt_cli/stages/sweep.py's NOT_RUNS), as
# the local sweep's report; listed when the report job runs, after every task.
# RUNS and VENV are quoted for the job's shell: a folder name is never run as code.
roots="\$(find $(quote "$RUNS") -mindepth 1 -maxdepth 1 -type d ! -name logs ! -name report"
roots+=" ! -name teacher | sort)"
report=$(sbatch --parsable --job-name=tmkt-sweep-report --dependency="afterany:$last" \
         --nodes=1 --gpus-per-node=0 --ntasks-per-node=1 --cpus-per-task=1 --time=30 \
         --mem=4G --output="$RUNS/report-%j.out" \
         --wrap="$(quote "$VENV/bin/tmkt") report $roots --out $(quote "$RUNS/report")")
echo "report   job $report (after every task, finished or not: $RUNS/report/report.md)"
