"""The figures of eval, cam and report.

Drawn on ``matplotlib.figure.Figure`` objects (the Agg canvas, no pyplot state, no display
needed) and written atomically, like every tmkt artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tmkt_cli.artifacts import atomic_path

DPI = 120


FORMATS_VARIABLE = "TMKT_FIGURE_FORMATS"
"""Comma-separated vector formats written beside every PNG (``tmkt --figure-format pdf``)."""
VECTOR_FORMATS = ("pdf", "svg")


def extra_formats() -> list[str]:
    """The vector formats asked for, beside the PNG every figure gets."""
    import os

    asked = [f.strip().lower() for f in os.environ.get(FORMATS_VARIABLE, "").split(",")
             if f.strip()]
    return [f for f in VECTOR_FORMATS if f in asked]


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (temporary name, then rename), and beside it each
    vector format asked for (same name, ``.pdf`` / ``.svg``). Returns the PNG's path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    for fmt in extra_formats():
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
    return path


def _series_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------

def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = ""
                     ) -> Figure:
    """Row-normalised confusion matrix (each row: where a class's test samples went)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    k = len(class_names)
    totals = confusion.sum(axis=1, keepdims=True)
    recall = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    side = min(14.0, 3.0 + 0.35 * k)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 40:  # beyond that, names are unreadable; the matrix is in eval.json
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, f"{int(confusion[i, j])}", ha="center", va="center",
                            fontsize=7, color="white" if recall[i, j] > 0.5 else "black")
    ax.set_title(title or "Confusion matrix (rows normalised)")
    return fig


def accuracy_vs_time_figure(accuracy: Sequence[float], title: str = "") -> Figure:
    """Top-1 accuracy of the prediction from the first t frames, t = 1..T."""
    steps = np.arange(1, len(accuracy) + 1)
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    ax.plot(steps, 100 * np.asarray(accuracy), marker="o")
    ax.set_xticks(steps)
    ax.set_xlabel("time steps used at inference")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Accuracy against time steps")
    return fig


def firing_rate_figure(layers: Sequence[str], rates: Sequence[float], title: str = ""
                       ) -> Figure:
    """Mean firing rate of each spiking layer, in network order, labelled with the layer
    names of eval's table."""
    fig = Figure(figsize=(max(3.5, 0.35 * len(layers) + 1.5), 3.0), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(range(len(layers)), rates, color="tab:orange")
    ax.bar_label(bars, labels=[f"{r:.3f}" for r in rates], fontsize=6, padding=1)
    ax.set_xticks(range(len(layers)), list(layers), rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("spiking layer (as in eval's table)", fontsize=8)
    ax.set_ylabel("spikes per neuron per time step", fontsize=8)
    ax.set_ylim(0, max([*rates, 0.0]) * 1.15 or 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Firing rate per spiking layer", fontsize=8)
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


CAM_PANEL_IN = 1.05
"""Side of one CAM panel: four columns and the colour bar fit a 7 in (two-column) width, and
the per-sample figures a 3.5 in column, at 7 pt text."""


def cam_figure(rows: Sequence[CamRow], suptitle: str = "", map_label: str = "relevance"
               ) -> Figure:
    """Columns: static image, integrated events (legend: ON red, OFF blue), then each model's
    map over the events, with one colour bar for the maps (each normalised to [0, 1] per
    sample) and each prediction captioned right or wrong."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    map_titles = list(rows[0].maps) if rows else []
    columns = 2 + len(map_titles)
    fig = Figure(figsize=(CAM_PANEL_IN * columns + 0.9, CAM_PANEL_IN * 1.25 * len(rows) + 0.9),
                 layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        ax = axes[r, 0]
        if row.static is not None:
            ax.imshow(row.static, cmap="gray", vmin=0, vmax=1)
        else:
            ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes,
                    fontsize=7)
        ax.set_ylabel(row.title, fontsize=7)
        ax.set_xlabel(row.static_caption, fontsize=6)
        axes[r, 1].imshow(row.events_rgb)
        for c, title in enumerate(map_titles):
            ax = axes[r, 2 + c]
            ax.imshow(row.background, cmap="gray_r", vmin=0, vmax=1)
            ax.imshow(row.maps[title], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            caption = row.captions.get(title, "")
            if caption:
                ax.set_xlabel(caption, fontsize=7,
                              color="tab:red" if caption.startswith("wrong") else "black")
        if r == 0:
            import textwrap

            for c, title in enumerate(["static image", "events", *map_titles]):
                # a column is about 1 in wide: break long model names over lines
                axes[r, c].set_title(textwrap.fill(title, 16), fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if map_titles:
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes[:, 2:],
                           shrink=min(1.0, 2.5 / max(1, len(rows))), aspect=15)
        bar.set_label(f"{map_label} (per sample, 0-1)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    fig.legend(handles=[Patch(color="red", label="ON events"),
                        Patch(color="blue", label="OFF events"),
                        Patch(color="black", label="both")],
               loc="outside lower center", ncol=3, fontsize=7, frameon=False,
               title="events column", title_fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

@dataclass
class Band:
    """A curve's mean and spread over seeds at each x."""

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def _band(ax, band: Band, color, label: str | None, style: str = "-") -> None:
    ax.plot(band.x, band.mean, style, color=color, label=label)
    spread = np.nan_to_num(band.std)
    if np.any(spread > 0):
        ax.fill_between(band.x, band.mean - spread, band.mean + spread, color=color,
                        alpha=0.15, linewidth=0)


def training_curves_figure(panels: dict) -> Figure:
    """Loss and accuracy during training: one row of two panels per network kind and x axis
    (the SNNs, the ANN teacher on its own row; epochs, or optimizer steps for runs with a step
    budget). ``panels[(network, "epoch" | "step")][label]`` holds Bands ``train_loss``,
    ``eval_loss``, ``train_acc``, ``eval_acc``: test solid, train dashed, mean over seeds
    with a +-1 std band. Losses on a log scale, where the terms of different sizes show."""
    if panels and not isinstance(next(iter(panels)), tuple):  # {label: series}: one SNN row
        panels = {("SNN", "epoch"): panels}
    rows = max(1, len(panels))
    fig = Figure(figsize=(7.0, 2.6 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for (loss_ax, acc_ax), ((network, by), curves) in zip(axes, panels.items(), strict=False):
        for color, (label, series) in zip(_series_colors(len(curves)), curves.items(),
                                          strict=True):
            for key, ax, style, scale in (("eval_loss", loss_ax, "-", 1),
                                          ("train_loss", loss_ax, "--", 1),
                                          ("eval_acc", acc_ax, "-", 100),
                                          ("train_acc", acc_ax, "--", 100)):
                band = series.get(key)
                if band is None or len(band.x) == 0:
                    continue
                scaled = Band(band.x, band.mean * scale, band.std * scale)
                _band(ax, scaled, color, label if key == "eval_acc" else None, style)
        xlabel = "optimizer step" if by == "step" else "epoch"
        loss_ax.set(xlabel=xlabel, ylabel="loss (log scale)", title=f"{network}: loss")
        if any(line.get_ydata().size and np.all(np.asarray(line.get_ydata()) > 0)
               for line in loss_ax.get_lines()):
            from matplotlib.ticker import FuncFormatter

            loss_ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.6, not 6 x 10^-1
            loss_ax.yaxis.set_major_formatter(plain)
            loss_ax.yaxis.set_minor_formatter(plain)
        acc_ax.set(xlabel=xlabel, ylabel="accuracy (%)", ylim=(0, 100),
                   title=f"{network}: accuracy")
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
            ax.title.set_fontsize(8)
            ax.xaxis.label.set_fontsize(8)
            ax.yaxis.label.set_fontsize(8)
            ax.tick_params(which="both", labelsize=7)
        if curves:
            acc_ax.legend(fontsize=6, loc="lower right",
                          title="solid: test, dashed: train", title_fontsize=6)
    return fig


def data_efficiency_figure(panels: dict[str, dict[str, Band]]) -> Figure:
    """Top-1 accuracy against the fraction of event training recordings: one panel per
    dataset and backbone, one line per method, error bars of +-1 std over seeds. Methods are
    nudged apart along x (a few percent, on the log axis) so their error bars do not hide
    each other."""
    n = max(1, len(panels))
    fig = Figure(figsize=(3.5 * n, 3.0), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (title, lines) in zip(axes, panels.items(), strict=False):
        nudges = np.linspace(-0.04, 0.04, len(lines)) if len(lines) > 1 else [0.0]
        for color, nudge, (method, band) in zip(_series_colors(len(lines)), nudges,
                                                lines.items(), strict=True):
            ax.errorbar(100 * band.x * (1 + nudge), 100 * band.mean,
                        yerr=100 * np.nan_to_num(band.std), marker="o", markersize=3.5,
                        capsize=2.5, elinewidth=1.0, linewidth=1.2, color=color, label=method)
        # Fractions are usually spread over decades (5 %, 20 %, 100 %): a log axis, with the
        # fractions themselves as ticks rather than powers of ten.
        ax.set_xscale("log")
        fractions = sorted({float(f) for band in lines.values() for f in 100 * band.x})
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions], fontsize=7)
        ax.minorticks_off()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("event training recordings used (%)", fontsize=8)
        ax.set_ylabel("top-1 accuracy (%), mean ± std", fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def landscape_figure(alphas: np.ndarray, betas: np.ndarray, loss: np.ndarray, title: str
                     ) -> Figure:
    """Contours of the loss over the two directions (the trained weights at (0, 0))."""
    fig = Figure(figsize=(5.5, 4.6))
    ax = fig.add_subplot()
    finite = loss[np.isfinite(loss)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    levels = np.linspace(low, high, 21) if high > low else None
    grid_b, grid_a = np.meshgrid(betas, alphas)
    filled = ax.contourf(grid_a, grid_b, loss, levels=levels, cmap="viridis")
    ax.contour(grid_a, grid_b, loss, levels=levels, colors="white", linewidths=0.4,
               alpha=0.6)
    fig.colorbar(filled, ax=ax, label="loss")
    ax.plot([0], [0], marker="*", color="red", markersize=10)
    ax.set_xticks(np.linspace(alphas.min(), alphas.max(), 5))
    ax.set_yticks(np.linspace(betas.min(), betas.max(), 5))
    ax.set(xlabel="direction 1 (alpha)", ylabel="direction 2 (beta)", title=title)
    ax.set_aspect("equal")
    return fig

