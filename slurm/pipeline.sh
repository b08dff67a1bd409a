#!/bin/bash
# Submit a recipe's whole pipeline as a chain of SLURM jobs (each starts when the previous one
# finished successfully, `--dependency=afterok`):
#   prepare -> (pretrain-ann -> distill | train-tmkt) -> eval -> cam
#
#   slurm/pipeline.sh recipes/ncaltech101/tmkt.yaml [--set seed=1024 ...]
#   GPUS=4 NODES=2 slurm/pipeline.sh recipes/ncaltech101/ckd.yaml
set -euo pipefail
RECIPE=${1:?usage: slurm/pipeline.sh RECIPE [tmkt options]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
GPUS=${GPUS:-1}
NODES=${NODES:-1}
VENV=${TMKT_VENV:-.venv}
source_stage=$("$VENV/bin/tmkt" paths "$RECIPE" "$@" | sed -n 's/^eval_source=//p')

submit() {  # submit STAGE [DEPENDENCY_JOB] [extra sbatch options...]
  local stage=$1 dep=${2:-}; shift 2 || shift $#
  local opts=(--parsable --job-name="tmkt-$stage" "$@")
  [ -n "$dep" ] && opts+=(--dependency="afterok:$dep")
  sbatch "${opts[@]}" "$HERE/stage.sbatch" "$stage" "$RECIPE" "${EXTRA[@]}"
}
EXTRA=("$@")
train=(--nodes="$NODES" --gpus-per-node="$GPUS")

prep=$(submit prepare "" --gpus-per-node=0 --cpus-per-task=16 --time=12:00:00)
echo "prepare       job $prep"
if [ "$source_stage" = distill ]; then
  teacher=$(submit pretrain-ann "$prep" "${train[@]}")
  echo "pretrain-ann  job $teacher"
  trained=$(submit distill "$teacher" "${train[@]}")
  echo "distill       job $trained"
elif [ "$source_stage" = pretrain-ann ]; then
  trained=$(submit pretrain-ann "$prep" "${train[@]}")
  echo "pretrain-ann  job $trained"
else
  trained=$(submit train-tmkt "$prep" "${train[@]}")
  echo "train-tmkt    job $trained"
fi
ev=$(submit eval "$trained" --gpus-per-node=1 --time=02:00:00)
echo "eval          job $ev"
cam=$(submit cam "$ev" --gpus-per-node=1 --time=01:00:00)
echo "cam           job $cam"
