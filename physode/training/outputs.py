"""Predictions as an xarray Dataset (CF-style NetCDF), and the scores computed from it.

The dataset holds the true and the predicted trajectories over the whole time
range, both inside the fit window and after it (extrapolation)::

    dimensions:   trajectory (N), time (T), variable (V)
    coordinates:  trajectory (int), time (float64), variable (str),
                  variable_units (str, per variable: the data's text),
                  role (str, per variable: "position", "velocity" or "state"),
                  region (str, per time: "fit", "extrapolation", or "before fit")
    data:         true, predicted, error = predicted - true   (N, T, V), float64
                  mask (N, T, V), bool, when observations are partial
    attributes:   fit_window [start, end], fit_window_end, time_units (the
                  data's text), config (YAML), title, Conventions, source,
                  plus any extras

CF ``units`` attributes are written only where they are valid UDUNITS-2 strings
(checked with cf-units): on ``time`` when the data's time units are, and on
``true``, ``predicted`` and ``error`` when every variable has the same valid
units. Free-text units ("scaled length") are kept in ``variable_units`` and
``time_units`` for labels, never passed off as CF units.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._atomic import atomic_path
from .._version import __version__

__all__ = [
    "REGION_BEFORE",
    "REGION_EXTRAPOLATION",
    "REGION_FIT",
    "ROLES",
    "add_region",
    "extrapolation_scores",
    "positions_of",
    "predictions_dataset",
    "udunits",
    "write_predictions",
]

REGION_FIT = "fit"
REGION_EXTRAPOLATION = "extrapolation"
REGION_BEFORE = "before fit"

#: What a variable is: a position or a velocity of a second-order model, else a state.
ROLES = ("position", "velocity", "state")


@functools.lru_cache(maxsize=1024)
def udunits(text: str | None) -> str | None:
    """``text`` if it is a valid UDUNITS-2 units string, else ``None`` (also for ``""``)."""
    if not text or not text.strip():
        return None
    import cf_units  # a UDUNITS-2 parser and unit database; imported when first needed

    try:
        unit = cf_units.Unit(text)
    except ValueError:
        return None
    return None if unit.is_unknown() or unit.is_no_unit() else text


def _numpy(name: str, value: Any, dtype: Any) -> np.ndarray:
    # torch tensors (possibly on a GPU, possibly needing grad) and array-likes alike
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected an array of numbers, got {type(value).__name__}"
        ) from None


def _per_variable_units(state_units: Any, variables: Sequence[str]) -> list[str]:
    if state_units is None or isinstance(state_units, str):
        return [state_units or ""] * len(variables)
    if isinstance(state_units, Mapping):
        unknown = sorted(set(state_units) - set(variables))
        if unknown:
            raise ValueError(f"state_units: names not among the variables: {unknown}")
        return [str(state_units.get(v) or "") for v in variables]
    units = [str(u or "") for u in state_units]
    if len(units) != len(variables):
        raise ValueError(f"state_units: {len(units)} units given for {len(variables)} variables")
    return units


def _attribute(key: str, value: Any) -> Any:
    # NetCDF attributes are strings, numbers or 1-D numeric arrays; anything
    # else is converted here so that what is read back equals what was written.
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.ndim == 1 and array.dtype.kind in "iuf":
            return array
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    raise ValueError(f"attrs[{key!r}]: cannot be stored as a NetCDF attribute: {value!r}")


def _regions(time: np.ndarray, fit_window: tuple[float, float]) -> np.ndarray:
    start, end = fit_window
    return np.where(
        time > end, REGION_EXTRAPOLATION, np.where(time < start, REGION_BEFORE, REGION_FIT)
    )


def add_region(ds: xr.Dataset, fit_window: Sequence[float] | None = None) -> xr.Dataset:
    """Set the ``region`` coordinate on ``time``: ``"fit"`` inside the fit window
    (both ends included), ``"extrapolation"`` after it, ``"before fit"`` before it.

    Args:
        ds: a dataset with a ``time`` coordinate.
        fit_window: ``(start, end)`` in time units; default: ``ds.attrs["fit_window"]``.
            When given, the dataset's ``fit_window`` attributes are updated too.

    Returns:
        A new dataset (``ds`` is not modified).
    """
    out = ds.copy()
    if fit_window is None:
        window = _fit_window(ds)
    else:
        window = (float(fit_window[0]), float(fit_window[1]))
        out.attrs["fit_window"] = np.array(window, dtype=np.float64)
        out.attrs["fit_window_end"] = window[1]
    time = np.asarray(ds["time"].values, dtype=np.float64)
    return out.assign_coords(
        region=(
            "time",
            _regions(time, window),
            {"long_name": "part of the time range: fit window or extrapolation"},
        )
    )


def predictions_dataset(
    time: Any,
    true: Any,
    predicted: Any,
    variables: Sequence[str],
    *,
    fit_end: float,
    fit_start: float | None = None,
    time_units: str = "",
    state_units: str | Sequence[str] | Mapping[str, str] | None = None,
    config_yaml: str = "",
    mask: Any = None,
    attrs: Mapping[str, Any] | None = None,
    trajectory_ids: Sequence[int] | None = None,
    roles: Sequence[str] | None = None,
) -> xr.Dataset:
    """Build the predictions dataset.

    Args:
        time: output times, shape ``(T,)``, strictly increasing, in ``time_units``.
        true: the data, shape ``(N, T, V)`` (a ``(T, V)`` array is one trajectory).
            Entries that were not observed may hold anything (NaN included)
            when ``mask`` says so.
        predicted: the model's trajectories, same shape as ``true``.
        variables: the ``V`` variable names, e.g. ``x1, y1, z1, ..., vx1, ...``.
        fit_end: end of the fit window (time units); later times are extrapolation.
        fit_start: start of the fit window (default: ``time[0]``).
        time_units: units of ``time`` (empty: dimensionless, written ``"1"``).
        state_units: units of the variables: one string for all, one per
            variable, or a mapping name -> units (default: dimensionless).
        config_yaml: the resolved config, stored as the ``config`` attribute.
        mask: observed entries, bool, shape of ``true`` (default: all observed,
            and no ``mask`` variable is written).
        attrs: extra dataset attributes (e.g. the solver); booleans become
            0/1, ``None`` an empty string, mappings JSON text.
        trajectory_ids: labels of the ``N`` trajectories (e.g. their index in the
            data file; default ``0..N-1``).
        roles: what each variable is, one of :data:`ROLES` (default: all ``"state"``);
            positions are scored apart and drawn as orbits.

    Returns:
        An ``xarray.Dataset`` as described in this module's docstring, in float64.

    Raises:
        ValueError: naming the argument whose shape or values are wrong.
    """
    t = _numpy("time", time, np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"time: expected a non-empty 1-D array, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or (t.size > 1 and not np.all(np.diff(t) > 0)):
        raise ValueError("time: must be finite and strictly increasing")
    y_true = _numpy("true", true, np.float64)
    y_pred = _numpy("predicted", predicted, np.float64)
    if y_true.ndim == 2:
        y_true = y_true[None]
    if y_pred.ndim == 2:
        y_pred = y_pred[None]
    if y_true.ndim != 3 or y_true.shape[1] != t.size:
        raise ValueError(
            f"true: expected shape (trajectory, time={t.size}, variable), got {y_true.shape}"
        )
    if y_pred.shape != y_true.shape:
        raise ValueError(f"predicted: shape {y_pred.shape} differs from true's {y_true.shape}")
    names = [str(v) for v in variables]
    if len(names) != y_true.shape[2]:
        raise ValueError(
            f"variables: {len(names)} names given for {y_true.shape[2]} variables in the arrays"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"variables: names must be unique, got {names}")
    n_traj = y_true.shape[0]
    ids = np.arange(n_traj) if trajectory_ids is None else np.asarray(trajectory_ids)
    if ids.shape != (n_traj,) or ids.dtype.kind not in "iu":
        raise ValueError(f"trajectory_ids: expected {n_traj} integers, got {trajectory_ids!r}")
    start = float(t[0]) if fit_start is None else float(fit_start)
    end = float(fit_end)
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        raise ValueError(f"fit_end: the fit window [{start}, {end}] must have start < end")
    units = _per_variable_units(state_units, names)
    kinds = ["state"] * len(names) if roles is None else [str(r) for r in roles]
    if len(kinds) != len(names) or any(k not in ROLES for k in kinds):
        raise ValueError(f"roles: expected {len(names)} of {', '.join(ROLES)}, got {roles!r}")
    common = udunits(units[0]) if len(set(units)) == 1 else None
    cf = {} if common is None else {"units": common}
    dims = ("trajectory", "time", "variable")

    data_vars: dict[str, Any] = {
        "true": (dims, y_true, {"long_name": "true state", **cf}),
        "predicted": (dims, y_pred, {"long_name": "predicted state", **cf}),
        "error": (
            dims,
            y_pred - y_true,
            {"long_name": "prediction error (predicted - true)", **cf},
        ),
    }
    if mask is not None:
        m = _numpy("mask", mask, bool)
        if m.ndim == 2:
            m = m[None]
        if m.shape != y_true.shape:
            raise ValueError(f"mask: shape {m.shape} differs from true's {y_true.shape}")
        data_vars["mask"] = (
            dims,
            m,
            {"long_name": "observed entries (true where the data was observed)"},
        )

    coords = {
        "trajectory": (
            "trajectory",
            ids.astype(np.int64),
            {"long_name": "trajectory index in the data file", "units": "1"},
        ),
        "time": (
            "time",
            t,
            {
                "long_name": "time",
                "axis": "T",
                **({} if udunits(time_units) is None else {"units": time_units}),
            },
        ),
        "variable": ("variable", np.array(names, dtype=str), {"long_name": "state variable"}),
        "variable_units": (
            "variable",
            np.array(units, dtype=str),
            {"long_name": "units of each state variable, as the data gives them"},
        ),
        "role": (
            "variable",
            np.array(kinds, dtype=str),
            {"long_name": "what the variable is: position, velocity or state"},
        ),
    }
    dataset_attrs: dict[str, Any] = {
        "title": "physode predictions: true and predicted trajectories",
        "Conventions": "CF-1.10",
        "source": f"physode {__version__}",
        "fit_window": np.array([start, end], dtype=np.float64),
        "fit_window_end": end,
        "time_units": time_units,
        "config": config_yaml,
    }
    for key, value in (attrs or {}).items():
        dataset_attrs[str(key)] = _attribute(str(key), value)
    ds = xr.Dataset(data_vars, coords=coords, attrs=dataset_attrs)
    return add_region(ds)


def write_predictions(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` to NetCDF-4 (h5netcdf engine), atomically.

    The file is written under a temporary name in the same folder and then
    renamed, so a reader (or a run killed mid-write) never sees a partial
    file. Missing parent folders are created.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return target


def _fit_window(ds: xr.Dataset) -> tuple[float, float]:
    if "fit_window" in ds.attrs:
        window = np.asarray(ds.attrs["fit_window"], dtype=np.float64).ravel()
        return float(window[0]), float(window[1])
    if "fit_window_end" in ds.attrs:
        return float(ds["time"].values[0]), float(ds.attrs["fit_window_end"])
    raise ValueError("ds: has neither a 'fit_window' nor a 'fit_window_end' attribute")


def positions_of(ds: xr.Dataset) -> list[str]:
    """The variables the ``role`` coordinate marks as positions (none without it)."""
    if "role" not in ds.coords:
        return []
    return [
        str(v)
        for v, r in zip(ds["variable"].values, ds["role"].values, strict=True)
        if r == "position"
    ]


def extrapolation_scores(
    ds: xr.Dataset, position_variables: Sequence[str] | None = None
) -> dict[str, float | int | None]:
    """Errors of the prediction inside the fit window and after it.

    Args:
        ds: a dataset from :func:`predictions_dataset` (or read back from file).
        position_variables: variables summed in ``position_score`` (default:
            those the ``role`` coordinate marks as positions).

    Returns:
        A JSON-ready dict:

        - ``fit_mse``: mean of ``(predicted - true)**2`` over trajectories,
          variables and the times inside the fit window (squared state units);
        - ``extrapolation_mse``: the same over the times after the fit window
          (``None`` when there are none);
        - ``mse``: the same over all times;
        - ``position_score``: the squared error summed over the position
          variables, averaged over all times and trajectories (the three-body
          score of Zhuang et al. 2020, Table 5); ``None`` without positions;
        - ``n_fit_times``, ``n_extrapolation_times``.

        With a ``mask``, the MSEs average over observed entries only, and
        ``position_score`` over the (trajectory, time) points where every
        position variable is observed. A score with no entries to average is
        ``None``.
    """
    start, end = _fit_window(ds)
    time = np.asarray(ds["time"].values, dtype=np.float64)
    names = [str(v) for v in ds["variable"].values]
    if "error" in ds:
        err = np.asarray(ds["error"].transpose("trajectory", "time", "variable").values)
    else:
        err = np.asarray((ds["predicted"] - ds["true"]).transpose(*ds["true"].dims).values)
    if "mask" in ds:
        observed = np.asarray(ds["mask"].transpose("trajectory", "time", "variable").values, bool)
    else:
        observed = np.ones(err.shape, dtype=bool)
    sq = np.where(observed, err, 0.0) ** 2

    def mse(times: np.ndarray) -> float | None:
        n = int(observed[:, times, :].sum())
        return float(sq[:, times, :].sum() / n) if n else None

    in_fit = (time >= start) & (time <= end)
    after = time > end
    positions = positions_of(ds) if position_variables is None else position_variables
    missing = [p for p in positions if p not in names]
    if missing:
        raise ValueError(f"position_variables: not in the dataset's variables: {missing}")
    idx = [names.index(p) for p in positions]
    position_score = None
    if idx:
        rows = observed[:, :, idx].all(axis=-1)
        if rows.any():
            position_score = float(sq[:, :, idx].sum(axis=-1)[rows].mean())
    return {
        "fit_mse": mse(in_fit),
        "extrapolation_mse": mse(after),
        "mse": mse(np.ones_like(in_fit)),
        "position_score": position_score,
        "n_fit_times": int(in_fit.sum()),
        "n_extrapolation_times": int(after.sum()),
    }
