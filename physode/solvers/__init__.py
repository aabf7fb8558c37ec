"""Numerics: Butcher tableaus, one-step methods, step-size controllers, dense output, the loop.

Nothing here knows about gradients beyond plain autograd.
"""

from __future__ import annotations

from .adams import Adams
from .alf import AsyncLeapfrog
from .base import Solver, StepResult
from .controller import (
    ConstantStep,
    ControllerState,
    GridSteps,
    PIController,
    PIDController,
    StepSizeController,
)
from .dop853 import DormandPrince853
from .esdirk import ESDIRK
from .loop import SolveOptions, Stats
from .radau import Radau
from .registry import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    METHODS,
    SOLVERS,
    STIFF_METHODS,
    make_solver,
)
from .rosenbrock import Rosenbrock
from .runge_kutta import ExplicitRungeKutta
from .tableau import ButcherTableau
from .tableaus import ALL as TABLEAUS

__all__ = [
    "ADAPTIVE_METHODS",
    "ESDIRK",
    "FIXED_STEP_METHODS",
    "METHODS",
    "SOLVERS",
    "STIFF_METHODS",
    "TABLEAUS",
    "Adams",
    "AsyncLeapfrog",
    "ButcherTableau",
    "ConstantStep",
    "ControllerState",
    "DormandPrince853",
    "ExplicitRungeKutta",
    "GridSteps",
    "PIController",
    "PIDController",
    "Radau",
    "Rosenbrock",
    "SolveOptions",
    "Solver",
    "Stats",
    "StepResult",
    "StepSizeController",
    "make_solver",
]
