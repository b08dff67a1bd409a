"""tmkt report: finding runs, grouping over seeds (mean, std, n), joining evals, the Markdown
table beside the published numbers, the figures, and the loss landscape."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from tmkt_cli.analysis.landscape import filter_normalized_direction, loss_landscape
from tmkt_cli.errors import TmktError
from tmkt_cli.results import report
from tmkt_cli.runs.artifacts import open_stage
from tmkt_cli.stages import landscape

sys.path.insert(0, str(Path(__file__).parent))
from test_eval import (  # noqa: E402
    _run_eval,
    assert_png,
    fake_training_run,
    make_prepared_dataset,
    toy_recipe,
)


def curve(final_acc: float, epochs: int = 3) -> list[dict]:
    """metrics.jsonl records of a run that ends at ``final_acc``."""
    records = []
    for e in range(1, epochs + 1):
        for step in (1, 2):
            records.append({"kind": "train", "step": 2 * (e - 1) + step, "epoch": e,
                            "loss": 2.0 / e + 0.1 * step, "acc": 0.3 * e / epochs})
        records.append({"kind": "eval", "step": 2 * e, "epoch": e, "loss": 1.5 / e,
                        "acc": final_acc * e / epochs, "top5": 1.0, "samples": 6.0})
    return records


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """toy-tmkt over seeds 1, 2, 3 (0.8, 0.9, 1.0); toy-kt over seeds 1, 2 (0.7, 0.6) and
    again at 50 % of the events in another runs folder (0.5); an ANN teacher; an unfinished
    run; an eval."""
    tmp = tmp_path_factory.mktemp("report")
    make_prepared_dataset(tmp / "prepared")
    for seed, acc in ((1, 0.8), (2, 0.9), (3, 1.0)):
        fake_training_run(toy_recipe(tmp, "toy-tmkt", f"seed={seed}", "method.name=tmkt"),
                          metrics_records=curve(acc),
                          final={"test_acc": acc, "best_acc": acc + 0.01})
    for seed, acc in ((1, 0.7), (2, 0.6)):
        fake_training_run(toy_recipe(tmp, "toy-kt", f"seed={seed}", "method.name=kt"),
                          metrics_records=curve(acc), final={"test_acc": acc, "best_acc": acc})
    fake_training_run(toy_recipe(tmp, "toy-kt", "seed=1", "method.name=kt",
                                 "data.event_fraction=0.5", f"paths.runs={tmp}/runs-half"),
                      metrics_records=curve(0.5), final={"test_acc": 0.5, "best_acc": 0.5})
    _run_eval(toy_recipe(tmp, "toy-tmkt", "seed=1", "method.name=tmkt"))
    fake_training_run(toy_recipe(tmp, "toy-ckd", "seed=1", "pretrain_ann.backbone=resnet18"),
                      "pretrain-ann", final={"test_acc": 0.95, "best_acc": 0.95})
    unfinished = toy_recipe(tmp, "toy-kt", "seed=3").stage_dir("train-tmkt")
    run = open_stage(unfinished, "train-tmkt", "x: 1\n", {"x": 1}, "h")
    with run:
        run.start()  # killed before finishing: status running
    return tmp


def test_published_numbers_match_the_same_setting():
    p = report.published_for("ncaltech101", "vggsnn", "tmkt", 10, 48, 1.0)
    assert p.top1 == 97.93 and "arXiv 2511.12150" in p.source
    assert report.published_for("ncaltech101", "vggsnn", "ckd", 10, 48, 1.0).top1 == 97.13
    assert report.published_for("ncaltech101", "vggsnn", "kt", 10, 48, 1.0).top1 == 92.64
    assert report.published_for("cepdvs", "resnet18", "ckd", 6, 48, 1.0).top1 == 40.20
    assert report.published_for("ncaltech101", "vggsnn", "tmkt", 10, 48, 0.5) is None
    assert report.published_for("ncaltech101", "vggsnn", "tmkt", 8, 48, 1.0) is None
    assert report.published_for("digits", "digitsnet", "tmkt", 8, 32, 1.0) is None


def test_groups_mean_std_over_seeds(world):
    tmkt_run = world / "runs" / "toy-tmkt" / "seed2" / "train-tmkt"
    collection = report.collect_runs([world / "runs", world / "runs-half", tmkt_run])
    groups = {g.label: g for g in report.group_runs(collection.records)}
    assert set(groups) == {"toy-tmkt", "toy-kt [data.event_fraction=1.0]",
                           "toy-kt [data.event_fraction=0.5]", "toy-ckd"}
    teacher = groups["toy-ckd"].first
    assert (teacher.stage, teacher.method, teacher.event_fraction) == ("pretrain-ann", "ann",
                                                                       None)
    tmkt = groups["toy-tmkt"]
    assert [r.seed for r in tmkt.runs] == [1, 2, 3]
    s = tmkt.stats(lambda r: r.top1)
    assert (s.mean, s.std, s.n) == (pytest.approx(0.9), pytest.approx(0.1), 3)
    kt = groups["toy-kt [data.event_fraction=1.0]"].stats(lambda r: r.top1)
    assert (kt.mean, kt.std, kt.n) == (pytest.approx(0.65), pytest.approx(math.sqrt(0.005)), 2)
    half = groups["toy-kt [data.event_fraction=0.5]"].stats(lambda r: r.top1)
    assert half.n == 1 and math.isnan(half.std)
    # the eval joined its run (by the output hash it recorded), and only that run
    evaluated = [r for r in tmkt.runs if r.evaluation]
    assert [r.seed for r in evaluated] == [1] and evaluated[0].top5 == 1.0
    assert [r.method for r in tmkt.runs] == ["tmkt"] * 3
    skipped = [str(folder) for folder, _ in collection.skipped]
    assert any("toy-kt/seed3/train-tmkt" in f for f in skipped)


def test_curves_and_data_efficiency_points(world):
    curves = report.epoch_curves(curve(0.9))
    assert curves["train_loss"] == {1: pytest.approx(2.15), 2: pytest.approx(1.15),
                                    3: pytest.approx(2 / 3 + 0.15)}
    assert curves["eval_acc"][3] == pytest.approx(0.9)
    bands = report.group_curves([report.epoch_curves(curve(a)) for a in (0.8, 1.0)])
    assert bands["eval_acc"].mean.tolist() == pytest.approx([0.3, 0.6, 0.9])
    # the band is the mean's 95% t interval over the seeds (1 degree of freedom here)
    half = 12.706205 * np.std([0.8, 1.0], ddof=1) / np.sqrt(2)
    assert bands["eval_acc"].high[-1] == pytest.approx(0.9 + half)
    assert bands["eval_acc"].low[-1] == pytest.approx(0.9 - half)
    assert bands["eval_acc"].n.tolist() == [2, 2, 2]
    # the test split at the last evaluation only, as one point
    x, test = report.final_points([report.epoch_curves(curve(a)) for a in (0.8, 1.0)])[
        "test_acc"]
    assert (x, test.mean, test.n) == (3, pytest.approx(0.9), 2)
    collection = report.collect_runs([world / "runs", world / "runs-half"])
    points = report.data_efficiency_points(report.group_runs(collection.records))
    lines = points["toy / digitsnet"]  # one line per method and heads layout
    kt, tmkt = ("kt", "separate", ""), ("tmkt", "separate", "")
    assert [f for f, _ in lines[kt]] == [0.5, 1.0]
    assert lines[kt][1][1].mean == pytest.approx(0.65)
    assert lines[tmkt][0][1].n == 3


def test_report_markdown_and_figures(world, tmp_path):
    out = tmp_path / "report"
    console = Console(record=True, width=250)
    result = report.make_report([world / "runs", world / "runs-half"], out, console)
    text = (out / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| recipe |"))
    assert header == "| " + " | ".join(report.COLUMNS) + " |"
    row = next(line for line in text.splitlines() if line.startswith("| toy-tmkt |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:9] == ["toy-tmkt", "train-tmkt", "tmkt", "toy", "digitsnet", "4", "16",
                         "100%", "3"]
    # last (no validation split: the event head), each head beside it, best on validation
    # (these runs have no validation split), best on test
    assert cells[9] == "90.00 ± 10.00" and cells[10] == "90.00 ± 10.00" and cells[11] == "–"
    assert cells[12] == "–" and cells[13] == "91.00 ± 10.00"
    assert cells[14] == "100.00"  # top-5 from the one eval
    assert cells[17] == "–"       # no published number for the toy dataset
    teacher = next(line for line in text.splitlines() if line.startswith("| toy-ckd |"))
    assert "| pretrain-ann | ann | toy | resnet18 |" in teacher and \
        "| – | 1 | 95.00 | – | – | – | 95.00 |" in teacher
    assert "| ncaltech101 | vggsnn | tmkt | 10 | 48 | 97.93 |" in text
    assert "toy-kt/seed3/train-tmkt" in text and "## Skipped" in text
    summary = json.loads((out / "summary.json").read_text())
    top = {g["label"]: g for g in summary["groups"]}
    assert top["toy-tmkt"]["top1"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1),
                                       "n": 3}
    assert set(result.figures) == {"training curves", "data efficiency"}
    for path in result.figures.values():
        assert_png(path)
    printed = console.export_text()
    assert "toy-tmkt" in printed and str(out / "report.md") in printed
    assert str(out / "data_efficiency.png") in printed


def test_headroom_table_from_event_only_and_static_only_runs(tmp_path):
    make_prepared_dataset(tmp_path / "prepared")
    for seed, scarce, full in ((1, 0.5, 0.8), (2, 0.6, 0.9)):
        fake_training_run(toy_recipe(tmp_path, "toy-event_only", f"seed={seed}",
                                     "method.name=event_only", "data.event_fraction=0.1",
                                     f"paths.runs={tmp_path}/scarce"),
                          final={"test_acc": scarce, "best_acc": scarce})
        fake_training_run(toy_recipe(tmp_path, "toy-event_only", f"seed={seed}",
                                     "method.name=event_only"),
                          final={"test_acc": full, "best_acc": full})
    fake_training_run(toy_recipe(tmp_path, "toy-static_only", "seed=1",
                                 "method.name=static_only", "model.test_head=static"),
                      final={"test_acc": 0.95, "best_acc": 0.95})
    groups = report.group_runs(report.collect_runs([tmp_path / "runs",
                                                    tmp_path / "scarce"]).records)
    rows = report.headroom_rows(groups)
    assert rows == [["toy / digitsnet", "10%", "55.00 ± 7.07", "95.00", "85.00 ± 7.07",
                     "+40.0", "+30.0"]]
    # static_only has no event fraction to plot against
    points = report.data_efficiency_points(groups)["toy / digitsnet"]
    assert set(points) == {("event_only", "", "")}
    # without a scarce run there is no table
    full_only = report.collect_runs([tmp_path / "runs"]).records
    assert report.headroom_rows(report.group_runs(full_only)) == []


def test_report_command_line(world, tmp_path):
    from tmkt_cli.cli import app

    res = CliRunner().invoke(app, ["report", str(world / "runs"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.md").exists()
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no finished train-tmkt, distill or pretrain-ann runs" in \
        res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "nowhere: not found" in res.output


def test_step_budget_runs_are_drawn_against_steps():
    """A run with a step budget is drawn against optimizer steps; the training loss is the
    mean over each evaluation interval."""
    records = [{"kind": "train", "step": s, "epoch": 1, "loss": float(s), "acc": 0.5}
               for s in range(1, 7)]
    records += [{"kind": "eval", "step": 3, "epoch": 1, "loss": 9.0, "acc": 0.4},
                {"kind": "eval", "step": 6, "epoch": 2, "loss": 8.0, "acc": 0.6}]
    curves = report.training_curves(records, "step")
    assert curves["train_loss"] == {3: pytest.approx(2.0), 6: pytest.approx(5.0)}
    assert curves["eval_acc"] == {3: 0.4, 6: 0.6}
    budget = report.RunRecord(Path("x"), "train-tmkt", "x", 1, "tmkt", "d", "b", 4, 16, 1.0,
                              {"train": {"epochs": 0, "max_steps": 6}}, "", {})
    assert report.uses_step_budget(budget)
    assert not report.uses_step_budget(report.RunRecord(
        Path("x"), "train-tmkt", "x", 1, "tmkt", "d", "b", 4, 16, 1.0, {"train": {"epochs": 3}},
        "", {}))


def test_training_curves_put_the_teacher_on_its_own_row():
    from tmkt_cli.analysis.plotting import Band, CurveSet, training_curves_figure

    band = Band.over_seeds({1.0: [1.0], 2.0: [0.5]})
    look = {"color": "#000000", "marker": "o", "linestyle": "-"}
    fig = training_curves_figure({
        ("SNN", "step"): [CurveSet("a (n = 1)", look, {"train_loss": band, "val_acc": band})],
        ("ANN teacher (images)", "epoch"): [CurveSet("t (n = 1)", look, {"val_acc": band})]})
    axes = fig.get_axes()
    assert len(axes) == 4
    assert [ax.get_xlabel() for ax in axes] == ["optimizer step"] * 2 + ["epoch"] * 2
    assert axes[0].get_yscale() == "log" and "ANN teacher" in axes[2].get_title()


def test_figures_also_in_vector_formats_on_request(world, tmp_path, monkeypatch):
    from tmkt_cli.cli import app

    monkeypatch.setenv("TMKT_FIGURE_FORMATS", "")  # the CLI sets it; restored afterwards
    # runs-half: kt at a second fraction, so that the data-efficiency figure is drawn
    res = CliRunner().invoke(app, ["--figure-format", "pdf", "--figure-format", "svg",
                                   "report", str(world / "runs"), str(world / "runs-half"),
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("training_curves", "data_efficiency"):
        assert (tmp_path / f"{name}.png").is_file()
        assert (tmp_path / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert b"<svg" in (tmp_path / f"{name}.svg").read_bytes()[:1000]
    res = CliRunner().invoke(app, ["--figure-format", "gif", "report", str(world / "runs")])
    assert res.exit_code == 2 and "'gif' is not one of pdf, svg" in res.output
    # after the command too (issue 29: "No such option")
    monkeypatch.setenv("TMKT_FIGURE_FORMATS", "")
    after = tmp_path / "after"
    res = CliRunner().invoke(app, ["report", str(world / "runs"), "--out", str(after),
                                   "--figure-format", "svg"])
    assert res.exit_code == 0, res.output
    assert b"<svg" in (after / "training_curves.svg").read_bytes()[:1000]
    assert not (after / "training_curves.pdf").exists()
    for command in ("eval", "cam", "landscape"):
        res = CliRunner().invoke(app, [command, "x", "--figure-format", "gif"])
        assert res.exit_code == 2 and "'gif' is not one of pdf, svg" in res.output, command


# --------------------------------------------------------------------------------------------
# Loss landscape
# --------------------------------------------------------------------------------------------

def test_filter_normalized_directions():
    params = {"conv": torch.randn(4, 3, 3, 3), "fc": torch.randn(5, 7) * 10,
              "bias": torch.randn(5)}
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for name in ("conv", "fc"):
        assert torch.allclose(d[name].flatten(1).norm(dim=1),
                              params[name].flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.count_nonzero(d["bias"]) == 0  # biases and BN are not moved


def test_loss_landscape_of_a_quadratic():
    """L(w) = |w|^2 for one linear filter: along a filter-normalised direction d with
    |d| = |w|, L(w + a d1 + b d2) is known at every point, and the weights come back."""
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 2.0, 4.0]]))  # |w| = 5
    original = model.weight.detach().clone()

    def evaluate(m):
        return float((m.weight.detach() ** 2).sum()), 0.0

    surface = loss_landscape(model, evaluate, np.linspace(-1, 1, 3), seed=0)
    assert surface.loss.shape == (3, 3) and surface.accuracy.shape == (3, 3)
    assert surface.loss[1, 1] == pytest.approx(25.0)  # the trained weights at the centre
    d1 = filter_normalized_direction({"weight": original}, torch.Generator().manual_seed(0))
    expected = float(((original + d1["weight"]) ** 2).sum())
    assert surface.loss[2, 1] == pytest.approx(expected, rel=1e-5)
    assert torch.equal(model.weight, original)


def test_report_with_landscape(world, tmp_path):
    run = world / "runs" / "toy-tmkt" / "seed1" / "train-tmkt"
    figures, grids = landscape.draw_landscapes([run], tmp_path, Console(quiet=True), grid=3,
                                               samples=4)
    result = report.make_report([run], tmp_path, Console(quiet=True), extra_figures=figures,
                                grids=grids)
    png = tmp_path / "landscape-toy-tmkt-seed1-train-tmkt.png"
    assert result.figures[f"loss landscape, {run}"] == png
    assert_png(png)
    with np.load(tmp_path / "landscape-toy-tmkt-seed1-train-tmkt.npz") as z:
        assert z["loss"].shape == (3, 3) and np.isfinite(z["loss"]).all()
        assert z["alphas"].tolist() == [-1.0, 0.0, 1.0] and int(z["samples"]) == 4
        assert ((0 <= z["accuracy"]) & (z["accuracy"] <= 1)).all()
    assert "landscape-toy-tmkt-seed1-train-tmkt.npz" in (tmp_path / "report.md").read_text()
    with pytest.raises(TmktError, match="holds a 'eval' run"):
        landscape.draw_landscape(world / "runs" / "toy-tmkt" / "seed1" / "eval", tmp_path,
                              Console(quiet=True))


def test_landscape_command_and_the_deprecated_report_option(world, tmp_path):
    from tmkt_cli.cli import app

    run = world / "runs" / "toy-tmkt" / "seed1" / "train-tmkt"
    res = CliRunner().invoke(app, ["landscape", str(run), "--out", str(tmp_path / "l"),
                                   "--grid", "2", "--samples", "4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "l" / "landscape-toy-tmkt-seed1-train-tmkt.npz").is_file()
    assert not (tmp_path / "l" / "report.md").exists()  # a landscape is not a report
    # The old form still works for a release, with a note saying what replaces it.
    res = CliRunner().invoke(app, ["report", str(world / "runs"), "--out", str(tmp_path / "r"),
                                   "--landscape", str(run)])
    assert res.exit_code == 0, res.output
    assert "deprecated" in res.output and "tmkt landscape" in res.output
    assert "landscape-toy-tmkt-seed1-train-tmkt.png" in (tmp_path / "r" / "report.md").read_text()
    # a wrong run folder is one line naming the argument it came from
    res = CliRunner().invoke(app, ["landscape", str(tmp_path / "nowhere"), "--out",
                                   str(tmp_path / "l2")])
    assert res.exit_code == 2
    assert "nowhere: not found (from tmkt landscape RUN)" in res.output


def test_report_imports_no_torch():
    """The report reads run folders; running networks (landscapes) is another command."""
    import subprocess

    code = ("import sys, tmkt_cli.results.report; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_copied_run_folder_counts_once(world, tmp_path):
    """A run folder copied elsewhere (same config, seed and outputs) is one run, not a second
    seed: the copy is skipped with a line naming the folder counted."""
    import shutil

    from tmkt_cli.results.report import collect_runs

    source = world / "runs" / "toy-kt" / "seed1" / "train-tmkt"
    copy = tmp_path / "copy" / "toy-kt" / "seed1" / "train-tmkt"
    shutil.copytree(source, copy)
    collection = collect_runs([world / "runs", tmp_path / "copy"])
    kt = [r for r in collection.records if r.method == "kt" and r.seed == 1
          and r.folder.resolve() in (source.resolve(), copy.resolve())]
    assert len(kt) == 1
    assert any(folder == copy and "the same run as" in why and "counted once" in why
               for folder, why in collection.skipped)


def test_out_that_is_a_file_is_one_line_before_any_work(world, tmp_path):
    from tmkt_cli.cli import app

    a_file = tmp_path / "report.txt"
    a_file.write_text("mine")
    run = world / "runs" / "toy-kt" / "seed1" / "train-tmkt"
    for args in (["report", str(world / "runs"), "--out", str(a_file)],
                 ["report", str(world / "runs"), "--out", str(a_file / "sub")],
                 ["landscape", str(run), "--out", str(a_file)]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "is a file, not a folder" in res.output, res.output
        assert a_file.read_text() == "mine"


def test_landscape_checks_every_run_before_writing_anything(world, tmp_path):
    """Issue 27: the first run's figure was written before the second run was found missing,
    and the output folder was made for runs that did not exist."""
    from tmkt_cli.cli import app

    run = world / "runs" / "toy-kt" / "seed1" / "train-tmkt"
    out = tmp_path / "landscape"
    res = CliRunner().invoke(app, ["landscape", str(run), str(tmp_path / "nowhere"),
                                   "--out", str(out), "--grid", "2", "--samples", "2"])
    assert res.exit_code == 2 and "nowhere" in res.output, res.output
    assert not out.exists()
