"""physode: fit physical systems with neural ODEs.

The front doors are :func:`physode.odeint` (states at the requested times),
:func:`physode.solve` (the same, with solver statistics),
:func:`physode.odeint_event` (solve until an event, with a differentiable event time),
:func:`physode.fit` (fit a right-hand side to a trajectory file, writing a run
directory) and
:func:`physode.evaluate` (re-score a run with another solver).
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import SolverError
from .gradients import ACA, MALI, Adjoint, Direct, GradientMethod
from .odeint import Solution, odeint, solve
from .solvers import ConstantStep, GridSteps, PIController, PIDController, Solver

__all__ = [
    "ACA",
    "MALI",
    "Adjoint",
    "ConstantStep",
    "Direct",
    "FitResult",
    "GradientMethod",
    "GridSteps",
    "PIController",
    "PIDController",
    "Solution",
    "Solver",
    "SolverError",
    "__version__",
    "evaluate",
    "fit",
    "odeint",
    "odeint_event",
    "solve",
]

# The fit pipeline pulls in pydantic, xarray and matplotlib: imported on first use,
# so that `import physode` for a solve stays light.
_LAZY = {
    "fit": ("training.api", "fit"),
    "FitResult": ("training.runner", "FitResult"),
    "evaluate": ("training.evaluate", "evaluate_run"),
    "odeint_event": ("events", "odeint_event"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'physode' has no attribute {name!r}")
