#!/bin/bash
# Submit a recipe's whole pipeline as a chain of SLURM jobs, each started when the one before
# it finished successfully (--dependency=afterok):
#   prepare -> (pretrain-ann -> distill | train-tmkt) -> eval -> cam
#
#   slurm/pipeline.sh recipes/ncaltech101/tmkt.yaml [--set seed=1024 ...]
#   GPUS=4 NODES=2 slurm/pipeline.sh recipes/ncaltech101/ckd.yaml
#   GPUS=0 CPUS=1 MEM=2G TIME=10 SIGNAL_LEAD=30 slurm/pipeline.sh recipes/digits/tmkt.yaml
#
# Resources, from the environment (defaults sized for a GPU cluster):
#   GPUS=1 per node and TASKS=GPUS (1 without GPUs) processes per node for the training stages,
#   NODES=1, CPUS=8 per task, MEM=64G per node, TIME=24:00:00 per training job,
#   SIGNAL_LEAD=180 (seconds before the time limit the stage is told to checkpoint),
#   PREP_CPUS=16 and PREP_TIME=12:00:00 for prepare, EVAL_TIME=02:00:00, CAM_TIME=01:00:00
#   (eval and cam use one GPU when GPUS > 0). sbatch's own variables (SBATCH_PARTITION,
#   SBATCH_ACCOUNT, SBATCH_QOS, ...) apply to every job.
#
# If a stage fails, SLURM cancels the jobs waiting on it (--kill-on-invalid-dep=yes; their
# reason reads DependencyNeverSatisfied) instead of leaving them pending forever. Each job is
# named after its stage's run folder and also depends on `singleton`: a second pipeline on the
# same recipe waits for the first one's job on that folder, then finds the stage up to date.
#
# Every resource variable is checked against a pattern first (slurm/resources.sh): a value
# that is not one gets one line and exit code 2, and nothing is submitted.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=slurm/resources.sh
. "$HERE/resources.sh"
[ $# -ge 1 ] || tmkt_refuse "usage: slurm/pipeline.sh RECIPE [tmkt options]"
RECIPE=$1
shift
VENV=${TMKT_VENV:-.venv}
[ -x "$VENV/bin/tmkt" ] ||
  tmkt_refuse "no tmkt at $VENV/bin/tmkt (set TMKT_VENV to its virtual environment)"
NODES=${NODES-1}
tmkt_check NODES "$TMKT_POSITIVE" 'a number of nodes (1 or more)'
CAM_TIME=${CAM_TIME-01:00:00}
tmkt_check CAM_TIME "$TMKT_DURATION" "$TMKT_DURATION_WHAT"
ONE_GPU=$([ "$GPUS" -gt 0 ] && echo 1 || echo 0)

# `tmkt paths` takes the --set options only.
sets=()
args=("$@")
while [ $# -gt 0 ]; do
  case $1 in --set|-s) sets+=("$1" "${2:-}"); shift 2 || shift ;; --set=*) sets+=("$1"); shift ;;
             *) shift ;; esac
done
paths=$("$VENV/bin/tmkt" paths "$RECIPE" "${sets[@]}")
path_of() { sed -n "s/^$1=//p" <<<"$paths"; }

submit() {  # submit STAGE DEPENDENCY_JOB|"" [sbatch options...]: prints the job id
  local stage=$1 dep=$2; shift 2
  local key=$stage; [ "$stage" = prepare ] && key=dataset
  local folder; folder=$(realpath -m "$(path_of "$key")")
  local name; name="tmkt-$stage-$(cksum <<<"$folder" | cut -d' ' -f1)"
  local depend=singleton; [ -n "$dep" ] && depend="afterok:$dep,singleton"
  sbatch --parsable --job-name="$name" --dependency="$depend" --kill-on-invalid-dep=yes \
         --mem="$MEM" --signal="B:USR1@$SIGNAL_LEAD" "$@" \
         "$HERE/stage.sbatch" "$stage" "$RECIPE" "${args[@]}"
}
train=(--nodes="$NODES" --gpus-per-node="$GPUS" --ntasks-per-node="$TASKS"
       --cpus-per-task="$CPUS" --time="$TIME")
single=(--nodes=1 --gpus-per-node="$ONE_GPU" --ntasks-per-node=1 --cpus-per-task="$CPUS")

prep=$(submit prepare "" --nodes=1 --gpus-per-node=0 --ntasks-per-node=1 \
       --cpus-per-task="$PREP_CPUS" --time="$PREP_TIME")
echo "prepare       job $prep"
case $(path_of eval_source) in
  distill)
    teacher=$(submit pretrain-ann "$prep" "${train[@]}")
    echo "pretrain-ann  job $teacher"
    trained=$(submit distill "$teacher" "${train[@]}")
    echo "distill       job $trained" ;;
  pretrain-ann)
    trained=$(submit pretrain-ann "$prep" "${train[@]}")
    echo "pretrain-ann  job $trained" ;;
  *)
    trained=$(submit train-tmkt "$prep" "${train[@]}")
    echo "train-tmkt    job $trained" ;;
esac
ev=$(submit eval "$trained" "${single[@]}" --time="$EVAL_TIME")
echo "eval          job $ev"
cam=$(submit cam "$ev" "${single[@]}" --time="$CAM_TIME")
echo "cam           job $cam"
echo "follow: squeue -j $prep,${teacher:+$teacher,}$trained,$ev,$cam" \
     "(a failed stage cancels the jobs after it: reason DependencyNeverSatisfied)"
