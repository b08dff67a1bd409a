# Resource defaults of the jobs slurm/pipeline.sh and slurm/sweep.sh (tmkt sweep --slurm)
# submit, each overridable from the environment (sourced by both, so the two cannot drift apart):
#   GPUS per node (1), TASKS processes per node for training (GPUS; 1 without GPUs),
#   CPUS per task (8), MEM per node (64G), TIME per training job (24:00:00), SIGNAL_LEAD
#   seconds of warning before the time limit (180), PREP_CPUS (16) and PREP_TIME (12:00:00)
#   for prepare, EVAL_TIME (02:00:00) for eval.
GPUS=${GPUS:-1}
TASKS=${TASKS:-$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 1)}
CPUS=${CPUS:-8}
MEM=${MEM:-64G}
TIME=${TIME:-24:00:00}
SIGNAL_LEAD=${SIGNAL_LEAD:-180}
PREP_CPUS=${PREP_CPUS:-16}
PREP_TIME=${PREP_TIME:-12:00:00}
EVAL_TIME=${EVAL_TIME:-02:00:00}
