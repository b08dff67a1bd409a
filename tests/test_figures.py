"""Every figure tmkt draws, rendered from small fixture runs and CSVs, checked against the
rules a reader relies on (issue 31; tmkt_cli/analysis/style.py):

- no data-efficiency plot from one fraction (report and benchmark): a note line instead;
- a method's colour is the same in every figure, read from the drawn artists;
- n in every legend label of a mean over seeds;
- learning curves: validation (and train) lines, the test split only as one final point;
- no line across a fraction a variant did not run, a lone point is a marker with its bar;
- PNGs about a page column wide (1000 px), no text under 8 pt when read in that column.

No torch: the fixture runs are folders of manifest.json, config.yaml and metrics.jsonl.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from rich.console import Console
from test_benchmark import fake_run, fixture_rows

from tmkt_cli.analysis import plotting, style
from tmkt_cli.results import benchmark, report

SEEDS = (1, 2, 3)


def png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", data[16:20])[0]


def legend_entries(fig) -> dict[str, object]:
    """label -> handle of every legend of the figure."""
    out = {}
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        out.update({t.get_text(): h for t, h in
                    zip(legend.get_texts(), legend.legend_handles, strict=True)})
    return out


def series_entries(fig) -> dict[str, object]:
    """The legend entries that stand for data (not the key to what line kinds mean)."""
    kinds = set(style.curve_kinds())
    return {k: v for k, v in legend_entries(fig).items() if k not in kinds}


def method_of(label: str) -> str:
    """The method a legend label names: ``kt, shared heads (n = 3)``, ``digits-kt (n = 3)``,
    ``digits-kt [data.event_fraction=0.01] (n = 3)``."""
    first = label.split(" ")[0].split(",")[0]
    return first.split("-", 1)[1] if first.startswith("digits-") else first


def saved(fig, path: Path) -> Path:
    plotting.save_png(fig, path)
    return path


def assert_readable(fig, path: Path, wide: bool = False) -> None:
    """The PNG is at most about a column wide (a full column when ``wide``), and its
    smallest text reads at 8 pt or more in that column."""
    width = png_width(path)
    assert width <= 1100, (path.name, width)
    if wide:
        assert width >= 900, (path.name, width)
    texts = style.visible_texts(fig)
    assert texts
    smallest = min(texts, key=lambda t: t.get_fontsize())
    assert style.displayed_pt(smallest.get_fontsize(), width) >= style.MIN_PT - 0.05, \
        (path.name, smallest.get_text(), smallest.get_fontsize())


# --------------------------------------------------------------------------------------------
# Fixtures: a benchmark table, a report's run folders
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """runs.csv and curves.csv (validation, train and test splits), rendered by
    ``tmkt report --table``; returns the folder of the figures."""
    tmp = tmp_path_factory.mktemp("bench")
    rows = fixture_rows()
    rows.append(dict(rows[-1], setting="digits", fraction="0.05", method="ckd", heads="shared",
                     seed="1", chosen_test="82.00", test_event="82.00",
                     run="digits-ckd/one-seed"))  # one seed, at one fraction of four
    curves = [{"run": r["run"], "step": str(step), "split": split, "head": r["chosen_head"],
               "acc": f"{float(r['chosen_test']) - (600 - step) / 20 - shift:.2f}"}
              for r in rows for step in (200, 400, 600)
              for split, shift in (("val", 1.0), ("test", 0.0), ("train", -3.0))]
    benchmark.write_run_tables(rows, curves, tmp / "table")
    benchmark.make_tables(tmp / "table" / "runs.csv", tmp / "out", Console(quiet=True))
    return tmp


def learning(test: float, val: float, epochs: int = 3) -> tuple[list[dict], list[dict], dict]:
    """(train records, earlier eval records, the final eval) of a run ending at ``test`` on
    the test split and ``val`` on the validation split (3 points apart from each other at
    every epoch, so a curve tells which split it is)."""
    train = [{"kind": "train", "step": 200 * e - 100, "epoch": e, "loss": 2.0 / e,
              "acc": 0.9 * val * e / epochs} for e in range(1, epochs + 1)]
    evals = [{"step": 200 * e, "epoch": e, "loss": 1.5 / e, "acc": test * e / epochs,
              "val_acc": val * e / epochs} for e in range(1, epochs)]
    return train, evals, {"epoch": epochs, "loss": 1.5 / epochs, "acc": test, "val_acc": val}


RUNS = (("digits-event_only", "event_only", "train-tmkt", "separate", 0.50),
        ("digits-kt", "kt", "train-tmkt", "shared", 0.60),
        ("digits-tmkt", "tmkt", "train-tmkt", "shared", 0.65),
        ("digits-ckd", "ckd", "distill", "shared", 0.62))


def report_runs(root: Path, fractions: tuple[float, ...]) -> Path:
    """Run folders of four methods at ``fractions`` over three seeds, and a teacher."""
    for name, method, stage, heads, top1 in RUNS:
        for fraction in fractions:
            for seed in SEEDS:
                test = top1 + 0.1 * fraction + 0.01 * seed
                train, evals, final = learning(test, test - 0.03)
                fake_run(root, name, seed, final, method=method, stage=stage, heads=heads,
                         fraction=fraction, variant=f"event_fraction-{fraction:g}",
                         records=train, evals=evals)
    for seed in SEEDS:
        train, evals, final = learning(0.95, 0.96)
        fake_run(root, "digits-teacher", seed, final, stage="pretrain-ann", records=train,
                 evals=evals)
    return root


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> tuple[Path, report.ReportResult]:
    tmp = tmp_path_factory.mktemp("report")
    runs = report_runs(tmp / "runs", (0.01, 0.05))
    return tmp / "out", report.make_report([runs], tmp / "out", Console(quiet=True))


def eval_figures() -> dict[str, object]:
    """eval's, cam's and landscape's figures from made-up numbers."""
    rng = np.random.default_rng(0)
    classes = [f"class {i}" for i in range(10)]
    background = rng.random((16, 16))
    rows = [plotting.CamRow(f"{classes[i]} (test #{i})", rng.random((16, 16)), "",
                            rng.random((16, 16, 3)), background,
                            maps={"baseline: digits-kt seed 1": rng.random((16, 16)),
                                  "digits-tmkt seed 1": rng.random((16, 16))},
                            captions={"digits-tmkt seed 1": "wrong: class 3"})
            for i in range(3)]
    coords = np.linspace(-1, 1, 5)
    return {
        "confusion": plotting.confusion_figure(rng.integers(0, 9, (10, 10)), classes,
                                               "Confusion, digits-tmkt seed 1"),
        "accuracy_vs_time": plotting.accuracy_vs_time_figure([0.2, 0.4, 0.5, 0.6],
                                                             method="tmkt"),
        "firing_rates": plotting.firing_rate_figure([f"lif{i}" for i in range(14)],
                                                    list(rng.random(14) / 5), method="tmkt"),
        "cam": plotting.cam_figure(rows, "Grad-CAM, digits-tmkt seed 1", "Grad-CAM relevance"),
        "cam_one": plotting.cam_figure(rows[:1]),
        "landscape": plotting.landscape_figure(coords, coords, np.add.outer(coords ** 2,
                                                                             coords ** 2),
                                               "Loss landscape, digits-tmkt seed 1"),
    }


# --------------------------------------------------------------------------------------------
# A figure only where it says something
# --------------------------------------------------------------------------------------------

def test_no_data_efficiency_plot_from_one_fraction(tmp_path):
    runs = report_runs(tmp_path / "runs", (0.01,))
    out = tmp_path / "out"
    out.mkdir()
    (out / report.DATA_EFFICIENCY).write_bytes(b"an earlier rendering")
    result = report.make_report([runs], out, Console(quiet=True))
    assert "data efficiency" not in result.figures
    assert not (out / report.DATA_EFFICIENCY).exists()
    assert "training curves" in result.figures
    text = (out / report.REPORT).read_text()
    assert "- data_efficiency.png is not drawn: the runs are at a single fraction of the " \
           "event recordings: digits / ? (1%)" in text
    # the benchmark's figure neither: one fraction per setting
    rows = [r for r in benchmark.read_runs(_table(tmp_path))
            if r["fraction"] in (0.01, 0.001, None)]
    fig, notes = benchmark.efficiency_figure(rows)
    assert fig is None and notes == ["efficiency.png is not drawn: the runs are at a single "
                                     "fraction of the event recordings: control (0.1%), "
                                     "digits (1%)"]


def _table(tmp_path: Path) -> Path:
    benchmark.write_run_tables(fixture_rows(), [], tmp_path / "table")
    return tmp_path / "table" / "runs.csv"


# --------------------------------------------------------------------------------------------
# One colour per method, n in every legend
# --------------------------------------------------------------------------------------------

def benchmark_figures(bench: Path) -> dict[str, object]:
    rows = benchmark.read_runs(bench / "table" / "runs.csv")
    curves = benchmark.read_curves(bench / "table" / "curves.csv")
    return {"efficiency": benchmark.efficiency_figure(rows)[0],
            "curves": benchmark.curves_figure(rows, curves)}


def report_figures(reported) -> dict[str, object]:
    out, result = reported
    panels = report.curve_panels(result.groups)
    series = {panel: [plotting.Series(style.series_label(style.line_name(*line),
                                                          [iv.n for _, iv in points]),
                                      style.line_style(*line),
                                      {f: plotting.scaled(iv, 100) for f, iv in points})
                      for line, points in lines.items()]
              for panel, lines in report.data_efficiency_points(result.groups).items()}
    return {"training_curves": plotting.training_curves_figure(panels),
            "data_efficiency": plotting.data_efficiency_figure(series)}


def test_a_method_has_one_colour_in_every_figure(bench, reported):
    figures = {**benchmark_figures(bench), **report_figures(reported)}
    seen: dict[str, set[str]] = {}
    for name, fig in figures.items():
        entries = series_entries(fig)
        assert entries, name
        for label, handle in entries.items():
            method = method_of(label)
            if method in style.METHOD_COLOURS or method == "static_only":
                seen.setdefault(method, set()).add(to_hex(handle.get_color()))
        # and what is drawn in the axes, not only the legend, uses the palette
        drawn = {to_hex(line.get_color() if line in marks([line]) else
                        line.get_markeredgecolor())  # a cap's colour is its marker's
                 for ax in fig.axes for line in ax.get_lines()}
        assert drawn <= set(style.METHOD_COLOURS.values()), (name, drawn)
    assert seen == {m: {style.METHOD_COLOURS[m]} for m in seen}  # one colour each
    assert {"event_only", "kt", "tmkt", "ckd", "static_only"} <= set(seen)
    # eval's figures of a run draw in its method's colour
    ev = eval_figures()
    (line,) = ev["accuracy_vs_time"].axes[0].get_lines()
    assert to_hex(line.get_color()) == style.METHOD_COLOURS["tmkt"]
    bars = ev["firing_rates"].axes[0].patches
    assert {to_hex(bar.get_facecolor()) for bar in bars} == {style.METHOD_COLOURS["tmkt"]}


def test_n_in_every_legend_label(bench, reported):
    figures = {**benchmark_figures(bench), **report_figures(reported)}
    for name, fig in figures.items():
        for label in series_entries(fig):
            assert "(n = " in label, (name, label)
    labels = series_entries(figures["efficiency"])
    assert "ckd, shared heads (n = 1)" in labels
    assert "static_only on the test images (n = 3)" in labels
    assert "digits-teacher (n = 3)" in series_entries(figures["training_curves"])


def test_layouts_share_the_colour_and_differ_in_marker():
    separate, shared, residual = (style.line_style("kt", h) for h in
                                  ("separate", "shared", "residual"))
    assert separate["color"] == shared["color"] == residual["color"]
    assert len({separate["marker"], shared["marker"], residual["marker"]}) == 3
    variant = style.line_style("event_only", "", "equal_compute-true")
    assert variant["color"] == style.METHOD_COLOURS["event_only"]
    assert variant["linestyle"] == style.VARIANT_LINE and variant["markerfacecolor"] == "white"
    assert style.line_name("event_only", "", "equal_compute-true") == \
        "event_only, equal_compute"
    # the same method and layout twice in one figure: the second gets its own marker
    a, b = style.distinct_styles([("kt", "shared", ""), ("kt", "shared", "")])
    assert a["color"] == b["color"] and a["marker"] != b["marker"]


# --------------------------------------------------------------------------------------------
# Lines: gaps where not run, lone points, the test split only at the end
# --------------------------------------------------------------------------------------------

def lines_of(ax, method: str) -> list:
    return [line for line in ax.get_lines()
            if to_hex(line.get_color()) == style.METHOD_COLOURS[method]]


def marks(lines: list) -> list:
    """The lines but the caps of error bars (matplotlib draws them as lines of markers)."""
    return [line for line in lines if line.get_marker() not in ("_", "|")]


def test_a_variant_run_at_one_fraction_is_a_lone_marker_with_n(bench):
    fig = benchmark_figures(bench)["efficiency"]
    ax = fig.axes[0]
    ckd = lines_of(ax, "ckd")
    assert len(ckd) == 1
    y = np.asarray(ckd[0].get_ydata(), dtype=float)
    assert np.isfinite(y).sum() == 1 and ckd[0].get_marker() == \
        style.LAYOUT_MARKERS["shared"]
    assert not ax.texts  # its whole line rests on one seed: the legend says n = 1
    # event_only at 1% rests on 3 seeds, elsewhere on 2: every point has its bar
    bars = [c for c in ax.collections if to_hex(c.get_colors()[0]) ==
            style.METHOD_COLOURS["event_only"]]
    assert sum(len(c.get_segments()) for c in bars) == 4


def test_a_single_seed_point_beside_several_stands_alone():
    several = plotting.Interval(70.0, 65.0, 75.0, 3)
    fig = plotting.data_efficiency_figure({"digits": [plotting.Series(
        "kt (n = 1-3)", style.line_style("kt"),
        {0.01: several, 0.05: several, 0.2: plotting.Interval(80.0, math.nan, math.nan, 1)})]})
    ax = fig.axes[0]
    main = [line for line in lines_of(ax, "kt") if line.get_linestyle() == "-"]
    assert len(main) == 1
    y = np.asarray(main[0].get_ydata(), dtype=float)
    assert np.isfinite(y[:2]).all() and math.isnan(y[2])  # not joined to the n = 1 point
    assert [t.get_text() for t in ax.texts] == ["n = 1"]
    lone = [line for line in marks(lines_of(ax, "kt")) if line.get_linestyle() == "None"]
    assert len(lone) == 1 and list(lone[0].get_ydata()) == [80.0]


def test_learning_curves_show_validation_and_train_and_test_only_at_the_end(bench, reported):
    out, result = reported
    fig = report_figures(reported)["training_curves"]
    snn_acc = next(ax for ax in fig.axes if ax.get_title().startswith("SNN, 1% of the recordings")
                   and "accuracy" in ax.get_title())
    tmkt = marks(lines_of(snn_acc, "tmkt"))
    curves = [line for line in tmkt if len(line.get_xdata()) > 1]
    points = [line for line in tmkt if len(line.get_xdata()) == 1]
    widths = sorted(line.get_linewidth() for line in curves)
    assert widths == [style.TRAIN_WIDTH, style.VAL_WIDTH]  # train and validation
    val = next(line for line in curves if line.get_linewidth() == style.VAL_WIDTH)
    # tmkt at 1%: test 0.651 + 0.01 seed, validation 0.03 below: the curve is validation's
    test_mean = 100 * np.mean([0.65 + 0.001 + 0.01 * s for s in SEEDS])
    assert val.get_ydata()[-1] == pytest.approx(test_mean - 3)
    assert len(points) == 1 and points[0].get_xdata()[0] == 3
    assert points[0].get_ydata()[0] == pytest.approx(test_mean)
    assert snn_acc.collections  # the spread over seeds, as bands (and the test point's bar)
    # the benchmark's curves: the same three kinds of line
    bench_fig = benchmark_figures(bench)["curves"]
    kt = marks(lines_of(bench_fig.axes[1], "kt"))
    assert {line.get_linewidth() for line in kt if len(line.get_xdata()) > 1} == {
        style.TRAIN_WIDTH, style.VAL_WIDTH}
    assert [line.get_xdata()[0] for line in kt if len(line.get_xdata()) == 1] == [600, 600]


# --------------------------------------------------------------------------------------------
# Readable in a page column
# --------------------------------------------------------------------------------------------

def test_benchmark_figures_are_a_column_wide_with_8_pt_text(bench):
    out = bench / "out"
    for name, fig in benchmark_figures(bench).items():
        assert_readable(fig, saved(fig, out / f"check-{name}.png"), wide=True)
    for png in (benchmark.EFFICIENCY_PNG, benchmark.CURVES_PNG):
        assert 900 <= png_width(out / png) <= 1100


def test_report_figures_are_a_column_wide_with_8_pt_text(reported):
    out, result = reported
    assert set(result.figures) == {"training curves", "data efficiency"}
    for name, fig in report_figures(reported).items():
        assert_readable(fig, saved(fig, out / f"check-{name}.png"), wide=True)


def test_eval_cam_and_landscape_figures_have_8_pt_text(tmp_path):
    for name, fig in eval_figures().items():
        assert_readable(fig, saved(fig, tmp_path / f"{name}.png"))


def test_displayed_size_shrinks_with_a_wider_png():
    assert style.displayed_pt(8, 1000) == pytest.approx(8 * 160 / 72 / (1000 / 6.5 / 72))
    assert style.displayed_pt(8, 2000) == pytest.approx(style.displayed_pt(8, 1000) / 2)
    assert style.displayed_pt(8, 500) == style.displayed_pt(8, 1000)  # shown at its own size
