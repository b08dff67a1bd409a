#!/usr/bin/env bash
# The digits measurements of docs/methods.md ("Reference fidelity: what each switch does on
# digits"): the kt-paper recipe with tmkt's defaults and with one reference switch at a time, one
# training process at a time at one thread. Usage:
#   tools/fidelity_digits.sh VARIANT SEED [SEED...]
# VARIANT is a name below; each run lands in runs/fidelity/kt-VARIANT/seedS/train-tmkt.
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
refuse() { echo "fidelity_digits: $*" >&2; exit 2; }
[ $# -ge 2 ] || refuse "usage: tools/fidelity_digits.sh VARIANT SEED [SEED...]"
variant=$1; shift
# Every seed is checked before the first run: text in a seed is refused, never run.
for seed in "$@"; do
  [[ $seed =~ ^[0-9]{1,19}$ ]] ||
    refuse "seed $(printf %q "$seed"): expected a non-negative integer"
done
case $variant in
  default)    sets=() ;;
  norm)       sets=(--set model.norm=per_step) ;;
  neuron)     sets=(--set model.surrogate=piecewise_quadratic --set model.detach_reset=true
                    --set model.fire=gt) ;;
  feature)    sets=(--set model.feature=membrane) ;;
  sampler)    sets=(--set data.sampler=class_balanced) ;;
  decay)      sets=(--set train.weight_decay_exclude_1d=true) ;;
  schedule)   sets=(--set train.schedule=timm_cosine) ;;
  static_aug) sets=(--set data.augment_static=false) ;;
  drop_last)  sets=(--set train.drop_last=true) ;;
  # the event-pipeline rows change the prepared frames: each gets its own prepared dataset
  resize)     sets=(--set prepare.align_corners=true --set paths.dataset=prepared/digits-fid-resize) ;;
  extent)     sets=(--set prepare.sensor_extent=observed_shifted
                    --set paths.dataset=prepared/digits-fid-extent) ;;
  bins)       sets=(--set prepare.split_by=time_fork --set paths.dataset=prepared/digits-fid-bins) ;;
  *) refuse "unknown variant $(printf %q "$variant")" ;;
esac
# TMKT names the tmkt program (default: this checkout's); run as one word, never split.
tmkt=${TMKT:-.venv/bin/tmkt}
[ -x "$tmkt" ] && [ -f "$tmkt" ] || refuse "TMKT=$(printf %q "$tmkt"): not an executable file"
root=runs/fidelity
"$tmkt" prepare recipes/digits/base.yaml --set paths.runs=$root "${sets[@]}"
for seed in "$@"; do
  # the whole training split, as when docs/methods.md's table was measured (the digits
  # recipes have since held out 10% for validation); gradient shares off (they change no
  # weight, only the log); the reference's layout and head (kt-paper: two output layers, the
  # event head), as when it was measured
  "$tmkt" train-tmkt recipes/digits/kt-paper.yaml --set paths.runs=$root --set name=kt-$variant \
    --set seed="$seed" --set data.val_fraction=0 --set train.grad_share_every=0 \
    --set model.test_head=event "${sets[@]}"
done
