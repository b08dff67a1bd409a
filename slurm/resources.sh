# Resource defaults of the jobs slurm/pipeline.sh and slurm/sweep.sh (tmkt sweep --slurm)
# submit, each overridable from the environment (sourced by both, so the two cannot drift apart):
#   GPUS per node (1), TASKS processes per node for training (GPUS; 1 without GPUs),
#   CPUS per task (8), MEM per node (64G), TIME per training job (24:00:00), SIGNAL_LEAD
#   seconds of warning before the time limit (180), PREP_CPUS (16) and PREP_TIME (12:00:00)
#   for prepare, EVAL_TIME (02:00:00) for eval.
#
# The environment is text, never code: every value must match its pattern before it reaches
# sbatch or a shell test, else one line and exit code 2 before anything is submitted. A
# variable set but empty is refused too (unset it for the default).

tmkt_refuse() {  # tmkt_refuse MESSAGE...: one line on stderr, exit 2
  echo "$(basename "$0"): $*" >&2
  exit 2
}

tmkt_check() {  # tmkt_check NAME REGEX WHAT: refuse unless $NAME matches REGEX whole
  local name=$1 pattern=$2 what=$3
  [[ ${!name} =~ ^($pattern)$ ]] ||
    tmkt_refuse "$name=$(printf %q "${!name}"): expected $what"
}

TMKT_COUNT='[0-9]{1,4}'
TMKT_POSITIVE='[1-9][0-9]{0,3}'
# sbatch's --time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds, or no limit
TMKT_DURATION='([0-9]{1,5}-)?[0-9]{1,6}(:[0-9]{1,2}){0,2}|UNLIMITED|unlimited|INFINITE|infinite'
TMKT_DURATION_WHAT='a time limit such as 90, 02:00:00 or 1-12:00:00'

GPUS=${GPUS-1}
tmkt_check GPUS "$TMKT_COUNT" 'a number of GPUs per node (0 on nodes without GPUs)'
if [ "$GPUS" -gt 0 ]; then TASKS=${TASKS-$GPUS}; else TASKS=${TASKS-1}; fi
tmkt_check TASKS "$TMKT_POSITIVE" 'a number of processes per node (1 or more)'
CPUS=${CPUS-8}
tmkt_check CPUS "$TMKT_POSITIVE" 'a number of CPU cores per process (1 or more)'
MEM=${MEM-64G}
tmkt_check MEM '[0-9]{1,9}[KMGTkmgt]?' 'memory per node such as 64G, 4000M or 0 (all of it)'
TIME=${TIME-24:00:00}
tmkt_check TIME "$TMKT_DURATION" "$TMKT_DURATION_WHAT"
SIGNAL_LEAD=${SIGNAL_LEAD-180}
tmkt_check SIGNAL_LEAD '[0-9]{1,5}' 'seconds of warning before the time limit, such as 180'
PREP_CPUS=${PREP_CPUS-16}
tmkt_check PREP_CPUS "$TMKT_POSITIVE" 'a number of CPU cores for prepare (1 or more)'
PREP_TIME=${PREP_TIME-12:00:00}
tmkt_check PREP_TIME "$TMKT_DURATION" "$TMKT_DURATION_WHAT"
EVAL_TIME=${EVAL_TIME-02:00:00}
tmkt_check EVAL_TIME "$TMKT_DURATION" "$TMKT_DURATION_WHAT"
