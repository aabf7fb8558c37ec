"""Figures of a predictions dataset (see :mod:`physode.training.outputs`), as PNG files.

Figures are drawn on matplotlib's Agg canvas directly, without pyplot: no
display is needed, no global backend is switched for the importing program,
and no figure is left registered anywhere once a function returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .._atomic import atomic_path
from .outputs import positions_of

__all__ = ["DPI", "plot_error", "plot_extrapolation", "plot_orbits", "plot_predictions", "xy_pairs"]

DPI = 120

_TRUE_STYLE = {"linestyle": "-", "linewidth": 1.4}
_PRED_STYLE = {"linestyle": "--", "linewidth": 1.4}
_WINDOW_STYLE = {"color": "0.85", "alpha": 0.6, "linewidth": 0, "zorder": 0}
_BOUNDARY_STYLE = {"color": "0.3", "linestyle": ":", "linewidth": 1.0}


# --------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file, then rename)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()
    return path


def _with_units(label: str, units: str) -> str:
    return label if units in ("", "1") else f"{label} [{units}]"


class _View:
    """One trajectory of a predictions dataset as plain arrays.

    ``true``, ``predicted`` and ``observed`` have shape ``(T, V)``; ``time`` ``(T,)``.
    """

    def __init__(self, ds: xr.Dataset, trajectory: int) -> None:
        n = ds.sizes["trajectory"]
        if not -n <= trajectory < n:
            raise ValueError(f"trajectory: position {trajectory} out of range for {n} trajectories")
        one = ds.isel(trajectory=trajectory)
        self.label = int(one["trajectory"].values)
        self.time = np.asarray(ds["time"].values, dtype=np.float64)
        self.time_units = str(ds.attrs.get("time_units") or ds["time"].attrs.get("units", ""))
        self.names = [str(v) for v in ds["variable"].values]
        self.true = np.asarray(one["true"].transpose("time", "variable").values, np.float64)
        self.predicted = np.asarray(
            one["predicted"].transpose("time", "variable").values, np.float64
        )
        if "mask" in one:
            self.observed = np.asarray(one["mask"].transpose("time", "variable").values, bool)
        else:
            self.observed = np.ones(self.true.shape, dtype=bool)
        if "variable_units" in ds.coords:
            self.units = [str(u) for u in ds["variable_units"].values]
        else:
            self.units = [str(ds["true"].attrs.get("units", ""))] * len(self.names)
        self.window = _window(ds, self.time)
        self.positions = positions_of(ds)

    @property
    def time_label(self) -> str:
        return _with_units("time", self.time_units)

    def mark_window(self, ax: Axes) -> None:
        if self.window is None:
            return
        start, end = self.window
        ax.axvspan(start, end, **_WINDOW_STYLE)
        ax.axvline(end, **_BOUNDARY_STYLE)


def _window(ds: xr.Dataset, time: np.ndarray) -> tuple[float, float] | None:
    if "fit_window" in ds.attrs:
        w = np.asarray(ds.attrs["fit_window"], dtype=np.float64).ravel()
        return float(w[0]), float(w[1])
    if "fit_window_end" in ds.attrs:
        return float(time[0]), float(ds.attrs["fit_window_end"])
    return None


def _grid(n: int) -> tuple[int, int]:
    # Three columns suit x, y, z triples (one row per body); otherwise pairs, up to four wide.
    if n <= 3:
        cols = n
    elif n % 3 == 0:
        cols = 3
    elif n % 2 == 0 and n <= 8:
        cols = 2
    else:
        cols = 4
    return -(-n // cols), cols


def _legend_handles(view: _View) -> list:
    handles = [
        Line2D([], [], color="C0", **_TRUE_STYLE, label="true"),
        Line2D([], [], color="C1", **_PRED_STYLE, label="predicted"),
    ]
    if view.window is not None:
        handles.append(Patch(facecolor=_WINDOW_STYLE["color"], label="fit window"))
    return handles


def xy_pairs(names: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(label, x name, y name)`` for every ``x<suffix>`` with a matching ``y<suffix>``.

    ``x1, y1, x2, y2`` gives bodies ``"1"`` and ``"2"``; a lone ``x, y`` gives ``""``.
    """
    pairs = []
    for name in names:
        match = re.fullmatch(r"x(.*)", name)
        if match and f"y{match.group(1)}" in names:
            pairs.append((match.group(1).lstrip("_"), name, f"y{match.group(1)}"))
    return pairs


# --------------------------------------------------------------------------- figures


def plot_extrapolation(
    ds: xr.Dataset, path: str | os.PathLike[str], *, trajectory: int = 0
) -> Path:
    """Each variable against time, one panel each: true solid, predicted dashed,
    the fit window shaded and its end marked by a dotted line."""
    view = _View(ds, trajectory)
    rows, cols = _grid(len(view.names))
    fig = _figure(3.2 * cols, 1.9 * rows + 0.5)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
    partial = not view.observed.all()
    for k, ax in enumerate(axes.flat):
        if k >= len(view.names):
            ax.set_visible(False)
            continue
        view.mark_window(ax)
        if partial:
            # The observed samples, under the lines so the dashed prediction stays visible.
            seen = view.observed[:, k]
            ax.plot(view.time[seen], view.true[seen, k], ".", color="C0", ms=2, alpha=0.5)
        ax.plot(view.time, view.true[:, k], color="C0", **_TRUE_STYLE)
        ax.plot(view.time, view.predicted[:, k], color="C1", **_PRED_STYLE)
        ax.set_ylabel(_with_units(view.names[k], view.units[k]))
        if k + cols >= len(view.names):
            ax.set_xlabel(view.time_label)
            ax.xaxis.set_tick_params(labelbottom=True)
    axes.flat[0].legend(handles=_legend_handles(view), fontsize="small", loc="best")
    fig.suptitle(f"trajectory {view.label}: prediction and extrapolation")
    return _save(fig, Path(path))


def plot_orbits(
    ds: xr.Dataset, path: str | os.PathLike[str], *, trajectory: int = 0
) -> Path | None:
    """Orbits of every body in the x-y plane (true solid, predicted dashed, start marked).

    Drawn for models with positions (the ``role`` coordinate) named in ``x``/``y``
    pairs (``x1, y1, z1, ...``); a third coordinate is projected out, and the title
    says so. Returns ``None`` and writes nothing otherwise.
    """
    view = _View(ds, trajectory)
    pairs = xy_pairs(view.positions)
    if not pairs:
        return None
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    for k, (label, xn, yn) in enumerate(pairs):
        i, j = view.names.index(xn), view.names.index(yn)
        color = f"C{k % 10}"
        body = f"body {label}" if label else "orbit"
        ax.plot(view.true[:, i], view.true[:, j], color=color, **_TRUE_STYLE, label=body)
        ax.plot(view.predicted[:, i], view.predicted[:, j], color=color, **_PRED_STYLE)
        # start: the first time where the data has this body's position
        known = np.flatnonzero(view.observed[:, i] & view.observed[:, j])
        if known.size:
            ax.plot(view.true[known[0], i], view.true[known[0], j], "o", color=color, ms=6)
    ax.set_xlabel(_with_units("x", view.units[view.names.index(pairs[0][1])]))
    ax.set_ylabel(_with_units("y", view.units[view.names.index(pairs[0][2])]))
    ax.set_aspect("equal", adjustable="datalim")
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", **_TRUE_STYLE, label="true"),
        Line2D([], [], color="0.3", **_PRED_STYLE, label="predicted"),
        Line2D([], [], color="0.3", marker="o", linestyle="", label="start"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="best")
    others = len(view.positions) > 2 * len(pairs)
    projection = "projected onto the x-y plane" if others else "x-y plane"
    ax.set_title(f"trajectory {view.label}: orbits ({projection})")
    return _save(fig, Path(path))


def plot_error(ds: xr.Dataset, path: str | os.PathLike[str], *, trajectory: int = 0) -> Path:
    """Euclidean norm of the error against time on a log scale, the fit window marked:
    positions and velocities apart for a second-order model, else all variables."""
    view = _View(ds, trajectory)
    err = np.where(view.observed, view.predicted - view.true, 0.0)
    positions = set(view.positions)
    groups = [
        ("position", [k for k, n in enumerate(view.names) if n in positions]),
        ("velocity", [k for k, n in enumerate(view.names) if n not in positions]),
    ]
    groups = [(name, idx) for name, idx in groups if idx]
    if len(groups) == 1:
        groups = [("all variables", groups[0][1])]
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    view.mark_window(ax)
    drawn = False
    for k, (name, idx) in enumerate(groups):
        norm = np.sqrt((err[:, idx] ** 2).sum(axis=1))
        # A time with nothing observed has no error to show; a zero error
        # has no place on a log axis.
        norm[~view.observed[:, idx].any(axis=1) | ~(norm > 0)] = np.nan
        if np.isfinite(norm).any():
            units = {view.units[i] for i in idx}
            label = _with_units(f"{name} error", units.pop() if len(units) == 1 else "")
            ax.plot(view.time, norm, color=f"C{k}", linewidth=1.4, label=label)
            drawn = True
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "no nonzero error", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(view.time_label)
    ax.set_ylabel("|predicted - true| (Euclidean)")
    ax.set_title(f"trajectory {view.label}: error against time")
    return _save(fig, Path(path))


def plot_predictions(
    ds: xr.Dataset, out_dir: str | os.PathLike[str], *, trajectory: int = 0
) -> list[Path]:
    """Write ``extrapolation.png``, ``orbits.png`` (when there are x/y pairs) and
    ``error.png`` into ``out_dir`` (created if missing), at :data:`DPI` dots per inch.

    Args:
        ds: a predictions dataset (:func:`physode.training.predictions_dataset`).
        out_dir: folder for the PNG files.
        trajectory: position along the ``trajectory`` dimension (not its label;
            negative counts from the end). Titles show the label.

    Returns:
        The paths written, in that order.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = [plot_extrapolation(ds, folder / "extrapolation.png", trajectory=trajectory)]
    orbits = plot_orbits(ds, folder / "orbits.png", trajectory=trajectory)
    if orbits is not None:
        written.append(orbits)
    written.append(plot_error(ds, folder / "error.png", trajectory=trajectory))
    return written
