"""One style for every figure tmkt draws: eval, cam, landscape, report and the benchmark.

* **One colour per method**, the same in every figure (colour-blind-safe, Okabe and Ito):
  a reader who has met kt in one figure finds it in the same blue in every other one.
* **One marker and line style per head layout** (separate, shared, residual): the layouts of
  one method share its colour. A variant beyond the layout (``equal_compute``, ...) keeps
  the colour too, with hollow markers and a dash-dot line.
* **Readable in a page column**: figures are at most :data:`FULL_WIDTH_IN` wide, written at
  :data:`DPI` (1000 px: a page column of about 6.5 in), and no text is under :data:`MIN_PT`
  there (:func:`displayed_pt`).
* **n in every legend**: :func:`series_label`; error bars and bands are 95% Student t
  intervals over seeds (:mod:`tmkt_cli.analysis.stats`), and say so (:data:`INTERVAL`).

Pure data and small helpers: matplotlib is imported inside the functions that draw, torch
never (``report.py`` and ``benchmark.py`` import this module).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable

# --------------------------------------------------------------------------------------------
# Size: a page column
# --------------------------------------------------------------------------------------------

COLUMN_PX = 1000
"""Width at which a figure is read: a page column (README, a paper's text width)."""
COLUMN_IN = 6.5
"""The same column in inches."""
DPI = 160
"""PNG resolution: a :data:`FULL_WIDTH_IN` figure is 1000 px wide."""
FULL_WIDTH_IN = 6.25
"""Figures with several panels, or wide ones: the whole column."""
SINGLE_WIDTH_IN = 4.5
"""A figure of one small panel (eval's accuracy against time steps)."""
PANEL_HEIGHT_IN = 2.5
"""Height of one row of panels."""

MIN_PT = 8.0
"""No text is smaller than this in the column (tick labels, legends, captions included)."""
TICK_PT = 8.0
LEGEND_PT = 8.0
NOTE_PT = 8.0
"""Annotations and captions inside the axes."""
LABEL_PT = 9.0
TITLE_PT = 10.0

INTERVAL = "95% t interval over seeds"
"""What every error bar and band of a mean over seeds is."""

VAL_WIDTH = 1.6
"""Learning curves: validation lines are drawn thick, train lines thin and faint."""
TRAIN_WIDTH = 0.9
TRAIN_ALPHA = 0.55
BAND_ALPHA = 0.15

# --------------------------------------------------------------------------------------------
# Colour and marker: what was run
# --------------------------------------------------------------------------------------------

METHOD_COLOURS = {
    "event_only": "#000000",   # black: the baseline every method is measured against
    "finetune": "#cc79a7",     # reddish purple
    "kt": "#0072b2",           # blue
    "tmkt": "#d55e00",         # vermillion
    "ckd": "#009e73",          # bluish green
    "static_only": "#e69f00",  # orange: the SNN on the images alone
    "teacher": "#56b4e9",      # sky blue: the ANN teacher
}
"""Method -> colour (lower-case hex), in every figure tmkt draws."""
OTHER_COLOUR = "#999999"
"""A method outside :data:`METHOD_COLOURS`."""
NEUTRAL_COLOUR = "#555555"
"""Data that belong to no method (a figure of one run whose method is not known)."""
METHOD_ALIASES = {"ann": "teacher"}
"""Names report.py's records use for a method (an ANN teacher run is method ``ann``)."""

LAYOUT_MARKERS = {"": "o", "separate": "o", "shared": "s", "residual": "^"}
"""Head layout -> marker ("" for one-head methods: event_only, finetune, images)."""
LAYOUT_LINES = {"": "-", "separate": "-", "shared": "--", "residual": ":"}
VARIANT_LINE = "-."
"""Line style of a variant beyond the layout (e.g. ``equal_compute-true``)."""
REPEAT_MARKERS = ("v", "P", "X", "D", "*", "h")
"""Markers that tell apart lines of one figure that would otherwise look the same (the same
method and layout in two configurations)."""


def method_colour(method: str) -> str:
    method = METHOD_ALIASES.get(method, method)
    return METHOD_COLOURS.get(method, OTHER_COLOUR)


def line_style(method: str, heads: str = "", extra: str = "") -> dict:
    """Line2D keywords of a line: the method's colour, the layout's marker and line style;
    hollow markers and a dash-dot line for a variant beyond the layout."""
    style = {"color": method_colour(method), "marker": LAYOUT_MARKERS.get(heads, "D"),
             "linestyle": VARIANT_LINE if extra else LAYOUT_LINES.get(heads, "-")}
    if extra:
        style["markerfacecolor"] = "white"
    return style


def distinct_styles(keys: Iterable[tuple[str, str, str]]) -> list[dict]:
    """:func:`line_style` of each (method, heads, extra); where one repeats, the later ones
    keep the colour and take a marker of :data:`REPEAT_MARKERS`, so that no two lines of a
    figure look the same."""
    seen: dict[tuple, int] = {}
    out = []
    for key in keys:
        style = line_style(*key)
        k = seen.get(tuple(key), 0)
        seen[tuple(key)] = k + 1
        if k:
            style["marker"] = REPEAT_MARKERS[(k - 1) % len(REPEAT_MARKERS)]
        out.append(style)
    return out


def marker_only(style: dict) -> dict:
    """The style without its line (a lone point, the test point at the end of a curve)."""
    return {**{k: v for k, v in style.items() if k != "linestyle"}, "linestyle": "none"}


def line_only(style: dict) -> dict:
    return {k: v for k, v in style.items() if k not in ("marker", "markerfacecolor")}


# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------

def variant_text(extra: str) -> str:
    """``equal_compute-true+lr-0.01`` -> ``equal_compute, lr 0.01``."""
    parts = []
    for part in (extra or "").split("+"):
        key, _, value = part.partition("-")
        if key:
            parts.append(key if value == "true" else f"{key} {value}".strip())
    return ", ".join(parts)


def line_name(method: str, heads: str = "", extra: str = "", draw: str = "") -> str:
    """``tmkt, shared heads, equal_compute [nested]``: what a line shows, without n."""
    text = METHOD_ALIASES.get(method, method) + (f", {heads} heads" if heads else "")
    text += f", {variant_text(extra)}" if extra else ""
    return text + (f" [{draw}]" if draw else "")


def n_text(counts: Iterable[int]) -> str:
    """``n = 3``, or ``n = 2-3`` when the points of a line rest on different numbers of
    seeds."""
    counts = [int(c) for c in counts] or [0]
    low, high = min(counts), max(counts)
    return f"n = {low}" if low == high else f"n = {low}-{high}"


def series_label(name: str, counts: Iterable[int]) -> str:
    """``tmkt, shared heads (n = 5)``: every legend entry of a mean over seeds says n."""
    return f"{name} ({n_text(counts)})"


def fraction_text(fraction: float) -> str:
    return f"{100 * fraction:g}%"


# --------------------------------------------------------------------------------------------
# Figures, axes, legends
# --------------------------------------------------------------------------------------------

def figure(width: float = FULL_WIDTH_IN, height: float = PANEL_HEIGHT_IN):
    """A figure with constrained layout (legends outside the axes get their room)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, FULL_WIDTH_IN), height), layout="constrained")


def panel_grid(panels: int, panel_height: float = PANEL_HEIGHT_IN, columns: int = 2,
               extra_height: float = 1.0):
    """(figure, axes) of ``panels`` panels in rows of ``columns``, the column's width;
    ``extra_height`` for the legend and title below and above."""
    columns = 1 if panels == 1 else columns
    rows = max(1, math.ceil(panels / columns))
    fig = figure(FULL_WIDTH_IN, panel_height * rows + extra_height)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def style_axes(ax, grid: bool = True) -> None:
    """The sizes of an axes' texts (title, labels, ticks), and a light grid."""
    ax.tick_params(which="both", labelsize=TICK_PT)
    ax.title.set_fontsize(LABEL_PT)
    ax.xaxis.label.set_fontsize(LABEL_PT)
    ax.yaxis.label.set_fontsize(LABEL_PT)
    if grid:
        ax.grid(alpha=0.3)


def clip_percent(ax) -> None:
    """Keep a percent axis within 0-100 (an interval over few seeds may reach past them)."""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 100.0))


def suptitle(fig, text: str) -> None:
    """A figure title wrapped to the figure's width."""
    width_pt = fig.get_figwidth() * 72
    fig.suptitle(textwrap.fill(text, max(20, int(width_pt / (0.5 * TITLE_PT)))),
                 fontsize=TITLE_PT)


def proxy(style: dict, **extra):
    """A legend entry drawn with a line's style."""
    from matplotlib.lines import Line2D

    return Line2D([], [], markersize=6, **{**style, **extra})


def legend_columns(labels: Iterable[str], width: float = FULL_WIDTH_IN) -> int:
    """Two columns where the longest label fits twice across ``width``, else one (a legend
    wider than the figure would widen the PNG past the column)."""
    longest = max((len(label) for label in labels), default=0)
    column_in = longest * 0.55 * LEGEND_PT / 72 + 0.6  # the text and its handle
    return 2 if 2 * column_in <= width else 1


def legend_room(labels: Iterable[str], title_lines: int = 2) -> float:
    """Inches a figure needs beside its panels for a title of ``title_lines`` lines above
    and a legend of ``labels`` below."""
    labels = list(labels)
    rows = math.ceil(len(labels) / legend_columns(labels)) if labels else 0
    return 0.2 + 0.2 * title_lines + 0.19 * rows


def figure_legend(fig, handles: dict, title: str | None = None) -> None:
    """One legend below the panels: label -> artist, at :data:`LEGEND_PT`, in two columns
    where they fit (:func:`legend_columns`)."""
    if not handles:
        return
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(legend_columns(handles, fig.get_figwidth()), len(handles)),
               fontsize=LEGEND_PT, frameon=False, title=title, title_fontsize=LEGEND_PT)


def curve_kinds(test: bool = True) -> dict:
    """Legend entries saying what each kind of line of a learning-curve figure is."""
    handles = {"validation: mean, band: 95% interval": proxy(
                   {"color": NEUTRAL_COLOUR, "linewidth": VAL_WIDTH}),
               "train: mean, band: 95% interval": proxy(
                   {"color": NEUTRAL_COLOUR, "linewidth": TRAIN_WIDTH, "alpha": TRAIN_ALPHA})}
    if test:
        handles["test: last checkpoint only, 95% bar"] = proxy(
            {"color": NEUTRAL_COLOUR, "marker": "o", "linestyle": "none"})
    return handles



# --------------------------------------------------------------------------------------------
# Checking: what a reader sees in a page column
# --------------------------------------------------------------------------------------------

def displayed_pt(fontsize: float, png_width_px: int, dpi: float = DPI) -> float:
    """The size in points of ``fontsize`` text of a PNG written at ``dpi`` and
    ``png_width_px`` wide, read in a column of :data:`COLUMN_PX` px = :data:`COLUMN_IN` in
    (shrunk to the column when wider, at its own size when narrower)."""
    pixels = fontsize * dpi / 72 * min(1.0, COLUMN_PX / png_width_px)
    return pixels / (COLUMN_PX / (COLUMN_IN * 72))


def visible_texts(fig) -> list:
    """Every visible, non-empty text of a drawn figure (tick labels, legends, titles), but
    those of hidden axes."""
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()
            and (t.axes is None or t.axes.get_visible())]
