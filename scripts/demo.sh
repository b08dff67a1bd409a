#!/usr/bin/env bash
# The whole pipeline on the embedded digits dataset (README's main job).
# Every stage skips itself when it is up to date, so a second run finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
R=recipes/digits
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "prepare: digits -> events -> HDF5"
tmkt prepare "$R/base.yaml"
say "pretrain-ann: the CKD teacher on images"
tmkt pretrain-ann "$R/ckd.yaml"
say "distill: CKD student"
tmkt distill "$R/ckd.yaml"
for method in event_only kt tmkt; do
  say "train-tmkt: $method"
  tmkt train-tmkt "$R/$method.yaml"
done
for recipe in event_only kt tmkt ckd; do
  say "eval: $recipe"
  tmkt eval "$R/$recipe.yaml"
done
say "cam: tmkt against the kt baseline"
tmkt cam "$R/tmkt.yaml" --set cam.baseline=runs/digits-kt/seed42/train-tmkt
say "report"
tmkt report runs/digits-event_only runs/digits-kt runs/digits-tmkt runs/digits-ckd \
  --out runs/digits-report

say "figures"
ls -1 runs/digits-report/*.png runs/digits-tmkt/seed42/cam/*.png \
  runs/digits-*/seed42/eval*/*.png 2>/dev/null
