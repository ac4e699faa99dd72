"""The book's figure style and the helpers every figure shares: sizes, palettes, log ticks,
legends outside the data, score labels."""
from __future__ import annotations

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from ...core.tables import privacy_order

#: Width of a figure in inches: the book's text column at :data:`DPI` (about 670 pixels).
WIDTH = 7.0
DPI = 96
#: The smallest font a figure uses, in points.
MIN_FONT = 8


def set_style() -> None:
    """The book's plotting style: fonts readable at the column's width, and, in a notebook,
    figures drawn at twice the resolution they are shown at."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    matplotlib.rcParams.update({"figure.dpi": DPI, "savefig.bbox": "tight",
                                "legend.frameon": False, "axes.titleweight": "bold",
                                "figure.figsize": (WIDTH, 3.6)})
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        set_matplotlib_formats("retina")
        draw_each_figure_once(shell)


def draw_each_figure_once(shell) -> None:
    """Let the inline backend show (and close) a cell's new figures before pyplot's own
    end-of-cell hook redraws every stale figure: in the other order each figure is rendered at
    screen resolution, unseen, before it is rendered again for the page (about a quarter of
    the time a chapter spends drawing). Moves pyplot's hook after the backend's; nothing else
    changes."""
    import matplotlib.pyplot as plt
    redraw = getattr(plt, "_draw_all_if_interactive", None)
    if redraw in shell.events.callbacks["post_execute"]:
        shell.events.unregister("post_execute", redraw)
        shell.events.register("post_execute", redraw)


def categorical_palette(names) -> dict:
    names = list(names)
    return dict(zip(names, sns.color_palette("tab10" if len(names) <= 10 else "tab20",
                                             len(names))))


def ordered_palette(names) -> dict:
    """Colours along a sequential map, for groups in the order of their score (``q0`` ...)."""
    names = list(names)
    return dict(zip(names, sns.color_palette("viridis", len(names))))


def plain(value, _=None) -> str:
    """A tick label without an exponent: ``0.3``, ``20``, ``1e+04`` only beyond 10^4."""
    return f"{value:g}"


def log_ticks(ax, axis: str = "x") -> None:
    """Readable ticks on a log axis, from its current limits: plain numbers at 1, 2, 5 x 10^k
    over spans up to 1.5 decades, 1 and 3 x 10^k up to 3 decades, powers of ten beyond; no
    labels on minor ticks."""
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if not (low > 0 and high > low):
        return
    span = np.log10(high / low)
    mantissas = (1, 2, 3, 5) if span <= 1 else (1, 2, 5) if span <= 1.5 else \
        (1, 3) if span <= 3 else (1,)
    step = max(1, int(np.ceil(span / 6))) if span > 6 else 1
    exponents = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1, step)
    ticks = [m * 10.0 ** e for e in exponents for m in mantissas if low <= m * 10.0 ** e <= high]
    if not ticks:      # a span inside one mantissa step: keep matplotlib's own ticks
        return
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(plain))
    target.set_minor_formatter(NullFormatter())


def legend_below(fig, ax=None, ncol: int = 4, title: str | None = None, handles=None,
                  labels=None) -> None:
    """One legend for the figure, centred below its panels (outside the data)."""
    if handles is None:
        handles, labels = (ax or fig.axes[0]).get_legend_handles_labels()
    for a in fig.axes:
        if a.get_legend() is not None:
            a.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                   title=title, fontsize="small")


def legend_right(ax, title: str | None = None) -> None:
    """The axes' legend to the right of its data."""
    ax.legend(title=title, bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")


def score_label(score: str) -> str:
    """``privacy loss P, α = 8 (log scale)`` for ``privacy_loss_a8``; other scores by name."""
    alpha = privacy_order(score)
    if alpha is not None:
        return f"privacy loss P, α = {alpha:g} (log scale)"
    return f"{score} (log scale)"


def short_score(score: str) -> str:
    """``P, α = 8`` for ``privacy_loss_a8``; other scores by name (for narrow panels)."""
    alpha = privacy_order(score)
    return f"P, α = {alpha:g}" if alpha is not None else score


def drawn_texts(fig) -> list:
    """Every text the figure draws: titles, labels, legend entries, annotations and the tick
    labels of ticks inside their axis's view (those outside are laid out but never drawn)."""
    from matplotlib.text import Text
    fig.canvas.draw()
    out = []
    for text in fig.findobj(Text):
        if not (text.get_visible() and text.get_text().strip()):
            continue
        axis = _tick_axis(fig, text)
        if axis is not None and not _inside_view(axis, text):
            continue
        out.append(text)
    return out


def _tick_axis(fig, text):
    """The axis whose tick label ``text`` is, else None."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if any(text is t.label1 or text is t.label2
                   for t in axis.get_major_ticks() + axis.get_minor_ticks()):
                return axis
    return None


def _inside_view(axis, text) -> bool:
    """Whether a tick label's tick lies inside its axis's view interval."""
    ax, box = axis.axes, text.get_window_extent()
    frame = ax.get_window_extent()
    if axis is ax.xaxis:
        centre = (box.x0 + box.x1) / 2
        return frame.x0 - 1 <= centre <= frame.x1 + 1 or text.get_rotation() != 0
    centre = (box.y0 + box.y1) / 2
    return frame.y0 - 1 <= centre <= frame.y1 + 1


def text_collisions(fig, pixels: float = 1.0) -> list[tuple[str, str]]:
    """The pairs of drawn texts (:func:`drawn_texts`) that overlap by more than ``pixels``:
    tick labels on top of each other, a title on a label, a legend entry on another. Each text
    is its rotated rectangle (:func:`_text_corners`), so rotated tick labels that only share an
    axis-aligned box do not count. Empty for a figure a reader can read."""
    texts = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    corners = [_text_corners(t, renderer) for t in texts]
    return [(texts[i].get_text(), texts[j].get_text())
            for i in range(len(texts)) for j in range(i + 1, len(texts))
            if _overlap(corners[i], corners[j]) > pixels]


def _text_corners(text, renderer) -> np.ndarray:
    """The four corners [4, 2] (display pixels) of a text's rotated rectangle: the box of the
    unrotated text, turned by its rotation about the centre of its drawn box (a rotated
    rectangle's bounding box is centred on it)."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation()
    if angle % 180 == 0:
        width, height = box.width, box.height
    elif angle % 90 == 0:
        width, height = box.height, box.width
    else:
        text.set_rotation(0)
        flat = text.get_window_extent(renderer)
        text.set_rotation(angle)
        width, height = flat.width, flat.height
    theta = np.deg2rad(angle)
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [width / 2, height / 2]
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    return centre + half @ turn.T


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """How far two convex quadrilaterals overlap: the smallest overlap of their projections
    over the edge normals of both (separating axes); 0 or less when they are apart."""
    depth = np.inf
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            normal = np.array([-edge[1], edge[0]]) / max(np.hypot(*edge), 1e-12)
            pa, pb = a @ normal, b @ normal
            depth = min(depth, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return float(depth)
