"""Per-recording predictions of the benchmark's runs, and the bootstrap over test recordings.

``tmkt eval`` writes each run's ``predictions.csv`` (every test recording's label, source image
and each head's predicted class). ``tmkt report RUN...`` gathers them beside ``runs.csv``:

* ``predictions.csv.gz``: one row per (run, head): ``run`` (as in runs.csv), ``head`` and
  ``pred``, the predicted classes in test-split order, space-separated;
* ``test_recordings.csv``: one row per (dataset, test recording): ``label`` and
  ``image_index`` (the source image: the group a bootstrap resamples).

:func:`bootstrap_table` then gives, for a cell's comparisons, the difference of the seed-mean
top-1 with a 95% interval from resampling source images
(:func:`tmkt_cli.analysis.stats.grouped_bootstrap`): how much the difference would move on
another test set of the same kind, given these seeds. The interval over seeds (how much it
moves with another seed) is benchmark.py's.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np

from tmkt_cli.analysis.stats import grouped_bootstrap
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import write_bytes, write_text

PREDICTIONS_GZ = "predictions.csv.gz"
TEST_RECORDINGS = "test_recordings.csv"
EVAL_PREDICTIONS = "predictions.csv"


def run_predictions(run_folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray,
                                               np.ndarray] | None:
    """({head: predicted classes}, labels, image_index) from the eval of a training run
    folder's last checkpoint (``<run>/../eval/predictions.csv``; ``eval-distill/`` for a
    CKD student), or None when it has not been evaluated."""
    from tmkt_cli.config import eval_folder_name

    run_folder = Path(run_folder)
    path = run_folder.parent / eval_folder_name(run_folder.name) / EVAL_PREDICTIONS
    if not path.is_file():
        return None
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    if not rows:
        return None
    heads = [c[len("pred_"):] for c in rows[0] if c.startswith("pred_")]
    preds = {h: np.array([int(r[f"pred_{h}"]) for r in rows]) for h in heads}
    return (preds, np.array([int(r["label"]) for r in rows]),
            np.array([int(r["image_index"]) for r in rows]))


def write_predictions(rows: list[dict], base: Path, out: Path) -> list[Path]:
    """Gather the predictions of ``rows`` (runs.csv rows; ``run`` relative to ``base``) into
    :data:`PREDICTIONS_GZ` and :data:`TEST_RECORDINGS` in ``out``; nothing when no run has
    been evaluated."""
    lines, tests = ["run,head,pred"], {}
    for row in rows:
        found = run_predictions(Path(base) / row["run"])
        if found is None:
            continue
        preds, labels, groups = found
        tests.setdefault(row["dataset"], (labels, groups))
        for head, p in preds.items():
            lines.append(f"{row['run']},{head},{' '.join(map(str, p))}")
    if not tests:
        return []
    recordings = ["dataset,index,label,image_index"] + [
        f"{d},{i},{y},{g}" for d, (labels, groups) in sorted(tests.items())
        for i, (y, g) in enumerate(zip(labels, groups, strict=True))]
    gz = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)  # byte-stable
    write_bytes(Path(out) / PREDICTIONS_GZ, gz)
    write_text(Path(out) / TEST_RECORDINGS, "\n".join(recordings) + "\n")
    return [Path(out) / PREDICTIONS_GZ, Path(out) / TEST_RECORDINGS]


def read_predictions(folder: Path) -> tuple[dict[tuple[str, str], np.ndarray],
                                            dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """({(run, head): predictions}, {dataset: (labels, image_index)}) from the files beside a
    runs.csv, or None when they are not there."""
    gz, rec = Path(folder) / PREDICTIONS_GZ, Path(folder) / TEST_RECORDINGS
    if not gz.is_file() or not rec.is_file():
        return None
    try:
        text = gzip.decompress(gz.read_bytes()).decode()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise TmktError(f"{gz}: not a gzip file of predictions ({type(e).__name__})") from None
    preds = {(r["run"], r["head"]): np.array(r["pred"].split(), dtype=np.int64)
             for r in csv.DictReader(io.StringIO(text))}
    by_dataset: dict[str, list] = {}
    for r in csv.DictReader(io.StringIO(rec.read_text())):
        by_dataset.setdefault(r["dataset"], []).append((int(r["label"]), int(r["image_index"])))
    tests = {d: (np.array([v[0] for v in vs]), np.array([v[1] for v in vs]))
             for d, vs in by_dataset.items()}
    return preds, tests


def seed_mean_hits(runs: dict[int, dict], preds: dict, labels: np.ndarray,
                   seeds: list[int]) -> np.ndarray | None:
    """Per test recording, the share of ``seeds`` whose run (its chosen head) got it right."""
    hits = []
    for s in seeds:
        p = preds.get((runs[s]["run"], runs[s]["chosen_head"]))
        if p is None or p.shape != labels.shape:
            return None
        hits.append(p == labels)
    return np.mean(hits, axis=0)


def bootstrap_difference(a: dict[int, dict], b: dict[int, dict], preds: dict,
                         test: tuple[np.ndarray, np.ndarray], seed: int = 0):
    """The grouped-bootstrap interval of "a minus b" (runs by seed, paired seeds only) on the
    seed-mean hits, or None without predictions for every paired run."""
    seeds = sorted(set(a) & set(b))
    labels, groups = test
    if not seeds:
        return None
    ha, hb = seed_mean_hits(a, preds, labels, seeds), seed_mean_hits(b, preds, labels, seeds)
    if ha is None or hb is None:
        return None
    return grouped_bootstrap(ha, hb, groups, seed=seed), len(seeds)
