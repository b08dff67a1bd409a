"""Run folders: their layout, manifests, locks and atomic writes (artifacts.py), the checkpoint
format (checkpoints.py), what a resume checks (recovery.py), a run folder or checkpoint as the
target of eval, cam and export (run_target.py), and the run's log (runlog.py)."""
