"""``physode.fit(model, data, ...)``: the fit pipeline of ``physode fit``, called from Python
with a model object instead of a ``model:`` section."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .config import config_from_dict
from .runner import FitResult
from .runner import fit as run_fit

__all__ = ["fit"]


def fit(
    model: nn.Module,
    data_path: str | os.PathLike[str] | None = None,
    /,
    *,
    data: Mapping[str, Any] | None = None,
    solver: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> FitResult:
    """Fit the right-hand side ``model`` to the trajectories of a file.

    Writes the run directory ``physode fit`` writes (config.yaml, metrics.csv,
    metrics.json, params.json, checkpoints/, predictions.nc, plots/).

    Args:
        model: any ``nn.Module`` right-hand side ``model(t, y) -> dy/dt``: a
            :class:`~physode.models.Physics`, a :class:`~physode.models.Hybrid`, a
            plain network. It is moved to the run's device and dtype, and trained in
            place. A model that names its variables (``variable_names()``) is matched
            to the file's variables by name.
        data_path: the trajectory file (HDF5, docs/data.md), positional.
        data: the other keys of the config's ``data`` section: ``fit_window``,
            ``observed``, ``trajectories``, ``simulate``, ``simulate_options`` (or
            ``path``, in place of ``data_path``).
        solver: keys of the ``solver`` section (``method``, ``grad``, ``rtol``, ...).
        train: keys of the ``train`` section (``epochs``, ``optimizer``, ``lr``,
            ``learn_initial_state``, ``stop``, ...).
        run_dir: the run directory (default: ``runs/run-<time>`` in the working directory).
        resume: continue the killed fit in ``run_dir`` (give the same model and
            settings); ends where an uninterrupted fit ends, bit for bit on the CPU.
        quiet: no progress on stderr.

    Returns:
        :class:`~physode.training.runner.FitResult`: ``run_dir``, ``parameters`` (the
        physical parameters by name, plain numbers), ``metrics`` (``metrics.json``).

    Raises:
        ConfigError: a key or value of ``data``, ``solver`` or ``train`` is wrong (the
            message names it, as for a config file).
        FitSetupError: the data and the model do not fit together.
        FitError: the fit cannot go on (solver failure, non-finite loss, run directory).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model: expected an nn.Module right-hand side f(t, y), got {type(model).__name__}"
        )
    section = dict(data or {})
    if data_path is not None:
        if "path" in section:
            raise ValueError("data: give the file once, as data_path or as data['path']")
        section["path"] = os.fspath(data_path)
    kind = type(model)
    config = config_from_dict(
        {
            "data": section,
            "model": {"python": f"{kind.__module__}:{kind.__qualname__}"},
            "solver": dict(solver or {}),
            "train": dict(train or {}),
            "output": {"dir": None if run_dir is None else os.fspath(run_dir)},
        },
        base_dir=Path.cwd(),
    )
    return run_fit(
        config, config.output.dir, resume=resume, stream=None if quiet else sys.stderr, model=model
    )
