"""The trajectory file: HDF5, one documented schema, validated on read and on write.

Layout (see docs/data.md for the full table)::

    /                 attrs: format = "physode.trajectories", version = 1,
                             system, description, any extra (e.g. fit_window)
    /time     (T,)    float64, strictly increasing, attrs: units
    /state    (N,T,D) float32 or float64, attrs: variables (D names), units (optional)
    /mask     (N,T,D) bool, True where observed (optional; absent = all observed)
    /parameters       group of ground-truth values, each dataset with attrs: units

``/state`` and ``/mask`` are chunked one trajectory per chunk, so reading a few
trajectories touches only their chunks.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._atomic import atomic_path

FORMAT = "physode.trajectories"
VERSION = 1
SUPPORTED_VERSIONS = (1,)

_RESERVED_ROOT_ATTRS = ("format", "version", "system", "description")
_STATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Bytes of /state (plus /mask) examined at once by the finiteness check and by
# describe(): bounds memory on files much larger than RAM.
_SCAN_BYTES = 64 * 2**20
# A chunk larger than this is split along time: HDF5 caps chunks at 4 GiB and
# the chunk cache works best with chunks of at most a few MiB.
_MAX_CHUNK_BYTES = 4 * 2**20

Indices = int | slice | Sequence[int] | np.ndarray | None


class TrajectoryFormatError(ValueError):
    """A trajectory file (or data about to be written) breaks the schema.

    The message reads ``"<file>: <dataset or attribute>: <rule broken>"``; the three
    parts are also available as ``path``, ``location`` and ``rule``.
    """

    def __init__(self, path: str | os.PathLike, location: str, rule: str) -> None:
        self.path = str(path)
        self.location = location
        self.rule = rule
        super().__init__(f"{self.path}: {location}: {rule}")


def _fit_window(attributes: dict[str, Any]) -> tuple[float, float] | None:
    """The ``fit_window`` entry of root ``attributes`` as ``(t_start, t_end)``, or None.

    :class:`Trajectories` and :class:`TrajectoryFile` both keep the extra root
    attributes in such a dict and read the window the same way.
    """
    window = attributes.get("fit_window")
    if window is None:
        return None
    a, b = np.asarray(window, dtype=np.float64).ravel()
    return float(a), float(b)


@dataclass(eq=False)
class Trajectories:
    """N trajectories of D variables sampled at T common times.

    Attributes:
        time: ``(T,)`` float64, strictly increasing, in ``time_units``.
        state: ``(N, T, D)`` float32 or float64; ``state[n, k, d]`` is variable
            ``variables[d]`` of trajectory ``n`` at ``time[k]``.
        variables: the D variable names, in the order of the last axis of ``state``.
        mask: ``(N, T, D)`` bool, True where observed; None means all observed.
            Values where the mask is False are ignored (they may be NaN).
        time_units: free text, e.g. ``"s"``.
        state_units: None, or one unit string per variable.
        system: short name of the system, e.g. ``"threebody"``.
        description: free text: where the data come from, noise, caveats.
        parameters: ground-truth physical parameters, name -> float or array.
        parameter_units: name -> unit string for the entries of ``parameters``
            (missing entries are written as ``""``, meaning dimensionless or unknown).
        attributes: extra root attributes (numbers, strings, small arrays), e.g.
            ``fit_window = [t_start, t_end]`` or the settings of a simulator.
    """

    time: np.ndarray
    state: np.ndarray
    variables: list[str]
    mask: np.ndarray | None = None
    time_units: str = ""
    state_units: list[str] | None = None
    system: str = ""
    description: str = ""
    parameters: dict[str, np.ndarray | float] = field(default_factory=dict)
    parameter_units: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Coerce containers only; the schema is checked by validate() and on write,
        # so a half-built object can still be inspected and repaired.
        self.time = np.asarray(self.time)
        self.state = np.asarray(self.state)
        if self.mask is not None:
            self.mask = np.asarray(self.mask)
        if isinstance(self.variables, str):
            self.variables = [self.variables]
        self.variables = [str(v) for v in self.variables]
        if isinstance(self.state_units, str):
            self.state_units = [self.state_units] * len(self.variables)
        elif self.state_units is not None:
            self.state_units = [str(u) for u in self.state_units]
        self.parameters = dict(self.parameters)
        self.parameter_units = dict(self.parameter_units)
        self.attributes = dict(self.attributes)

    @property
    def n_trajectories(self) -> int:
        """N, the number of trajectories."""
        return int(self.state.shape[0])

    @property
    def n_times(self) -> int:
        """T, the number of sample times."""
        return int(self.time.shape[0])

    @property
    def n_variables(self) -> int:
        """D, the number of state variables."""
        return len(self.variables)

    @property
    def fit_window(self) -> tuple[float, float] | None:
        """The ``fit_window`` root attribute as ``(t_start, t_end)``, or None."""
        return _fit_window(self.attributes)

    def select(self, indices: Indices) -> Trajectories:
        """The trajectories at ``indices`` (int, slice or int sequence), as a new object.

        Time, variables, units and parameters are shared; state and mask are copied.
        """
        rows = _normalize_indices(indices, self.n_trajectories, "indices")
        return Trajectories(
            time=self.time,
            state=self.state[rows],
            variables=list(self.variables),
            mask=None if self.mask is None else self.mask[rows],
            time_units=self.time_units,
            state_units=None if self.state_units is None else list(self.state_units),
            system=self.system,
            description=self.description,
            parameters=dict(self.parameters),
            parameter_units=dict(self.parameter_units),
            attributes=dict(self.attributes),
        )

    def with_variables(self, names: Sequence[str]) -> Trajectories:
        """The variables ``names`` (each one of :attr:`variables`), in that order, as a new
        object: state, mask and units are reordered with them."""
        unknown = [n for n in names if n not in self.variables]
        if unknown:
            raise ValueError(f"names: {unknown} are not among the variables {self.variables}")
        cols = [self.variables.index(n) for n in names]
        return Trajectories(
            time=self.time,
            state=self.state[..., cols],
            variables=list(names),
            mask=None if self.mask is None else self.mask[..., cols],
            time_units=self.time_units,
            state_units=None if self.state_units is None else [self.state_units[c] for c in cols],
            system=self.system,
            description=self.description,
            parameters=dict(self.parameters),
            parameter_units=dict(self.parameter_units),
            attributes=dict(self.attributes),
        )

    def validate(self, source: str | os.PathLike = "<Trajectories>") -> None:
        """Check the schema; raise :class:`TrajectoryFormatError` naming ``source``."""
        _validate_data(self, str(source))

    def summary(self) -> str:
        """One line: system, N x T x D, time range and units."""
        return summary_line(
            self.system,
            self.n_trajectories,
            self.n_times,
            self.n_variables,
            self.time,
            self.time_units,
        )


def summary_line(system: str, n: int, t: int, d: int, time: np.ndarray, time_units: str) -> str:
    """``"threebody: 1 trajectory x 2000 times x 18 variables, time 0 to 2 <units>"``."""
    name = system or "unnamed system"
    plural = "trajectory" if n == 1 else "trajectories"
    span = f"time {time[0]:g} to {time[-1]:g}" if len(time) else "no times"
    units = f" {time_units}" if time_units else ""
    return f"{name}: {n} {plural} x {t} times x {d} variables, {span}{units}"


# --------------------------------------------------------------------------- checks


def _check_time(time: np.ndarray, where: str, loc: str = "/time") -> None:
    if time.ndim != 1:
        raise TrajectoryFormatError(where, loc, f"must be 1-D (T,), got shape {time.shape}")
    if time.dtype.kind != "f":
        raise TrajectoryFormatError(where, loc, f"must be a float array, got dtype {time.dtype}")
    if time.shape[0] == 0:
        raise TrajectoryFormatError(where, loc, "must hold at least one time")
    bad = np.flatnonzero(~np.isfinite(time))
    if bad.size:
        k = int(bad[0])
        raise TrajectoryFormatError(
            where, loc, f"must be finite; time[{k}] = {time[k]} ({bad.size} non-finite values)"
        )
    steps = np.diff(time)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        k = int(bad[0])
        raise TrajectoryFormatError(
            where,
            loc,
            f"must be strictly increasing; time[{k}] = {time[k]:.17g} is followed by "
            f"time[{k + 1}] = {time[k + 1]:.17g}",
        )


def _check_state_shape(shape: tuple, dtype: np.dtype, n_times: int, where: str) -> None:
    if len(shape) != 3:
        raise TrajectoryFormatError(where, "/state", f"must be 3-D (N, T, D), got shape {shape}")
    if np.dtype(dtype) not in _STATE_DTYPES:
        raise TrajectoryFormatError(
            where, "/state", f"must be float32 or float64, got dtype {np.dtype(dtype)}"
        )
    if shape[1] != n_times:
        raise TrajectoryFormatError(
            where,
            "/state",
            f"axis 1 (T) has length {shape[1]} but /time has {n_times} entries",
        )
    if shape[0] == 0 or shape[2] == 0:
        raise TrajectoryFormatError(
            where, "/state", f"must hold at least one trajectory and one variable, got {shape}"
        )


def _check_mask_shape(shape: tuple, dtype: np.dtype, state_shape: tuple, where: str) -> None:
    if len(shape) != 3:
        raise TrajectoryFormatError(where, "/mask", f"must be 3-D (N, T, D), got shape {shape}")
    if np.dtype(dtype) != np.dtype(bool):
        raise TrajectoryFormatError(where, "/mask", f"must be bool, got dtype {np.dtype(dtype)}")
    if tuple(shape) != tuple(state_shape):
        raise TrajectoryFormatError(
            where, "/mask", f"shape {tuple(shape)} differs from /state's {tuple(state_shape)}"
        )


def _check_variables(variables: Sequence[str], n_vars: int, where: str) -> None:
    loc = "/state attribute 'variables'"
    if len(variables) != n_vars:
        raise TrajectoryFormatError(
            where, loc, f"needs one name per variable: {n_vars} expected, got {len(variables)}"
        )
    if any(not v for v in variables):
        raise TrajectoryFormatError(where, loc, "names must be non-empty")
    seen: set[str] = set()
    for v in variables:
        if v in seen:
            raise TrajectoryFormatError(where, loc, f"names must be unique; {v!r} repeats")
        seen.add(v)


def _check_state_units(units: Sequence[str] | None, n_vars: int, where: str) -> None:
    if units is not None and len(units) != n_vars:
        raise TrajectoryFormatError(
            where,
            "/state attribute 'units'",
            f"must be one string or one per variable ({n_vars}), got {len(units)}",
        )


def _check_values(
    state: np.ndarray,
    mask: np.ndarray | None,
    where: str,
    rows: int | np.ndarray = 0,
) -> None:
    """No NaN/inf where observed.

    ``rows`` maps the block's rows to row numbers in the file for the message: the
    first row number of a contiguous block, or one number per row.
    """
    bad = ~np.isfinite(state)
    if mask is not None:
        bad &= mask
    if bad.any():
        n, k, d = (int(i) for i in np.argwhere(bad)[0])
        row = int(rows[n]) if isinstance(rows, np.ndarray) else n + rows
        what = "where /mask is True" if mask is not None else "(no /mask: every value is observed)"
        raise TrajectoryFormatError(
            where,
            "/state",
            f"must be finite {what}; state[{row}, {k}, {d}] = {state[n, k, d]} "
            f"({int(bad.sum())} such values in the rows checked)",
        )


def _check_parameter(name: str, value: np.ndarray, where: str) -> None:
    loc = f"/parameters/{name}"
    if not name or "/" in name or name in (".", ".."):
        raise TrajectoryFormatError(where, loc, "parameter names must be non-empty without '/'")
    if value.dtype.kind not in "biuf":
        raise TrajectoryFormatError(where, loc, f"must be numeric, got dtype {value.dtype}")


def _check_fit_window(window: Any, where: str) -> None:
    loc = "/ attribute 'fit_window'"
    try:
        w = np.asarray(window, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrajectoryFormatError(where, loc, f"must be two numbers, got {window!r}") from None
    if w.shape != (2,) or not np.isfinite(w).all() or not w[0] < w[1]:
        raise TrajectoryFormatError(
            where, loc, f"must be [t_start, t_end] with t_start < t_end, got {w.tolist()}"
        )


def _check_attribute(key: str, value: Any, where: str) -> None:
    loc = f"/ attribute {key!r}"
    if isinstance(value, str):
        return
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "biuf":
        raise TrajectoryFormatError(
            where, loc, f"must be a string, a number or an array of them, got {value!r}"
        )


def _validate_data(data: Trajectories, where: str) -> None:
    time, state, mask = data.time, data.state, data.mask
    _check_time(time, where)
    _check_state_shape(state.shape, state.dtype, time.shape[0], where)
    if mask is not None:
        _check_mask_shape(mask.shape, mask.dtype, state.shape, where)
    _check_variables(data.variables, state.shape[2], where)
    _check_state_units(data.state_units, state.shape[2], where)
    for name, value in data.parameters.items():
        _check_parameter(name, np.asarray(value), where)
    extra = set(data.parameter_units) - set(data.parameters)
    if extra:
        raise TrajectoryFormatError(
            where, "/parameters", f"units given for unknown parameters {sorted(extra)}"
        )
    for key in data.attributes:
        if key in _RESERVED_ROOT_ATTRS:
            raise TrajectoryFormatError(
                where, f"/ attribute {key!r}", "is reserved; set it through the dataclass field"
            )
    for key, value in data.attributes.items():
        _check_attribute(key, value, where)
    if "fit_window" in data.attributes:
        _check_fit_window(data.attributes["fit_window"], where)
    for start in range(0, state.shape[0], _rows_per_scan(state.shape, state.dtype)):
        stop = start + _rows_per_scan(state.shape, state.dtype)
        _check_values(state[start:stop], None if mask is None else mask[start:stop], where, start)


def _rows_per_scan(shape: tuple, dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(shape[1:])) * (np.dtype(dtype).itemsize + 1))
    return max(1, _SCAN_BYTES // row_bytes)


# --------------------------------------------------------------------------- helpers


def _normalize_indices(indices: Indices, n: int, name: str) -> slice | np.ndarray:
    """A slice, or a 1-D int64 array of in-range, non-negative row numbers."""
    if indices is None:
        return slice(0, n)
    if isinstance(indices, slice):
        start, stop, step = indices.indices(n)
        # h5py reads only forward unit-stride slices directly; other slices become row lists.
        return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
    if isinstance(indices, (int, np.integer)):
        indices = [int(indices)]
    idx = np.asarray(indices)
    if idx.size == 0:
        idx = idx.astype(np.int64)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: expected an int, a slice or a 1-D sequence of ints, got {indices!r}"
        )
    idx = idx.astype(np.int64)
    out = (idx < -n) | (idx >= n)
    if out.any():
        raise IndexError(f"{name}: trajectory {int(idx[out][0])} out of range for {n} trajectories")
    return np.where(idx < 0, idx + n, idx)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [_decode(v) for v in value.tolist()]
        if value.dtype.kind == "U":
            return [str(v) for v in value.tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _string_list(value: Any) -> list[str] | None:
    """A str or a 1-D array of strings as a list of str; None if it is neither."""
    value = _decode(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _read_rows(ds: h5py.Dataset, rows: slice | np.ndarray) -> np.ndarray:
    """Rows of a dataset, in the order asked for (repeats allowed), reading each run once."""
    if isinstance(rows, slice):
        return ds[rows]
    if rows.size == 0:
        return np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    # h5py's fancy indexing is slow for long lists; contiguous runs read as slices.
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    parts = [ds[int(run[0]) : int(run[-1]) + 1] for run in np.split(unique, breaks)]
    return np.concatenate(parts, axis=0)[inverse]


def _format_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------- reading


class TrajectoryFile:
    """A lazy reader: opens the file, checks the schema, reads ``/state`` only on demand.

    On open every structural rule is checked (format, version, datasets present,
    ranks, shapes, dtypes, time strictly increasing and finite, variable names)
    without reading ``/state``; values are checked for NaN/inf where observed as
    rows are read (:meth:`read`, :meth:`iter_batches`), or all of them,
    chunk by chunk, by :meth:`validate`.

    Use as a context manager::

        with TrajectoryFile("data.h5") as f:
            for batch in f.iter_batches(64):
                ...
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._where = str(path)
        if not self.path.exists():
            raise FileNotFoundError(2, "no such trajectory file", str(path))
        if not self.path.is_file():
            raise TrajectoryFormatError(self._where, "file", "is not a regular file")
        if not h5py.is_hdf5(self.path):
            raise TrajectoryFormatError(self._where, "file", "is not an HDF5 file")
        try:
            self._file: h5py.File | None = h5py.File(self.path, "r")
        except OSError as exc:
            raise TrajectoryFormatError(self._where, "file", f"cannot be opened: {exc}") from None
        try:
            with self._corruption():
                self._load_metadata()
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _corruption(self) -> Iterator[None]:
        """h5py's low-level errors (a damaged header, an unreadable chunk: KeyError,
        OSError, RuntimeError, ...) as a :class:`TrajectoryFormatError` naming the file."""
        try:
            yield
        except TrajectoryFormatError:
            raise
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
            raise TrajectoryFormatError(
                self._where, "file", f"is damaged and cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    # The structure is read once here; only /state and /mask stay on disk.
    def _load_metadata(self) -> None:
        f, where = self._file, self._where
        assert f is not None
        attrs = f.attrs
        if "format" not in attrs:
            raise TrajectoryFormatError(
                where, "/ attribute 'format'", f"is missing (expected {FORMAT!r})"
            )
        fmt = _decode(attrs["format"])
        if fmt != FORMAT:
            raise TrajectoryFormatError(
                where, "/ attribute 'format'", f"must be {FORMAT!r}, got {fmt!r}"
            )
        if "version" not in attrs:
            raise TrajectoryFormatError(where, "/ attribute 'version'", "is missing")
        version = _decode(attrs["version"])
        if isinstance(version, float) and version.is_integer():
            version = int(version)
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or (version not in SUPPORTED_VERSIONS)
        ):
            raise TrajectoryFormatError(
                where,
                "/ attribute 'version'",
                f"unsupported version {version!r}; this physode reads version(s) "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            )
        self.version: int = version
        self.system: str = str(_decode(attrs.get("system", "")))
        self.description: str = str(_decode(attrs.get("description", "")))
        self.attributes: dict[str, Any] = {
            k: _decode(v) for k, v in attrs.items() if k not in _RESERVED_ROOT_ATTRS
        }
        if "fit_window" in self.attributes:
            _check_fit_window(self.attributes["fit_window"], where)

        for name in ("time", "state"):
            if name not in f:
                raise TrajectoryFormatError(where, f"/{name}", "is missing")
            if not isinstance(f[name], h5py.Dataset):
                raise TrajectoryFormatError(where, f"/{name}", "must be a dataset, not a group")
        time_ds = f["time"]
        if time_ds.ndim != 1:
            raise TrajectoryFormatError(
                where, "/time", f"must be 1-D (T,), got shape {time_ds.shape}"
            )
        time = time_ds[()]
        _check_time(time, where)
        self.time: np.ndarray = time.astype(np.float64, copy=False)
        if "units" not in time_ds.attrs:
            raise TrajectoryFormatError(where, "/time attribute 'units'", "is missing")
        units = _decode(time_ds.attrs["units"])
        if not isinstance(units, str):
            raise TrajectoryFormatError(
                where, "/time attribute 'units'", f"must be a string, got {units!r}"
            )
        self.time_units: str = units

        state = f["state"]
        _check_state_shape(state.shape, state.dtype, len(self.time), where)
        self._state: h5py.Dataset = state
        # Kept apart from the dataset so they stay known after close().
        self._shape: tuple[int, int, int] = tuple(int(s) for s in state.shape)
        self._dtype: np.dtype = state.dtype
        if "variables" not in state.attrs:
            raise TrajectoryFormatError(where, "/state attribute 'variables'", "is missing")
        variables = _string_list(state.attrs["variables"])
        if variables is None:
            raise TrajectoryFormatError(
                where, "/state attribute 'variables'", "must be a list of strings"
            )
        _check_variables(variables, state.shape[2], where)
        self.variables: list[str] = variables
        self.state_units: list[str] | None = None
        if "units" in state.attrs:
            units_list = _string_list(state.attrs["units"])
            if units_list is None:
                raise TrajectoryFormatError(
                    where, "/state attribute 'units'", "must be a string or a list of strings"
                )
            if len(units_list) == 1:
                units_list = units_list * state.shape[2]
            _check_state_units(units_list, state.shape[2], where)
            self.state_units = units_list

        self._mask: h5py.Dataset | None = None
        self._has_mask = "mask" in f
        if "mask" in f:
            mask = f["mask"]
            if not isinstance(mask, h5py.Dataset):
                raise TrajectoryFormatError(where, "/mask", "must be a dataset, not a group")
            _check_mask_shape(mask.shape, mask.dtype, state.shape, where)
            self._mask = mask

        self.parameters: dict[str, np.ndarray | float] = {}
        self.parameter_units: dict[str, str] = {}
        if "parameters" in f:
            group = f["parameters"]
            if not isinstance(group, h5py.Group):
                raise TrajectoryFormatError(where, "/parameters", "must be a group")
            for name, ds in group.items():
                if not isinstance(ds, h5py.Dataset):
                    raise TrajectoryFormatError(
                        where, f"/parameters/{name}", "must be a dataset, not a group"
                    )
                value = ds[()]
                value = np.asarray(value)
                _check_parameter(name, value, where)
                if "units" not in ds.attrs:
                    raise TrajectoryFormatError(
                        where, f"/parameters/{name} attribute 'units'", "is missing"
                    )
                self.parameters[name] = value.item() if value.ndim == 0 else value
                self.parameter_units[name] = str(_decode(ds.attrs["units"]))

    def __enter__(self) -> TrajectoryFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; the metadata stay readable."""
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None

    def _require_open(self) -> None:
        if self._file is None:
            raise ValueError(f"{self._where}: the file is closed")

    @property
    def n_trajectories(self) -> int:
        """N."""
        return int(self._shape[0])

    @property
    def n_times(self) -> int:
        """T."""
        return len(self.time)

    @property
    def n_variables(self) -> int:
        """D."""
        return len(self.variables)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of ``/state`` (float32 or float64)."""
        return self._dtype

    @property
    def has_mask(self) -> bool:
        """Whether the file has a ``/mask``."""
        return self._has_mask

    @property
    def fit_window(self) -> tuple[float, float] | None:
        """The ``fit_window`` root attribute as ``(t_start, t_end)``, or None."""
        return _fit_window(self.attributes)

    def read(self, indices: Indices = None) -> Trajectories:
        """Read the trajectories at ``indices`` (all if None) from disk.

        Args:
            indices: an int, a slice or a sequence of ints (negative counts from the
                end; order and repeats are kept).

        Returns:
            :class:`Trajectories` with ``state`` of shape ``(len(indices), T, D)``.

        Raises:
            TrajectoryFormatError: a value read is NaN/inf where it is observed.
        """
        self._require_open()
        rows = _normalize_indices(indices, self.n_trajectories, "indices")
        with self._corruption():
            state = _read_rows(self._state, rows)
            mask = None if self._mask is None else _read_rows(self._mask, rows)
        numbers = np.arange(self.n_trajectories)[rows] if isinstance(rows, slice) else rows
        _check_values(state, mask, self._where, numbers)
        return self._wrap(state, mask)

    def iter_batches(self, batch_size: int) -> Iterator[Trajectories]:
        """Yield consecutive batches of at most ``batch_size`` trajectories, in file order.

        Only one batch is in memory at a time; together the batches cover every row.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
        for start in range(0, self.n_trajectories, int(batch_size)):
            yield self.read(slice(start, min(start + int(batch_size), self.n_trajectories)))

    def _scan(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        self._require_open()
        step = _rows_per_scan(self._shape, self._dtype)
        for start in range(0, self.n_trajectories, step):
            stop = min(start + step, self.n_trajectories)
            mask = None if self._mask is None else self._mask[start:stop]
            yield start, self._state[start:stop], mask

    def validate(self) -> None:
        """Check every value of ``/state`` (finite where observed), chunk by chunk."""
        for start, state, mask in self._scan():
            _check_values(state, mask, self._where, start)

    def observed_fraction(self) -> float:
        """The fraction of ``/mask`` that is True (1.0 without a mask), read chunk by chunk."""
        if self._mask is None:
            return 1.0
        step = _rows_per_scan(self._shape, np.dtype(bool))
        total = 0
        for start in range(0, self.n_trajectories, step):
            total += int(np.count_nonzero(self._mask[start : start + step]))
        return total / float(np.prod(self._shape))

    def _wrap(self, state: np.ndarray, mask: np.ndarray | None) -> Trajectories:
        return Trajectories(
            time=self.time.copy(),
            state=state,
            variables=list(self.variables),
            mask=mask,
            time_units=self.time_units,
            state_units=None if self.state_units is None else list(self.state_units),
            system=self.system,
            description=self.description,
            parameters={
                k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in self.parameters.items()
            },
            parameter_units=dict(self.parameter_units),
            attributes=dict(self.attributes),
        )


def read_trajectories(path: str | os.PathLike, indices: Indices = None) -> Trajectories:
    """Read a trajectory file, or only the trajectories at ``indices``.

    Only the requested rows of ``/state`` and ``/mask`` are read from disk (and
    checked for NaN/inf where observed).

    Raises:
        FileNotFoundError: no file at ``path``.
        TrajectoryFormatError: the file breaks the schema.
    """
    with TrajectoryFile(path) as f:
        return f.read(indices)


# --------------------------------------------------------------------------- writing


def _chunks(shape: tuple[int, int, int], itemsize: int) -> tuple[int, int, int]:
    _, t, d = shape
    times = max(1, min(t, _MAX_CHUNK_BYTES // max(1, d * itemsize)))
    return (1, times, d)


def write_trajectories(
    path: str | os.PathLike,
    data: Trajectories,
    *,
    compression: str | None = "gzip",
    overwrite: bool = True,
) -> Path:
    """Validate ``data`` and write it to ``path`` atomically.

    The file is written to a temporary name in the same folder, flushed to disk and
    then renamed onto ``path``: a crash leaves either the old file or the new one,
    never a partial one. ``/state`` and ``/mask`` are chunked one trajectory per
    chunk (split along time only for very long trajectories).

    Args:
        path: destination; its folder must exist.
        data: the trajectories; ``time`` is stored as float64, ``state`` in its own
            dtype (float32 or float64).
        compression: ``"gzip"`` (with the shuffle filter), ``"lzf"`` or None.
        overwrite: if False and ``path`` exists, raise FileExistsError.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TrajectoryFormatError: ``data`` breaks the schema (nothing is written).
    """
    path = Path(path)
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"compression: expected 'gzip', 'lzf' or None, got {compression!r}")
    if not overwrite and path.exists():
        raise FileExistsError(17, "file exists (pass overwrite=True to replace it)", str(path))
    if path.exists() and path.is_dir():
        raise IsADirectoryError(21, "is a directory", str(path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(2, "folder does not exist", str(folder))
    data.validate(path)

    filters: dict[str, Any] = {}
    if compression == "gzip":
        filters = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    elif compression == "lzf":
        filters = {"compression": "lzf", "shuffle": True}

    with atomic_path(path) as tmp:
        # track_order keeps attributes and parameters in the order they were given.
        with h5py.File(tmp, "w-", track_order=True) as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = np.int64(VERSION)
            f.attrs["system"] = data.system
            f.attrs["description"] = data.description
            for key, value in data.attributes.items():
                f.attrs[key] = value
            time = f.create_dataset("time", data=np.asarray(data.time, dtype=np.float64))
            time.attrs["units"] = data.time_units
            state_arr = data.state
            chunks = _chunks(state_arr.shape, state_arr.dtype.itemsize)
            state = f.create_dataset("state", data=state_arr, chunks=chunks, **filters)
            state.attrs["variables"] = list(data.variables)
            if data.state_units is not None:
                state.attrs["units"] = list(data.state_units)
            if data.mask is not None:
                f.create_dataset("mask", data=data.mask, chunks=chunks, **filters)
            if data.parameters:
                group = f.create_group("parameters", track_order=True)
                for name, value in data.parameters.items():
                    ds = group.create_dataset(name, data=np.asarray(value))
                    ds.attrs["units"] = data.parameter_units.get(name, "")
    return path


# --------------------------------------------------------------------------- describe


def _format_value(value: np.ndarray | float) -> str:
    if isinstance(value, np.ndarray):
        if value.size > 12:
            return f"array{value.shape} {value.dtype}"
        return np.array2string(value, separator=", ", precision=10, floatmode="maxprec")
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


_INDENT = " " * 15
_WRAP = 80


def describe(path: str | os.PathLike) -> str:
    """A human summary of a trajectory file.

    Gives the system, description, N/T/D, time range and units, variables, dtype,
    the fraction observed, the parameters with units and the file size. Every value
    is checked on the way (chunk by chunk), so a file that passes ``describe`` reads
    without error.

    Raises:
        FileNotFoundError: no file at ``path``.
        TrajectoryFormatError: the file breaks the schema.
    """
    with TrajectoryFile(path) as f:
        f.validate()
        observed = f.observed_fraction()
        lines = [
            f"file:          {path} ({_format_size(os.path.getsize(path))})",
            f"format:        {FORMAT} version {f.version}",
            f"system:        {f.system or '(none)'}",
        ]
        description = f.description.strip() or "(none)"
        desc_lines = [
            wrapped
            for paragraph in description.splitlines()
            for wrapped in (textwrap.wrap(paragraph, _WRAP, break_on_hyphens=False) or [""])
        ]
        lines.append(f"description:   {desc_lines[0]}")
        lines.extend(f"{_INDENT}{line}" for line in desc_lines[1:])
        lines.append(
            f"shape:         N = {f.n_trajectories} "
            f"{'trajectory' if f.n_trajectories == 1 else 'trajectories'}, "
            f"T = {f.n_times} times, D = {f.n_variables} variables"
        )
        t = f.time
        units = f" {f.time_units}" if f.time_units else ""
        spacing = ""
        if len(t) > 1:
            steps = np.diff(t)
            if np.allclose(steps, steps[0], rtol=1e-9, atol=0.0):
                spacing = f", uniform step {steps[0]:g}"
            else:
                spacing = f", steps {steps.min():g} to {steps.max():g}"
        lines.append(f"time:          {t[0]:g} to {t[-1]:g}{units} ({len(t)} points{spacing})")
        if f.fit_window is not None:
            a, b = f.fit_window
            lines.append(f"fit window:    {a:g} to {b:g}{units}")
        units_of = f.state_units or [""] * f.n_variables
        groups: list[tuple[str, list[str]]] = []
        for name, unit in zip(f.variables, units_of, strict=True):
            if groups and groups[-1][0] == unit:
                groups[-1][1].append(name)
            else:
                groups.append((unit, [name]))
        for i, (unit, names) in enumerate(groups):
            text = ", ".join(names) + (f"  [{unit}]" if unit else "")
            wrapped = textwrap.wrap(text, _WRAP, break_on_hyphens=False) or [""]
            head = "variables:     " if i == 0 else _INDENT
            lines.append(head + wrapped[0])
            lines.extend(_INDENT + w for w in wrapped[1:])
        lines.append(f"dtype:         {f.dtype}")
        if f.has_mask:
            lines.append(f"observed:      {100.0 * observed:.4g}% (from /mask)")
        else:
            lines.append("observed:      100% (no /mask)")
        if f.parameters:
            width = max(len(k) for k in f.parameters)
            for i, (name, value) in enumerate(f.parameters.items()):
                unit = f.parameter_units.get(name, "")
                head = "parameters:    " if i == 0 else _INDENT
                lines.append(
                    f"{head}{name:<{width}} = {_format_value(value)}"
                    + (f"  [{unit}]" if unit else "")
                )
        else:
            lines.append("parameters:    (none)")
        others = {k: v for k, v in f.attributes.items() if k != "fit_window"}
        for i, (key, value) in enumerate(others.items()):
            head = "attributes:    " if i == 0 else _INDENT
            shown = _format_value(value) if not isinstance(value, (list, str)) else str(value)
            lines.append(f"{head}{key} = {shown}")
        return "\n".join(lines)
