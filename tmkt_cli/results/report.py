"""tmkt report: finished runs gathered into one table, beside the published numbers.

Runs are found by their ``manifest.json`` (the folders given, or any folder below them):
training runs (``train-tmkt``, ``distill``, ``pretrain-ann``) and the ``eval`` runs of their
checkpoints. Runs that differ only in their seed form a group (same recipe name, stage and
configuration): the table shows the mean and the sample standard deviation over its seeds.
A two-head run's top-1 is the head the validation rule picks (the benchmark's rule,
:func:`tmkt_cli.results.benchmark.chosen_head`), with both heads beside it.
Figures, in the one style of every tmkt figure (:mod:`tmkt_cli.analysis.style`): training
curves (loss and accuracy per epoch or step, from metrics.jsonl: validation and train, the
mean over seeds with its 95% band; the test split only as one point at the end) and the
data-efficiency figure (top-1 against ``data.event_fraction``, one line per method and heads
layout, drawn only for panels run at several fractions: a line in report.md says what was
left out). The report only reads run folders; loss landscapes, which run networks, are ``tmkt landscape``
(:mod:`tmkt_cli.stages.landscape`), whose figures the report can list.

Writes ``report.md``, ``summary.json``, PNGs and the per-run tables ``runs.csv`` and
``curves.csv`` (:mod:`tmkt_cli.results.benchmark`, which renders the benchmark's tables from them:
``tmkt report --table``) into ``--out``; prints the table and the paths.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tmkt_cli import __version__
from tmkt_cli.analysis import style
from tmkt_cli.analysis.metrics import SeedStats, seed_stats
from tmkt_cli.analysis.stats import mean_interval
from tmkt_cli.config import config_hash
from tmkt_cli.config.variants import flat_keys
from tmkt_cli.errors import TmktError
from tmkt_cli.results import benchmark
from tmkt_cli.runs.artifacts import MANIFEST, read_manifest, write_json, write_text
from tmkt_cli.runs.checkpoints import MODEL_STAGES, SNN_STAGES
from tmkt_cli.runs.runlog import read_metrics

REPORT = "report.md"
SUMMARY = "summary.json"
CURVES = "training_curves.png"
DATA_EFFICIENCY = "data_efficiency.png"


# --------------------------------------------------------------------------------------------
# Published numbers (the KT, TMKT and CKD papers; docs/methods.md cites them): top-1 on the event test split, all event
# training recordings, each paper's own protocol.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublishedResult:
    dataset: str
    """``prepare.dataset`` of the matching recipes."""
    backbone: str
    """``model.backbone``."""
    method: str
    """``method.name``, or ``ckd`` for distill runs."""
    time_steps: int
    size: int
    top1: float
    """Percent."""
    source: str
    note: str = ""


KT = "KT: He, Zhao, Li et al., AAAI 2024 (arXiv 2303.13077)"
TMKT = "TMKT: Xie, Ye et al., arXiv 2511.12150"
CKD = "CKD: Ye, Qian et al., ICME 2025 (arXiv 2507.09269)"

PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("ncaltech101", "vggsnn", "tmkt", 10, 48, 97.93, TMKT),
    PublishedResult("ncaltech101", "vggsnn", "ckd", 10, 48, 97.13, CKD),
    PublishedResult("ncaltech101", "vggsnn", "kt", 10, 48, 92.64, KT,
                    "the released checkpoint; 93.45 as cited by later work"),
    PublishedResult("ncaltech101", "vggsnn", "event_only", 10, 48, 79.66, KT,
                    "direct training on events with TET, reported by KT"),
    PublishedResult("ncaltech101", "vggsnn", "finetune", 10, 48, 79.43, KT,
                    "an RGB-pretrained network fine-tuned on events, reported by KT"),
    PublishedResult("cepdvs", "resnet18", "ckd", 6, 48, 40.20, CKD,
                    "TMKT reports +4.2 points over KT on CEP-DVS (no absolute figure here)"),
)


def published_for(dataset: str, backbone: str, method: str, time_steps: int | None,
                  size: int | None, event_fraction: float | None) -> PublishedResult | None:
    """The published figure for the same dataset, backbone, method and protocol (all event
    training recordings, the paper's T and size), if any."""
    if event_fraction != 1.0:
        return None
    for p in PUBLISHED:
        if (p.dataset, p.backbone, p.method, p.time_steps, p.size) == (
                dataset, backbone, method, time_steps, size):
            return p
    return None


# --------------------------------------------------------------------------------------------
# Finding and reading runs
# --------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One finished training run, with the eval of its checkpoint when there is one."""

    folder: Path
    stage: str
    name: str
    seed: int
    method: str
    dataset: str
    backbone: str
    time_steps: int | None
    size: int | None
    event_fraction: float | None
    """``data.event_fraction``; None for an ANN teacher (it trains on all the images)."""
    config: dict
    """The stage's part of the recipe without the seed: what the group shares."""
    output_hash: str
    metrics: dict
    evaluation: dict | None = None
    """eval.json of an eval run of this run."""
    recipe: dict = field(default_factory=dict)
    """The run's config.yaml (the whole recipe as it ran)."""
    manifest: dict = field(default_factory=dict)
    last_eval: dict | None = None
    """The last ``eval`` record of metrics.jsonl: every head on the test and validation
    splits at the last checkpoint."""

    @property
    def group_key(self) -> tuple[str, str, str]:
        return (self.name, self.stage, config_hash(self.config))

    @property
    def heads(self) -> tuple[dict[str, float | None], str] | None:
        """(each head's top-1 on the test and validation splits, the head the validation
        rule picks) from the last evaluation; None without one."""
        return benchmark.record_heads(self)

    def head_top1(self, head: str) -> float | None:
        """Test accuracy of ``head`` (event or static) at the last checkpoint."""
        heads = self.heads
        return heads[0][f"test_{head}"] if heads else None

    @property
    def top1(self) -> float | None:
        """Test accuracy at the end of training (the last checkpoint): for a two-head run,
        of the head its validation split picks (the event head on a tie or without one)."""
        heads = self.heads
        if heads is None or heads[0][f"test_{heads[1]}"] is None:
            return self.metrics.get("test_acc")
        return heads[0][f"test_{heads[1]}"]

    @property
    def top5(self) -> float | None:
        if self.evaluation is not None:
            return self.evaluation.get("top5")
        return self.metrics.get("test_top5")


def find_run_folders(paths: list[Path]) -> list[Path]:
    """Folders holding a manifest: each path itself, or every one below it."""
    found: dict[Path, Path] = {}  # resolved -> as given: a folder named twice counts once
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise TmktError(f"{p}: not found (a RUN argument of tmkt report)")
        if (p / MANIFEST).is_file():
            found.setdefault(p.resolve(), p)
        elif p.is_dir():
            for m in sorted(p.rglob(MANIFEST)):
                found.setdefault(m.parent.resolve(), m.parent)
        else:
            raise TmktError(f"{p}: not a run folder (a RUN argument of tmkt report)")
    return list(found.values())


def _read_config(folder: Path) -> dict:
    path = folder / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TmktError(f"{path}: cannot read the run's config ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise TmktError(f"{path}: not a recipe")
    return data


def read_run(folder: Path, manifest: dict) -> RunRecord:
    """A training run's record from its manifest and config.yaml."""
    cfg = _read_config(folder)
    stage = manifest["stage"]
    prepare = _prepared_with(manifest) or cfg.get("prepare", {})
    if stage == "pretrain-ann":
        method, backbone = "ann", cfg.get("pretrain_ann", {}).get("backbone", "?")
    else:
        method = "ckd" if stage == "distill" else cfg.get("method", {}).get("name", "?")
        backbone = cfg.get("model", {}).get("backbone", "?")
    shared = {k: v for k, v in manifest.get("stage_config", {}).items() if k != "seed"}
    # The teacher's folder is a path, not configuration (older manifests still hold it).
    if isinstance(shared.get("distill"), dict):
        shared["distill"] = {k: v for k, v in shared["distill"].items() if k != "teacher"}
    return RunRecord(
        folder=folder, stage=stage, name=str(cfg.get("name", folder.parent.parent.name)),
        seed=int(cfg.get("seed", -1)), method=method, dataset=str(prepare.get("dataset", "?")),
        backbone=str(backbone), time_steps=prepare.get("time_steps"), size=prepare.get("size"),
        event_fraction=(None if stage == "pretrain-ann"
                        else float(cfg.get("data", {}).get("event_fraction", 1.0))),
        config=shared,
        output_hash=manifest.get("output_hash") or "", metrics=manifest.get("metrics") or {},
        recipe=cfg, manifest=manifest, last_eval=benchmark.last_eval(read_metrics(folder)))


def _prepared_with(manifest: dict) -> dict | None:
    """The ``prepare`` settings of the dataset a run read (name, T, size), from that
    dataset's own manifest: the run's recipe may point ``paths.dataset`` anywhere, so its
    ``prepare`` section need not describe it. None when the dataset folder is not found."""
    path = manifest.get("inputs", {}).get("dataset", {}).get("path")
    if not path or not (Path(path) / MANIFEST).is_file():
        return None
    try:
        prepared = read_manifest(Path(path)) or {}
    except TmktError:
        return None
    section = prepared.get("stage_config", {}).get("prepare")
    return section if isinstance(section, dict) else None


@dataclass
class Collection:
    records: list[RunRecord] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_runs(paths: list[Path]) -> Collection:
    """Every finished training run under ``paths``, each joined with the eval of its
    checkpoint (matched by the output hash the eval recorded, so a run trained again after
    its eval is not joined with the stale figures)."""
    out = Collection()
    evals: list[tuple[Path, dict]] = []
    by_folder: dict[Path, RunRecord] = {}
    first_of: dict[str, Path] = {}  # output hash -> the folder counted
    for folder in find_run_folders(paths):
        try:
            manifest = read_manifest(folder)
        except TmktError as e:
            out.skipped.append((folder, str(e)))
            continue
        stage = manifest.get("stage") if manifest else None
        if stage not in (*MODEL_STAGES, "eval"):
            continue  # prepare, cam: nothing to tabulate
        if manifest.get("status") != "complete":
            out.skipped.append((folder, f"{stage} run is {manifest.get('status')}"))
            continue
        if stage == "eval":
            evals.append((folder, manifest))
            continue
        record, why = _read_run_or_why(folder, manifest)
        if record is None:  # one damaged folder should not hide the others
            out.skipped.append((folder, why))
            continue
        if record.output_hash in first_of:  # a copied folder: the same config, seed, weights
            out.skipped.append((folder, f"the same run as {first_of[record.output_hash]} "
                                        f"(same config, seed and outputs): counted once"))
            continue
        first_of[record.output_hash] = folder
        by_folder[folder.resolve()] = record
        out.records.append(record)
    _join_evals(out, evals, by_folder)
    return out


DAMAGE = (TmktError, OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError)
"""What reading a damaged or hand-edited run folder can raise."""


def _read_run_or_why(folder: Path, manifest: dict) -> tuple[RunRecord | None, str]:
    try:
        return read_run(folder, manifest), ""
    except DAMAGE as e:
        return None, (str(e) if isinstance(e, TmktError)
                      else f"damaged run folder ({type(e).__name__}: {e})")


def _join_evals(out: Collection, evals: list[tuple[Path, dict]],
                by_folder: dict[Path, RunRecord]) -> None:
    """Each eval run joined with the training run it evaluated (see :func:`collect_runs`)."""
    by_hash = {r.output_hash: r for r in out.records}
    for folder, manifest in evals:
        source = manifest.get("inputs", {}).get("run", {})
        record = by_hash.get(source.get("hash"))
        if record is None and source.get("path"):
            # The evaluated run was not among the folders given: read it from where the eval
            # found it, when it is still the same run.
            src = Path(source["path"])
            try:
                src_manifest = read_manifest(src) if (src / MANIFEST).is_file() else None
            except TmktError:
                src_manifest = None
            if src_manifest and src_manifest.get("output_hash") == source.get("hash") \
                    and src.resolve() not in by_folder:
                record = _read_run_or_why(src, src_manifest)[0]
            if record is not None:
                by_folder[src.resolve()] = record
                out.records.append(record)
                by_hash[record.output_hash] = record
        if record is None:
            out.skipped.append((folder, "eval of a run that is not there any more or was "
                                        "trained again since"))
            continue
        try:
            evaluation = json.loads((folder / "eval.json").read_text())
        except (OSError, json.JSONDecodeError):
            out.skipped.append((folder, "eval.json missing or unreadable"))
            continue
        if evaluation.get("source", {}).get("which", "last") != "last":
            continue  # the table's eval columns describe the last checkpoint, as top-1 does
        record.evaluation = evaluation
        facts = record.evaluation.get("dataset", {})
        record.time_steps = facts.get("time_steps", record.time_steps)
        record.size = facts.get("size", record.size)


# --------------------------------------------------------------------------------------------
# Groups over seeds
# --------------------------------------------------------------------------------------------

@dataclass
class Group:
    label: str
    runs: list[RunRecord]

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    def stats(self, value) -> SeedStats:
        return seed_stats(value(r) for r in self.runs)

    @property
    def published(self) -> PublishedResult | None:
        r = self.first
        return published_for(r.dataset, r.backbone, r.method, r.time_steps, r.size,
                             r.event_fraction)


def group_runs(records: list[RunRecord]) -> list[Group]:
    """Runs with the same recipe name, stage and configuration but for the seed, in a stable
    order. When one name and stage hold several configurations (e.g. another
    ``data.event_fraction`` set on the command line), their labels name what differs."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.name, r.stage, r.event_fraction or 0.0, r.seed)):
        groups[r.group_key].append(r)
    by_name: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for key in groups:
        by_name[key[:2]].append(key)
    out = []
    for (name, _stage), keys in by_name.items():
        flat = {key: flat_keys(groups[key][0].config) for key in keys}
        varying = sorted({k for key in keys for k in flat[key]
                          if len({repr(flat[other].get(k)) for other in keys}) > 1})
        for key in keys:
            label = name
            if len(keys) > 1:
                label += " [" + ", ".join(f"{k}={flat[key].get(k)}" for k in varying[:3]) + \
                    (", ..." if len(varying) > 3 else "") + "]"
            out.append(Group(label, groups[key]))
    return out


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------

def uses_step_budget(record: RunRecord) -> bool:
    """A run trained for a number of optimizer steps (``epochs: 0``) is drawn against steps."""
    train = record.config.get("pretrain_ann", {}).get("train") if record.stage == "pretrain-ann" \
        else record.config.get("train")
    return isinstance(train, dict) and train.get("epochs") == 0


def training_curves(records: list[dict], by: str = "epoch") -> dict[str, dict[int, float]]:
    """metrics.jsonl records -> series against ``by`` (``epoch`` or ``step``): the test
    (``eval_*``) and validation (``val_*``, where the run has a validation split) loss and
    accuracy of each evaluation, and the training loss and accuracy averaged over the logged
    steps since the previous evaluation (per epoch, or per evaluation interval)."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    evals = sorted(int(r["step"]) for r in records
                   if r.get("kind") == "eval" and isinstance(r.get("step"), int))
    for rec in records:
        x = rec.get(by)
        if not isinstance(x, int | float):
            continue
        if rec.get("kind") == "train":
            if by == "step":  # the evaluation this step's interval ends at
                x = next((e for e in evals if e >= x), x)
            for key in ("loss", "acc"):
                if isinstance(rec.get(key), int | float):
                    sums[f"train_{key}"][int(x)].append(float(rec[key]))
        elif rec.get("kind") == "eval":
            for key, name in (("loss", "eval_loss"), ("acc", "eval_acc"),
                              ("val_loss", "val_loss"), ("val_acc", "val_acc")):
                if isinstance(rec.get(key), int | float):
                    curves[name][int(x)] = float(rec[key])
    for name, per_x in sums.items():
        curves[name] = {x: float(np.mean(v)) for x, v in per_x.items()}
    return dict(curves)


def epoch_curves(records: list[dict]) -> dict[str, dict[int, float]]:
    """Per-epoch series (:func:`training_curves` by epoch)."""
    return training_curves(records, "epoch")


def group_curves(per_run: list[dict[str, dict[int, float]]]):
    """Every series' mean over runs at each x, with its 95% t interval (plotting.Band)."""
    from tmkt_cli.analysis.plotting import Band

    out = {}
    for key in sorted({k for curves in per_run for k in curves}):
        per_x: dict[int, list[float]] = defaultdict(list)
        for curves in per_run:
            for x, value in curves.get(key, {}).items():
                per_x[x].append(value)
        if per_x:
            out[key] = Band.over_seeds(per_x)
    return out


def final_points(per_run: list[dict[str, dict[int, float]]]) -> dict[str, tuple]:
    """``test_loss`` and ``test_acc``: (the last x, the runs' values at their own last
    evaluation with the mean's 95% interval over seeds)."""
    out = {}
    for key, name in (("eval_loss", "test_loss"), ("eval_acc", "test_acc")):
        ends = [max(curves[key].items()) for curves in per_run if curves.get(key)]
        if ends:
            out[name] = (max(x for x, _ in ends), mean_interval(v for _, v in ends))
    return out


def line_key(record: RunRecord) -> tuple[str, str, str]:
    """(method, heads, variant beyond fraction, heads and draw) of a run: what its line in
    a figure shows, and so its colour and marker (:mod:`tmkt_cli.analysis.style`)."""
    method = benchmark.run_method(record.stage, record.recipe)
    heads = str((record.recipe.get("model") or {}).get("heads", "separate"))
    extra = benchmark.variant_extra(str(record.recipe.get("variant") or ""))
    if (record.recipe.get("method") or {}).get("equal_compute") and \
            "equal_compute" not in extra:
        extra = "+".join(p for p in (extra, "equal_compute-true") if p)
    return method, heads if method in benchmark.TWO_STREAM else "", extra


def data_efficiency_points(groups: list[Group]) -> dict[str, dict[tuple, list]]:
    """panel ("dataset / backbone") -> line (:func:`line_key`) -> [(event fraction, top-1
    over seeds with its 95% interval)], over every SNN run of that line and fraction (the
    SNN on the images has no fraction to plot against)."""
    pooled: dict[str, dict[tuple, dict[float, list[float]]]] = \
        defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for g in groups:
        for r in g.runs:
            if r.stage in SNN_STAGES and r.top1 is not None and r.method != "static_only":
                pooled[f"{r.dataset} / {r.backbone}"][line_key(r)][r.event_fraction].append(
                    r.top1)
    return {panel: {line: [(f, mean_interval(v)) for f, v in sorted(points.items())]
                    for line, points in sorted(lines.items(), key=lambda kv: _line_order(
                        kv[0]))}
            for panel, lines in sorted(pooled.items())}


def _line_order(line: tuple[str, str, str]) -> tuple:
    method, heads, extra = line
    order = benchmark.METHOD_ORDER
    return (order.index(method) if method in order else len(order), method,
            benchmark.LAYOUT_ORDER.index(heads) if heads in benchmark.LAYOUT_ORDER else 9,
            extra)


def headroom_rows(groups: list[Group]) -> list[list[str]]:
    """The headroom measure (issue 14) per dataset and backbone, from the runs given: (a)
    event_only on each event fraction, (b) the SNN on the images (``static_only``, tested on
    the test images), (c) event_only on every recording; top-1 of the last checkpoint, mean
    over seeds. Empty unless the runs hold a static_only run or event_only at 100% and at a
    smaller fraction."""
    by_panel: dict[str, dict] = defaultdict(lambda: {"images": [], "events": defaultdict(list)})
    for g in groups:
        for r in g.runs:
            if r.stage != "train-tmkt" or r.top1 is None:
                continue
            panel = by_panel[f"{r.dataset} / {r.backbone}"]
            if r.method == "static_only":
                panel["images"].append(r.top1)
            elif r.method == "event_only" and not r.config.get("method", {}).get(
                    "equal_compute"):
                panel["events"][r.event_fraction].append(r.top1)
    rows = []
    for name, panel in sorted(by_panel.items()):
        images, events = seed_stats(panel["images"]), panel["events"]
        everything = seed_stats(events.get(1.0, []))
        scarce = sorted(f for f in events if f is not None and f < 1.0)
        if not scarce or (images.n == 0 and everything.n == 0):
            continue
        for f in scarce:
            a = seed_stats(events[f])
            rows.append([name, f"{f:.1%}" if f < 0.01 else f"{f:.0%}", a.format(),
                         images.format(), everything.format(),
                         _gap(images, a), _gap(everything, a)])
    return rows


def _gap(high: SeedStats, low: SeedStats) -> str:
    if high.n == 0 or low.n == 0:
        return "–"
    return f"{100 * (high.mean - low.mean):+.1f}"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

COLUMNS = ("recipe", "stage", "method", "dataset", "backbone", "T", "size", "events", "seeds",
           "top-1 (%)", "event head (%)", "static head (%)", "best val (%)", "best test (%)", "top-5 (%)", "firing rate",
           "SNN energy (µJ)", "published top-1 (%)")


def best_on_validation(r) -> float | None:
    """Test accuracy of the checkpoint chosen on the validation split (None without one)."""
    return r.metrics.get("best_acc") if r.metrics.get("best_chosen_on") == "validation" \
        else None


def best_on_test(r) -> float | None:
    """The best test accuracy over training: chosen on the test split, optimistic."""
    if r.metrics.get("best_chosen_on") == "validation":
        return r.metrics.get("best_test_acc")
    return r.metrics.get("best_acc")


def _eval_value(path: tuple[str, ...]):
    def get(r: RunRecord):
        value = r.evaluation
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value
    return get


def table_rows(groups: list[Group]) -> list[list[str]]:
    rows = []
    for g in groups:
        r = g.first
        energy = g.stats(lambda run: (_eval_value(("energy", "snn_pj"))(run) or math.nan)
                         * 1e-6)
        firing = g.stats(_eval_value(("mean_firing_rate",)))
        pub = g.published
        rows.append([
            g.label, r.stage, r.method, r.dataset, r.backbone, str(r.time_steps or "?"),
            str(r.size or "?"),
            "–" if r.event_fraction is None else f"{100 * r.event_fraction:g}%",
            str(len(g.runs)),
            g.stats(lambda run: run.top1).format(),
            g.stats(lambda run: run.head_top1("event")).format(),
            g.stats(lambda run: run.head_top1("static")).format(),
            g.stats(best_on_validation).format(),
            g.stats(best_on_test).format(),
            g.stats(lambda run: run.top5).format(),
            firing.format(scale=1.0, digits=4), energy.format(scale=1.0, digits=3),
            f"{pub.top1:.2f}" if pub else "–"])
    return rows


# Columns that, when every group shares their value, move from the terminal table to its
# title: a terminal is narrower than a Markdown page.
SHARED_COLUMNS = ("stage", "dataset", "backbone", "T", "size", "events", "published top-1 (%)")


def terminal_table(groups: list[Group]) -> Table:
    rows = table_rows(groups)
    shared = [i for i, col in enumerate(COLUMNS)
              if col in SHARED_COLUMNS and len({row[i] for row in rows}) == 1]
    facts = ", ".join(f"{COLUMNS[i]} {rows[0][i]}" for i in shared if rows[0][i] != "–")
    table = Table(title=escape(f"tmkt report: {sum(len(g.runs) for g in groups)} runs in "
                               f"{len(groups)} groups" + (f" ({facts})" if facts else "")),
                  title_justify="left")
    kept = [i for i in range(len(COLUMNS)) if i not in shared]
    for i in kept:
        table.add_column(COLUMNS[i], overflow="fold",
                         justify="left" if i < 5 else "right")
    for row in rows:
        table.add_row(*(escape(row[i]) for i in kept))  # labels hold [key=value]
    return table


def markdown_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(groups: list[Group], collection: Collection, figures: dict[str, Path],
                    out: Path, grids: list[Path] = (), tables: list[Path] = (),
                    notes: list[str] = ()) -> str:
    runs = sum(len(g.runs) for g in groups)
    lines = [
        "# tmkt report", "",
        f"Generated by tmkt {__version__} on "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from {runs} finished "
        f"run(s) in {len(groups)} group(s).", "",
        markdown_table(COLUMNS, table_rows(groups)), "",
        "- **top-1**: test accuracy at the end of training (the last checkpoint); for an ANN "
        "teacher, on the test images. Mean ± sample standard deviation (ddof = 1) over the "
        "seeds of a group (runs that differ only in their seed); a single seed shows no "
        "spread. A run with two heads (kt, tmkt, ckd with `model.heads: separate` or "
        "`residual`) counts with the head its validation split picks (the event head on a "
        "tie or without a validation split), whatever its `model.test_head`; **event head** "
        "and **static head** are each head's own top-1 on the same events.",
        "- **best val**: test accuracy of the checkpoint chosen on the validation split "
        "(`data.val_fraction`; – without one).",
        "- **best test**: the best test accuracy over training, chosen on the test split "
        "(the published numbers' way): optimistic; compare methods on top-1 or best val.",
        "- **top-5, firing rate, SNN energy**: from `tmkt eval` of the run (mean over the seeds "
        "that have one; energy per sample, docs/evaluation.md).",
        "- **published**: the paper's top-1 for the same dataset, backbone, method, T and size "
        "with all event recordings (below).", "",
        "## Published numbers", "",
        markdown_table(("dataset", "backbone", "method", "T", "size", "top-1 (%)", "source",
                        "note"),
                       [[p.dataset, p.backbone, p.method, str(p.time_steps), str(p.size),
                         f"{p.top1:.2f}", p.source, p.note] for p in PUBLISHED]), "",
    ]
    lines += _headroom_section(groups)
    lines += _figures_section(figures, notes, grids, out)
    lines += _tables_section(tables, out)
    lines += ["## Runs", "",
              markdown_table(("group", "seed", "folder", "top-1 (%)", "best val (%)",
                              "best test (%)", "eval"),
                             [[g.label, str(r.seed), str(r.folder),
                               _pct(r.top1), _pct(best_on_validation(r)),
                               _pct(best_on_test(r)),
                               "yes" if r.evaluation else "no"]
                              for g in groups for r in g.runs]), ""]
    if collection.skipped:
        lines += ["## Skipped", ""]
        lines += [f"- `{folder}`: {why}" for folder, why in collection.skipped]
        lines.append("")
    return "\n".join(lines)


def _headroom_section(groups: list[Group]) -> list[str]:
    headroom = headroom_rows(groups)
    if not headroom:
        return []
    return ["## Headroom", "",
            "Is there anything for transfer to recover? A setting is informative when "
            "(b) and (c) both stand well above (a). Top-1 (%) of the last checkpoints, "
            "mean ± sd over seeds.", "",
            markdown_table(("dataset / backbone", "event recordings",
                            "(a) event_only on events", "(b) the SNN on images",
                            "(c) event_only on every recording", "(b) - (a)",
                            "(c) - (a)"), headroom), ""]


def _figures_section(figures: dict[str, Path], notes: list[str], grids: list[Path],
                     out: Path) -> list[str]:
    """The figures drawn, and a line for each one not drawn saying why."""
    if not figures and not notes:
        return []
    return ["## Figures", "",
            *(f"- {title}: [{path.name}]({_relative(path, out)})"
              for title, path in figures.items()),
            *(f"- {note}" for note in notes),
            *(f"- raw loss-landscape grid: [{path.name}]({_relative(path, out)})"
              for path in grids), ""]


def _tables_section(tables: list[Path], out: Path) -> list[str]:
    if not tables:
        return []
    return ["## Per-run tables", "",
            "One row per finished training run (the heads, the head the validation rule "
            "picks, gradient shares, CKA, provenance) and the learning curves in long "
            "form; `tmkt report --table` renders the benchmark's tables and figures, "
            "with 95% intervals, from them:", "",
            *(f"- [{path.name}]({_relative(path, out)})" for path in tables), ""]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _relative(path: Path, out: Path) -> str:
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def summary_data(groups: list[Group], collection: Collection) -> dict:
    def stats(s: SeedStats) -> dict:
        return {"mean": None if math.isnan(s.mean) else s.mean,
                "std": None if math.isnan(s.std) else s.std, "n": s.n}

    return {"groups": [{
        "label": g.label, "name": g.first.name, "stage": g.first.stage,
        "method": g.first.method, "dataset": g.first.dataset, "backbone": g.first.backbone,
        "time_steps": g.first.time_steps, "size": g.first.size,
        "event_fraction": g.first.event_fraction,
        "top1": stats(g.stats(lambda r: r.top1)),
        "event_head": stats(g.stats(lambda r: r.head_top1("event"))),
        "static_head": stats(g.stats(lambda r: r.head_top1("static"))),
        "best": stats(g.stats(lambda r: r.metrics.get("best_acc"))),
        "best_val": stats(g.stats(best_on_validation)),
        "best_test": stats(g.stats(best_on_test)),
        "top5": stats(g.stats(lambda r: r.top5)),
        "published_top1": g.published.top1 if g.published else None,
        "runs": [{"seed": r.seed, "folder": str(r.folder), "top1": r.top1,
                  "chosen_head": r.heads[1] if r.heads else None,
                  "best": r.metrics.get("best_acc"), "best_val": best_on_validation(r),
                  "best_test": best_on_test(r), "top5": r.top5} for r in g.runs],
    } for g in groups], "skipped": [{"folder": str(f), "reason": why}
                                    for f, why in collection.skipped]}


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

@dataclass
class ReportResult:
    markdown: Path
    summary: Path
    figures: dict[str, Path]
    """Title -> PNG."""
    grids: list[Path]
    """Raw arrays behind figures drawn by other commands (loss-landscape grids, npz)."""
    groups: list[Group]


def make_report(runs: list[Path], out: Path, ui: Console, *,
                extra_figures: dict[str, Path] | None = None,
                grids: list[Path] = ()) -> ReportResult:
    """Gather the finished runs under ``runs`` into ``out`` (see the module doc).
    ``extra_figures`` (title -> PNG) and ``grids`` (raw arrays) drawn by other commands, such
    as ``tmkt landscape``, are listed in report.md too."""
    out = Path(out)
    collection = collect_runs(list(runs))
    if not collection.records:
        why = f" ({len(collection.skipped)} unfinished or unreadable)" \
            if collection.skipped else ""
        raise TmktError(f"no finished train-tmkt, distill or pretrain-ann runs under "
                        f"{', '.join(str(r) for r in runs)}{why}")
    groups = group_runs(collection.records)
    out.mkdir(parents=True, exist_ok=True)
    figures, notes = draw_figures(groups, out)
    figures.update(extra_figures or {})
    grids = list(grids)
    tables = write_run_tables(collection, list(runs), out)

    markdown = out / REPORT
    write_text(markdown, render_markdown(groups, collection, figures, out, grids, tables,
                                               notes))
    summary = out / SUMMARY
    write_json(summary, summary_data(groups, collection))

    ui.print(terminal_table(groups))
    for folder, why in collection.skipped:
        ui.print(f"[yellow]skipped[/yellow] {escape(str(folder))}: {escape(why)}")
    ui.print(f"report:  {markdown}")
    ui.print(f"summary: {summary}")
    for path in tables:
        ui.print(f"table:   {path}")
    for title, path in figures.items():
        ui.print(f"figure:  {path}  ({title})")
    for path in grids:
        ui.print(f"grid:    {path}")
    for note in notes:
        ui.print(note)
    return ReportResult(markdown, summary, figures, grids, groups)


def write_run_tables(collection: Collection, runs: list[Path], out: Path) -> list[Path]:
    """runs.csv and curves.csv of the runs collected (:mod:`tmkt_cli.results.benchmark`), and the
    evaluated runs' per-recording predictions beside them (:mod:`tmkt_cli.results.predictions`); a
    run they cannot hold (no evaluation logged) joins the skipped list with why."""
    from tmkt_cli.results.predictions import write_predictions

    base = benchmark.common_base(runs, [r.folder for r in collection.records])
    rows, curves, skipped = benchmark.rows_from_records(collection.records, base)
    collection.skipped.extend(skipped)
    return [*benchmark.write_run_tables(rows, curves, out),
            *write_predictions(rows, base, out)]


def draw_figures(groups: list[Group], out: Path) -> tuple[dict[str, Path], list[str]]:
    """The training curves and the data-efficiency figure of the groups: (title -> PNG, the
    lines saying what was not drawn and why). A PNG of an earlier report that this one does
    not draw is removed (it would disagree with the table)."""
    from tmkt_cli.analysis import plotting

    figures: dict[str, Path] = {}
    panels = curve_panels(groups)
    if panels:
        figures["training curves"] = plotting.save_png(
            plotting.training_curves_figure(panels), out / CURVES)
    else:
        (out / CURVES).unlink(missing_ok=True)
    series = {panel: [plotting.Series(
        style.series_label(style.line_name(*line), [iv.n for _, iv in points]),
        style.line_style(*line), {f: plotting.scaled(iv, 100) for f, iv in points})
        for line, points in lines.items()]
        for panel, lines in data_efficiency_points(groups).items()}
    drawn, notes = plotting.split_single_fraction(
        {panel: plotting.fractions_of(lines) for panel, lines in series.items()},
        DATA_EFFICIENCY, "panels")
    if drawn:
        figures["data efficiency"] = plotting.save_png(plotting.data_efficiency_figure(
            {panel: series[panel] for panel in drawn}), out / DATA_EFFICIENCY)
    else:
        (out / DATA_EFFICIENCY).unlink(missing_ok=True)
    return figures, notes


def curve_panels(groups: list[Group]) -> dict[tuple[str, str], list]:
    """(row title, x axis) -> the CurveSets of the training-curves figure: the ANN teachers
    on their own row, and the SNNs on one row per event fraction when they differ."""
    from tmkt_cli.analysis.plotting import CurveSet

    fractions = {g.first.event_fraction for g in groups if g.first.stage != "pretrain-ann"}
    found: dict[tuple[str, str], list[tuple[Group, list[dict]]]] = {}
    for g in groups:
        by = "step" if uses_step_budget(g.first) else "epoch"
        per_run = [training_curves(read_metrics(r.folder), by) for r in g.runs]
        if any(per_run):
            found.setdefault((_row_title(g, len(fractions) > 1), by), []).append(
                (g, [c for c in per_run if c]))
    counts: dict[str, list[int]] = defaultdict(list)  # one legend entry per group label
    for entries in found.values():
        for g, per_run in entries:
            counts[_curve_label(g, len(fractions) > 1)].append(len(per_run))
    panels = {}
    for key, entries in found.items():
        looks = style.distinct_styles(line_key(g.first) for g, _ in entries)
        labels = [_curve_label(g, len(fractions) > 1) for g, _ in entries]
        panels[key] = [CurveSet(style.series_label(label, counts[label]), look,
                                group_curves(per_run), final_points(per_run))
                       for (_, per_run), look, label in zip(entries, looks, labels,
                                                            strict=True)]
    return panels


def _curve_label(g: Group, by_fraction: bool) -> str:
    """The group's label without what its row already says (the event fraction) and the
    variant folder (named after the same overrides)."""
    if not by_fraction or " [" not in g.label:
        return g.label
    name, _, rest = g.label.partition(" [")
    kept = [item for item in rest.rstrip("]").split(", ")
            if not item.startswith(("data.event_fraction=", "variant="))]
    return name + (f" [{', '.join(kept)}]" if kept else "")


def _row_title(g: Group, by_fraction: bool) -> str:
    if g.first.stage == "pretrain-ann":
        return "ANN teacher (images)"
    fraction = g.first.event_fraction
    return f"SNN, {style.fraction_text(fraction)} of the recordings" \
        if by_fraction and fraction is not None else "SNN"


def rows_from_run_folders(paths: list[Path]) -> tuple[list[dict[str, str]],
                                                      list[dict[str, str]],
                                                      list[tuple[Path, str]]]:
    """runs.csv and curves.csv rows of every finished training run under ``paths``
    (:func:`collect_runs` finds them), and the folders skipped with why."""
    collection = collect_runs(list(paths))
    base = benchmark.common_base(list(paths), [r.folder for r in collection.records])
    rows, curves, skipped = benchmark.rows_from_records(collection.records, base)
    return rows, curves, [*collection.skipped, *skipped]
