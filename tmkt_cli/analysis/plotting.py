"""The figures of eval, cam, landscape and report, and the pieces the benchmark's figures
share with them (:mod:`tmkt_cli.results.benchmark`).

Every figure follows one style (:mod:`tmkt_cli.analysis.style`): a method's colour and a head
layout's marker are the same everywhere, text is at least 8 pt in a page column, every mean
over seeds comes with its 95% t interval and its n, and a figure is drawn only where it can
say something (no data-efficiency plot from one fraction, :func:`split_single_fraction`).
Drawn on ``matplotlib.figure.Figure`` objects (the Agg canvas, no pyplot state, no display
needed) and written atomically, like every tmkt artifact.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tmkt_cli.analysis import style
from tmkt_cli.analysis.stats import Interval, mean_interval
from tmkt_cli.runs.artifacts import atomic_path

DPI = style.DPI


FORMATS_VARIABLE = "TMKT_FIGURE_FORMATS"
"""Comma-separated vector formats written beside every PNG (``tmkt --figure-format pdf``)."""
VECTOR_FORMATS = ("pdf", "svg")


def extra_formats() -> list[str]:
    """The vector formats asked for, beside the PNG every figure gets."""
    import os

    asked = [f.strip().lower() for f in os.environ.get(FORMATS_VARIABLE, "").split(",")
             if f.strip()]
    return [f for f in VECTOR_FORMATS if f in asked]


def save_vectors(fig: Figure, path: str | Path) -> list[Path]:
    """Only the vector formats asked for, beside the PNG at ``path`` (which is left as it is):
    a finished stage's figures redrawn from its saved data. Returns the files written."""
    path, written = Path(path), []
    for fmt in extra_formats():
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", pad_inches=0.05)
        written.append(path.with_suffix(f".{fmt}"))
    return written


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (temporary name, then rename), and beside it each
    vector format asked for (same name, ``.pdf`` / ``.svg``). Returns the PNG's path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    for fmt in extra_formats():
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", pad_inches=0.05)
    return path


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------

NAMED_CLASSES = 30
"""Up to this many classes the confusion matrix names them (8 pt names need the room)."""
NUMBERED_CLASSES = 15
"""Up to this many classes each cell shows its count."""


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = ""
                     ) -> Figure:
    """Row-normalised confusion matrix (each row: where a class's test samples went)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    k = len(class_names)
    totals = confusion.sum(axis=1, keepdims=True)
    recall = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    side = min(style.FULL_WIDTH_IN - 1.2, 2.8 + 0.25 * k)
    fig = style.figure(side + 1.0, side + 0.4)
    ax = fig.add_subplot()
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class", fontsize=style.LABEL_PT)
    bar.ax.tick_params(labelsize=style.TICK_PT)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= NAMED_CLASSES:  # beyond that, names are unreadable; the matrix is in eval.json
        ax.set_xticks(range(k), class_names, rotation=90)
        ax.set_yticks(range(k), class_names)
    if k <= NUMBERED_CLASSES:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, f"{int(confusion[i, j])}", ha="center", va="center",
                            fontsize=style.NOTE_PT,
                            color="white" if recall[i, j] > 0.5 else "black")
    ax.set_title(_wrapped(title or "Confusion matrix (rows normalised)", fig))
    style.style_axes(ax, grid=False)
    return fig


def _wrapped(text: str, fig: Figure, size: float = style.TITLE_PT) -> str:
    """``text`` broken into lines that fit the figure's width at ``size`` points."""
    return textwrap.fill(text, max(20, int(fig.get_figwidth() * 72 / (0.55 * size))))


def accuracy_vs_time_figure(accuracy: Sequence[float], title: str = "",
                            method: str | None = None) -> Figure:
    """Top-1 accuracy of the prediction from the first t frames, t = 1..T, in the colour of
    the run's ``method`` (when given)."""
    steps = np.arange(1, len(accuracy) + 1)
    fig = style.figure(style.SINGLE_WIDTH_IN, 3.2)
    ax = fig.add_subplot()
    colour = style.method_colour(method) if method else style.NEUTRAL_COLOUR
    ax.plot(steps, 100 * np.asarray(accuracy), marker="o", color=colour)
    ax.set_xticks(steps)
    ax.set_xlabel("time steps used at inference")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(_wrapped(title or "Accuracy against time steps", fig))
    style.style_axes(ax)
    return fig


def firing_rate_figure(layers: Sequence[str], rates: Sequence[float], title: str = "",
                       method: str | None = None) -> Figure:
    """Mean firing rate of each spiking layer, in network order, labelled with the layer
    names of eval's table, in the colour of the run's ``method`` (when given)."""
    width = min(style.FULL_WIDTH_IN, max(3.5, 0.32 * len(layers) + 1.5))
    fig = style.figure(width, 3.2)
    ax = fig.add_subplot()
    colour = style.method_colour(method) if method else style.NEUTRAL_COLOUR
    bars = ax.bar(range(len(layers)), rates, color=colour, alpha=0.8)
    pitch_pt = (width - 1.0) * 72 / max(1, len(layers))
    ax.bar_label(bars, labels=[f"{r:.3f}" for r in rates], fontsize=style.NOTE_PT, padding=1,
                 rotation=0 if pitch_pt >= 26 else 90)
    ax.set_xticks(range(len(layers)), list(layers), rotation=45, ha="right")
    ax.set_xlabel("spiking layer (as in eval's table)")
    ax.set_ylabel("spikes per neuron per time step")
    ax.set_ylim(0, max([*rates, 0.0]) * (1.15 if pitch_pt >= 26 else 1.35) or 1.0)
    ax.set_title(_wrapped(title or "Firing rate per spiking layer", fig))
    style.style_axes(ax)
    ax.grid(axis="x", visible=False)
    return fig


# --------------------------------------------------------------------------------------------
# cam
# --------------------------------------------------------------------------------------------

@dataclass
class CamRow:
    """One sample of the CAM figure."""

    title: str
    static: np.ndarray | None
    """``[H, W]`` in [0, 1], or None when the dataset has no image."""
    static_caption: str
    """A line under the image (e.g. that it is a class partner, not the recording's own)."""
    events_rgb: np.ndarray
    """``[H, W, 3]`` integrated event frames (ON red, OFF blue)."""
    background: np.ndarray
    """``[H, W]`` in [0, 1]: what the maps are overlaid on."""
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    """Column title -> ``[H, W]`` map in [0, 1]."""
    captions: dict[str, str] = field(default_factory=dict)
    """Column title -> a line under that map: the model's prediction, right or wrong."""


CAM_PANEL_IN = 1.3
"""Side of one CAM panel: four columns and the colour bar fit the column's width
(:data:`style.FULL_WIDTH_IN`) with 8 pt text."""
CAM_TITLE_CHARS = 20
"""A column title is broken into lines of this many characters (a panel's width at 8 pt)."""


def cam_figure(rows: Sequence[CamRow], suptitle: str = "", map_label: str = "relevance"
               ) -> Figure:
    """Columns: static image, integrated events (legend: ON red, OFF blue), then each model's
    map over the events, with one colour bar for the maps (each normalised to [0, 1] per
    sample) and each prediction captioned right or wrong."""
    map_titles = list(rows[0].maps) if rows else []
    columns = 2 + len(map_titles)
    fig = style.figure(CAM_PANEL_IN * columns + 0.9, CAM_PANEL_IN * 1.3 * len(rows) + 1.0)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        _cam_row(axes[r], row, map_titles)
        if r == 0:
            for c, title in enumerate(["static image", "events", *map_titles]):
                # a column is about 1.3 in wide: break long model names over lines
                axes[r, c].set_title(textwrap.fill(title, CAM_TITLE_CHARS),
                                     fontsize=style.NOTE_PT)
    _cam_keys(fig, axes, map_titles, map_label, len(rows))
    if suptitle:
        fig.suptitle(_wrapped(suptitle, fig, style.LABEL_PT), fontsize=style.LABEL_PT)
    return fig


def _cam_row(axes, row: CamRow, map_titles: list[str]) -> None:
    ax = axes[0]
    if row.static is not None:
        ax.imshow(row.static, cmap="gray", vmin=0, vmax=1)
    else:
        ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes,
                fontsize=style.NOTE_PT)
    ax.set_ylabel(row.title, fontsize=style.NOTE_PT)
    ax.set_xlabel(row.static_caption, fontsize=style.NOTE_PT)
    axes[1].imshow(row.events_rgb)
    for c, title in enumerate(map_titles):
        ax = axes[2 + c]
        ax.imshow(row.background, cmap="gray_r", vmin=0, vmax=1)
        ax.imshow(row.maps[title], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        caption = row.captions.get(title, "")
        if caption:
            ax.set_xlabel(caption, fontsize=style.NOTE_PT,
                          color="#c00000" if caption.startswith("wrong") else "black")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def _cam_keys(fig: Figure, axes, map_titles: list[str], map_label: str, rows: int) -> None:
    """The maps' colour bar and the legend of the events column."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    if map_titles:
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes[:, 2:],
                           shrink=min(1.0, 2.5 / max(1, rows)), aspect=15)
        bar.set_label(f"{map_label} (per sample, 0-1)", fontsize=style.NOTE_PT)
        bar.ax.tick_params(labelsize=style.TICK_PT)
    fig.legend(handles=[Patch(color="red", label="ON events"),
                        Patch(color="blue", label="OFF events"),
                        Patch(color="black", label="both")],
               loc="outside lower center", ncol=3, fontsize=style.LEGEND_PT, frameon=False,
               title="events column", title_fontsize=style.LEGEND_PT)


# --------------------------------------------------------------------------------------------
# Means over seeds: curves with their band, points with their bar
# --------------------------------------------------------------------------------------------

@dataclass
class Band:
    """A curve's mean over seeds at each x, with its 95% t interval (nan where fewer than two
    seeds reach that x) and the seeds behind each point."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray

    @classmethod
    def over_seeds(cls, per_x: dict[float, Sequence[float]]) -> Band:
        """From x -> the seeds' values at x."""
        xs = sorted(per_x)
        ivs = [mean_interval(per_x[x]) for x in xs]
        return cls(np.array(xs, dtype=float), *(np.array([getattr(iv, a) for iv in ivs])
                                               for a in ("mean", "low", "high", "n")))

    def scaled(self, factor: float) -> Band:
        return Band(self.x, self.mean * factor, self.low * factor, self.high * factor, self.n)


def scaled(iv: Interval, factor: float) -> Interval:
    return Interval(iv.mean * factor, iv.low * factor, iv.high * factor, iv.n)


def draw_band(ax, band: Band, look: dict, kind: str = "val") -> None:
    """One learning curve: the mean, its markers now and then, and the 95% interval as a
    band; ``kind`` "val" thick, "train" thin and faint (:func:`style.curve_kinds`)."""
    val = kind != "train"
    width, alpha = (style.VAL_WIDTH, 1.0) if val else (style.TRAIN_WIDTH, style.TRAIN_ALPHA)
    ax.plot(band.x, band.mean, linewidth=width, alpha=alpha, markersize=4,
            markevery=max(1, len(band.x) // 5), **(look if val else style.line_only(look)))
    spread = np.isfinite(band.low) & np.isfinite(band.high)
    if spread.any():
        ax.fill_between(band.x, band.low, band.high, where=spread, color=look["color"],
                        alpha=style.BAND_ALPHA if val else style.BAND_ALPHA / 2, linewidth=0)


def draw_point(ax, x: float, iv: Interval, look: dict, size: float = 7) -> None:
    """A mean over seeds as a marker with its 95% interval bar (none for one seed)."""
    if iv.n == 0:
        return
    ax.plot([x], [iv.mean], markersize=size, **style.marker_only(look))
    if iv.n > 1 and math.isfinite(iv.low):
        ax.errorbar([x], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]],
                    fmt="none", ecolor=look["color"], capsize=3, linewidth=1)


@dataclass
class Series:
    """One line of a data-efficiency figure: its legend label (with n), its look, and at
    each fraction where it ran the mean with its 95% interval over seeds."""

    label: str
    look: dict
    points: dict[float, Interval]


@dataclass
class Reference:
    """A horizontal line beside the series (the SNN on the images), labelled with its n."""

    label: str
    value: float
    look: dict


def joined(ns: Sequence[int]) -> list[bool]:
    """Which points a line joins: those run (n > 0), and where some point rests on several
    seeds, only those that do; a single-seed point beside them stands alone, marked n = 1."""
    several = max(ns, default=0) > 1
    return [n > 1 if several else n > 0 for n in ns]


def draw_series(ax, fractions: list[float], series: Series, nudge: float = 1.0) -> None:
    """A series across ``fractions``: the line broken where it did not run (and around a lone
    single-seed point), a marker and 95% interval bar at each point it has."""
    x = np.asarray(fractions, dtype=float) * nudge
    ns = [series.points[f].n if f in series.points else 0 for f in fractions]
    keep = joined(ns)
    y = [series.points[f].mean if k else np.nan for f, k in zip(fractions, keep, strict=True)]
    ax.plot(x, y, markersize=5, **series.look)  # NaN: no line across; a lone point: a marker
    for xi, f, n, k in zip(x, fractions, ns, keep, strict=True):
        if n and not k:
            draw_point(ax, xi, series.points[f], series.look, size=5)
            ax.annotate("n = 1", (xi, series.points[f].mean), xytext=(4, 3),
                        textcoords="offset points", fontsize=style.NOTE_PT,
                        color=series.look["color"])
        elif n > 1:
            iv = series.points[f]
            if math.isfinite(iv.low):
                ax.errorbar([xi], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]],
                            fmt="none", ecolor=series.look["color"], capsize=3, linewidth=1)


# --------------------------------------------------------------------------------------------
# Data efficiency: top-1 against the fraction of event recordings (report and benchmark)
# --------------------------------------------------------------------------------------------

EFFICIENCY_TITLE = (f"Top-1 against the fraction of event recordings; mean and "
                    f"{style.INTERVAL} (bars; n in the legend, one seed: no bar)")


def fractions_of(series: Sequence[Series]) -> list[float]:
    return sorted({f for s in series for f in s.points})


def split_single_fraction(fractions: dict[str, Iterable[float]], figure: str, what: str
                          ) -> tuple[list[str], list[str]]:
    """(the panels run at several fractions, the one line saying which were left out and
    why): a data-efficiency plot from one fraction says nothing. ``fractions``: panel ->
    the fractions its runs are at; ``what`` names the panels (``settings``)."""
    drawn, single = [], []
    for name, found in fractions.items():
        found = sorted(set(found))
        if len(found) > 1:
            drawn.append(name)
        elif found:
            single.append(f"{name} ({style.fraction_text(found[0])})")
    if not single:
        return drawn, []
    if not drawn:
        return drawn, [f"{figure} is not drawn: the runs are at a single fraction of the "
                       f"event recordings: {', '.join(single)}"]
    return drawn, [f"{figure} leaves out the {what} run at a single fraction: "
                   f"{', '.join(single)}"]


def data_efficiency_figure(panels: dict[str, list[Series]],
                           references: dict[str, list[Reference]] | None = None,
                           title: str = EFFICIENCY_TITLE,
                           ylabel: str = "top-1 on the event test split (%)") -> Figure:
    """One panel per setting (or dataset and backbone), each run at several fractions
    (:func:`split_single_fraction`): one line per method and layout, the mean and its 95%
    interval over seeds at each fraction, nudged apart a little so the bars do not hide each
    other, no line across a fraction a series did not run; the references as dotted
    lines."""
    references = references or {}
    labels = [s.label for series in panels.values() for s in series]
    labels += [r.label for refs in references.values() for r in refs]
    fig, axes = style.panel_grid(len(panels), 2.7, extra_height=style.legend_room(labels))
    handles: dict = {}
    for ax, (name, series) in zip(axes, panels.items(), strict=True):
        fractions = fractions_of(series)
        for i, s in enumerate(series):
            draw_series(ax, fractions, s, 1.0 + 0.03 * (i - (len(series) - 1) / 2))
            handles.setdefault(s.label, style.proxy(s.look))
        for ref in references.get(name, []):
            handles.setdefault(ref.label, ax.axhline(ref.value, linewidth=1.2, **ref.look))
        ax.set_xscale("log")
        ax.set_xticks(fractions, [style.fraction_text(f) for f in fractions])
        ax.minorticks_off()
        ax.set(title=name, xlabel="event training recordings used", ylabel=ylabel)
        style.style_axes(ax)
        style.clip_percent(ax)
    style.suptitle(fig, title)
    style.figure_legend(fig, handles)
    return fig


# --------------------------------------------------------------------------------------------
# report: training curves
# --------------------------------------------------------------------------------------------

@dataclass
class CurveSet:
    """One group of runs (the seeds of one configuration) in the training-curves figure."""

    label: str
    """Legend label, with n."""
    look: dict
    bands: dict[str, Band]
    """``train_loss``, ``train_acc``, ``val_acc`` (``val_loss`` where logged): lines with
    their band; accuracies as fractions."""
    final: dict[str, tuple[float, Interval]] = field(default_factory=dict)
    """``test_loss``, ``test_acc``: (x, mean and interval over seeds) at the last checkpoint,
    drawn as one point: the test split is never a curve a method could be chosen on."""


CURVE_KEYS = (("train_loss", 0, "train"), ("val_loss", 0, "val"), ("train_acc", 1, "train"),
              ("val_acc", 1, "val"))
FINAL_KEYS = (("test_loss", 0), ("test_acc", 1))


def training_curves_figure(panels: dict[tuple[str, str], list[CurveSet]]) -> Figure:
    """Loss and accuracy during training: one row of two panels per (title, x axis) (the
    SNNs, the ANN teacher on its own row; epochs, or optimizer steps for runs with a step
    budget). Validation thick and train thin, the mean over seeds with its 95% band; the
    test split only as one point at the end. Losses on a log scale, where the terms of
    different sizes show."""
    labels = {s.label: None for sets in panels.values() for s in sets}
    fig, axes = style.panel_grid(2 * max(1, len(panels)), 2.3, extra_height=style.legend_room(
        [*labels, *style.curve_kinds()], title_lines=0))
    handles: dict = {}
    for row, ((title, by), sets) in enumerate(panels.items()):
        pair = (axes[2 * row], axes[2 * row + 1])
        for s in sets:
            _curve_set(pair, s)
            handles.setdefault(s.label, style.proxy(s.look))
        _label_curves(pair, title, by, any("val_acc" in s.bands for s in sets))
    style.figure_legend(fig, {**handles, **style.curve_kinds()})
    return fig


def _curve_set(pair, s: CurveSet) -> None:
    for key, column, kind in CURVE_KEYS:
        band = s.bands.get(key)
        if band is not None and len(band.x):
            draw_band(pair[column], band.scaled(100 if key.endswith("acc") else 1), s.look,
                      kind)
    for key, column in FINAL_KEYS:
        if key in s.final:
            x, iv = s.final[key]
            draw_point(pair[column], x, scaled(iv, 100 if key.endswith("acc") else 1),
                       s.look)


def _label_curves(pair, title: str, by: str, validation: bool) -> None:
    loss_ax, acc_ax = pair
    xlabel = "optimizer step" if by == "step" else "epoch"
    loss_ax.set(xlabel=xlabel, ylabel="loss (log scale)", title=f"{title}: loss")
    if any(np.size(line.get_ydata()) and np.all(np.asarray(line.get_ydata()) > 0)
           for line in loss_ax.get_lines()):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        loss_ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.6, not 6 x 10^-1
        # labels at 1, 2 and 5 times each power of ten: every minor tick labelled overlaps
        loss_ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        loss_ax.yaxis.set_major_formatter(plain)
        loss_ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        loss_ax.set_ylabel("loss")
    acc_ax.set(xlabel=xlabel, ylabel="accuracy (%)", ylim=(0, 100),
               title=f"{title}: accuracy")
    if not validation:
        acc_ax.text(0.02, 0.97, "no validation split: train only",
                    transform=acc_ax.transAxes, va="top", fontsize=style.NOTE_PT)
    for ax in pair:
        style.style_axes(ax)
        if by != "step":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1, 2, 3


# --------------------------------------------------------------------------------------------
# landscape
# --------------------------------------------------------------------------------------------

def landscape_figure(alphas: np.ndarray, betas: np.ndarray, loss: np.ndarray, title: str
                     ) -> Figure:
    """Contours of the loss over the two directions (the trained weights at (0, 0))."""
    fig = style.figure(style.SINGLE_WIDTH_IN + 0.5, 4.2)
    ax = fig.add_subplot()
    finite = loss[np.isfinite(loss)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    levels = np.linspace(low, high, 21) if high > low else None
    grid_b, grid_a = np.meshgrid(betas, alphas)
    filled = ax.contourf(grid_a, grid_b, loss, levels=levels, cmap="viridis")
    ax.contour(grid_a, grid_b, loss, levels=levels, colors="white", linewidths=0.4,
               alpha=0.6)
    bar = fig.colorbar(filled, ax=ax)
    bar.set_label("loss", fontsize=style.LABEL_PT)
    bar.ax.tick_params(labelsize=style.TICK_PT)
    ax.plot([0], [0], marker="*", color="red", markersize=10, label="the trained weights")
    ax.set_xticks(np.linspace(alphas.min(), alphas.max(), 5))
    ax.set_yticks(np.linspace(betas.min(), betas.max(), 5))
    ax.set(xlabel="direction 1 (alpha)", ylabel="direction 2 (beta)",
           title=_wrapped(title, fig))
    ax.set_aspect("equal")
    style.style_axes(ax, grid=False)
    return fig
