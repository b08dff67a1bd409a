#!/bin/bash
# A sweep over methods, fractions of the event recordings and seeds as ONE SLURM job array:
#   prepare (one job) -> the array (one task per method x fraction x seed) -> report (one job)
#
#   slurm/sweep.sh recipes/digits --methods "event_only kt tmkt" --fractions "0.01 0.05 1.0" \
#                  --seeds "42 1024 90210" [--runs runs/sweep] [--set key=value ...]
#   GPUS=0 CPUS=1 MEM=2G TIME=30 slurm/sweep.sh recipes/digits --seeds 42
#
# Every task is `tmkt train-tmkt <folder>/<method>.yaml --set seed=S --set
# data.event_fraction=F` (ckd: `distill`, after a small array of its teachers, one per seed,
# trained on all the images: <runs>/teacher/seedS/pretrain-ann): each run
# is a variant of its recipe and gets its own folder (<runs>/<name>/event_fraction-F/seedS/),
# so nothing here builds a path. The tasks are written to <runs>/sweep-<time>.tasks, one line
# each, which is also the record of what the array ran. Resources come from the environment, with
# the defaults of slurm/resources.sh (GPUS, TASKS, CPUS, MEM, TIME, SIGNAL_LEAD, PREP_CPUS,
# PREP_TIME), shared with slurm/pipeline.sh; MAX_PARALLEL
# caps the tasks running at once (sbatch --array=...%N). Tasks are preempted, requeued and
# resumed like any stage.sbatch job.
set -euo pipefail
FOLDER=${1:?usage: slurm/sweep.sh RECIPE_FOLDER [--methods M] [--fractions F] [--seeds S] [--runs DIR] [--set k=v ...]}
shift
METHODS="event_only kt tmkt"
FRACTIONS="0.05 0.2 1.0"
SEEDS="42 1024 90210"
RUNS=runs/sweep
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --methods) METHODS=$2; shift 2 ;;
    --fractions) FRACTIONS=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --set|-s) extra+=(--set "$2"); shift 2 ;;
    *) echo "slurm/sweep.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=slurm/resources.sh
. "$HERE/resources.sh"
MAX_PARALLEL=${MAX_PARALLEL:-}
for word in ${extra[@]+"${extra[@]}"}; do
  case $word in *" "*) echo "slurm/sweep.sh: a --set value may not hold spaces: $word" >&2
                       exit 2 ;; esac
done

mkdir -p "$RUNS"
stamp=$(date -u +%Y%m%dT%H%M%S)
tasks="$RUNS/sweep-$stamp.tasks"
teachers="$RUNS/sweep-$stamp-teachers.tasks"
common=(--set "paths.runs=$RUNS" ${extra[@]+"${extra[@]}"})
: >"$tasks"
: >"$teachers"
for seed in $SEEDS; do
  if [[ " $METHODS " == *" ckd "* ]]; then  # CKD's teacher (images only) once per seed, first
    echo "pretrain-ann $FOLDER/ckd.yaml --set seed=$seed --set name=teacher ${common[*]}" \
      >>"$teachers"
  fi
  for fraction in $FRACTIONS; do
    for method in $METHODS; do
      recipe="$FOLDER/$method.yaml"
      [ -f "$recipe" ] || { echo "slurm/sweep.sh: no recipe $recipe" >&2; exit 2; }
      if [ "$method" = ckd ]; then
        echo "distill $recipe --set seed=$seed --set data.event_fraction=$fraction" \
             "${common[*]} --set distill.teacher=$RUNS/teacher/seed$seed/pretrain-ann" >>"$tasks"
      else
        echo "train-tmkt $recipe --set seed=$seed --set data.event_fraction=$fraction" \
             "${common[*]}" >>"$tasks"
      fi
    done
  done
done
n=$(wc -l <"$tasks")
resources=(--mem="$MEM" --signal="B:USR1@$SIGNAL_LEAD" --kill-on-invalid-dep=yes)
prep=$(sbatch --parsable --job-name=tmkt-sweep-prepare "${resources[@]}" --nodes=1 \
       --gpus-per-node=0 --ntasks-per-node=1 --cpus-per-task="$PREP_CPUS" --time="$PREP_TIME" \
       "$HERE/stage.sbatch" prepare "$FOLDER/base.yaml" ${extra[@]+"${extra[@]}"})
echo "prepare  job $prep"
train=(--nodes=1 --gpus-per-node="$GPUS" --ntasks-per-node="$TASKS" --cpus-per-task="$CPUS"
       --time="$TIME")
after=$prep
[ -s "$teachers" ] || rm -f "$teachers"
if [ -f "$teachers" ]; then
  t=$(wc -l <"$teachers")
  teacher=$(sbatch --parsable --job-name=tmkt-sweep-teachers --array="0-$((t - 1))" \
            --dependency="afterok:$prep" "${resources[@]}" "${train[@]}" \
            "$HERE/stage.sbatch" --tasks "$(realpath "$teachers")")
  echo "teachers job $teacher ($t tasks: $teachers)"
  after=$after:$teacher
fi
array=$(sbatch --parsable --job-name=tmkt-sweep --array="0-$((n - 1))${MAX_PARALLEL:+%$MAX_PARALLEL}" \
        --dependency="afterok:$after" "${resources[@]}" "${train[@]}" \
        "$HERE/stage.sbatch" --tasks "$(realpath "$tasks")")
echo "array    job $array ($n tasks: $tasks)"
report=$(sbatch --parsable --job-name=tmkt-sweep-report --dependency="afterany:$array" \
         --nodes=1 --gpus-per-node=0 --ntasks-per-node=1 --cpus-per-task=1 --time=30 \
         --mem=4G --output="$RUNS/report-%j.out" \
         --wrap="${TMKT_VENV:-.venv}/bin/tmkt report $RUNS --out $RUNS/report")
echo "report   job $report (after every task, finished or not: $RUNS/report/report.md)"
