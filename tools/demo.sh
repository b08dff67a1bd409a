#!/usr/bin/env bash
# The whole pipeline on the embedded digits dataset (README's main job), in the setting where
# the question "does transfer from the images help?" is most informative: the positive
# control (recipes/control: one event recording per class, all 1,438 images), where event_only
# is far below what the images and more recordings give (recipes/README.md, headroom).
# Every stage skips itself when it is up to date, so a second run finishes in seconds.
set -euo pipefail
# TMKT_DEMO_JOBS (how many training chains run at once: 1 or 2) is matched, never evaluated.
JOBS=${TMKT_DEMO_JOBS-2}
if ! [[ $JOBS =~ ^[0-9]{1,3}$ ]]; then
  echo "demo: TMKT_DEMO_JOBS=$(printf %q "$JOBS"): expected 1 (one chain after the other)" \
       "or 2 (side by side)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
R=recipes/control
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "prepare: digits -> events -> HDF5"
tmkt prepare "$R/base.yaml"
# Two independent chains of trainings, balanced in time, each the methods in both output
# layouts: the recommended one (one shared head: control/kt.yaml, ...) and the papers' (two
# heads: control/kt-paper.yaml, ...). They run side by side (TMKT_DEMO_JOBS=1: one after the
# other), each process on one torch thread (train.threads' default): on a small or busy
# machine that is faster than one process on every core (docs/performance.md). The second
# chain's output is shown when it ends.
TEACHER=runs/control-ckd/seed42/pretrain-ann
ckd_chain() {
  say "pretrain-ann: the CKD teacher on images"
  tmkt pretrain-ann "$R/ckd.yaml"
  for recipe in ckd ckd-paper; do
    say "distill: CKD student ($recipe)"
    tmkt distill "$R/$recipe.yaml" --set distill.teacher=$TEACHER
  done
  say "train-tmkt: static_only (the SNN on the images alone: what they can teach)"
  tmkt train-tmkt "$R/static_only.yaml"
  say "train-tmkt: event_only"
  tmkt train-tmkt "$R/event_only.yaml"
}
methods_chain() {
  for recipe in kt kt-paper tmkt tmkt-paper; do
    say "train-tmkt: $recipe"
    tmkt train-tmkt "$R/$recipe.yaml"
  done
}
if [ "$JOBS" -ge 2 ]; then
  log=$(mktemp)
  methods_chain >"$log" 2>&1 &
  chain=$!
  trap 'kill "$chain" 2>/dev/null; rm -f "$log"' EXIT
  ckd_chain
  status=0
  wait "$chain" || status=$?
  cat "$log" >&2
  rm -f "$log"
  trap - EXIT
  [ "$status" -eq 0 ] || { echo "demo: a train-tmkt run failed (exit $status)" >&2; exit "$status"; }
else
  ckd_chain
  methods_chain
fi
for recipe in event_only kt kt-paper tmkt tmkt-paper ckd ckd-paper; do
  say "eval: $recipe"
  tmkt eval "$R/$recipe.yaml"
done
say "cam: tmkt against the kt baseline (both with one shared head)"
tmkt cam "$R/tmkt.yaml" --set cam.baseline=runs/control-kt/seed42/train-tmkt
say "report"
tmkt report runs/control-event_only runs/control-kt runs/control-kt-paper runs/control-tmkt \
  runs/control-tmkt-paper runs/control-ckd runs/control-ckd-paper runs/control-static_only \
  --out runs/control-report

say "figures"
ls -1 runs/control-report/*.png runs/control-tmkt/seed42/cam/*.png \
  runs/control-*/seed42/eval*/*.png 2>/dev/null

say "what this shows"
tmkt report --table runs/control-report/runs.csv --summary --evidence docs/benchmark/runs.csv
