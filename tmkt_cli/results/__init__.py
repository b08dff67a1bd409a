"""Results without torch: finished runs gathered into tables (report.py), the benchmark's
per-run table and its statistics (benchmark.py), per-recording predictions and the bootstrap
(predictions.py), and the demo's closing summary (summary.py)."""
