"""Numerics: Butcher tableaus, one-step methods, step-size control, dense output, the loop.

Nothing here knows about gradients beyond plain autograd.
"""

from __future__ import annotations

from .alf import AsyncLeapfrog
from .base import Solver, StepResult
from .loop import SolveOptions, Stats
from .runge_kutta import ExplicitRungeKutta
from .tableau import ButcherTableau
from .tableaus import ALL as TABLEAUS

FIXED_STEP_METHODS = tuple(name for name, tab in TABLEAUS.items() if not tab.adaptive)
ADAPTIVE_METHODS = (*(name for name, tab in TABLEAUS.items() if tab.adaptive), "alf")
METHODS = (*FIXED_STEP_METHODS, *ADAPTIVE_METHODS)


def make_solver(method: str | Solver) -> Solver:
    """The solver for a method name, or ``method`` itself when it is already a solver object."""
    if not isinstance(method, str):
        if all(hasattr(method, a) for a in ("init", "step", "interpolant", "error_order")):
            return method
        raise ValueError(f"method: expected a method name or a solver object, got {method!r}")
    if method == "alf":
        return AsyncLeapfrog()
    if method in TABLEAUS:
        return ExplicitRungeKutta(TABLEAUS[method])
    raise ValueError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")


__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_STEP_METHODS",
    "METHODS",
    "AsyncLeapfrog",
    "ButcherTableau",
    "ExplicitRungeKutta",
    "SolveOptions",
    "Solver",
    "Stats",
    "StepResult",
    "make_solver",
]
